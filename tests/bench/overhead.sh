#!/usr/bin/env bash
# tests/bench/overhead.sh - the queue's overhead on a job at a given arrival rate (issue 7:
# "queue overhead added to a job at 1,000 jobs/s: p50 and p99 from enqueue to provider
# request start").
#
#   tests/bench/overhead.sh [--rate R] [--seconds S] [--chunk C] [--latency-ms L]
#                           [--concurrency N] [--hold-answers] [--no-dedup] [--warmup-s U]
#                           [--max-wait-s W] [--build-dir DIR] [--no-build]
#
# Defaults: R=1000 jobs/s for S=20 s, chunks of C=50 jobs, imgq-sim latency L=5 ms, one
# `imgq-worker --concurrency 256`, the jobs of the first U=1 s left out of the figures (a
# cold worker's first connections and claims; they get a row of their own), at most W=180 s
# of waiting for the last jobs after the producer (plus L); with --hold-answers, S=5 s and
# W=120 s + 1 s per 20 jobs.
#
# Starts redis-server, s3rver and `imgq-sim --verbose` on free loopback ports and the worker,
# then a producer submits R*S jobs (gpt-image-1-mini, low, 1024x1024, output_format png:
# stored as the simulator sends it, no WebP encode; unique ids and prompts) through `imgq
# submit`, one process per chunk of C jobs, a chunk every C/R s on a fixed schedule (a late
# chunk does not shift the next ones).  Why chunks: `imgq submit` validates the whole file
# before it enqueues (standard input is spooled to EOF), so it cannot be fed a stream, and a
# process costs ~15 ms of CPU whatever its size: C=10 at 1000/s takes ~1.5 cores of `imgq
# submit` alone.  The jobs of a chunk share one enqueue stamp: the worker sees R/C bursts of C
# jobs a second.
#
# The figure, per job, in ms:
#   enqueue                 = the job's `created` stamp: Redis TIME in the submit script, the
#                             moment it became claimable (the script also publishes the wake)
#   provider request start  = `arrived=` of the simulator's verbose log line for the job's
#                             request: wall-clock ms when its event loop read the request
#   overhead                = provider request start - enqueue
# split into enqueue -> claim (the job's `started` stamp, Redis TIME in the claim script) and
# claim -> provider request start (the worker: coalescing and breaker scripts, the dedup HEAD
# to S3 unless --no-dedup, building and sending the HTTP request).  Redis and the simulator run
# on this host: one clock; both stamps are truncated to the ms (+-1 ms on each figure).
# Matching a request to its job: the simulator numbers its answers (x-request-id
# req_sim<hex>, one per verbose log line, in log order) and the worker writes that id into
# the job's ledger entry at completion.  Checked for every job: its request did not arrive
# before its claim, and was not answered less than L ms after it arrived.
#
# Whether the machine keeps up: after its answer a job costs the worker ~13 ms of CPU (the PNG
# is decoded to validate it) and s3rver ~11 ms of CPU (the dedup HEAD and the PUT): on the
# 2-core reference machine the full pipeline completed 50-140 jobs/s, so at 1000 jobs/s with
# L=5 ms the defaults measure a growing backlog.  The script says so (WARNING) when jobs were
# still waiting for a claim as the producer finished, when the median grew from the first to
# the last quarter of the jobs (by more than 2x + 50 ms), or when not every job ended in time
# (the figures then cover the jobs that did).
# --hold-answers measures the same path at the full rate with the answers out of the way: L
# becomes S + 10 s and N becomes R*S + 64, so every request is sent before the first answer
# comes back (as with a real provider's ~10 s latency, every call of the run is in flight at
# once); the back half runs after the last request, outside the figures.  It needs R*S
# sockets in each of the worker and the simulator (`ulimit -n` is raised to the hard limit).
# Even then s3rver answers the dedup HEADs of 1000 jobs/s late on 2 cores; --no-dedup shows
# the rest of the path without them.
#
# Prints p50/p90/p99/max of each figure, the same for the warm-up's jobs and for `imgq
# submit`'s own time (exec -> enqueue stamp, per chunk), the achieved enqueue rate (jobs
# between the first and the last enqueue stamp / that time), completions/s, the checks, and
# the load before and after.  OVERHEAD_PER_JOB_OUT=FILE keeps the per-job figures.  Needs
# what capacity.sh needs (redis-server, redis-cli, s3rver, CMake unless --no-build) and
# bash >= 5.
set -euo pipefail
RATE=1000
SECS=
CHUNK=50
LAT=5
CONC=256
HOLD=0
EXTRA=
MAXWAIT=
WARM=1
while [[ $# -gt 0 ]]; do
    case $1 in
    --rate) RATE=$2; shift 2 ;;
    --seconds) SECS=$2; shift 2 ;;
    --chunk) CHUNK=$2; shift 2 ;;
    --latency-ms) LAT=$2; shift 2 ;;
    --concurrency) CONC=$2; shift 2 ;;
    --hold-answers) HOLD=1; shift ;;
    --no-dedup) EXTRA='"dedup":false,'; shift ;;
    --max-wait-s) MAXWAIT=$2; shift 2 ;;
    --warmup-s) WARM=$2; shift 2 ;;
    --build-dir) BUILD_DIR=$2; shift 2 ;;
    --no-build) NO_BUILD=1; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
