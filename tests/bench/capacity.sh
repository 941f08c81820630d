#!/usr/bin/env bash
# tests/bench/capacity.sh - in-flight capacity of one worker (issue 7): N provider calls held
# open at once against imgq-sim with a long latency.
#
#   tests/bench/capacity.sh [--jobs N] [--latency-ms MS] [--build-dir DIR] [--no-build]
#
# Defaults: N=10000, latency 5000 ms.  Starts redis-server, s3rver and imgq-sim on free loopback
# ports, submits N jobs (gpt-image-1-mini, low, 1024x1024, output_format png: the simulator's
# PNG is stored as it comes, no re-encode, so the figure is the worker's cost of holding
# calls, not libwebp's), then runs `imgq-worker --concurrency N --exit-when-idle`.  Samples the
# worker's /proc/PID/{stat,status,fd} every 0.2 s.  Prints peak RSS (VmHWM), RSS per in-flight
# job, worker CPU % over the waiting window (the samples while >= 95% of the peak number of
# file descriptors are open and no job has finished yet), jobs done/failed and total time.
# Raises `ulimit -n` to the hard limit (each in-flight call is one socket).
set -euo pipefail
JOBS=10000
LAT=5000
while [[ $# -gt 0 ]]; do
    case $1 in
    --jobs) JOBS=$2; shift 2 ;;
    --latency-ms) LAT=$2; shift 2 ;;
    --build-dir) BUILD_DIR=$2; shift 2 ;;
    --no-build) NO_BUILD=1; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
bench_build
imgq_env_setup

NOFILE0=$(ulimit -n)
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)
((NOFILE > JOBS + 200)) || note "warning: ulimit -n is $NOFILE, below $JOBS sockets + overhead"

start_redis
start_s3 imgq-bench
start_sim --latency-ms "$LAT" --seed 1
CAT=$IMGQ_TMP/cap.jsonl
gen_catalog7 "$JOBS" "$CAT" cap '"output_format":"png",'
"$IMGQ" submit --json --batch cap "$CAT" >"$IMGQ_TMP/submit.out"
note "submitted $(grep -o '"created":[0-9]*' "$IMGQ_TMP/submit.out"); starting the worker (concurrency $JOBS)"

SAMPLES=$IMGQ_TMP/samples.txt
t0=$(now_ns)
"$WORKER" --concurrency "$JOBS" --exit-when-idle --log-level "${CAPACITY_LOG_LEVEL:-warn}" >"$IMGQ_TMP/worker.log" 2>&1 &
WPID=$!
track_pid "$WPID"
# sample: t_ns ticks rss_kB hwm_kB fds done
: >"$SAMPLES"
done_n=0
i=0
while kill -0 "$WPID" 2>/dev/null; do
    t=$(now_ns)
    tk=$(cpu_ticks "$WPID" 2>/dev/null) || break
    # The worker may exit between two reads: its /proc entry is then gone (set -e and pipefail
    # would stop the script on the failed read), and the sampling is over.
    rss=$(status_kb "$WPID" VmRSS) && hwm=$(status_kb "$WPID" VmHWM) || break
    fds=$(ls "/proc/$WPID/fd" 2>/dev/null | wc -l) || break
    # the done count costs a process: every 5th sample only
    if ((i % 5 == 0)); then done_n=$(batch_field cap done 2>/dev/null || echo "$done_n"); fi
    echo "$t $tk $rss $hwm $fds ${done_n:-0}" >>"$SAMPLES"
    i=$((i + 1))
    sleep 0.2
    (($(elapsed "$t0" "$(now_ns)" | cut -d. -f1) < 170)) || { note "still running after 170 s: stopping"; break; }
done
rc=0
wait_pid "$WPID" 30 || rc=$?
t1=$(now_ns)
WALL=$(elapsed "$t0" "$t1")

