#!/usr/bin/env bash
# tests/bench/spine.sh - throughput of the spine: enqueue, no-op processing, full pipeline.
#
#   tests/bench/spine.sh [--jobs N] [--reps R] [--pipeline-jobs M] [--build-dir DIR]
#                        [--no-build] [--skip-pipeline] [--no-wait]
#
# Builds a Release tree (default build-bench/ in the repository), then, R times, each time on
# a fresh redis-server on a free loopback port:
#   1. enqueue:   `imgq submit` of a generated N-line catalog; jobs/s from the wall time of the
#                 submit command, Redis used_memory delta per job, peak RSS of the submit
#                 (also for an N/10 catalog, to show the RSS does not grow with N);
#   2. no-op:     the queue filled with N jobs, `imgq-worker --noop --exit-when-idle` at
#                 concurrency 1, 50 and the default (256), and two default workers at once;
#   3. pipeline:  M jobs (gpt-image-1-mini, low, 1024x1024) through one worker, imgq-sim at
#                 latency 0 and s3rver; jobs/s, images/s, and the CPU each process used.
# Prints medians (and min-max) over the R repetitions as a table, then the machine facts.
# On a shared machine, each measurement first waits (up to 120 s) until other processes use
# less than 15% of a core, and is taken again (up to twice) if they took more meanwhile;
# --no-wait measures at once, whatever else runs.
# Progress goes to stderr, the results to stdout.  See tests/bench/README.md.
set -euo pipefail

ORIG_ARGS="$*"
JOBS=100000
REPS=3
PJOBS=1000
BUILD=1
PIPELINE=1
WAIT_IDLE=120 # seconds to wait, before a measurement, for others to leave the CPU
MAX_OTHER=15  # % of one core that others may take during a measurement
RETRIES=2     # measurements taken again when others took more
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BUILD_DIR=$ROOT/build-bench

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
    exit "${1:-0}"
}

die() {
    echo "spine.sh: $*" >&2
    exit 2
}

posint() { # NAME VALUE
    [[ "$2" =~ ^[1-9][0-9]*$ ]] || die "$1 wants a positive integer, got '$2'"
}

