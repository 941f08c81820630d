#!/usr/bin/env bash
# Retry hints and the end of retrying, through a real worker, Redis and imgq-sim:
#   - a 429 whose retry-after is huge (99999999999999999999, beyond 64 bits) is clamped to the
#     worker's --max-retry-after-s, not taken for "no hint" (it was retried every second,
#     forever); the waiting job shows its due time in `imgq job show`;
#   - the job stops after --max-rate-limit-waits (or its own max_rate_limit_waits) and lands
#     in the dead letters as class rate_limit, "retry": false; --max-rate-limit-wait-s ends a
#     job whose waits would total more;
#   - its hinted 429s do not count against the model's circuit breaker (they opened it), and
#     an unrelated job on the same model is served by that model meanwhile;
#   - a 429 with a hint holds the provider's sends under its rate limits (rate.lua 'hold');
#   - an HTTP-date retry-after in the future is honoured.
# (giving_up.sh: the entry and log line of a job's last attempt.)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/env.sh"
imgq_env_setup
start_redis
start_s3 imgq-hints
start_sim --latency-ms 20 --retry-after-header 99999999999999999999 --seed 7

PFX='imgq:{default}:'
rcli() { redis-cli -p "$REDIS_PORT" --raw "$@"; }
jobid() { # jobid BATCH CLIENT_ID
    "$IMGQ_BIN/imgq" batch results "$1" | python3 -c "
import json, sys
for line in sys.stdin:
    j = json.loads(line)
    if j.get('client_id') == '$2':
        print(j['id'])"
}
dead_letter() { # dead_letter BATCH JOB: "CLASS RETRY" of its dead-letter entry (JSON lines)
    "$IMGQ_BIN/imgq" dlq list --batch "$1" --json | python3 -c "
import json, sys
for line in sys.stdin:
    e = json.loads(line)
    if e['id'] == '$2':
        print(e['error']['class'], e['error']['retry'])"
}
# jq-less JSON reads: py EXPR (the document is 'd') < JSON
py() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

cat >"$IMGQ_TMP/hint.jsonl" <<'EOF'
{"id":"limited","prompt":"a copper kettle [sim:429]","model":"gpt-image-1.5","quality":"low"}
{"id":"own-cap","prompt":"a brass kettle [sim:429]","model":"gpt-image-1.5","quality":"low","max_rate_limit_waits":1}
EOF
cat >"$IMGQ_TMP/other.jsonl" <<'EOF'
{"id":"bystander","prompt":"a birch stool on white","model":"gpt-image-1.5","quality":"low"}
EOF
"$IMGQ_BIN/imgq" submit --batch hint "$IMGQ_TMP/hint.jsonl" >/dev/null
LIMITED=$(jobid hint limited)
OWN=$(jobid hint own-cap)

# Breaker threshold 2: two counted failures in a row would open gpt-image-1.5's breaker.
MAX_HINT_S=3
WAITS=3
"$IMGQ_BIN/imgq-worker" --concurrency 4 --retry-base-ms 50 --retry-max-ms 200 --exit-when-idle \
    --breaker-threshold 2 --breaker-cooldown-ms 600000 --max-retry-after-s "$MAX_HINT_S" \
    --max-rate-limit-waits "$WAITS" --rate-limit openai=images=1000 \
    >"$IMGQ_TMP/worker.log" 2>&1 &
WORKER=$!
track_pid "$WORKER"

# --- the job waits, clamped, with its due time shown -----------------------------------------
waiting() {
    "$IMGQ_BIN/imgq" job show "$LIMITED" >"$IMGQ_TMP/show.json" &&
        grep -q '"due_in_s"' "$IMGQ_TMP/show.json"
}
wait_until 60 "job $LIMITED retrying with a due time" waiting
note "job show while it waits: $(grep -E '"(state|due|due_in_s|waiting_on|rl_waits)"' "$IMGQ_TMP/show.json" | tr -d '\n ')"
due_in=$(py 'd["due_in_s"]' <"$IMGQ_TMP/show.json")
[[ $due_in -ge 0 && $due_in -le $MAX_HINT_S ]] ||
    fail "due in $due_in s: the huge retry-after was not clamped to $MAX_HINT_S s"
