#!/usr/bin/env bash
# Concurrent-requests limit, shared by every worker.
#  1. 3 workers (8 jobs each in flight) share concurrent=2 against a simulator that takes
#     300 ms per request: the simulator never holds more than 2 requests at once (its own
#     max_in_flight, and the overlap of the requests in its log), it does hold 2 (the limit is
#     used, not serialised to 1), and every job finishes.
#  2. A worker killed with -9 while it holds both slots cannot release them: the next worker
#     waits for them to expire (the provider timeout plus as much again: 3 + 3 s here), not
#     longer, then finishes its jobs.
#  3. A worker stopped with SIGTERM while its calls are in flight (and more wait for room)
#     frees its slots as it cancels them: none is left to expire.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/env.sh"
imgq_env_setup
start_redis
start_s3 imgq-rate-conc
start_sim --latency-ms 300 --verbose

sim_stat() {
    curl -s "http://127.0.0.1:$SIM_PORT/sim/stats" | grep -o "\"$1\": *[0-9]*" | grep -o '[0-9]*$'
}

# ---- 1. at most 2 in flight across 3 workers -------------------------------------------------
jobs=16
for i in $(seq 1 "$jobs"); do
    printf '{"prompt":"a copper kettle %d","model":"gpt-image-1-mini","quality":"low","output_format":"png"}\n' "$i"
done >"$IMGQ_TMP/jobs.jsonl"
"$IMGQ_BIN/imgq" submit --batch conc "$IMGQ_TMP/jobs.jsonl" >/dev/null
curl -s -X POST -o /dev/null "http://127.0.0.1:$SIM_PORT/sim/reset"
start=$(date +%s%N)
pids=()
for w in 1 2 3; do
    "$IMGQ_BIN/imgq-worker" --concurrency 8 --rate-limit openai=concurrent=2 \
        --exit-when-idle 2>"$IMGQ_TMP/worker-$w.log" &
    pids+=($!)
    track_pid $!
done
for p in "${pids[@]}"; do wait_pid "$p" 120 || fail "a worker under concurrent=2 did not finish"; done
elapsed=$((($(date +%s%N) - start) / 1000000))
assert_contains "$("$IMGQ_BIN/imgq" batch status conc --json)" "\"done\":$jobs"
peak=$(sim_stat max_in_flight)
# The same from the log: each request is in flight from arrived= to arrived + its duration.
grep -o 'POST /v1/images/generations [0-9]* [a-z_]* [0-9]*ms arrived=[0-9]*' "$IMGQ_TMP"/sim-*.log |
    awk -v s=$((start / 1000000)) '{ d = $5; sub(/ms/, "", d); a = $6; sub(/arrived=/, "", a)
        if (a + 0 >= s + 0) { printf "%.0f 1\n%.0f 0\n", a, a + d } }' |
    sort -k1,1n -k2,2n >"$IMGQ_TMP/events"
assert_eq "$((2 * jobs))" "$(wc -l <"$IMGQ_TMP/events")" "one logged request per job"
overlap=$(awk '{ if ($2 == 1) { n++; if (n > max) max = n } else n-- } END { print max + 0 }' \
    "$IMGQ_TMP/events")
echo "concurrent=2: simulator max_in_flight $peak, most overlapping requests in its log" \
    "$overlap; $jobs jobs in $elapsed ms"
[ "$peak" -le 2 ] || fail "$peak requests in flight at once at the simulator, over concurrent=2"
[ "$overlap" -le 2 ] || fail "$overlap requests overlapped in the simulator's log"
[ "$peak" -eq 2 ] && [ "$overlap" -eq 2 ] || fail "never 2 requests in flight: the limit serialised the calls"
# 16 requests of 300 ms, 2 at a time: at least 8 rounds.
[ "$elapsed" -ge 2400 ] || fail "finished in $elapsed ms: more than 2 requests ran at once"

# ---- 2. kill -9 while holding slots ---------------------------------------------------------
slots="imgq:{default}:rlc:openai"
rcli() { redis-cli -p "$REDIS_PORT" "$@"; }
for i in 1 2 3; do
    printf '{"prompt":"[sim:latency:60000] a slow lamp %d","model":"gpt-image-1-mini","quality":"low","output_format":"png"}\n' "$i"