SECS=${SECS:-$((HOLD ? 5 : 20))}
posint() { [[ $2 =~ ^[1-9][0-9]*$ ]] || { echo "$1: expected a positive integer, got '$2'" >&2; exit 2; }; }
posint --rate "$RATE"
posint --seconds "$SECS"
posint --chunk "$CHUNK"
posint --latency-ms "$LAT"
posint --concurrency "$CONC"
[[ -z $MAXWAIT ]] || posint --max-wait-s "$MAXWAIT"
[[ $WARM =~ ^[0-9]+$ ]] || { echo "--warmup-s: expected an integer, got '$WARM'" >&2; exit 2; }
((WARM < SECS)) || { echo "--warmup-s must be shorter than --seconds" >&2; exit 2; }
JOBS=$((RATE * SECS))
MAXWAIT=${MAXWAIT:-$((HOLD ? 120 + JOBS / 20 : 180))}
((BASH_VERSINFO[0] >= 5)) || { echo "needs bash >= 5 (EPOCHREALTIME)" >&2; exit 2; }
if ((HOLD)); then
    LAT=$(((SECS + 10) * 1000))
    CONC=$((JOBS + 64))
fi
NCHUNK=$(((JOBS + CHUNK - 1) / CHUNK))
INTERVAL_US=$((CHUNK * 1000000 / RATE))
OPTS="--rate $RATE --seconds $SECS --chunk $CHUNK"
if ((HOLD)); then OPTS+=" --hold-answers"; else OPTS+=" --latency-ms $LAT --concurrency $CONC"; fi
[[ -n $EXTRA ]] && OPTS+=" --no-dedup"
OPTS+=" --warmup-s $WARM"

# shellcheck source=common.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
bench_build
imgq_env_setup
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
# Each call in flight is a socket of the worker and one of the simulator.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
((CONC + 200 < $(ulimit -n))) || note "warning: ulimit -n is $(ulimit -n), below $CONC sockets + overhead"

# shellcheck disable=SC2119 # (no arguments: the default configuration)
start_redis
start_s3 imgq-bench
start_sim --latency-ms "$LAT" --verbose
SIMLOG=$(ls "$IMGQ_TMP"/sim-*.log)
rcli() { redis-cli -p "$REDIS_PORT" "$@"; }

# The chunks, written before the clock starts: unique ids (the idempotency key) and prompts.
CHUNKS=$IMGQ_TMP/chunks
mkdir -p "$CHUNKS"
awk -v n="$JOBS" -v c="$CHUNK" -v dir="$CHUNKS" -v extra="$EXTRA" 'BEGIN {
    for (i = 0; i < n; i++) {
        if (i % c == 0) { if (f) close(f); f = sprintf("%s/%06d.jsonl", dir, i / c) }
        printf "{\"id\":\"ovh-%07d\",\"prompt\":\"Overhead probe %07d: a lighthouse on a cliff at dusk\",\"model\":\"gpt-image-1-mini\",\"quality\":\"low\",\"size\":\"1024x1024\",%s\"output_format\":\"png\"}\n", i, i, extra >f
    }
}'

