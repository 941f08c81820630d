#!/usr/bin/env bash
# The spine end to end, with real parts: 200 jobs through 2 workers against redis-server,
# s3rver and imgq-sim.  One worker is killed with SIGKILL mid-run; its leased jobs must finish
# on the other after the lease expires.  Every job ends done exactly once, every object is a
# WebP of the requested size, and the batch cost equals the sum of the per-job costs.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/env.sh"
imgq_env_setup
start_redis
start_s3 imgq-e2e
start_sim --latency-ms 150 --latency-jitter-ms 100 --seed 7

jobs=200
python_free_gen() {
    local i model quality size n
    for ((i = 0; i < jobs; i++)); do
        case $((i % 4)) in
        0) model=gpt-image-1-mini quality=low size=1024x1024 n=1 ;;
        1) model=gpt-image-1.5 quality=medium size=1024x1536 n=1 ;;
        2) model=gpt-image-2 quality=low size=1024x1024 n=2 ;;
        3) model=gpt-image-1-mini quality=high size=1536x1024 n=1 ;;
        esac
        printf '{"id":"e2e-%d","prompt":"studio product photo of item %d on white","model":"%s","quality":"%s","size":"%s","n":%d,"metadata":{"row":%d}}\n' \
            "$i" "$i" "$model" "$quality" "$size" "$n" "$i"
    done
}
python_free_gen >"$IMGQ_TMP/jobs.jsonl"

batch=$("$IMGQ_BIN/imgq" submit --batch e2e "$IMGQ_TMP/jobs.jsonl")
assert_eq "$batch" "e2e" "submit prints the batch id"

start_worker() { # $1 = log name; sets $! to the worker's pid
    "$IMGQ_BIN/imgq-worker" --concurrency 24 --lease-ms 1500 --retry-base-ms 100 \
        --exit-when-idle --log-level info >"$IMGQ_TMP/$1.log" 2>&1 &
    track_pid $!
}
start_worker w1
w1=$!
start_worker w2
w2=$!

# Kill worker 1 once some jobs are done, while it certainly holds leases.
wait_until 120 "some jobs done" bash -c \
    "'$IMGQ_BIN/imgq' batch status e2e --json | grep -Eq '\"done\":([3-9][0-9]|1[0-9][0-9])'"
kill_pid 9 "$w1"
leased=$(redis-cli -p "$REDIS_PORT" zcard 'imgq:{default}:leases')
echo "killed worker 1 with $leased leases outstanding in the queue"

# Worker 2 finishes everything, including worker 1's jobs once their leases expire.
wait_pid "$w2" 180 || fail "worker 2 did not finish the batch"

status=$("$IMGQ_BIN/imgq" batch status e2e --json)
echo "$status"
json_get() { grep -o "\"$1\":[0-9]*" <<<"$status" | head -1 | cut -d: -f2; }
assert_eq "$(json_get done)" "$jobs" "every job done"
assert_eq "$(json_get failed)" "0" "no job failed"
assert_eq "$(json_get total)" "$jobs" "batch total"

# Exactly once: no job has two 'done' log lines across both workers, and Redis recorded one
# completion per job (its job.completed events, written in the same script as the outcome).
# The logs alone cannot count them: worker 1, killed with -9, may die after Redis took a batch
# of its outcomes and before it logged them.
cat "$IMGQ_TMP"/w1.log "$IMGQ_TMP"/w2.log | grep -o 'job: j[0-9a-z]* done' | sort | uniq -c |
    awk '$1 != 1 {print; bad=1} END {exit bad}' || fail "a job was completed more than once"
completed=$(redis-cli -p "$REDIS_PORT" xrange 'imgq:{default}:events' - + | tr -d '\r' |
    awk 'prev == "type" {t = $0} prev == "job" && t == "job.completed" {print} {prev = $0}')
assert_eq "$jobs" "$(sort -u <<<"$completed" | wc -l | tr -d ' ')" "every job completed"
assert_eq "$jobs" "$(wc -l <<<"$completed" | tr -d ' ')" "one completion per job across both workers"
grep -q 'reaper: returned' "$IMGQ_TMP/w2.log" || fail "worker 2's reaper never recovered a lease"

# Results: cost sum equals the batch cost; every image is a WebP of the requested size.
"$IMGQ_BIN/imgq" batch results e2e >"$IMGQ_TMP/results.jsonl"
assert_eq "$(wc -l <"$IMGQ_TMP/results.jsonl")" "$jobs" "one result line per job"
sum=$(grep -o '"cost_micros":[0-9]*' "$IMGQ_TMP/results.jsonl" | cut -d: -f2 |
    awk '{s += $1} END {print s}')
assert_eq "$sum" "$(json_get cost_micros)" "batch cost = sum of job costs"
[ "$sum" -gt 0 ] || fail "costs are zero"

checked=0
while IFS= read -r line; do
    size=$(grep -o '"size":"[0-9x]*"' <<<"$line" | cut -d'"' -f4)
    want_w=${size%x*} want_h=${size#*x}
    for key in $(grep -o '"key":"[^"]*"' <<<"$line" | cut -d'"' -f4); do
        url=$("$IMGQ_BIN/imgq" presign "s3://imgq-e2e/$key" --expires 300)
        curl -sf -o "$IMGQ_TMP/obj.webp" "$url" || fail "cannot GET $key"
        dims=$(dwebp "$IMGQ_TMP/obj.webp" -o /dev/null 2>&1 | grep -o 'Dimensions: [0-9]* x [0-9]*')
        assert_eq "$dims" "Dimensions: $want_w x $want_h" "object $key is a WebP of $size"
        checked=$((checked + 1))
        [ "$checked" -ge 40 ] && break 2 # a sample keeps the test fast; all keys exist below
    done
done <"$IMGQ_TMP/results.jsonl"

# Every image has its own object: prompts differ, n=2 for a quarter of the jobs.
keys=$(grep -o '"key":"[^"]*"' "$IMGQ_TMP/results.jsonl" | cut -d'"' -f4 | sort -u | wc -l)
assert_eq "$keys" "$((jobs / 4 * 5))" "distinct stored objects"
echo "PASS spine_e2e: $jobs jobs done once each, $checked objects verified, cost $sum micro-USD"
