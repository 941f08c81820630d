# tests/lib/sim_checks.sh - what the simulator's own tests share: a temporary directory,
# simulators started on ports the kernel picks (--port 0) and stopped on exit, and counting
# checks (ok, bad, expect_eq, expect_has, expect_not) that report every failure, not just the
# first.  Source it after setting SIM_TEST (a name for the temporary directory).
# shellcheck shell=bash disable=SC2034
SRC=${IMGQ_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
BUILD=${IMGQ_BUILD_DIR:-$SRC/build}
SIM=$BUILD/imgq-sim
CATALOG=$SRC/deploy/catalog.json
TMP=$(mktemp -d "${TMPDIR:-/tmp}/imgq-sim-${SIM_TEST:-test}.XXXXXX")
PIDS=()

cleanup() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$TMP"
}
trap cleanup EXIT

FAILS=0
CHECKS=0
ok() { CHECKS=$((CHECKS + 1)); }
bad() {
    CHECKS=$((CHECKS + 1))
    FAILS=$((FAILS + 1))
    echo "FAIL: $*" >&2
}
expect_eq() { if [[ "$2" == "$3" ]]; then ok; else bad "$1: got '$2', want '$3'"; fi; }
expect_has() { if grep -qF -- "$3" "$2"; then ok; else bad "$1: '$3' not in $(head -c 600 "$2")"; fi; }
expect_not() { if grep -qF -- "$3" "$2"; then bad "$1: '$3' unexpectedly in $(head -c 600 "$2")"; else ok; fi; }

[[ -x "$SIM" ]] || { echo "imgq-sim not built at $SIM" >&2; exit 1; }

# start_sim NAME ARGS... : starts a simulator, sets PORT_<NAME> and PID_<NAME>.
start_sim() {
    local name=$1
    shift
    "$SIM" --catalog "$CATALOG" --port 0 "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
    local pid=$!
    PIDS+=("$pid")
    local port=""
    for _ in $(seq 1 100); do
        port=$(sed -n 's|^listening on http://127\.0\.0\.1:\([0-9][0-9]*\)$|\1|p' "$TMP/$name.out" 2>/dev/null || true)
        [[ -n "$port" ]] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if [[ -z "$port" ]]; then
        echo "imgq-sim ($name) did not start:" >&2
        cat "$TMP/$name.err" >&2
        exit 1
    fi
    printf -v "PORT_$name" '%s' "$port"
    printf -v "PID_$name" '%s' "$pid"
}
