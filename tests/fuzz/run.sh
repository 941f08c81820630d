#!/usr/bin/env bash
# tests/fuzz/run.sh [SECONDS] [NAME...] - build the libFuzzer targets with clang
# (-DIMGQ_FUZZ=ON, library and targets under ASan + UBSan) in build-fuzz/ and fuzz each target
# for SECONDS (default 60) on a scratch copy of its seed corpus, build-fuzz/corpus/NAME/, which
# grows across runs (the seeds in tests/fuzz/corpus/ are never modified).  NAME limits the run
# to some targets (job, openai, s3_error, httpd, image, catalog, misc).
# Crashes, leaks and timeouts are written to build-fuzz/artifacts/NAME/ and the full log to
# build-fuzz/fuzz_NAME.log; the exit status is non-zero if any target found one.
# Environment: IMGQ_FUZZ_BUILD_DIR (default build-fuzz/),
# extra libFuzzer flags in IMGQ_FUZZ_FLAGS (e.g. "-jobs=4 -workers=4").
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=${IMGQ_FUZZ_BUILD_DIR:-$root/build-fuzz}
secs=${1:-60}
shift || true
CC=${CC:-clang}
command -v "$CC" >/dev/null || { echo "run.sh: $CC not found (libFuzzer needs clang)" >&2; exit 2; }

CC=$CC cmake -S "$root" -B "$build" -DIMGQ_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
if [ $# -gt 0 ]; then
  names=("$@")
else
  names=()
  for src in "$root"/tests/fuzz/fuzz_*.c; do
    n=$(basename "$src" .c)
    names+=("${n#fuzz_}")
  done
fi
cmake --build "$build" -j"$(nproc)" --target "${names[@]/#/fuzz_}"

export IMGQ_SOURCE_DIR=$root
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:allocator_may_return_null=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
status=0
for n in "${names[@]}"; do
  corpus=$build/corpus/$n
  artifacts=$build/artifacts/$n
  mkdir -p "$corpus" "$artifacts"
  cp -n "$root/tests/fuzz/corpus/$n"/* "$corpus"/ 2>/dev/null || true
  dict=()
  [ -f "$root/tests/fuzz/$n.dict" ] && dict=(-dict="$root/tests/fuzz/$n.dict")
  echo "== fuzz_$n for ${secs}s ($(ls "$corpus" | wc -l) inputs in $corpus)"
  log=$build/fuzz_$n.log
  rc=0
  # shellcheck disable=SC2086
  "$build/fuzz_$n" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2560 \
    -artifact_prefix="$artifacts/" -print_final_stats=1 "${dict[@]}" ${IMGQ_FUZZ_FLAGS:-} \
    "$corpus" >"$log" 2>&1 || rc=$?
  grep -E "^#[0-9]+ +(INITED|DONE)|^stat::(number_of_executed_units|peak_rss)|ERROR:|SUMMARY:|invariant failed" \
    "$log" || true
  if [ "$rc" != 0 ]; then
    echo "!! fuzz_$n exited with $rc: see $artifacts/ and $log"
    status=1
  fi
done
exit $status
