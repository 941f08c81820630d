#!/usr/bin/env bash
# tests/bench/smoke.sh - run one benchmark of tests/bench/ at a tiny size, so that none of them
# stops working unnoticed (issue 14, item 18).  CI runs every script this way: ctest label
# "bench-smoke", registered when CMake is configured with -DIMGQ_BENCH_SMOKE=ON.
#
#   tests/bench/smoke.sh NAME BUILD-DIR      # e.g. tests/bench/smoke.sh webp.sh build
#
# NAME is a file of tests/bench/; it runs with the arguments of the table below plus
# `--no-build --build-dir BUILD-DIR` (the tree under test, not a Release build: the figures
# mean nothing, only that the script runs to its end and prints its table).  A script without
# a line in the table fails: a new benchmark gets its tiny arguments here.  BUILD-DIR must be
# a build without sanitizers (webp.sh links libimgq.a into a program of its own).
# Each takes a few seconds to ~30 s on 2 cores; `run` also installs BullMQ with `npm ci` the
# first time (the npm registry must be reachable).
set -euo pipefail
[[ $# -eq 2 ]] || { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
name=$1 build=$2
case $name in
spine.sh) args=(--jobs 200 --reps 1 --pipeline-jobs 5 --no-wait) ;;
run) args=(--jobs 200 --reps 1 --chunk 100 --concurrency 1 --no-wait) ;;
capacity.sh) args=(--jobs 20 --latency-ms 500) ;;
submit1m.sh) args=(--jobs 2000 --small 200) ;;
webp.sh) args=(--count 2) ;;
backlog.sh) args=(--sizes "200 400" --take 300 --reps 1 --concurrency 5) ;; # both modes: S <= K and S > K
overhead.sh) args=(--rate 20 --seconds 2 --chunk 5 --latency-ms 5 --concurrency 16) ;;
*)
    echo "tests/bench/$name has no smoke arguments: add a line for it to tests/bench/smoke.sh" >&2
    exit 1
    ;;
esac
[[ -f $here/$name ]] || { echo "no tests/bench/$name" >&2; exit 1; }
out=$(mktemp "${TMPDIR:-/tmp}/imgq-bench-smoke.XXXXXX")
trap 'rm -f "$out"' EXIT
echo "tests/bench/$name ${args[*]} --no-build --build-dir $build" >&2
start=$(date +%s%N)
status=0
bash "$here/$name" "${args[@]}" --no-build --build-dir "$build" >"$out" || status=$?
ms=$((($(date +%s%N) - start) / 1000000))
cat "$out"
if ((status != 0)); then
    echo "FAIL: tests/bench/$name exited with status $status after $ms ms" >&2
    exit 1
fi
if ! grep -q '^|---' "$out"; then
    echo "FAIL: tests/bench/$name printed no result table" >&2
    exit 1
fi
echo "bench smoke: tests/bench/$name ran in $ms ms" >&2
