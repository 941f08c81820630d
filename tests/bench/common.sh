# tests/bench/common.sh - helpers shared by capacity.sh, submit1m.sh, webp.sh and backlog.sh.
# Source it after setting BUILD_DIR (default build-bench/) and, optionally, NO_BUILD=1.
# It sources tests/lib/env.sh (servers on free loopback ports, cleanup whatever happens).

BENCH_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BENCH_ROOT=$(cd "$BENCH_HERE/../.." && pwd)
: "${BUILD_DIR:=$BENCH_ROOT/build-bench}"
export IMGQ_BUILD_DIR=$BUILD_DIR
# shellcheck source=../lib/env.sh
source "$BENCH_ROOT/tests/lib/env.sh"

CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)
IMGQ=$BUILD_DIR/imgq
WORKER=$BUILD_DIR/imgq-worker

bench_build() {
    if [[ "${NO_BUILD:-0}" != 1 ]]; then
        note "building a Release tree in $BUILD_DIR"
        { cmake -S "$BENCH_ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null &&
            cmake --build "$BUILD_DIR" -j"$(nproc)" --target imgq-cli imgq-worker imgq-sim >/dev/null; } ||
            fail "build failed"
    fi
    local b
    for b in "$IMGQ" "$WORKER" "$BUILD_DIR/imgq-sim"; do
        [[ -x "$b" ]] || fail "$b not found: build it, or drop --no-build"
    done
}

now_ns() { date +%s%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b - a) / 1e9 }'; }

# cpu_ticks PID - user+system CPU of a running process, in clock ticks (/proc/PID/stat).
cpu_ticks() {
    awk '{ s = $0; sub(/^.*\) /, "", s); split(s, f, " "); print f[12] + f[13] }' "/proc/$1/stat"
}

# status_kb PID FIELD - a kB figure of /proc/PID/status (VmRSS, VmHWM).
status_kb() { awk -v k="$2:" '$1 == k { print $2; exit }' "/proc/$1/status" 2>/dev/null; }

# shellcheck source=catalog.sh
source "$BENCH_HERE/catalog.sh"
# gen_catalog7 N FILE ID-PREFIX [EXTRA-JSON-FIELDS]: catalog.sh's, with 7-digit ids (up to 1M lines).
gen_catalog7() { gen_catalog "$1" "$2" "$3" "${4:-}" 7; }

# batch_field BATCH FIELD - a number from `imgq batch status BATCH --json`.
batch_field() {
    "$IMGQ" batch status "$1" --json | grep -o "\"$2\":[0-9]*" | head -n 1 | cut -d: -f2
}

redis_used_memory() {
    redis-cli -p "$REDIS_PORT" info memory | awk -F: '/^used_memory:/ { sub("\r", "", $2); print $2 }'
}

machine_facts() {
    echo "- machine: $(nproc) CPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
    echo "- $(redis-server --version | cut -d' ' -f1-3)"
    echo "- imgq commit: $(git -C "$BENCH_ROOT" rev-parse --short HEAD)$(git -C "$BENCH_ROOT" diff --quiet HEAD -- src include workers 2>/dev/null || echo ' (+ uncommitted changes in src/include/workers)')"
    echo "- load before: $(cut -d' ' -f1-3 /proc/loadavg)"
}
