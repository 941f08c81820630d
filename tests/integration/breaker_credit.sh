#!/usr/bin/env bash
# Health statistics and fallbacks, through real workers, Redis and imgq-sim (issue 13 item 10):
#   - gpt-image-1-mini fails every call: its breaker opens and its jobs move on (those that
#     named it to its cheapest fallback; auto jobs routed to it earlier to the cheapest model
#     that can do them, fallback or not); the routing statistics (P:{Q}:models) credit every
#     success to the model that served it and every failure to the model that failed (the
#     requested model's successes stay at 0);
#   - while its breaker is open, "model": "auto" does not choose it (imgq route --explain says
#     so, and the jobs submitted meanwhile are routed elsewhere and never reach it);
#   - gemini-2.5-flash-image fails every call: its jobs go to the cheapest healthy fallback,
#     seedream-4-0 at $0.03, not to the catalog's first fallback gpt-image-2 (dearer for this
#     job), and each job records why.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/env.sh"
imgq_env_setup
start_redis
start_s3 imgq-credit
start_sim --latency-ms 20
SIM="http://127.0.0.1:$SIM_PORT"
THRESHOLD=3
CONCURRENCY=4

sim_fail() { # sim_fail MODEL RATE
    curl -sf -X POST -H 'Content-Type: application/json' \
        -d "{\"model\":\"$1\",\"status\":500,\"rate\":$2}" "$SIM/sim/fail" >/dev/null
}
# The routing statistics (lib.lua: P:{Q}:models, under the CLI's default prefix and queue).
MODELS='imgq:{default}:models'
stat() { # stat ok|fail MODEL: its count in the statistics (0 when absent)
    local v
    v=$(redis-cli -p "$REDIS_PORT" HGET "$MODELS" "$1:$2")
    [[ "$v" =~ ^[0-9]+$ ]] && echo "$v" || echo 0
}
server_errors() { # failed generation calls the simulator answered so far
    curl -s "$SIM/sim/stats" |
        python3 -c "import json,sys; print(json.load(sys.stdin)['requests']['generations']['server_error'])"
}
work() { # work LOG
    "$IMGQ_BIN/imgq-worker" --exit-when-idle --concurrency "$CONCURRENCY" --retry-base-ms 50 \
        --retry-max-ms 200 --breaker-threshold "$THRESHOLD" --breaker-cooldown-ms 600000 \
        2>"$IMGQ_TMP/$1.log"
}
served_by() { # served_by BATCH MODEL: jobs of the batch done on MODEL
    "$IMGQ_BIN/imgq" batch results "$1" | python3 -c "
import json, sys
print(sum(1 for l in sys.stdin if json.loads(l).get('state') == 'done' and json.loads(l).get('model') == '$2'))"
}
done_count() {
    "$IMGQ_BIN/imgq" batch status "$1" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["counts"]["done"])'
}

# --- the asked model fails: its jobs are served elsewhere, and credited there -----------------
# Auto jobs routed while gpt-image-1-mini is healthy (it is the cheapest at low quality) ...
for i in $(seq 1 6); do
    printf '{"prompt":"an early felt cap number %d","model":"auto","quality":"low"}\n' "$i"
done >"$IMGQ_TMP/early.jsonl"
"$IMGQ_BIN/imgq" submit --batch early "$IMGQ_TMP/early.jsonl" >/dev/null
"$IMGQ_BIN/imgq" batch results early | grep -c '"model":"gpt-image-1-mini"' | grep -qx 6 ||
    fail "the early auto jobs were not routed to gpt-image-1-mini"
# ... and jobs that ask for it by name; then it fails every call.
sim_fail gpt-image-1-mini 1
for i in $(seq 1 14); do
    printf '{"prompt":"a felt hat number %d","model":"gpt-image-1-mini","quality":"low"}\n' "$i"
