#!/usr/bin/env bash
# Budgets under concurrency, through real workers: 8 workers, one global budget of $1.00 a day,
# 200 jobs of random shapes (so random per-call reservations and costs).  In every window the
# spend never exceeds the cap: a reservation of a call's worst case comes before every call, in
# one atomic step across all workers.  Jobs over the cap wait as blocked_budget (workers with
# --exit-when-idle leave them) and resume when the queue clock rolls into the next day, until
# every job is done.  The ledger, `imgq report` and the spent counter agree to the micro-dollar.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/env.sh"
imgq_env_setup
start_redis
start_s3 imgq-budget-race
start_sim --latency-ms 40 --latency-jitter-ms 40
CAP=1000000 # micro-USD
"$IMGQ_BIN/imgq" budget set global --limit 1.00 --window day --tz UTC >/dev/null

python3 - "$IMGQ_TMP/jobs.jsonl" <<'EOF'
import json, random, sys
random.seed(7)
shapes = [
    {"model": "gpt-image-1-mini", "quality": "low"},
    {"model": "gpt-image-1-mini", "quality": "medium"},
    {"model": "gpt-image-1-mini", "quality": "low", "size": "1536x1024"},
    {"model": "seedream-4-0", "size": "1024x1024"},
    {"model": "gemini-2.5-flash-image"},
]
with open(sys.argv[1], "w") as f:
    for i in range(200):
        job = dict(random.choice(shapes))
        job["id"] = "r%d" % i
        job["prompt"] = "a glazed ceramic cup, variant %d" % i + " with a long description" * random.randint(0, 30)
        job["n"] = random.choice([1, 1, 1, 2])
        f.write(json.dumps(job) + "\n")
EOF
"$IMGQ_BIN/imgq" submit --batch race "$IMGQ_TMP/jobs.jsonl" >/dev/null

state_counts() { "$IMGQ_BIN/imgq" batch status race --json; }
done_count() { state_counts | python3 -c 'import json,sys; print(json.load(sys.stdin)["counts"].get("done", 0))'; }

# The budget row never shows more spent + reserved than the cap while 8 workers race.
sample() {
    while :; do
        "$IMGQ_BIN/imgq" budget show global --json 2>/dev/null |
            python3 -c 'import json,sys; b=json.load(sys.stdin); print(b["spent_micros"] + b["reserved_micros"])' \
                >>"$IMGQ_TMP/samples" 2>/dev/null || true
        sleep 0.05
    done
}
sample &
sampler=$!
track_pid "$sampler"

rounds=0
while [ "$(done_count)" -lt 200 ]; do
    rounds=$((rounds + 1))
    [ "$rounds" -le 12 ] || fail "200 jobs not done after 12 budget windows"
    pids=()
    for w in 1 2 3 4 5 6 7 8; do
        "$IMGQ_BIN/imgq-worker" --exit-when-idle --concurrency 8 --retry-base-ms 50 \
            2>"$IMGQ_TMP/worker-$rounds-$w.log" &
        pids+=($!)
        track_pid $!
    done
    for p in "${pids[@]}"; do
        wait_pid "$p" 120 || {
            for k in delayed blocked leases; do
                note "$k: $(redis-cli -p "$REDIS_PORT" zrange "imgq:{default}:$k" 0 -1 withscores | head -20 | tr '\n' ' ')"
            done
            note "clock: $("$IMGQ_BIN/imgq" clock)"
            fail "worker $p did not finish round $rounds"
        }
    done
    blocked=$(redis-cli -p "$REDIS_PORT" zcard 'imgq:{default}:blocked')
    note "window $rounds: $(done_count) done, $blocked blocked"
    if [ "$(done_count)" -lt 200 ]; then
        [ "$blocked" -gt 0 ] || fail "jobs are neither done nor blocked after round $rounds"
        assert_contains "$("$IMGQ_BIN/imgq" job show "$(redis-cli -p "$REDIS_PORT" zrange 'imgq:{default}:blocked' 0 0)")" "blocked_budget"
    fi
    "$IMGQ_BIN/imgq" clock --advance 86400 >/dev/null # seconds: the next day, a new window
done
kill_pid TERM "$sampler"
[ "$rounds" -ge 2 ] || fail "the cap never blocked a job (total spend too low for the test)"

max_sample=$(sort -n "$IMGQ_TMP/samples" | tail -1)
note "samples: $(wc -l <"$IMGQ_TMP/samples"), highest spent+reserved $max_sample"
[ "${max_sample:-0}" -le "$CAP" ] || fail "spent + reserved reached $max_sample > $CAP"

# Per window (day in the queue clock), from the ledger: never over the cap.
report=$("$IMGQ_BIN/imgq" report --by day --json)
python3 - "$CAP" <<EOF || fail "a day's spend exceeded the cap: $report"
import json, sys
r = json.loads('''$report''')
cap = int(sys.argv[1])
days = r["groups"]
assert len(days) >= 2, days
for g in days:
    assert g["spend_micros"] <= cap, g
assert r["matches_spent_counter"] is True, r
print("days:", [(g["day"], g["spend_micros"]) for g in days])
EOF
# The batch's cost (per attempt, from the job records) equals the ledger.
batch_cost=$(state_counts | python3 -c 'import json,sys; print(json.load(sys.stdin)["cost_micros"])')
ledger=$(python3 -c "import json; print(json.loads('''$report''')['total']['spend_micros'])")
assert_eq "$ledger" "$batch_cost" "ledger total equals the batch's cost"
echo "PASS budget_race"