done | "$IMGQ_BIN/imgq" submit --batch slow - >/dev/null
"$IMGQ_BIN/imgq-worker" --concurrency 8 --rate-limit openai=concurrent=2 \
    --provider-timeout-ms 3000 --lease-ms 2000 2>"$IMGQ_TMP/worker-killed.log" &
victim=$!
track_pid "$victim"
wait_until 10 "the first worker holding both slots" \
    bash -c "[ \"\$(redis-cli -p $REDIS_PORT zcard '$slots')\" = 2 ]"
kill_pid KILL "$victim"
killed=$(($(date +%s%N) / 1000000))
expiry=$(rcli zrange "$slots" 0 0 withscores | sed -n 2p)
[ -n "$expiry" ] || fail "the dead worker's slots are gone already"
echo "worker killed at $killed holding 2 slots; the first expires at $expiry (in $((expiry - killed)) ms)"
"$IMGQ_BIN/imgq" cancel --batch slow >/dev/null # its jobs are not the point here

for i in 1 2 3 4; do
    printf '{"prompt":"a steel spoon %d","model":"gpt-image-1-mini","quality":"low","output_format":"png"}\n' "$i"
done | "$IMGQ_BIN/imgq" submit --batch after - >/dev/null
"$IMGQ_BIN/imgq-worker" --concurrency 8 --rate-limit openai=concurrent=2 \
    --provider-timeout-ms 3000 --lease-ms 2000 --exit-when-idle 2>"$IMGQ_TMP/worker-after.log" &
after=$!
track_pid "$after"
wait_pid "$after" 60 || fail "the worker after the crash did not finish"
finished=$(($(date +%s%N) / 1000000))
assert_contains "$("$IMGQ_BIN/imgq" batch status after --json)" "\"done\":4"
first=$(grep -o 'POST /v1/images/generations 200 .*arrived=[0-9]*' "$IMGQ_TMP"/sim-*.log |
    grep -o 'arrived=[0-9]*' | cut -d= -f2 | awk -v k="$killed" '$1 >= k' | sort -n | head -1)
[ -n "$first" ] || fail "no request of the second worker reached the simulator"
echo "second worker: first request at $first ($((first - expiry)) ms after the slot expiry)," \
    "done at $finished ($((finished - expiry)) ms after it)"
# The dead worker's slots held until they expired (a little slack between Redis' clock and the
# simulator's), and the next worker was not held up much longer than that.
[ "$first" -ge $((expiry - 50)) ] || fail "a request went out while the dead worker's slots held"
[ "$first" -le $((expiry + 2000)) ] || fail "the next worker waited $((first - expiry)) ms past the slot expiry"
[ "$finished" -le $((expiry + 6000)) ] || fail "the next worker was wedged past the slot expiry"

# ---- 3. SIGTERM releases the slots -------------------------------------------------------
for i in 1 2 3 4; do
    printf '{"prompt":"[sim:latency:60000] a slow chair %d","model":"gpt-image-1-mini","quality":"low","output_format":"png"}\n' "$i"
done | "$IMGQ_BIN/imgq" submit --batch term - >/dev/null
"$IMGQ_BIN/imgq-worker" --concurrency 8 --rate-limit openai=concurrent=2 --grace-ms 300 \
    2>"$IMGQ_TMP/worker-term.log" &
term=$!
track_pid "$term"
wait_until 10 "the worker holding both slots" \
    bash -c "[ \"\$(redis-cli -p $REDIS_PORT zcard '$slots')\" = 2 ]"
kill -TERM "$term"
wait_pid "$term" 20 || fail "the worker did not stop on SIGTERM"
assert_eq 0 "$(rcli zcard "$slots")" "slots left after a graceful stop"
assert_contains "$("$IMGQ_BIN/imgq" batch status term --json)" '"queued":4' "jobs handed back"
echo "PASS rate_limit_concurrent"
