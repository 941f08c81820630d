#!/usr/bin/env bash
# Failure injection through imgq-sim, against real redis-server and s3rver:
#   - 429s (a quarter of all calls) wait for retry-after and do not use up attempts;
#   - a 500 is retried and the job completes; a persistent 500 ends the job after max_attempts;
#   - a 400 moderation_blocked is a content-policy failure, reported and never retried;
#   - a 200 without usage is billed at the catalog's ceiling for that request, never at $0.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/env.sh"
imgq_env_setup
start_redis
start_s3 imgq-failures
start_sim --latency-ms 20 --fail-429 0.25 --retry-after 1 --seed 42

no_usage_prompt='a linen tote bag on white [sim:no-usage]'
{
    for i in $(seq 1 20); do
        printf '{"id":"ok-%d","prompt":"ceramic vase number %d on white","model":"gpt-image-1-mini","quality":"low"}\n' "$i" "$i"
    done
    printf '{"id":"once","prompt":"a wool scarf [sim:fail-once:scarf]","model":"gpt-image-1-mini","quality":"low"}\n'
    printf '{"id":"always500","prompt":"a desk [sim:500]","model":"gpt-image-1-mini","quality":"low","max_attempts":3}\n'
    printf '{"id":"blocked","prompt":"a poster [sim:moderation]","model":"gpt-image-1.5","quality":"medium"}\n'
    printf '{"id":"nousage","prompt":"%s","model":"gpt-image-1-mini","quality":"low","size":"1024x1024"}\n' "$no_usage_prompt"
} >"$IMGQ_TMP/jobs.jsonl"
"$IMGQ_BIN/imgq" submit --batch failures "$IMGQ_TMP/jobs.jsonl" >/dev/null

# Retries on one model are under test here: the circuit breakers (which would move jobs to a
# fallback after 5 failures in a row) are kept out of the way; circuit_breaker.sh tests them.
"$IMGQ_BIN/imgq-worker" --concurrency 8 --retry-base-ms 50 --retry-max-ms 400 --exit-when-idle \
    --breaker-threshold 1000 >"$IMGQ_TMP/worker.log" 2>&1 &
track_pid $!
wait_pid $! 120 || fail "the worker did not finish the batch"

"$IMGQ_BIN/imgq" batch results failures >"$IMGQ_TMP/results.jsonl"
result() { grep "\"client_id\":\"$1\"" "$IMGQ_TMP/results.jsonl" || fail "no result for $1"; }
show() { "$IMGQ_BIN/imgq" job show "$(result "$1" | grep -o '"id":"j[0-9a-z]*"' | cut -d'"' -f4)"; }
field() { grep -o "\"$2\":[^,}]*" <<<"$1" | head -1 | cut -d: -f2- | tr -d '"'; }

# 429s: every plain job is done on its first counted attempt, some after waiting out 429s.
rate_limited=0
for i in $(seq 1 20); do
    r=$(result "ok-$i")
    assert_eq "done" "$(field "$r" state)" "ok-$i state"
    assert_eq "1" "$(field "$r" attempts)" "ok-$i: 429s do not use up attempts"
    if show "ok-$i" | grep -q '"class": "rate_limit"'; then
        rate_limited=$((rate_limited + 1))
    fi
done
[ "$rate_limited" -gt 0 ] || fail "no job met a 429 although a quarter of calls get one"
echo "$rate_limited of 20 jobs waited out at least one 429"
show ok-1 >"$IMGQ_TMP/ok1.json"

# A transient 500: retried, then done.
r=$(result once)
assert_eq "done" "$(field "$r" state)" "fail-once job state"
assert_eq "2" "$(field "$r" attempts)" "fail-once job attempts"
assert_contains "$(show once)" '"class": "server"' "the 500 is in the attempt log"

# A persistent 500: ends failed after max_attempts, with the server class on the job.
r=$(result always500)
assert_eq "failed" "$(field "$r" state)" "persistent 500 state"
assert_eq "3" "$(field "$r" attempts)" "persistent 500 uses its 3 attempts"
assert_contains "$r" '"class":"server"'
assert_eq "0" "$(field "$r" cost_micros)" "failed calls are free"

# Moderation: content_policy, one attempt, not retried, free.
r=$(result blocked)
assert_eq "failed" "$(field "$r" state)" "moderation state"
assert_eq "1" "$(field "$r" attempts)" "moderation is not retried"
assert_contains "$r" '"class":"content_policy"'
assert_contains "$r" '"code":"moderation_blocked"'
assert_contains "$r" '"retry":false'
assert_eq "0" "$(field "$r" cost_micros)" "a refused call is free"

# No usage: billed at the ceiling: prompt bytes as text tokens at $2/M plus 272 output
# tokens (low, 1024x1024) at $8/M for gpt-image-1-mini, straight from the catalog.
r=$(result nousage)
assert_eq "done" "$(field "$r" state)" "no-usage job state"
assert_eq "ceiling" "$(field "$r" billed)" "no-usage job is billed at the ceiling"
bytes=$(printf '%s' "$no_usage_prompt" | wc -c)
assert_eq "$((bytes * 2 + 272 * 8))" "$(field "$r" cost_micros)" "ceiling cost in micro-USD"

# Usage-billed jobs cost what their usage says: gpt-image-1-mini low 1024x1024 = 272 image
# tokens x $8/M plus the text tokens the simulator reported at $2/M.
r=$(result ok-1)
text_tokens=$(grep -o '"text_tokens": [0-9]*' "$IMGQ_TMP/ok1.json" | head -1 | grep -o '[0-9]*$')
assert_eq "$((text_tokens * 2 + 272 * 8))" "$(field "$r" cost_micros)" "usage-based cost"

# The batch ledger is the sum of the job costs.
status=$("$IMGQ_BIN/imgq" batch status failures --json)
sum=$(grep -o '"cost_micros":[0-9]*' "$IMGQ_TMP/results.jsonl" | cut -d: -f2 | awk '{s += $1} END {print s}')
assert_eq "$sum" "$(field "$status" cost_micros)" "batch cost = sum of job costs"
assert_contains "$status" '"done":22'
assert_contains "$status" '"failed":2'
echo "PASS failures"
