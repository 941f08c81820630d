#!/usr/bin/env bash
# tests/bench/webp.sh - WebP encode throughput, imgq's path vs cwebp at the same settings
# (lossy, quality 85, method 4), all cores (issue 7).
#
#   tests/bench/webp.sh [--count N] [--build-dir DIR] [--no-build]
#
# Builds tests/bench/webpbench.c against the build tree's libimgq.a (imgq_png_decode +
# imgq_webp_encode, the worker's code), then for two 1024x1024 PNGs:
#   photo  - photo-like texture made by `webpbench genpng` (hard to compress, like real output);
#   sim    - the picture imgq-sim serves (a gradient and shapes, what spine.sh's pipeline encodes);
# measures N images (default 64) on nproc threads with webpbench, and N runs of
# `cwebp -quiet -q 85 -m 4 IN.png -o OUT.webp` with `xargs -P nproc` (each run: process start,
# PNG decode, encode, write).  Prints images/s of each.  Needs cwebp (Debian package webp).
set -euo pipefail
COUNT=64
while [[ $# -gt 0 ]]; do
    case $1 in
    --count) COUNT=$2; shift 2 ;;
    --build-dir) BUILD_DIR=$2; shift 2 ;;
    --no-build) NO_BUILD=1; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
if [[ "${NO_BUILD:-0}" != 1 ]]; then
    note "building libimgq (Release) in $BUILD_DIR"
    { cmake -S "$BENCH_ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null &&
        cmake --build "$BUILD_DIR" -j"$(nproc)" --target imgq imgq-sim >/dev/null; } || fail "build failed"
fi
imgq_env_setup
command -v cwebp >/dev/null || fail "cwebp not found (apt-get install -y webp)"
P=$(nproc)

BIN=$IMGQ_TMP/webpbench
# libimgq.a links against every library CMakeLists.txt requires: take the list from there, so
# that a library added to the build cannot be missing here (zlib was: "undefined reference to
# crc32_z").
source "$BENCH_ROOT/tests/lib/cmake_deps.sh"
mapfile -t MODS < <(cmake_pkg_modules "$BENCH_ROOT/CMakeLists.txt" | awk '{ print $2 }')
LIBS=$(pkg-config --libs "${MODS[@]}") || fail "pkg-config does not know all of: ${MODS[*]}"
# shellcheck disable=SC2086
cc -O2 -std=c11 -D_POSIX_C_SOURCE=200809L -I"$BENCH_ROOT/include" -o "$BIN" "$BENCH_HERE/webpbench.c" \
    "$BUILD_DIR/libimgq.a" $LIBS -lm -lpthread || fail "cannot build webpbench.c"

"$BIN" genpng "$IMGQ_TMP/photo.png"
start_sim --latency-ms 0 --seed 1
curl -s -X POST "$OPENAI_BASE_URL/images/generations" -H "Authorization: Bearer $OPENAI_API_KEY" \
    -H 'Content-Type: application/json' \
    -d '{"model":"gpt-image-1-mini","prompt":"Product photo of a walnut desk lamp","quality":"low","size":"1024x1024"}' |
    python3 -c 'import sys, json, base64; sys.stdout.buffer.write(base64.b64decode(json.load(sys.stdin)["data"][0]["b64_json"]))' \
        >"$IMGQ_TMP/sim.png"

echo "## webp.sh: WebP encode, imgq vs cwebp $(cwebp -version), quality 85, method 4, $P threads/processes"
echo
echo "| image (1024x1024) | PNG bytes | imgq decode+encode, images/s | imgq encode only, images/s | cwebp (xargs -P $P), images/s | WebP bytes imgq / cwebp |"
echo "|---|---|---|---|---|---|"
for img in photo sim; do
    in=$IMGQ_TMP/$img.png
    "$BIN" run "$in" 4 "$P" >/dev/null # warm-up
    out=$("$BIN" run "$in" "$COUNT" "$P")
    a=$(awk '/^decode\+encode_ips/ { print $2 }' <<<"$out")
    b=$(awk '/^encode_ips/ { print $2 }' <<<"$out")
    ib=$(awk '/^webp_bytes/ { print $2 }' <<<"$out")
    mkdir -p "$IMGQ_TMP/cw"
    t0=$(now_ns)
    seq "$COUNT" | xargs -P "$P" -I{} cwebp -quiet -q 85 -m 4 "$in" -o "$IMGQ_TMP/cw/{}.webp"
    t1=$(now_ns)
    c=$(awk -v n="$COUNT" -v s="$(elapsed "$t0" "$t1")" 'BEGIN { printf "%.2f", n / s }')
    cb=$(stat -c %s "$IMGQ_TMP/cw/1.webp")
    rm -rf "$IMGQ_TMP/cw"
    echo "| $img | $(stat -c %s "$in") | $a | $b | $c | $ib / $cb |"
done
echo
machine_facts
echo "- command: \`tests/bench/webp.sh --count $COUNT\`; cwebp: \`seq $COUNT | xargs -P $P -I{} cwebp -quiet -q 85 -m 4 IN.png -o {}.webp\`"