"$WORKER" --concurrency "$CONC" --log-level warn >"$IMGQ_TMP/worker.log" 2>&1 &
WPID=$!
track_pid "$WPID"
worker_subscribed() { [[ -n "$(rcli PUBSUB CHANNELS '*wake')" ]]; }
wait_until 20 "the worker to subscribe to the wake channel" worker_subscribed
note "$JOBS jobs at $RATE/s: $NCHUNK chunks of $CHUNK, one every $((INTERVAL_US / 1000)) ms; latency $LAT ms, concurrency $CONC (load $LOAD0)"

# The producer.  A sleep without a fork: a read with a timeout on a pipe nobody writes to.
exec {SLEEPFD}<> <(:)
nap_us() {
    if (($1 > 0)); then read -r -t "$(printf '%d.%06d' $(($1 / 1000000)) $(($1 % 1000000)))" -u "$SLEEPFD" || true; fi
}
now_us() { echo "${EPOCHREALTIME/./}"; }
SPAWNS=$IMGQ_TMP/spawns.txt # chunk, scheduled us, exec us
: >"$SPAWNS"
SPIDS=()
T0=$(($(now_us) + 200000))
for ((k = 0; k < NCHUNK; k++)); do
    due=$((T0 + k * INTERVAL_US))
    nap_us $((due - $(now_us)))
    # Not tracked for the cleanup: each lives a few tens of ms and is waited for below.
    "$IMGQ" submit --json --batch ovh "$(printf '%s/%06d.jsonl' "$CHUNKS" "$k")" >"$CHUNKS/$k.out" 2>&1 &
    SPIDS+=($!)
    echo "$k $due ${EPOCHREALTIME/./}" >>"$SPAWNS"
