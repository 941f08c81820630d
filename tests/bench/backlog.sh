#!/usr/bin/env bash
# tests/bench/backlog.sh - claim cost as the backlog grows (issue 7: 10k, 100k, 1M waiting
# jobs; claim cost must stay flat).
#
#   tests/bench/backlog.sh [--sizes "10000 100000 1000000"] [--take K] [--reps R]
#                          [--concurrency C] [--build-dir DIR] [--no-build]
#
# For each size S: a fresh redis-server filled with S jobs (`imgq submit`, not timed), then
# `imgq-worker --noop --concurrency C` (default 50) processes the first min(S, K) jobs (K
# default 100000).  When S <= K the worker runs with --exit-when-idle and the time is start ->
# the batch's finished_ms (as spine.sh); when S > K it runs until the batch's done count,
# polled every 0.1 s, reaches K, and is then stopped (SIGTERM), the time being start -> that
# poll.  Figures: jobs/s, and redis-server CPU µs per job (utime+stime from /proc/PID/stat over
# the same window / jobs done).  R repetitions (default 3): for S <= K each on a fresh
# fill; for S > K the same fill is processed K jobs at a time, R times (the backlog is then
# S, S-K, S-2K, ... at the start of each).  Prints medians (min-max).
set -euo pipefail
SIZES="10000 100000 1000000"
TAKE=100000
REPS=3
CONC=50
while [[ $# -gt 0 ]]; do
    case $1 in
    --sizes) SIZES=$2; shift 2 ;;
    --take) TAKE=$2; shift 2 ;;
    --reps) REPS=$2; shift 2 ;;
    --concurrency) CONC=$2; shift 2 ;;
    --build-dir) BUILD_DIR=$2; shift 2 ;;
    --no-build) NO_BUILD=1; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
# A size above --take is processed --take jobs per rep from one fill: the reps must fit in it
# (60000 with --take 50000 --reps 3 would measure an emptied queue).
for s in $SIZES; do
    if ((s > TAKE && s < TAKE * REPS + 100)); then
        echo "backlog.sh: size $s cannot hold $REPS reps of --take $TAKE jobs (needs $((TAKE * REPS + 100))): lower --reps or --take, or raise the size" >&2
        exit 2
    fi
done
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
bench_build
imgq_env_setup

RES=$IMGQ_TMP/results.txt
: >"$RES"

fill() { # S
    [[ -z "${REDIS_PID:-}" ]] || { kill -TERM "$REDIS_PID"; wait "$REDIS_PID" 2>/dev/null || true; _imgq_untrack "$REDIS_PID"; }
    start_redis
    [[ -s "$IMGQ_TMP/cat-$1.jsonl" ]] || gen_catalog7 "$1" "$IMGQ_TMP/cat-$1.jsonl" "bk$1"
    "$IMGQ" submit --json --batch bk "$IMGQ_TMP/cat-$1.jsonl" >"$IMGQ_TMP/fill.out"
    grep -q "\"created\":$1\b" "$IMGQ_TMP/fill.out" || fail "fill of $1: $(cat "$IMGQ_TMP/fill.out")"
    FILL_MEM=$(redis_used_memory)
}

# one S WAITING - process min(S, TAKE) jobs; appends "S rate us_per_job waiting_at_start"
one() {
    local s=$1 waiting=$2 t0 t1 r0 r1 pid d n done0
    done0=$(batch_field bk done)
    r0=$(cpu_ticks "$REDIS_PID")
    t0=$(now_ns)
    if ((s <= TAKE)); then
        "$WORKER" --noop --exit-when-idle --concurrency "$CONC" --log-level warn >>"$IMGQ_TMP/worker.log" 2>&1
        r1=$(cpu_ticks "$REDIS_PID")
        n=$s
        d=$(awk -v f="$(batch_field bk finished_ms)" -v t="$t0" 'BEGIN { printf "%.3f", (f * 1e6 - t) / 1e9 }')
    else
        "$WORKER" --noop --concurrency "$CONC" --log-level warn >>"$IMGQ_TMP/worker.log" 2>&1 &
        pid=$!
        track_pid "$pid"
        local want=$((TAKE < s - done0 - CONC ? TAKE : s - done0 - CONC))
        while :; do
            sleep 0.1
            n=$(($(batch_field bk done) - done0))
            ((n >= want)) && break
            kill -0 "$pid" 2>/dev/null || fail "the worker exited"
        done
        t1=$(now_ns)
        r1=$(cpu_ticks "$REDIS_PID")
        kill_pid TERM "$pid"
        d=$(elapsed "$t0" "$t1")
    fi
    echo "$s $(awk -v n="$n" -v d="$d" 'BEGIN { printf "%.0f", n / d }') $(awk -v t=$((r1 - r0)) -v hz="$CLK_TCK" -v n="$n" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }') $waiting $n $FILL_MEM" >>"$RES"
    note "  S=$s waiting=$waiting: $(tail -n 1 "$RES")"
}

for s in $SIZES; do
    if ((s <= TAKE)); then
        for ((r = 1; r <= REPS; r++)); do
            note "size $s, rep $r: fill"
            fill "$s"
            one "$s" "$s"
        done
    else
        note "size $s: fill (once)"
        fill "$s"
        for ((r = 1; r <= REPS; r++)); do
            one "$s" $((s - (r - 1) * TAKE))
        done
    fi
done

echo "## backlog.sh: no-op claim+complete at concurrency $CONC vs jobs waiting"
echo
echo "| jobs waiting at start | jobs measured per rep | jobs/s, median (min-max) | redis-server CPU per job, µs, median (min-max) | Redis used_memory after the fill, MiB |"
echo "|---|---|---|---|---|"
for s in $SIZES; do
    awk -v s="$s" '$1 == s { r[++n] = $2; u[n] = $3; w = w (w ? ", " : "") $4; k = $5; m = $6 }
        function med(a, n,   i, j, t) { for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
            return sprintf("%s (%s-%s)", a[int((n + 1) / 2)], a[1], a[n]) }
        END { printf "| %s | %s | %s | %s | %.0f |\n", w, k, med(r, n), med(u, n), m / 1048576 }' "$RES"
done
echo
machine_facts
echo "- command: \`tests/bench/backlog.sh --sizes \"$SIZES\" --take $TAKE --reps $REPS --concurrency $CONC\`"
