#!/usr/bin/env bash
# Fan-out: a job asking 4 images of a model that returns one image per call
# (gemini-2.5-flash-image) becomes 4 provider calls, 4 stored objects and 4x the per-image
# cost; the same on a gpt-image model is 1 call.  A call that fails is retried on its own:
# its siblings' images (already paid for) are not generated again.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/env.sh"
imgq_env_setup
start_redis
start_s3 imgq-fanout
start_sim --latency-ms 20
stats() { curl -s "http://127.0.0.1:$SIM_PORT/sim/stats"; }
calls() { stats | grep -o "\"$1\":{[^}]*}" | grep -o '"total":[0-9]*' | cut -d: -f2; }
run() { # run BATCH JSON-LINE
    printf '%s\n' "$2" >"$IMGQ_TMP/$1.jsonl"
    "$IMGQ_BIN/imgq" submit --batch "$1" "$IMGQ_TMP/$1.jsonl" >/dev/null
    "$IMGQ_BIN/imgq-worker" --exit-when-idle --retry-base-ms 50 2>"$IMGQ_TMP/$1.log"
    "$IMGQ_BIN/imgq" batch results "$1"
}

r=$(run gem '{"id":"g4","prompt":"a ceramic teapot on linen","model":"gemini-2.5-flash-image","size":"1024x1024","n":4}')
assert_contains "$r" '"state":"done"'
assert_eq "4" "$(calls gemini)" "four provider calls for n=4 on a one-image model"
assert_eq "4" "$(grep -o '"key":"[^"]*"' <<<"$r" | sort -u | wc -l)" "four stored objects"
assert_contains "$r" '"provider_calls":4'
# Cost: 4 x (1290 image tokens at $30/M + the prompt's text tokens at $0.30/M, from usage).
text=$(grep -o '"promptTokenCount":[0-9]*' <<<"$r" | head -1 | cut -d: -f2)
per_image=$((1290 * 30)) # micro-USD; text tokens at 0.3 micro-USD each, rounded once per call
cost=$(grep -o '"cost_micros":[0-9]*' <<<"$r" | cut -d: -f2)
expected=$((4 * (per_image + (text * 3 + 5) / 10)))
assert_eq "$expected" "$cost" "4x the per-image cost, from usage"
objects=$(find "$IMGQ_TMP" -path '*imgq-fanout/images/*' -name '*._S3rver_object' ! -name '*.json._S3rver_object' | wc -l)
assert_eq "4" "$objects" "four objects in S3"

before=$(calls generations)
r=$(run gpt '{"id":"o4","prompt":"a ceramic teapot on linen","model":"gpt-image-1-mini","quality":"low","n":4}')
assert_contains "$r" '"state":"done"'
assert_eq "$((before + 1))" "$(calls generations)" "one call for n=4 on a model that takes n"
assert_eq "4" "$(grep -o '"key":"[^"]*"' <<<"$r" | sort -u | wc -l)" "four stored objects"

# A flat-priced one-image model: 2 calls, 2 objects, exactly 2 x $0.03 from the catalog.
r=$(run sd '{"id":"s2","prompt":"a linen shirt on a hanger","model":"seedream-4-0","size":"2048x2048","n":2}')
assert_contains "$r" '"state":"done"'
assert_eq "2" "$(calls seedream)" "two calls for n=2 on seedream"
assert_contains "$r" '"cost_micros":60000'
assert_eq "2" "$(grep -o '"key":"[^"]*"' <<<"$r" | sort -u | wc -l)" "two stored objects"

# One call of a fan-out fails once: only it is sent again.
before=$(calls gemini)
r=$(run once '{"id":"g3","prompt":"a wool rug [sim:fail-once:rug]","model":"gemini-2.5-flash-image","n":3}')
assert_contains "$r" '"state":"done"'
assert_contains "$r" '"attempts":1'
assert_eq "$((before + 4))" "$(calls gemini)" "3 calls plus one retry of the failed call"
assert_contains "$(cat "$IMGQ_TMP/once.log")" "retrying it alone"
# "model": "auto": routed at submit to the cheapest eligible model, run like any job, and
# every provider outcome counted per model for later routing.
r=$(run auto '{"id":"a1","prompt":"a linen tote bag","model":"auto","quality":"low"}')
assert_contains "$r" '"model":"gpt-image-1-mini"'
assert_contains "$r" '"state":"done"'
[ "$(redis-cli -p "$REDIS_PORT" hget 'imgq:{default}:models' ok:gpt-image-1-mini)" -ge 2 ] ||
    fail "model outcomes are not counted"
assert_contains "$(printf '{"prompt":"x","model":"auto","quality":"high"}' |
    "$IMGQ_BIN/imgq" route --explain -)" "seedream-4-0             chosen"
echo "PASS fanout"