done
SUBMIT_FAIL=0
for p in "${SPIDS[@]}"; do wait "$p" || SUBMIT_FAIL=$((SUBMIT_FAIL + 1)); done
exec {SLEEPFD}<&-
PRODUCER_S=$(awk -v t="$T0" -v u="$(now_us)" 'BEGIN { printf "%.2f", (u - t) / 1e6 }')
if ((SUBMIT_FAIL > 0)); then
    grep -hv '"created"' "$CHUNKS"/*.out | awk 'NR <= 5' >&2
    fail "$SUBMIT_FAIL submit processes failed"
fi
WAITING=$(batch_field ovh queued)
note "producer done in $PRODUCER_S s, $WAITING jobs waiting for a claim; waiting for the jobs to end"

# The ledger entry of a job, and so its request id, is written when it completes.
ENDED=0
deadline=$((SECONDS + LAT / 1000 + MAXWAIT))
while ((SECONDS < deadline)); do
    ENDED=$(($(batch_field ovh "done") + $(batch_field ovh failed)))
    ((ENDED < JOBS)) || break
    sleep 1
done
((ENDED >= JOBS)) || note "stopping the worker after $MAXWAIT s: $ENDED of $JOBS jobs ended"
kill_pid TERM "$WPID"
DONE=$(batch_field ovh "done") FAILED=$(batch_field ovh failed)
LOAD1=$(cut -d' ' -f1-3 /proc/loadavg)

# Per ledger entry (one per paid call): job, request id, answer stamp, and the job's created,
# started, attempts and client id, in one read-only script run.
LEDGER=$(rcli --scan --pattern '*ledger' | awk 'NR == 1')
[[ -n "$LEDGER" ]] || fail "no ledger stream in Redis"
ROWS=$IMGQ_TMP/rows.txt
rcli --raw EVAL "
local base = string.sub(KEYS[1], 1, -7) -- the queue's key prefix, less 'ledger'
local out = {}
for _, e in ipairs(redis.call('XRANGE', KEYS[1], '-', '+')) do
  local f, m = e[2], {}
  for i = 1, #f, 2 do m[f[i]] = f[i + 1] end
  local h = redis.call('HMGET', base .. 'j:' .. m.job, 'created', 'started', 'attempts')
  local spec = cjson.decode(redis.call('GET', base .. 'j:' .. m.job .. ':s') or '{}')
  out[#out + 1] = table.concat({m.job, m.request_id, m.t, h[1] or '-', h[2] or '-',
    h[3] or '-', tostring(spec.id)}, ' ')
end
return out" 1 "$LEDGER" >"$ROWS"

# Join with the simulator's log (its n-th line with arrived= is request req_sim<n in hex>):
# per job, overhead, enqueue -> claim, claim -> request and the enqueue stamp.  FIRST and LAST
# are the first and last enqueue stamps, TDONE the last completion.
PER_JOB=$IMGQ_TMP/per-job.txt
read -r MATCHED UNMATCHED RETRIED BAD FIRST LAST TDONE < <(awk -v lat="$LAT" -v out="$PER_JOB" '
    FNR == NR { if (match($0, /arrived=[0-9]+/)) arr[sprintf("req_sim%016x", ++seq)] = substr($0, RSTART + 8, RLENGTH - 8); next }
    {
        rid = $2; t = $3; cr = $4; st = $5
        if ($6 != 1) { retried++; next }
        if (!(rid in arr)) { unmatched++; next }
        a = arr[rid]
        # Not before its claim, not answered before the latency (1 ms of slack: truncation).
        if (a < st - 1 || t < a + lat - 1) bad++
        printf "%d %d %d %s\n", a - cr, st - cr, a - st, cr >out
        matched++
        if (!first || cr < first) first = cr
        if (cr > last) last = cr
        if (t > tdone) tdone = t
    }
    END { printf "%d %d %d %d %.0f %.0f %.0f\n", matched, unmatched, retried, bad, first, last, tdone }' "$SIMLOG" "$ROWS")
((MATCHED > 0)) || fail "no job matched to a simulator request"
RATE_GOT=$(awk -v n="$MATCHED" -v c="$CHUNK" -v a="$FIRST" -v b="$LAST" 'BEGIN {
    if (b > a) printf "%.0f", (n - c) * 1000 / (b - a); else print "n/a" }')
# Completions per second, first enqueue -> last completion (the last ledger stamp).
DONE_RATE=$(awk -v n="$MATCHED" -v a="$FIRST" -v b="$TDONE" 'BEGIN {
    if (b > a) printf "%.0f", n * 1000 / (b - a); else print "n/a" }')

# pct COLUMN FILE - "p50 | p90 | p99 | max" of a column (nearest rank).
pct() {
    cut -d' ' -f"$1" "$2" | sort -n | awk '{ v[NR] = $1 }
        function at(p) { i = int(NR * p / 100); if (i < NR * p / 100) i++; return v[i < 1 ? 1 : i] }
        END { printf "%d | %d | %d | %d", at(50), at(90), at(99), v[NR] }'
}
# The warm-up's jobs apart.
COUNTED=$IMGQ_TMP/counted.txt WARMED=$IMGQ_TMP/warm-up.txt
awk -v t="$((FIRST + WARM * 1000))" -v w="$WARMED" '$4 < t { print >w; next } 1' "$PER_JOB" >"$COUNTED"
touch "$WARMED"
NC=$(wc -l <"$COUNTED")
((NC > 0)) || fail "no job enqueued after the warm-up"
# Median overhead of the first and of the last quarter of the jobs (by enqueue stamp).  (No
# `head` in these pipelines: with pipefail, the SIGPIPE of the writer would end the script.)
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] + 0 }'; }
QN=$(((NC + 3) / 4))
Q1=$(sort -k4,4n "$COUNTED" | awk -v n="$QN" 'NR <= n' | cut -d' ' -f1 | median)
Q4=$(sort -k4,4n "$COUNTED" | tail -n "$QN" | cut -d' ' -f1 | median)
# The CLI's own part, per chunk: exec of its `imgq submit` -> its jobs' enqueue stamp.
CLI=$IMGQ_TMP/cli.txt
awk -v c="$CHUNK" 'FNR == NR { ex[$1] = int($3 / 1000); next }
    { k = int(substr($7, 5) / c); if (!(k in cr)) cr[k] = $4 }
    END { for (k in cr) if (k in ex) print cr[k] - ex[k] }' "$SPAWNS" "$ROWS" >"$CLI"
LAG=$(awk '{ d = ($3 - $2) / 1000; if (d > m) m = d } END { printf "%.1f", m }' "$SPAWNS")

echo "## overhead.sh: queue overhead at $RATE jobs/s, one worker, imgq-sim latency $LAT ms"
echo
echo "| ms, per job ($NC jobs, after the first $WARM s) | p50 | p90 | p99 | max |"
echo "|---|---|---|---|---|"
echo "| **enqueue -> provider request start** (sim arrived= - job created) | $(pct 1 "$COUNTED") |"
echo "| of which enqueue -> claim (job started - created, Redis clock) | $(pct 2 "$COUNTED") |"
echo "| of which claim -> provider request start (sim arrived= - job started) | $(pct 3 "$COUNTED") |"
[[ ! -s $WARMED ]] || echo "| not included: the warm-up, enqueue -> provider request start ($(wc -l <"$WARMED") jobs of the first $WARM s) | $(pct 1 "$WARMED") |"
echo "| not included: \`imgq submit\` exec -> enqueue, per chunk of $CHUNK | $(pct 1 "$CLI") |"
echo
echo "- jobs: $JOBS submitted by $NCHUNK \`imgq submit\` processes ($CHUNK jobs each), done $DONE, failed $FAILED; $MATCHED matched to their request$( ((HOLD)) && echo "; answers held until after the last request")"
echo "- achieved enqueue rate: $RATE_GOT jobs/s (asked $RATE; first to last enqueue stamp); producer ran $PRODUCER_S s, a chunk's exec at most $LAG ms behind schedule"
echo "- completions: $DONE_RATE jobs/s (first enqueue -> last completion$( ((HOLD)) && echo ", the held answers included")); jobs waiting for a claim when the producer finished: $WAITING"
echo "- median overhead, first quarter of the jobs after the warm-up: $Q1 ms; last quarter: $Q4 ms"
echo "- checks: $UNMATCHED ledger entries without a simulator request, $RETRIED jobs with more than one attempt (left out), $BAD requests before their claim or answered too early (must be 0)"
((BAD == 0 && UNMATCHED == 0)) || echo "- **WARNING: the request-to-job matching is inconsistent: the figures are not to be trusted**"
if ((DONE + FAILED < JOBS || WAITING > RATE / 10 || Q4 > 2 * Q1 + 50)); then
    echo "- **WARNING: the machine did not keep up with $RATE jobs/s: the figures measure a growing backlog, not a steady overhead** (lower --rate$( ((HOLD)) || echo ", or --hold-answers"))"
fi
echo "- load before: $LOAD0; after: $LOAD1 ($(nproc) CPUs); other processes share the cores"
echo "- worker log: $(wc -l <"$IMGQ_TMP/worker.log") lines$([[ -s $IMGQ_TMP/worker.log ]] && echo "; most frequent:")"
sed -E 's/^[0-9T:.-]+Z //; s/\bj[0-9a-z]{12}\b/JOB/g; s/[0-9]+/N/g' "$IMGQ_TMP/worker.log" | sort | uniq -c | sort -rn | awk 'NR <= 3 { print "    " $0 }'
echo "- $(redis-server --version | cut -d' ' -f1-3); imgq commit: $(git -C "$BENCH_ROOT" rev-parse --short HEAD)$(git -C "$BENCH_ROOT" diff --quiet HEAD -- src include workers 2>/dev/null || echo ' (+ uncommitted changes in src/include/workers)')"
echo "- command: \`tests/bench/overhead.sh $OPTS\`"
# Per job, for a closer look: overhead, enqueue -> claim, claim -> request (ms), enqueue stamp.
[[ -z ${OVERHEAD_PER_JOB_OUT:-} ]] || cp "$PER_JOB" "$OVERHEAD_PER_JOB_OUT"