done >"$IMGQ_TMP/mini.jsonl"
"$IMGQ_BIN/imgq" submit --batch mini "$IMGQ_TMP/mini.jsonl" >/dev/null
work mini
assert_eq "14" "$(done_count mini)" "every job finished"
assert_eq "6" "$(done_count early)" "every early auto job finished"
# An auto job may move to any model that can do it: the cheapest at low quality after the
# broken one is flux-schnell ($0.003), which is no fallback of gpt-image-1-mini.
assert_eq "6" "$(served_by early flux-schnell)" "the early auto jobs went to the cheapest eligible model"
one=$("$IMGQ_BIN/imgq" batch results early | head -1)
assert_contains "$one" '"fallback":{"from":"gpt-image-1-mini"'
assert_contains "$one" 'flux-schnell is the cheapest healthy eligible candidate at expected $0.003000'
assert_contains "$one" 'every model that can do this auto job'
assert_eq "6" "$(stat ok flux-schnell)" "flux-schnell is credited with the auto jobs it served"
on2=$(served_by mini gpt-image-2)
on15=$(served_by mini gpt-image-1.5)
assert_eq "14" "$((on2 + on15))" "every job was served by a fallback"
assert_eq "0" "$(stat ok gpt-image-1-mini)" "the failing model is credited with no success"
assert_eq "$on2" "$(stat ok gpt-image-2)" "gpt-image-2 is credited with the jobs it served"
assert_eq "$on15" "$(stat ok gpt-image-1.5)" "gpt-image-1.5 is credited with the jobs it served"
# Every failed call was gpt-image-1-mini's (one call per attempt): each is counted against it.
assert_eq "$(server_errors)" "$(stat fail gpt-image-1-mini)" "failures counted against the model called"
[ "$(stat fail gpt-image-1-mini)" -ge "$THRESHOLD" ] || fail "the failing model's failures were not counted"
assert_eq "0:0:0" "$(stat fail gpt-image-2):$(stat fail gpt-image-1.5):$(stat fail flux-schnell)" \
    "no failure counted against the models that served"
one=$("$IMGQ_BIN/imgq" batch results mini | head -1)
assert_contains "$one" '"fallback":{"from":"gpt-image-1-mini"'
assert_contains "$one" 'the cheapest healthy eligible candidate at expected $'

# --- "model": "auto" leaves the open breaker out -----------------------------------------------
printf '{"prompt":"a felt hat for auto","model":"auto","quality":"low"}\n' >"$IMGQ_TMP/auto1.json"
explain=$("$IMGQ_BIN/imgq" route --explain "$IMGQ_TMP/auto1.json")
line=$(grep '^ *gpt-image-1-mini ' <<<"$explain" || true)
assert_contains "$line" "circuit breaker open" "route --explain leaves the open breaker's model out"
assert_not_contains "$line" "chosen"
for i in $(seq 1 6); do
    printf '{"prompt":"an auto felt hat number %d","model":"auto","quality":"low"}\n' "$i"
done >"$IMGQ_TMP/auto.jsonl"
"$IMGQ_BIN/imgq" submit --batch auto "$IMGQ_TMP/auto.jsonl" >/dev/null
fails_before=$(stat fail gpt-image-1-mini)
work auto
assert_eq "6" "$(done_count auto)" "every auto job finished"
assert_eq "0" "$(served_by auto gpt-image-1-mini)" "no auto job on the open breaker's model"
"$IMGQ_BIN/imgq" batch results auto | python3 -c "
import json, sys
n = 0
for l in sys.stdin:
    j = json.loads(l)
    n += 1
    assert j.get('requested_model', j['model']) != 'gpt-image-1-mini', ('routed to the open model', j)
    assert 'fallback' not in j, ('routed to the open model, then moved', j)
assert n == 6, n
" || fail "an auto job was routed to the model whose breaker is open"
assert_eq "$fails_before" "$(stat fail gpt-image-1-mini)" "no auto job called the failing model"
assert_eq "0" "$(stat ok gpt-image-1-mini)" "still no success credited to the failing model"