assert_eq "rate_limit" "$(py 'd["waiting_on"]' <"$IMGQ_TMP/show.json")" "waiting on"
assert_eq "retrying" "$(py 'd["state"]' <"$IMGQ_TMP/show.json")" "state while waiting"
assert_match "$(py 'd["due"]' <"$IMGQ_TMP/show.json")" '^20[0-9][0-9]-[0-9][0-9]-[0-9][0-9]T'
# batch status: the retry's due time, and that it waits on a rate limit.
batch_waiting() {
    "$IMGQ_BIN/imgq" batch status hint >"$IMGQ_TMP/status.txt" &&
        grep -q "[12] waiting on rate limits" "$IMGQ_TMP/status.txt"
}
wait_until 30 "batch status showing the rate-limited retry" batch_waiting
assert_match "$(cat "$IMGQ_TMP/status.txt")" "next due 20[0-9-]*T[0-9:]*Z \(in [0-$MAX_HINT_S] s\)"
last=$(py 'json.dumps(d["attempt_log"][-1])' <"$IMGQ_TMP/show.json")
assert_contains "$last" '"retry_after_clamped_to_ms": 3000'
assert_contains "$last" '"retry": true'
# The hint holds the provider's calls under its limits, for every worker.
ttl=$(rcli PTTL "${PFX}rlh:openai")
[[ $ttl -gt 0 && $ttl -le $((MAX_HINT_S * 1000)) ]] || fail "no hold on openai's limits (PTTL $ttl)"
# ... and a take for room under them waits it out (rate.lua, as the binaries load it).
RATE=$(cat "$IMGQ_ROOT/src/lua/lib.lua" "$IMGQ_ROOT/src/lua/rate.lua")
rcli SET "${PFX}rlh:acme" $(($(rcli TIME | head -1) * 1000 + 600000)) PX 600000 >/dev/null
wait_ms=$(rcli EVAL "$RATE" 1 "${PFX}stats" "$PFX" take acme 60000 1000 1 0 0 0 1000 probe)
[[ $wait_ms -gt 590000 && $wait_ms -le 600000 ]] || fail "a take under a hold answered $wait_ms"
held=$(rcli EVAL "$RATE" 1 "${PFX}stats" "$PFX" hold acme2 5000)
[[ $held -gt 4000 && $held -le 5000 ]] || fail "hold answered $held"
[[ $(rcli EVAL "$RATE" 1 "${PFX}stats" "$PFX" take acme2 60000 1000 1 0 0 0 1000 p2) -gt 0 ]] ||
    fail "a take right after a hold was not told to wait"

# An unrelated job on the same model meanwhile: served by it, not moved by a breaker.
"$IMGQ_BIN/imgq" submit --batch other "$IMGQ_TMP/other.jsonl" >/dev/null
other_done() {
    [[ $("$IMGQ_BIN/imgq" batch status other --json | py 'd["counts"]["done"]') == 1 ]]
}
wait_until 60 "the unrelated job done" other_done
assert_contains "$("$IMGQ_BIN/imgq" batch results other)" '"model":"gpt-image-1.5"'
assert_not_contains "$("$IMGQ_BIN/imgq" batch results other)" '"fallback"'

