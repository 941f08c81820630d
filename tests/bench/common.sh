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

# gen_catalog N FILE ID-PREFIX [EXTRA-JSON-FIELDS] - the catalog of spine.sh and run
# (product-photo prompts of ~120 characters, gpt-image-1-mini, low, 1024x1024); EXTRA is
# inserted as is before "metadata", e.g. '"output_format":"png",'.
gen_catalog() {
    awk -v n="$1" -v pfx="$3" -v extra="${4:-}" 'BEGIN {
        nm = split("ceramic,walnut,brushed steel,linen,leather,recycled glass,bamboo,matte black,terracotta,oak", mat, ",")
        no = split("coffee mug,desk lamp,table runner,backpack,water bottle,planter,throw pillow,wall clock,serving bowl,notebook,candle holder,chair", obj, ",")
        ns = split("white seamless background,marble countertop,sunlit kitchen,minimalist shelf,rustic wooden table,soft grey backdrop", scene, ",")
        nl = split("soft diffused lighting,golden hour light,studio strobe lighting,natural window light", light, ",")
        for (i = 0; i < n; i++) {
            p = sprintf("Product photo of a %s %s on a %s, %s, sharp focus, catalog style, SKU %06d",
                mat[i % nm + 1], obj[int(i / nm) % no + 1], scene[int(i / (nm * no)) % ns + 1],
                light[int(i / (nm * no * ns)) % nl + 1], i)
            printf "{\"id\":\"%s-%07d\",\"prompt\":\"%s\",\"model\":\"gpt-image-1-mini\",\"quality\":\"low\",\"size\":\"1024x1024\",%s\"metadata\":{\"sku\":\"%07d\"}}\n", pfx, i, p, extra, i
        }
    }' >"$2"
}

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