DONE=$(batch_field cap done) FAILED=$(batch_field cap failed) FIN=$(batch_field cap finished_ms || true)
DRAIN=$(awk -v f="${FIN:-0}" -v t="$t0" 'BEGIN { if (f > 0) printf "%.2f", (f * 1e6 - t) / 1e9; else print "n/a" }')
read -r HWM MAXFD < <(awk '{ if ($4 > h) h = $4; if ($5 > m) m = $5 } END { print h + 0, m + 0 }' "$SAMPLES")
# waiting window: the calls go out from the first sample with fds above 5% of the peak; none can
# be answered before LAT ms later.  The window is the samples in between (minus 0.2 s) whose fd
# count is >= 95% of the peak before the answers.
read -r WIN CPU_PCT NW RSSW RSS0 < <(awk -v lat="$LAT" -v hz="$CLK_TCK" '
    { t[NR] = $1; k[NR] = $2; r[NR] = $3; f[NR] = $5; if ($5 > m) m = $5 }
    END {
        for (i = 1; i <= NR; i++) if (f[i] > 0.05 * m) { ts = t[i]; r0 = r[i > 1 ? i - 1 : 1]; break }
        te = ts + (lat - 200) * 1e6
        for (i = 1; i <= NR; i++) if (t[i] < te && f[i] > p) p = f[i]
        for (i = 1; i <= NR; i++) if (t[i] < te && f[i] >= 0.95 * p) {
            if (!n) { a = t[i]; ka = k[i] } b = t[i]; kb = k[i]; n++; if (r[i] > rr) rr = r[i] }
        w = (b - a) / 1e9
        printf "%.2f %.1f %d %d %d\n", w, (w > 0 ? (kb - ka) / hz / w * 100 : -1), n, rr, r0
    }' "$SAMPLES")
SIM_CONN=$(ls "/proc/$SIM_PID/fd" 2>/dev/null | wc -l)

echo "## capacity.sh: one worker, $JOBS jobs in flight, imgq-sim latency $LAT ms"
echo
echo "| figure | value |"
echo "|---|---|"
echo "| jobs done / failed (of $JOBS) | $DONE / $FAILED |"
echo "| worker exit status | $rc |"
echo "| total time: worker start -> last completion (batch finished_ms), s | $DRAIN |"
echo "| worker wall time (start -> exit), s | $WALL |"
echo "| peak open fds of the worker | $MAXFD |"
echo "| worker peak RSS (VmHWM), MiB | $(awk -v k="$HWM" 'BEGIN { printf "%.1f", k / 1024 }') |"
echo "| worker VmRSS before the calls (last sample with < 5% of the peak fds) / max while waiting, MiB | $(awk -v k="$RSS0" 'BEGIN { printf "%.1f", k / 1024 }') / $(awk -v k="$RSSW" 'BEGIN { printf "%.1f", k / 1024 }') |"
echo "| RSS per in-flight job while waiting, KiB ((max VmRSS while waiting - VmRSS before the calls) / $JOBS) | $(awk -v k="$RSSW" -v z="$RSS0" -v n="$JOBS" 'BEGIN { printf "%.1f", (k - z) / n }') |"
echo "| peak RSS per job, KiB (VmHWM over the whole run / $JOBS) | $(awk -v k="$HWM" -v n="$JOBS" 'BEGIN { printf "%.1f", k / n }') |"
echo "| worker CPU while waiting, % of one core | $CPU_PCT (over ${WIN} s, $NW samples) |"
echo "| worker CPU over the whole run, s | $(awk -v hz="$CLK_TCK" '{ k = $2 } END { printf "%.1f", k / hz }' "$SAMPLES") |"
echo
echo "- ulimit -n raised from $NOFILE0 to $NOFILE"
echo "- worker log lines: $(wc -l <"$IMGQ_TMP/worker.log"); first distinct messages:"
sed -E 's/^[0-9T:.-]+Z //; s/\bj[0-9a-z]{12}\b/JOB/g; s/[0-9]+/N/g' "$IMGQ_TMP/worker.log" | sort | uniq -c | sort -rn | head -n 5 | sed 's/^/    /'
if [[ "$(batch_field cap failed)" != 0 ]]; then
    echo "- why jobs failed (their last error, counted):"
    "$IMGQ" batch results cap | grep -o '"message":"[^"]*"' | sort | uniq -c | sort -rn |
        head -n 5 | sed 's/^/    /'
fi
machine_facts
echo "- command: \`tests/bench/capacity.sh --jobs $JOBS --latency-ms $LAT\`"
cp "$SAMPLES" "${CAPACITY_SAMPLES_OUT:-/dev/null}" 2>/dev/null || true
cp "$IMGQ_TMP/worker.log" "${CAPACITY_LOG_OUT:-/dev/null}" 2>/dev/null || true