# --- after the cap: dead letters, class rate_limit --------------------------------------------
wait_pid "$WORKER" 120 || fail "the worker did not end the rate-limited job (still retrying?)"
"$IMGQ_BIN/imgq" job show "$LIMITED" >"$IMGQ_TMP/show.json"
assert_eq "failed" "$(py 'd["state"]' <"$IMGQ_TMP/show.json")" "state after the cap"
assert_eq "rate_limit" "$(py 'd["error"]["class"]' <"$IMGQ_TMP/show.json")" "class after the cap"
assert_eq "False" "$(py 'd["error"]["retry"]' <"$IMGQ_TMP/show.json")" "error.retry after the cap"
assert_contains "$(py 'd["error"]["giving_up"]' <"$IMGQ_TMP/show.json")" "at most $WAITS rate-limit waits"
assert_eq "0" "$(py 'd["attempts"]' <"$IMGQ_TMP/show.json")" "429s use no attempt"
assert_eq "$((WAITS + 1))" "$(py 'len(d["attempt_log"])' <"$IMGQ_TMP/show.json")" "attempt log entries: its waits, then the last"
# The job with its own cap: one wait, then the end.
"$IMGQ_BIN/imgq" job show "$OWN" >"$IMGQ_TMP/own.json"
assert_eq "failed 2" "$(py 'd["state"] + " " + str(len(d["attempt_log"]))' <"$IMGQ_TMP/own.json")" "the job's own max_rate_limit_waits"
assert_contains "$(py 'd["error"]["giving_up"]' <"$IMGQ_TMP/own.json")" "at most 1 rate-limit waits"
calls=$(curl -s "http://127.0.0.1:$SIM_PORT/sim/stats" | py 'd["requests"]["generations"]["rate_limited"]')
assert_eq "$((WAITS + 1 + 2))" "$calls" "provider calls of the rate-limited jobs (their waits, then the last)"
assert_eq "rate_limit False" "$(dead_letter hint "$LIMITED")" "the dead letter"
# The breaker never counted the hinted 429s.
events=$("$IMGQ_BIN/imgq" events)
assert_not_contains "$events" "breaker.opened"
assert_not_contains "$(grep -o '"model":"gpt-image-1.5"[^}]*' <<<"$("$IMGQ_BIN/imgq" stats --json)" || true)" '"state":"open"'

# --- an HTTP-date hint ----------------------------------------------------------------------
kill_pid TERM "$SIM_PID"
date600=$(date -u -d '+600 seconds' '+%a, %d %b %Y %H:%M:%S GMT')
start_sim --latency-ms 20 --retry-after-header "$date600" --seed 7
printf '{"id":"dated","prompt":"a clay jug [sim:429]","model":"gpt-image-1-mini","quality":"low"}\n' >"$IMGQ_TMP/dated.jsonl"
"$IMGQ_BIN/imgq" submit --batch dated "$IMGQ_TMP/dated.jsonl" >/dev/null
DATED=$(jobid dated dated)
"$IMGQ_BIN/imgq-worker" --concurrency 2 --breaker-threshold 1000 --max-retry-after-s 3600 \
    >"$IMGQ_TMP/worker2.log" 2>&1 &
WORKER=$!
track_pid "$WORKER"
dated_waits() {
    "$IMGQ_BIN/imgq" job show "$DATED" >"$IMGQ_TMP/dated.json" &&
        grep -q '"due_in_s"' "$IMGQ_TMP/dated.json"
}
wait_until 60 "the dated job retrying" dated_waits
due_in=$(py 'd["due_in_s"]' <"$IMGQ_TMP/dated.json")
[[ $due_in -ge 540 && $due_in -le 600 ]] || fail "an HTTP-date 600 s ahead gave a due time in $due_in s"
kill_pid TERM "$WORKER"

# --- a cap on the time spent waiting ----------------------------------------------------------
printf '{"id":"patient","prompt":"a tin jug [sim:429]","model":"gpt-image-1-mini","quality":"low"}\n' >"$IMGQ_TMP/patient.jsonl"
"$IMGQ_BIN/imgq" submit --batch patient "$IMGQ_TMP/patient.jsonl" >/dev/null
PATIENT=$(jobid patient patient)
"$IMGQ_BIN/imgq-worker" --concurrency 2 --breaker-threshold 1000 --max-rate-limit-wait-s 300 \
    >"$IMGQ_TMP/worker3.log" 2>&1 &
WORKER=$!
track_pid "$WORKER"
patient_failed() {
    "$IMGQ_BIN/imgq" job show "$PATIENT" >"$IMGQ_TMP/patient.json" &&
        grep -q '"state": "failed"' "$IMGQ_TMP/patient.json"
}
wait_until 60 "the job told to wait 600 s under a 300 s cap failed" patient_failed
kill_pid TERM "$WORKER"
assert_contains "$(py 'd["error"]["giving_up"]' <"$IMGQ_TMP/patient.json")" "at most 300 s in all"
assert_eq "rate_limit False" "$(dead_letter patient "$PATIENT")" "the patient job's dead letter"

echo "rate_limit_hints: ok"
