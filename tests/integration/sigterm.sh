#!/usr/bin/env bash
# SIGTERM: a worker stops claiming, lets running jobs finish within the grace period, and hands
# back (lease released, attempt not used) whatever is still running when the grace ends.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/env.sh"
imgq_env_setup
start_redis
start_s3 imgq-sigterm
start_sim --latency-ms 1500

for i in $(seq 1 30); do
    printf '{"id":"t-%d","prompt":"wooden toy train %d on white","model":"gpt-image-1-mini","quality":"low"}\n' "$i" "$i"
done >"$IMGQ_TMP/jobs.jsonl"
"$IMGQ_BIN/imgq" submit --batch term "$IMGQ_TMP/jobs.jsonl" >/dev/null
leases() { redis-cli -p "$REDIS_PORT" zcard 'imgq:{default}:leases'; }
leases_are() { [ "$(leases)" -eq "$1" ]; }
count() { "$IMGQ_BIN/imgq" batch status term --json | grep -o "\"$1\":[0-9]*" | cut -d: -f2; }
# What the provider did: generations answered, and those whose client left before the answer
# (the work was done: a real provider bills them); and what the ledger recorded.
sim_stat() { curl -s "http://127.0.0.1:$SIM_PORT/sim/stats" | python3 -c "import json,sys; s=json.load(sys.stdin); print($1)"; }
provider_calls() { sim_stat 's["requests"]["generations"]["ok"] + s["abandoned"]'; }
sim_idle() { [ "$(sim_stat 's["in_flight"]')" -eq 0 ]; }
ledger() { redis-cli -p "$REDIS_PORT" xlen 'imgq:{default}:ledger'; }
ledger_reason() { redis-cli -p "$REDIS_PORT" xrange 'imgq:{default}:ledger' - + | grep -cx "$1" || true; }

# 1. Grace long enough: the 10 running jobs finish, nothing new is claimed.
"$IMGQ_BIN/imgq-worker" --concurrency 10 --grace-ms 20000 >"$IMGQ_TMP/w1.log" 2>&1 &
w1=$!
track_pid $w1
wait_until 20 "10 jobs running" leases_are 10
kill -TERM $w1
wait_pid $w1 20 || fail "worker 1 did not exit after SIGTERM"
assert_eq "10" "$(count done)" "running jobs finished within the grace period"
assert_eq "20" "$(count queued)" "nothing else was claimed after SIGTERM"
assert_eq "0" "$(leases)" "no lease left behind"

# 2. Grace too short: the running jobs are handed back, attempts not used, no charge.
"$IMGQ_BIN/imgq-worker" --concurrency 10 --grace-ms 200 >"$IMGQ_TMP/w2.log" 2>&1 &
w2=$!
track_pid $w2
wait_until 20 "10 more jobs running" leases_are 10
kill -TERM $w2
wait_pid $w2 10 || fail "worker 2 did not exit after its grace period"
assert_contains "$(cat "$IMGQ_TMP/w2.log")" "handing 10 running jobs back"
assert_eq "0" "$(leases)" "handed-back jobs hold no lease"
assert_eq "20" "$(count queued)" "handed-back jobs are queued again"
assert_eq "0" "$(count running)" "nothing counted as running"
queued=$("$IMGQ_BIN/imgq" batch results term | grep '"state":"queued"')
assert_eq "20" "$(grep -c . <<<"$queued")" "20 queued result lines"
assert_eq "0" "$(grep -vc '"attempts":0' <<<"$queued" || true)" "handed-back jobs keep their attempts"
# Every call the provider had when the grace ended is charged (as lost, at its reservation):
# the provider generated it; only its answer was not waited for.
wait_until 20 "the simulator finished the abandoned generations" sim_idle
lost=$(ledger_reason lost)
[ "$lost" -gt 0 ] || fail "no call was charged as lost: none was in flight when the grace ended?"
assert_eq "$(provider_calls)" "$(ledger)" "ledger entries = provider calls after a hand-back"
assert_eq "$((10 + lost))" "$(provider_calls)" "the 10 finished calls and the $lost handed back"
open_resv=0
for k in $(redis-cli -p "$REDIS_PORT" --scan --pattern 'imgq:{default}:j:*'); do
    n=$(redis-cli -p "$REDIS_PORT" hkeys "$k" | grep -c '^resv:' || true)
    open_resv=$((open_resv + n))
done
assert_eq "0" "$open_resv" "no reservation is left standing on a handed-back job"


# 3. Another worker finishes the batch; every job completed exactly once.
"$IMGQ_BIN/imgq-worker" --concurrency 30 --exit-when-idle >"$IMGQ_TMP/w3.log" 2>&1 &
w3=$!
track_pid $w3
wait_pid $w3 60 || fail "worker 3 did not finish"
assert_eq "30" "$(count done)" "all jobs done"
completions=$(cat "$IMGQ_TMP"/w*.log | grep -c 'job: j[0-9a-z]* done')
assert_eq "30" "$completions" "each job completed once across the three workers"
assert_eq "$(provider_calls)" "$(ledger)" "ledger entries = provider calls across the three workers"

# 4. SIGTERM, then jobs that finish in the same turn of the loop (their completions go to
# Redis in one call, asking for no successors): the reply lets the stopping worker shut down
# while it frees that call's jobs, which once freed them twice (a crash in 2 rounds of 8).
# Each round: 10 jobs stored as they came (PNG), so they finish close together; the worker
# exits 0 and all 10 are done.
for r in $(seq 1 8); do
    for i in $(seq 1 10); do
        printf '{"id":"r%d-%d","prompt":"toy %d %d","model":"gpt-image-1-mini","quality":"low","output_format":"png"}\n' \
            "$r" "$i" "$r" "$i"
    done >"$IMGQ_TMP/r$r.jsonl"
    "$IMGQ_BIN/imgq" submit --batch "r$r" "$IMGQ_TMP/r$r.jsonl" >/dev/null
    "$IMGQ_BIN/imgq-worker" --concurrency 10 --grace-ms 20000 >"$IMGQ_TMP/r$r.log" 2>&1 &
    wr=$!
    track_pid $wr
    wait_until 20 "round $r: 10 jobs running" leases_are 10
    kill -TERM $wr
    rc=0
    wait_pid "$wr" 20 || rc=$?
    [ "$rc" -eq 0 ] || { tail -n 20 "$IMGQ_TMP/r$r.log" >&2; fail "round $r: the worker exited $rc after SIGTERM"; }
    rdone=$("$IMGQ_BIN/imgq" batch status "r$r" --json | grep -o '"done":[0-9]*' | cut -d: -f2)
    assert_eq "10" "$rdone" "round $r: the 10 running jobs finished within the grace period"
done
echo "PASS sigterm"