# --- several fallbacks: the cheapest healthy one ------------------------------------------------
# gemini-2.5-flash-image's fallbacks are gpt-image-2 (medium, about $0.032 here) then
# seedream-4-0 ($0.03): the second listed is the cheaper.
sim_fail gemini-2.5-flash-image 1
for i in $(seq 1 8); do
    printf '{"prompt":"a clay jug number %d","model":"gemini-2.5-flash-image"}\n' "$i"
done >"$IMGQ_TMP/gemini.jsonl"
"$IMGQ_BIN/imgq" submit --batch gemini "$IMGQ_TMP/gemini.jsonl" >/dev/null
work gemini
assert_eq "8" "$(done_count gemini)" "every gemini job finished"
assert_eq "8" "$(served_by gemini seedream-4-0)" "the cheapest healthy fallback served them all"
assert_eq "0" "$(served_by gemini gpt-image-2)" "the dearer first-listed fallback served none"
assert_eq "8" "$(stat ok seedream-4-0)" "credited to the model that served"
assert_eq "0" "$(stat ok gemini-2.5-flash-image)" "nothing credited to the failing model"
one=$("$IMGQ_BIN/imgq" batch results gemini | head -1)
assert_contains "$one" '"fallback":{"from":"gemini-2.5-flash-image"'
assert_contains "$one" 'seedream-4-0 is the cheapest healthy eligible candidate at expected $0.030000'

# --- an auto job's cost cap holds for the model it moves to -----------------------------------
# Two auto jobs at medium quality, routed to seedream-4-0 ($0.03), one capped at $0.03: when
# seedream-4-0 fails, the uncapped one moves to the cheapest model that can do it
# (gpt-image-1.5, $0.0339); every other model is over the cap, so the capped one waits for
# seedream-4-0's breaker to let a probe through, and is served there once it is healthy again.
printf '%s\n' \
    '{"id":"capped","prompt":"a linen napkin","model":"auto","quality":"medium","max_cost_usd":"0.03","max_attempts":10}' \
    '{"id":"twin","prompt":"a linen tablecloth","model":"auto","quality":"medium","max_attempts":10}' \
    >"$IMGQ_TMP/cap.jsonl"
"$IMGQ_BIN/imgq" submit --batch cap "$IMGQ_TMP/cap.jsonl" >/dev/null
"$IMGQ_BIN/imgq" batch results cap | grep -c '"model":"seedream-4-0"' | grep -qx 2 ||
    fail "the capped jobs were not routed to seedream-4-0"
sim_fail seedream-4-0 1
"$IMGQ_BIN/imgq-worker" --exit-when-idle --concurrency "$CONCURRENCY" --retry-base-ms 50 \
    --retry-max-ms 200 --breaker-threshold 2 --breaker-cooldown-ms 1500 2>"$IMGQ_TMP/cap.log" &
cap_worker=$!
track_pid "$cap_worker"
job_of() { "$IMGQ_BIN/imgq" batch results cap | grep "\"client_id\":\"$1\""; }
twin_done() { job_of twin | grep -q '"state":"done"'; }
wait_until 60 "the uncapped job served elsewhere" twin_done
assert_eq "gpt-image-1.5 seedream-4-0" "$(python3 -c 'import json,sys; j=json.loads(sys.argv[1])
print(j["model"], j["fallback"]["from"])' "$(job_of twin)")" "the uncapped job moved to the cheapest model"
assert_not_contains "$(job_of capped)" '"state":"done"' "the capped job did not move over its cap"
sim_fail seedream-4-0 0
wait_pid "$cap_worker" 120 || fail "the worker did not finish the capped job"
capped=$(job_of capped)
assert_eq "done seedream-4-0 - 30000" "$(python3 -c 'import json,sys; j=json.loads(sys.argv[1])
print(j["state"], j["model"], j.get("fallback", {}).get("from", "-"), j["cost_micros"])' "$capped")" \
    "the capped job stayed on its model, within its cap"
echo "PASS breaker_credit"
