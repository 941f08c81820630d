#!/usr/bin/env bash
# Crash safety: a 2,000-job batch, 3 workers, and 20 rounds of `kill -9` of a random worker at a
# random moment, each restarted at once.  Every job must end done exactly once: none lost, none
# completed twice, one stored object per image, and the batch cost equal to the sum of one
# usage-based charge per job.  FAULT_JOBS and FAULT_ROUNDS override the sizes.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/env.sh"
imgq_env_setup
start_redis
start_s3 imgq-fault
start_sim --latency-ms 100 --latency-jitter-ms 400 --seed 11

jobs=${FAULT_JOBS:-2000}
rounds=${FAULT_ROUNDS:-20}
for ((i = 0; i < jobs; i++)); do
    printf '{"id":"f-%d","prompt":"catalog item %d, studio light","model":"gpt-image-1-mini","quality":"low","size":"1024x1024"}\n' "$i" "$i"
done >"$IMGQ_TMP/jobs.jsonl"
"$IMGQ_BIN/imgq" submit --batch fault "$IMGQ_TMP/jobs.jsonl" >/dev/null

declare -a pid
generation=0
start_worker() { # start_worker SLOT
    generation=$((generation + 1))
    "$IMGQ_BIN/imgq-worker" --concurrency 32 --lease-ms 1500 --retry-base-ms 100 \
        --log-level info >"$IMGQ_TMP/w$1-$generation.log" 2>&1 &
    pid[$1]=$!
    track_pid $!
}
for slot in 0 1 2; do start_worker $slot; done
ended() { "$IMGQ_BIN/imgq" batch status fault --json | grep -q '"finished":true'; }

killed=0
for ((r = 1; r <= rounds; r++)); do
    sleep "0.$((RANDOM % 9 + 1))$((RANDOM % 10))"
    ended && break
    slot=$((RANDOM % 3))
    kill_pid 9 "${pid[$slot]}"
    killed=$((killed + 1))
    start_worker "$slot"
done
echo "killed $killed workers (kill -9), each restarted at once"
wait_until 300 "the batch to finish" ended
for slot in 0 1 2; do kill -TERM "${pid[$slot]}" 2>/dev/null || true; done
for slot in 0 1 2; do wait_pid "${pid[$slot]}" 40 || true; done # reaps and forgets

status=$("$IMGQ_BIN/imgq" batch status fault --json)
echo "$status"
assert_contains "$status" "\"done\":$jobs"
assert_contains "$status" '"failed":0'

# Exactly once: the job.completed events, written in the same script as the state change,
# name every job once.  (Worker logs can miss a completion: a worker killed after Redis
# recorded it but before it read the reply.)
redis-cli -p "$REDIS_PORT" xrange 'imgq:{default}:events' - + | tr -d '\r' |
    awk '$0 == "job.completed" { getline; getline; print }' | sort >"$IMGQ_TMP/completed"
assert_eq "$jobs" "$(sort -u "$IMGQ_TMP/completed" | wc -l)" "distinct jobs completed"
assert_eq "0" "$(uniq -d "$IMGQ_TMP/completed" | wc -l)" "jobs completed more than once"
stalled=$(redis-cli -p "$REDIS_PORT" xrange 'imgq:{default}:events' - + | grep -c '^job.stalled' || true)
echo "$stalled stalled jobs were returned to the queue by reapers"

# Stored once: one object per job, under its content-addressed key.
objects=$(find "$IMGQ_TMP" -path '*imgq-fault/images/*' -name '*._S3rver_object' ! -name '*.json._S3rver_object' | wc -l)
assert_eq "$jobs" "$objects" "one stored object per image"

# Charged once: the batch cost is the sum of the job costs, each one usage-based charge.
"$IMGQ_BIN/imgq" batch results fault >"$IMGQ_TMP/results.jsonl"
sum=$(grep -o '"cost_micros":[0-9]*' "$IMGQ_TMP/results.jsonl" | cut -d: -f2 | awk '{s += $1} END {print s}')
assert_contains "$status" "\"cost_micros\":$sum"
# Billed from usage, or done at $0 from images a dying worker had already stored (dedup).
assert_eq "$jobs" "$(grep -c '"billed":"\(usage\|dedup\)"' "$IMGQ_TMP/results.jsonl")" "every job billed once, from usage"
calls=$(curl -s "http://127.0.0.1:$SIM_PORT/sim/stats" | grep -o '"generations":{[^}]*}' |
    grep -o '"ok":[0-9]*' | cut -d: -f2)
echo "provider calls: $calls for $jobs jobs ($((calls - jobs)) repeated after a worker died mid-call)"
echo "PASS fault_kill: $rounds rounds, $killed kills, $jobs jobs, 0 lost, 0 duplicated"