while [[ $# -gt 0 ]]; do
    case $1 in
    --jobs) [[ $# -ge 2 ]] || die "--jobs needs a value"; posint --jobs "$2"; JOBS=$2; shift 2 ;;
    --jobs=*) posint --jobs "${1#*=}"; JOBS=${1#*=}; shift ;;
    --reps) [[ $# -ge 2 ]] || die "--reps needs a value"; posint --reps "$2"; REPS=$2; shift 2 ;;
    --reps=*) posint --reps "${1#*=}"; REPS=${1#*=}; shift ;;
    --pipeline-jobs) [[ $# -ge 2 ]] || die "--pipeline-jobs needs a value"
        posint --pipeline-jobs "$2"; PJOBS=$2; shift 2 ;;
    --pipeline-jobs=*) posint --pipeline-jobs "${1#*=}"; PJOBS=${1#*=}; shift ;;
    --build-dir) [[ $# -ge 2 ]] || die "--build-dir needs a value"; BUILD_DIR=$2; shift 2 ;;
    --build-dir=*) BUILD_DIR=${1#*=}; shift ;;
    --no-build) BUILD=0; shift ;;
    --no-wait) WAIT_IDLE=0 RETRIES=0; shift ;;
    --skip-pipeline) PIPELINE=0; shift ;;
    -h | --help) usage 0 ;;
    *) echo "spine.sh: unknown argument '$1'" >&2; usage 2 >&2 ;;
    esac
done
[[ "$BUILD_DIR" == /* ]] || BUILD_DIR=$PWD/$BUILD_DIR

for tool in redis-server redis-cli awk sort date; do
    command -v "$tool" >/dev/null || die "$tool is not installed (Debian: redis-server, gawk/mawk, coreutils)"
done
((BUILD)) && { command -v cmake >/dev/null || die "cmake is not installed (or pass --no-build)"; }
if ((PIPELINE)); then
    command -v s3rver >/dev/null ||
        die "s3rver is not installed (npm install -g s3rver), or pass --skip-pipeline"
fi
[[ -r /proc/self/stat ]] || die "/proc is not mounted: CPU and memory figures need it"
TIME_BIN=
[[ -x /usr/bin/time ]] && /usr/bin/time -f %M -o /dev/null true 2>/dev/null && TIME_BIN=/usr/bin/time

IMGQ_BUILD_DIR=$BUILD_DIR
export IMGQ_BUILD_DIR
# shellcheck source=../lib/env.sh
source "$ROOT/tests/lib/env.sh"
imgq_env_setup

# The bench is hermetic: nothing from the developer's imgq configuration applies.
unset IMGQ_CONFIG IMGQ_QUEUE IMGQ_PREFIX
export IMGQ_CATALOG=$ROOT/deploy/catalog.json
[[ -r "$IMGQ_CATALOG" ]] || die "$IMGQ_CATALOG not found"

# ---- build --------------------------------------------------------------------------------

if ((BUILD)); then
    note "building a Release tree in $BUILD_DIR"
    { cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release &&
        cmake --build "$BUILD_DIR" -j"$(nproc)" --target imgq-cli imgq-worker imgq-sim; } \
        >"$IMGQ_TMP/build.log" 2>&1 || fail "the build failed (its log follows)"
else
    bt=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$BUILD_DIR/CMakeCache.txt" 2>/dev/null || true)
    [[ "$bt" == Release ]] || note "warning: $BUILD_DIR is not a Release build ('${bt:-unknown}')"
fi
IMGQ=$BUILD_DIR/imgq
WORKER=$BUILD_DIR/imgq-worker
for b in "$IMGQ" "$WORKER" "$BUILD_DIR/imgq-sim"; do
    [[ -x "$b" ]] || fail "$b not found: build it, or drop --no-build"
done

# ---- the catalog --------------------------------------------------------------------------

# shellcheck source=catalog.sh
source "$ROOT/tests/bench/catalog.sh" # gen_catalog: N distinct product-photo jobs

SMALL=$((JOBS / 10 > 0 ? JOBS / 10 : 1))
CAT=$IMGQ_TMP/catalog-$JOBS.jsonl
CAT_SMALL=$IMGQ_TMP/catalog-$SMALL.jsonl
CAT_PIPE=$IMGQ_TMP/catalog-pipeline-$PJOBS.jsonl
note "generating catalogs of $JOBS, $SMALL and $PJOBS jobs"
gen_catalog "$JOBS" "$CAT" sku
gen_catalog "$SMALL" "$CAT_SMALL" small
gen_catalog "$PJOBS" "$CAT_PIPE" pipe
PROMPT_LEN=$(awk -F'"prompt":"' '{split($2, a, "\""); s += length(a[1])} END {printf "%.0f", s / NR}' "$CAT")

# ---- measuring ----------------------------------------------------------------------------

CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)
REDIS_PID= S3_PID= SIM_PID=

now_ns() { date +%s%N; }

# cpu_ticks PID - user+system CPU of a running process, in clock ticks (/proc/PID/stat).
cpu_ticks() {
    awk '{ s = $0; sub(/^.*\) /, "", s); split(s, f, " "); print f[12] + f[13] }' "/proc/$1/stat"
}

# busy_ticks - CPU ticks the whole machine spent not idle (/proc/stat: user nice system irq
# softirq steal).  Minus the CPU of our own processes, it tells what others took meanwhile.
busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }

# CPU of the children this shell has waited for, from the `times` builtin (no fork: a
# subshell would report its own children).  Only the measured commands run between two
# snapshots, so the difference is their CPU.
cpu_snapshot() { times >"$1"; }
cpu_between() { # FILE0 FILE1 -> seconds
    awk 'FNR == 2 { t = 0; for (i = 1; i <= 2; i++) { split($i, p, "m"); sub("s", "", p[2]); t += p[1] * 60 + p[2] }
                    if (NR == FNR) a = t; else b = t }
         END { printf "%.3f", b - a }' "$1" "$2"
}
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b - a) / 1e9 }'; }

# A FIFO nobody writes to: `read -t` on it is a sleep without a fork.
mkfifo "$IMGQ_TMP/.tick"
exec {TICK_FD}<>"$IMGQ_TMP/.tick"

# rss_poll PID FILE - follow PID's peak RSS (VmHWM, a high-water mark) until it exits.
rss_poll() {
    local pid=$1 out=$2 max=0 k v _
    while kill -0 "$pid" 2>/dev/null; do
        { while read -r k v _; do
            [[ "$k" == VmHWM: ]] && ((v > max)) && max=$v
        done <"/proc/$pid/status"; } 2>/dev/null || true
        echo "$max" >"$out"
        read -r -t 0.05 -u "$TICK_FD" _ || true
    done
}

# measure NAME COMMAND... - run COMMAND in the foreground, output in $IMGQ_TMP/NAME.{out,log};
# sets M_WALL (s), M_CPU (s, user+sys) and M_RSS (peak kB, from /usr/bin/time when it is
# there, else polled from /proc).  A failing command fails the bench.
measure() {
    local name=$1 t0 t1 rc=0 pid poller=
    shift
    echo 0 >"$IMGQ_TMP/$name.rss"
    cpu_snapshot "$IMGQ_TMP/.cpu0"
    t0=$(now_ns)
    if [[ -n "$TIME_BIN" ]]; then
        "$TIME_BIN" -f %M -o "$IMGQ_TMP/$name.rss" "$@" >"$IMGQ_TMP/$name.out" 2>"$IMGQ_TMP/$name.log" || rc=$?
    else
        "$@" >"$IMGQ_TMP/$name.out" 2>"$IMGQ_TMP/$name.log" &
        pid=$!
        rss_poll "$pid" "$IMGQ_TMP/$name.rss" &
        poller=$!
        wait "$pid" || rc=$?
    fi
    t1=$(now_ns)
    cpu_snapshot "$IMGQ_TMP/.cpu1"
    [[ -n "$poller" ]] && { wait "$poller" || true; }
    ((rc == 0)) || fail "'$*' exited with status $rc; its last lines: $(tail -n 5 "$IMGQ_TMP/$name.log")"
    M_WALL=$(elapsed "$t0" "$t1")
    M_CPU=$(cpu_between "$IMGQ_TMP/.cpu0" "$IMGQ_TMP/.cpu1")
    M_RSS=$(tail -n 1 "$IMGQ_TMP/$name.rss")
}

# measure_workers NAME COUNT WORKER-ARGS... - COUNT workers started together; M_T0 their start
# (ns), M_WALL until the last one exits, M_CPU of all of them, M_RSS the largest peak.  The
# workers run as direct children (RSS polled from /proc), so that the cleanup of env.sh can
# stop them if the bench is interrupted.
measure_workers() {
    local name=$1 count=$2 t0 t1 i rc=0 rss
    shift 2
    local -a pids=() pollers=()
    cpu_snapshot "$IMGQ_TMP/.cpu0"
    t0=$(now_ns)
    M_T0=$t0
    for ((i = 1; i <= count; i++)); do
        "$WORKER" "$@" >"$IMGQ_TMP/$name-$i.log" 2>&1 &
        pids+=($!)
        track_pid "$!"
    done
    for ((i = 1; i <= count; i++)); do
        echo 0 >"$IMGQ_TMP/$name-$i.rss"
        rss_poll "${pids[i - 1]}" "$IMGQ_TMP/$name-$i.rss" &
        pollers+=($!)
    done
    for i in "${!pids[@]}"; do
        wait "${pids[$i]}" || rc=$?
    done
    t1=$(now_ns)
    cpu_snapshot "$IMGQ_TMP/.cpu1"
    for i in "${!pids[@]}"; do
        _imgq_untrack "${pids[$i]}"
    done
    wait "${pollers[@]}" || true
    ((rc == 0)) || fail "a worker of '$name' exited with status $rc (logs: $IMGQ_TMP/$name-*.log)"
    M_WALL=$(elapsed "$t0" "$t1")
    M_CPU=$(cpu_between "$IMGQ_TMP/.cpu0" "$IMGQ_TMP/.cpu1")
    M_RSS=0
    for ((i = 1; i <= count; i++)); do
        rss=$(tail -n 1 "$IMGQ_TMP/$name-$i.rss")
        ((rss > M_RSS)) && M_RSS=$rss
    done
    return 0
}

redis_used_memory() {
    redis-cli -p "$REDIS_PORT" info memory | awk -F: '/^used_memory:/ { sub("\r", "", $2); print $2 }'
}

stop_pid() { # stop a server started through env.sh and forget it
    kill -TERM "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    _imgq_untrack "$1"
}

fresh_redis() {
    [[ -z "$REDIS_PID" ]] || stop_pid "$REDIS_PID"
    start_redis
}

# batch_field BATCH FIELD - a number from `imgq batch status BATCH --json`.
batch_field() {
    "$IMGQ" batch status "$1" --json | grep -o "\"$2\":[0-9]*" | head -n 1 | cut -d: -f2
}

# submit_checked NAME FILE BATCH EXPECTED - submit, measured; fail unless EXPECTED were created.
submit_checked() {
    measure "$1" "$IMGQ" submit --json --batch "$3" "$2"
    local created
    created=$(grep -o '"created":[0-9]*' "$IMGQ_TMP/$1.out" | cut -d: -f2)
    assert_eq "$4" "$created" "jobs created by imgq submit of $2"
}

assert_batch_done() { # BATCH EXPECTED
    assert_eq "$2" "$(batch_field "$1" done)" "jobs done in batch $1"
    assert_eq "0" "$(batch_field "$1" failed)" "jobs failed in batch $1"
}

# drain BATCH - seconds from the workers' start (M_T0) to the batch's "finished" stamp, which the
# completion of its last job writes: the processing time, without the workers' exit.
drain() {
    local fin
    fin=$(batch_field "$1" finished_ms)
    [[ -n "$fin" ]] || fail "batch $1 has no finished stamp"
    awk -v f="$fin" -v t="$M_T0" 'BEGIN { d = (f * 1e6 - t) / 1e9; if (d < 0.001) d = 0.001; printf "%.3f", d }'
}

# Results: one line per sample, "KEY VALUE", medians taken at the end.  A measurement records
# into PENDING; it is kept (appended to SAMPLES) or, when others disturbed it, taken again.
SAMPLES=$IMGQ_TMP/samples.txt
PENDING=$IMGQ_TMP/pending.txt
: >"$SAMPLES"
record() { echo "$1 $2" >>"$PENDING"; }
rate() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.1f", n / s }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b > 0 ? a / b : 0) }'; }
ticks_share() { awk -v t="$1" -v hz="$CLK_TCK" -v w="$2" 'BEGIN { printf "%.3f", t / hz / w }'; }
per_job_us() { awk -v t="$1" -v hz="$CLK_TCK" -v n="$2" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }'; }
ticks() { awk -v s="$1" -v hz="$CLK_TCK" 'BEGIN { printf "%.0f", s * hz }'; }

# record_other BUSY-TICKS OUR-TICKS SECONDS - CPU other processes used during a measurement,
# as a share of one core; also left in OTHER_PCT (integer percent).
record_other() {
    local x
    x=$(awk -v b="$1" -v o="$2" -v hz="$CLK_TCK" -v w="$3" \
        'BEGIN { x = (b - o) / hz / w; if (x < 0) x = 0; printf "%.3f", x }')
    record other_cpu "$x"
    OTHER_PCT=$(awk -v x="$x" 'BEGIN { printf "%.0f", x * 100 }')
}

# others_pct SECONDS - CPU the whole machine used over SECONDS, % of one core (nothing of ours
# runs meanwhile).
others_pct() {
    local b0
    b0=$(busy_ticks)
    sleep "$1"
    awk -v b=$(($(busy_ticks) - b0)) -v hz="$CLK_TCK" -v s="$1" 'BEGIN { printf "%.0f", b / hz / s * 100 }'
}

# wait_idle - before a measurement, wait (up to WAIT_IDLE seconds) until other processes leave
# the CPU alone: on a shared machine, their load would be measured as ours.
wait_idle() {
    ((WAIT_IDLE > 0)) || return 0
    local waited=0 busy
    while busy=$(others_pct 1) && ((busy > MAX_OTHER)); do
        ((waited == 0)) && note "  waiting for other processes to leave the CPU (${busy}% of a core)"
        waited=$((waited + 1))
        if ((waited >= WAIT_IDLE)); then
            note "  still ${busy}% busy after ${WAIT_IDLE}s: measuring anyway"
            return 0
        fi
    done
}

# attempt NAME FUNCTION ARGS... - run a measurement, again (up to RETRIES more times) while
# others took more than MAX_OTHER% of a core during it; keep the last one's samples.
attempt() {
    local what=$1 try
    shift
    for ((try = 0; ; try++)); do
        : >"$PENDING"
        "$@"
        if ((OTHER_PCT <= MAX_OTHER || try >= RETRIES)); then
            ((OTHER_PCT <= MAX_OTHER)) || DISTURBED=$((DISTURBED + 1))
            cat "$PENDING" >>"$SAMPLES"
            return 0
        fi
        RETRIED=$((RETRIED + 1))
        note "  $what: other processes took ${OTHER_PCT}% of a core meanwhile; measuring again"
    done
}

# ---- the measurements ---------------------------------------------------------------------

enqueue() { # REP
    fresh_redis
    local mem0 mem1 r0 r1 b0 b1
    wait_idle
    mem0=$(redis_used_memory) r0=$(cpu_ticks "$REDIS_PID") b0=$(busy_ticks)
    submit_checked "submit-$1" "$CAT" enq "$JOBS"
    b1=$(busy_ticks) r1=$(cpu_ticks "$REDIS_PID") mem1=$(redis_used_memory)
    record_other $((b1 - b0)) $(($(ticks "$M_CPU") + r1 - r0)) "$M_WALL"
    record enq_rate "$(rate "$JOBS" "$M_WALL")"
    record enq_cpu_us "$(awk -v c="$M_CPU" -v n="$JOBS" 'BEGIN { printf "%.1f", c * 1e6 / n }')"
    record enq_rus "$(per_job_us $((r1 - r0)) "$JOBS")"
    record enq_mem "$(awk -v a="$mem0" -v b="$mem1" -v n="$JOBS" 'BEGIN { printf "%.0f", (b - a) / n }')"
    record enq_rss "$M_RSS"
    submit_checked "submit-small-$1" "$CAT_SMALL" enq-small "$SMALL"
    record enq_rss_small "$M_RSS"
}

noop() { # REP KEY WORKERS [WORKER-ARGS...]
    local rep=$1 key=$2 nworkers=$3 r0 r1 b0 b1 d
    shift 3
    fresh_redis
    submit_checked "fill-$key-$rep" "$CAT" noop "$JOBS"
    wait_idle
    r0=$(cpu_ticks "$REDIS_PID") b0=$(busy_ticks)
    measure_workers "noop-$key-$rep" "$nworkers" --noop --exit-when-idle --log-level warn "$@"
    b1=$(busy_ticks) r1=$(cpu_ticks "$REDIS_PID")
    record_other $((b1 - b0)) $(($(ticks "$M_CPU") + r1 - r0)) "$M_WALL"
    assert_batch_done noop "$JOBS"
    d=$(drain noop)
    record "noop_${key}_rate" "$(rate "$JOBS" "$d")"
    record "noop_${key}_exit" "$(awk -v w="$M_WALL" -v d="$d" 'BEGIN { printf "%.2f", w - d }')"
    record "noop_${key}_wcpu" "$(ratio "$M_CPU" "$d")"
    record "noop_${key}_rcpu" "$(ticks_share $((r1 - r0)) "$d")"
    record "noop_${key}_rus" "$(per_job_us $((r1 - r0)) "$JOBS")"
    record "noop_${key}_rss" "$M_RSS"
}

pipeline() { # REP
    local r0 r1 s0 s1 o0 o1 b0 b1 d images
    fresh_redis
    if [[ -n "$S3_PID" ]]; then
        stop_pid "$S3_PID"
        rm -rf "${IMGQ_TMP:?}/s3-$S3_PORT" # the previous run's objects
    fi
    [[ -z "$SIM_PID" ]] || stop_pid "$SIM_PID"
    start_s3 imgq-bench
    start_sim --latency-ms 0 --seed 1
    submit_checked "fill-pipe-$1" "$CAT_PIPE" pipe "$PJOBS"
    wait_idle
    r0=$(cpu_ticks "$REDIS_PID") s0=$(cpu_ticks "$SIM_PID") o0=$(cpu_ticks "$S3_PID") b0=$(busy_ticks)
    measure_workers "pipe-$1" 1 --exit-when-idle --log-level warn
    b1=$(busy_ticks) r1=$(cpu_ticks "$REDIS_PID") s1=$(cpu_ticks "$SIM_PID") o1=$(cpu_ticks "$S3_PID")
    record_other $((b1 - b0)) $(($(ticks "$M_CPU") + r1 - r0 + s1 - s0 + o1 - o0)) "$M_WALL"
    assert_batch_done pipe "$PJOBS"
    images=$(batch_field pipe images)
    assert_eq "$PJOBS" "$images" "images stored by the pipeline batch"
    d=$(drain pipe)
    record pipe_rate "$(rate "$PJOBS" "$d")"
    record pipe_irate "$(rate "$images" "$d")"
    record pipe_exit "$(awk -v w="$M_WALL" -v d="$d" 'BEGIN { printf "%.2f", w - d }')"
    record pipe_wcpu "$(ratio "$M_CPU" "$d")"
    record pipe_wms "$(awk -v c="$M_CPU" -v n="$images" 'BEGIN { printf "%.1f", c * 1e3 / n }')"
    record pipe_rcpu "$(ticks_share $((r1 - r0)) "$d")"
    record pipe_scpu "$(ticks_share $((s1 - s0)) "$d")"
    record pipe_ocpu "$(ticks_share $((o1 - o0)) "$d")"
    record pipe_rss "$M_RSS"
    record pipe_bytes "$(du -cb -- "$IMGQ_TMP/s3-$S3_PORT"/imgq-bench/images/*/*._S3rver_object |
        awk -v n="$images" 'END { printf "%.0f", $1 / n }')"
}

# ---- the repetitions ----------------------------------------------------------------------

# Is anything else busy?  Others' CPU lowers every figure; it is measured during each run too.
IDLE_OTHER=$(others_pct 2)
((IDLE_OTHER <= MAX_OTHER)) ||
    note "warning: other processes use ${IDLE_OTHER}% of a core before the bench starts"
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
RETRIED=0 DISTURBED=0 OTHER_PCT=0

START_NS=$(now_ns)
for ((rep = 1; rep <= REPS; rep++)); do
    note "rep $rep/$REPS: enqueue $JOBS jobs"
    attempt enqueue enqueue "$rep"
    # A fresh, filled queue for every configuration.
    note "rep $rep/$REPS: no-op, concurrency 1"
    attempt "no-op c1" noop "$rep" c1 1 --concurrency 1
    note "rep $rep/$REPS: no-op, concurrency 50"
    attempt "no-op c50" noop "$rep" c50 1 --concurrency 50
    note "rep $rep/$REPS: no-op, default concurrency"
    attempt "no-op default" noop "$rep" cdef 1
    note "rep $rep/$REPS: no-op, 2 workers"
    attempt "no-op 2 workers" noop "$rep" w2 2
    if ((PIPELINE)); then
        note "rep $rep/$REPS: pipeline, $PJOBS jobs through imgq-sim (latency 0), s3rver, one worker"
        attempt pipeline pipeline "$rep"
    fi
done
ELAPSED=$(awk -v a="$START_NS" -v b="$(now_ns)" 'BEGIN { printf "%.0f", (b - a) / 1e9 }')

# ---- the report ---------------------------------------------------------------------------

# summ KEY - "median (min–max)" of KEY's samples: *cpu keys as % of one core, *rss in MiB.
summ() {
    awk -v k="$1" '$1 == k { print $2 }' "$SAMPLES" | sort -g | awk -v k="$1" '
        { v[NR] = $1 }
        END {
            if (NR == 0) { print "-"; exit }
            m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            lo = v[1]; hi = v[NR]
            if (k ~ /cpu$/) { f = "%.0f%%"; m *= 100; lo *= 100; hi *= 100 }
            else if (k ~ /rss/) { f = "%.1f"; m /= 1024; lo /= 1024; hi /= 1024 }
            else if (k ~ /exit$/) f = "%.2f"
            else f = m >= 1000 ? "%.0f" : "%.1f"
            s = sprintf(f, m)
            if (NR > 1) s = s sprintf(" (" f "–" f ")", lo, hi)
            print s
        }'
}
row() { printf '| %s | %s | %s |\n' "$1" "$(summ "$2")" "$3"; }

RSS_HOW="/proc/PID/status VmHWM, polled"
[[ -n "$TIME_BIN" ]] && RSS_HOW='`/usr/bin/time -f %M`'
echo
echo "## imgq spine benchmark: medians of $REPS runs (min–max)"
echo
echo "| figure | median (min–max) | command / source |"
echo "|---|---|---|"
row "**enqueue**, jobs/s ($JOBS jobs)" enq_rate "\`imgq submit --batch enq catalog-$JOBS.jsonl\`: wall time of the command"
row "  submit CPU per job, µs (both passes)" enq_cpu_us "user+sys of the submit process / jobs"
row "  redis-server CPU per job, µs" enq_rus "/proc/PID/stat of redis-server, delta / jobs"
row "  Redis used_memory per waiting job, bytes" enq_mem "\`redis-cli info memory\`: used_memory delta / jobs"
row "  submit peak RSS, MiB, $JOBS jobs" enq_rss "$RSS_HOW"
row "  submit peak RSS, MiB, $SMALL jobs" enq_rss_small "same, \`imgq submit --batch enq-small catalog-$SMALL.jsonl\`"
W="imgq-worker --noop --exit-when-idle"
for cfg in "c1|concurrency 1|$W --concurrency 1" "c50|concurrency 50|$W --concurrency 50" \
    "cdef|default concurrency (256)|$W" "w2|2 workers at once, 256 each|$W (twice)"; do
    IFS='|' read -r key what cmd <<<"$cfg"
    row "**no-op processing**, jobs/s, $what" "noop_${key}_rate" "\`$cmd\` on $JOBS queued jobs: start → last job done"
    row "  exit after the last job, s" "noop_${key}_exit" "process wall time − the above"
    row "  worker CPU, % of one core" "noop_${key}_wcpu" "user+sys of the worker(s) / processing time"
    row "  redis-server CPU, % of one core" "noop_${key}_rcpu" "/proc/PID/stat of redis-server"
    row "  redis-server CPU per job, µs" "noop_${key}_rus" "same, / jobs"
done
if ((PIPELINE)); then
    P="\`imgq-worker --exit-when-idle\`; \`imgq-sim --latency-ms 0\`; s3rver"
    row "**full pipeline**, jobs/s ($PJOBS jobs)" pipe_rate "$P: start → last job done"
    row "  images/s (1024x1024 low, PNG → WebP → S3)" pipe_irate "same; images from \`imgq batch status\`"
    row "  exit after the last job, s" pipe_exit "process wall time − the above"
    row "  imgq-worker CPU per image, ms" pipe_wms "user+sys of the worker / images"
    row "  CPU, % of one core: imgq-worker" pipe_wcpu "user+sys of the worker / processing time"
    row "  CPU, % of one core: imgq-sim" pipe_scpu "/proc/PID/stat"
    row "  CPU, % of one core: s3rver (node)" pipe_ocpu "/proc/PID/stat"
    row "  CPU, % of one core: redis-server" pipe_rcpu "/proc/PID/stat"
    row "  worker peak RSS, MiB" pipe_rss "/proc/PID/status VmHWM, polled"
    row "  stored object size, bytes per image" pipe_bytes "sizes of the objects s3rver wrote"
fi
echo
echo "CPU that other processes used during the kept measurements (/proc/stat busy minus ours), % of"
echo "one core: $(summ other_cpu); before the start: ${IDLE_OTHER}%; load average at the start: $LOAD0."
echo "Measurements taken again because others took more than ${MAX_OTHER}% of a core: $RETRIED."
if ((DISTURBED)); then
    echo "**Warning: $DISTURBED kept measurements were disturbed by other processes (> ${MAX_OTHER}% of a core): their figures are low.**"
fi
echo
echo "### machine"
echo
commit=$(git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
if [[ "$commit" != unknown ]] &&
    [[ -n "$(git -C "$ROOT" status --porcelain -- src include workers deploy/catalog.json CMakeLists.txt 2>/dev/null)" ]]; then
    commit="$commit + uncommitted changes in src/include/workers"
fi
cpu=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
[[ -n "$cpu" ]] || cpu=$(awk -F': *' '/^(Hardware|CPU part|cpu model)/ { print $2; exit }' /proc/cpuinfo)
echo "- nproc: $(nproc); CPU: ${cpu:-unknown}; memory: $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
echo "- kernel: $(uname -sr)"
echo "- $(redis-server --version)"
if ((PIPELINE)); then
    echo "- s3rver $(s3rver --version 2>/dev/null || echo '?'), node $(node --version 2>/dev/null || echo '?')"
fi
echo "- imgq commit: $commit; build: ${BUILD_DIR#"$IMGQ_ROOT"/} ($(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$BUILD_DIR/CMakeCache.txt" 2>/dev/null || echo '?'), imgq-worker built $(date -u -r "$WORKER" '+%Y-%m-%d %H:%M UTC'))"
echo "- catalog: gpt-image-1-mini, quality low, 1024x1024, n=1; prompts of $PROMPT_LEN characters on average"
echo "- command: \`tests/bench/spine.sh${ORIG_ARGS:+ $ORIG_ARGS}\` (jobs $JOBS, reps $REPS, pipeline jobs $PJOBS$( ((PIPELINE)) || echo ', pipeline skipped')); ${ELAPSED} s of measuring"
