#!/usr/bin/env bash
# tests/bench/submit1m.sh - `imgq submit` of a large catalog (issue 7: 1,000,000 lines under
# 60 s with flat memory).
#
#   tests/bench/submit1m.sh [--jobs N] [--small M] [--build-dir DIR] [--no-build]
#
# Defaults: N=1000000, M=100000.  Generates the catalogs of spine.sh/run (~246-byte lines),
# then on a fresh redis-server each: `imgq submit --json --batch B FILE` under
# `/usr/bin/time -v` (else VmHWM polled from /proc).  Prints wall time, jobs/s, peak RSS of
# the submit for M and N lines, and redis-server's used_memory after.
set -euo pipefail
JOBS=1000000
SMALL=100000
while [[ $# -gt 0 ]]; do
    case $1 in
    --jobs) JOBS=$2; shift 2 ;;
    --small) SMALL=$2; shift 2 ;;
    --build-dir) BUILD_DIR=$2; shift 2 ;;
    --no-build) NO_BUILD=1; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
bench_build
imgq_env_setup
TIME_BIN=
[[ -x /usr/bin/time ]] && TIME_BIN=/usr/bin/time

# run_submit N - prints: wall_s max_rss_kB created used_memory_bytes user_s sys_s
run_submit() {
    local n=$1 cat=$IMGQ_TMP/catalog-$1.jsonl t0 t1 rss created mem u s
    gen_catalog7 "$n" "$cat" "s$n"
    start_redis
    t0=$(now_ns)
    if [[ -n "$TIME_BIN" ]]; then
        "$TIME_BIN" -v -o "$IMGQ_TMP/time-$n.txt" "$IMGQ" submit --json --batch "b$n" "$cat" >"$IMGQ_TMP/submit-$n.out"
        t1=$(now_ns)
        rss=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$IMGQ_TMP/time-$n.txt")
        u=$(awk -F': ' '/User time/ { print $2 }' "$IMGQ_TMP/time-$n.txt")
        s=$(awk -F': ' '/System time/ { print $2 }' "$IMGQ_TMP/time-$n.txt")
    else
        "$IMGQ" submit --json --batch "b$n" "$cat" >"$IMGQ_TMP/submit-$n.out" &
        local pid=$! v
        rss=0
        while kill -0 "$pid" 2>/dev/null; do
            v=$(status_kb "$pid" VmHWM) && [[ -n "$v" ]] && ((v > rss)) && rss=$v
            sleep 0.05
        done
        wait "$pid"
        t1=$(now_ns) u=? s=?
    fi
    created=$(grep -o '"created":[0-9]*' "$IMGQ_TMP/submit-$n.out" | cut -d: -f2)
    mem=$(redis_used_memory)
    redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
    wait_pid "$REDIS_PID" 30 || true
    rm -f "$cat"
    echo "$(elapsed "$t0" "$t1") $rss $created $mem $u $s $(stat -c %s "$IMGQ_TMP/submit-$n.out")"
}

note "submit of $SMALL lines"
read -r W_S R_S C_S M_S U_S S_S _ < <(run_submit "$SMALL")
note "submit of $JOBS lines"
read -r W_L R_L C_L M_L U_L S_L _ < <(run_submit "$JOBS")

RSS_HOW="VmHWM polled"
[[ -n "$TIME_BIN" ]] && RSS_HOW="/usr/bin/time -v"
rate() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.0f", n / s }'; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
echo "## submit1m.sh: \`imgq submit\` of $SMALL and $JOBS lines"
echo
echo "| figure | $SMALL lines | $JOBS lines |"
echo "|---|---|---|"
echo "| jobs created | $C_S | $C_L |"
echo "| wall time, s | $W_S | $W_L |"
echo "| jobs/s | $(rate "$C_S" "$W_S") | $(rate "$C_L" "$W_L") |"
echo "| submit user+sys CPU, s | $U_S+$S_S | $U_L+$S_L |"
echo "| submit peak RSS, MiB ($RSS_HOW) | $(mib "$R_S") | $(mib "$R_L") |"
echo "| redis used_memory after, MiB | $(awk -v b="$M_S" 'BEGIN { printf "%.0f", b / 1048576 }') | $(awk -v b="$M_L" 'BEGIN { printf "%.0f", b / 1048576 }') |"
echo
machine_facts
echo "- command: \`tests/bench/submit1m.sh --jobs $JOBS --small $SMALL\`"
