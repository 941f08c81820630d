#!/usr/bin/env bash
# imgq submit against a real redis-server: an invalid JSONL file is refused whole with every
# bad line reported and nothing written to Redis; a valid file is enqueued once, and
# resubmitting it (same ids, or same batch for lines without ids) enqueues nothing twice.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/env.sh"
imgq_env_setup
start_redis

cat >"$IMGQ_TMP/bad.jsonl" <<'EOF'
{"id":"ok-1","prompt":"a red mug on white","model":"gpt-image-1.5","quality":"low"}
{"id":"bad-json","prompt": "unterminated
{"id":"bad-model","prompt":"a lamp","model":"gpt-image-9"}
{"id":"bad-size","prompt":"a chair","model":"gpt-image-1.5","size":"1254x836"}
{"id":"no-prompt","model":"gpt-image-1-mini"}

{"id":"bad-n","prompt":"a chair","model":"gpt-image-1.5","n":11}
{"id":"shutdown","prompt":"a chair","model":"gpt-image-1"}
{"id":"ok-2","prompt":"a blue mug on white","model":"gpt-image-1-mini"}
EOF
set +e
"$IMGQ_BIN/imgq" submit --batch refused "$IMGQ_TMP/bad.jsonl" >"$IMGQ_TMP/out" 2>"$IMGQ_TMP/err"
rc=$?
set -e
cat "$IMGQ_TMP/err"
[ "$rc" -ne 0 ] || fail "an invalid file was accepted"
assert_contains "$(cat "$IMGQ_TMP/err")" "bad.jsonl:2: (json)"
assert_contains "$(cat "$IMGQ_TMP/err")" "bad.jsonl:3: model: 'gpt-image-9' is not in the catalog"
assert_contains "$(cat "$IMGQ_TMP/err")" "bad.jsonl:4: size: '1254x836' is not allowed for model 'gpt-image-1.5' (allowed: 1024x1024, 1024x1536, 1536x1024)"
assert_contains "$(cat "$IMGQ_TMP/err")" "bad.jsonl:5: prompt: is required"
assert_contains "$(cat "$IMGQ_TMP/err")" "bad.jsonl:7: n: 11 is out of range for model 'gpt-image-1.5' (1 to 10)"
assert_contains "$(cat "$IMGQ_TMP/err")" "bad.jsonl:8: model: 'gpt-image-1' was shut down on 2026-10-23; use 'gpt-image-1.5' instead"
assert_contains "$(cat "$IMGQ_TMP/err")" "6 of 8 lines invalid; nothing was enqueued"
assert_eq "$(wc -c <"$IMGQ_TMP/out")" "0" "nothing on stdout for a refused file"
assert_eq "$(redis-cli -p "$REDIS_PORT" dbsize)" "0" "nothing written to Redis"

# A valid file: enqueued once; the same file again enqueues nothing.
grep '"ok-' "$IMGQ_TMP/bad.jsonl" >"$IMGQ_TMP/good.jsonl"
printf '{"prompt":"no id here","model":"gpt-image-1-mini"}\n' >>"$IMGQ_TMP/good.jsonl"
batch=$("$IMGQ_BIN/imgq" submit --batch good "$IMGQ_TMP/good.jsonl" 2>"$IMGQ_TMP/err")
assert_eq "$batch" "good" "batch id printed"
assert_contains "$(cat "$IMGQ_TMP/err")" "3 jobs enqueued, 0 already present"
"$IMGQ_BIN/imgq" submit --batch good "$IMGQ_TMP/good.jsonl" 2>"$IMGQ_TMP/err" >/dev/null
assert_contains "$(cat "$IMGQ_TMP/err")" "0 jobs enqueued, 3 already present"
# The same ids in another batch are the same jobs (the id is the idempotency key).
"$IMGQ_BIN/imgq" submit --batch other --json "$IMGQ_TMP/good.jsonl" >"$IMGQ_TMP/out"
assert_contains "$(cat "$IMGQ_TMP/out")" '"created":1,"existing":2'
assert_eq "$(redis-cli -p "$REDIS_PORT" hget 'imgq:{default}:stats' queued)" "4" "4 distinct jobs queued"

# Capability gates at submit: size rules, guidance_scale, reference images and masks are refused
# naming the model and its limit, before anything is spent or enqueued.
cat >"$IMGQ_TMP/gates.jsonl" <<'EOF'
{"id":"g-size16","prompt":"a","model":"gpt-image-2","size":"1000x1000"}
{"id":"g-floor","prompt":"a","model":"seedream-4-5","size":"1024x1024"}
{"id":"g-guid","prompt":"a","model":"flux-1.1-pro","guidance_scale":6}
{"id":"g-noguid","prompt":"a","model":"gpt-image-2","guidance_scale":3}
{"id":"g-refs","prompt":"a","model":"gemini-2.5-flash-image","images":["s3://bkt/1","s3://bkt/2","s3://bkt/3","s3://bkt/4"]}
{"id":"g-noedit","prompt":"a","model":"flux-schnell","images":["https://a.example.com/x.png"]}
{"id":"g-http","prompt":"a","model":"gpt-image-2","images":["http://example.com/x.png"]}
{"id":"g-mask","prompt":"a","model":"seedream-4-0","images":["s3://bkt/1"],"mask":"s3://bkt/m.png"}
{"id":"g-ok","prompt":"a","model":"gpt-image-2","size":"1920x1088","images":["s3://bkt/1","data:image/png;base64,iVBORw0KGgo="],"mask":"s3://bkt/m.png"}
EOF
set +e
"$IMGQ_BIN/imgq" submit --batch gates "$IMGQ_TMP/gates.jsonl" >"$IMGQ_TMP/out" 2>"$IMGQ_TMP/err"
rc=$?
set -e
[ "$rc" -ne 0 ] || fail "a file with refused capabilities was accepted"
err=$(cat "$IMGQ_TMP/err")
assert_contains "$err" "gates.jsonl:1: size: gpt-image-2 takes sizes whose sides are multiples of 16 (1000x1000 is not)"
assert_contains "$err" "gates.jsonl:2: size: seedream-4-5 needs at least 3,686,400 pixels (1920x1920); 1024x1024 has 1,048,576"
assert_contains "$err" "gates.jsonl:3: guidance_scale: 6 is out of range for model 'flux-1.1-pro' (1.5 to 5)"
assert_contains "$err" "gates.jsonl:4: guidance_scale: model 'gpt-image-2' has no guidance_scale setting"
assert_contains "$err" "gates.jsonl:5: images: model 'gemini-2.5-flash-image' takes at most 3 reference images (got 4)"
assert_contains "$err" "gates.jsonl:6: images: model 'flux-schnell' takes no reference images (it cannot edit)"
assert_contains "$err" "gates.jsonl:7: images[0]: http:// is only for 127.0.0.1, localhost and [::1]; use https://"
assert_contains "$err" "gates.jsonl:8: mask: model 'seedream-4-0' takes no mask"
assert_contains "$err" "8 of 9 lines invalid; nothing was enqueued"
assert_eq "$(wc -c <"$IMGQ_TMP/out")" "0" "nothing on stdout for the refused gates file"

# The shipped JSONL example still submits whole.
set +e
"$IMGQ_BIN/imgq" --queue examples submit --batch examples "$IMGQ_ROOT/deploy/examples/catalog.jsonl" >/dev/null 2>"$IMGQ_TMP/err"
rc=$?
set -e
cat "$IMGQ_TMP/err"
assert_eq "0" "$rc" "deploy/examples/catalog.jsonl submits"

# Standard input works, and priorities are strict: on a queue of its own, a worker taking one
# job at a time runs the high-priority job first although it was submitted last.
printf '{"id":"p-low","prompt":"x","model":"gpt-image-1-mini","priority":"low"}\n{"id":"p-normal","prompt":"y","model":"gpt-image-1-mini"}\n{"id":"p-high","prompt":"z","model":"gpt-image-1-mini","priority":"high"}\n' |
    "$IMGQ_BIN/imgq" --queue prio submit --batch prio - >/dev/null
"$IMGQ_BIN/imgq-worker" --queue prio --noop --concurrency 1 --exit-when-idle 2>/dev/null
order=$(redis-cli -p "$REDIS_PORT" xrange 'imgq:{prio}:events' - + | grep -A1 '^job$' | grep '^j' |
    while read -r id; do "$IMGQ_BIN/imgq" --queue prio job show "$id" | grep -o '"id": "p-[a-z]*"' | cut -d'"' -f4; done | paste -sd' ')
assert_eq "p-high p-normal p-low" "$order" "completion order follows priority"

# The first pass keeps the jobs for the second in a temporary file: where there is none to be
# had, the submit fails saying where, and nothing is enqueued.
set +e
TMPDIR="$IMGQ_TMP/no-such-dir" "$IMGQ_BIN/imgq" submit --batch notmp "$IMGQ_TMP/good.jsonl" \
    2>"$IMGQ_TMP/err"
rc=$?
set -e
assert_eq "1" "$rc" "a submit without a temporary directory fails"
assert_contains "$(cat "$IMGQ_TMP/err")" "cannot create a temporary file in $IMGQ_TMP/no-such-dir"
assert_eq "0" "$(redis-cli -p "$REDIS_PORT" exists 'imgq:{default}:b:notmp' | tr -d '\r')" \
    "nothing of the batch was written"
# Read from standard input, the same lines again are the same jobs (the lines with an "id"
# were submitted above in batch good; the line without one is keyed by its batch).
out=$("$IMGQ_BIN/imgq" submit --batch stdin-again - <"$IMGQ_TMP/good.jsonl" 2>&1)
assert_contains "$out" "1 jobs enqueued, 2 already present"
out=$("$IMGQ_BIN/imgq" submit --batch stdin-again - <"$IMGQ_TMP/good.jsonl" 2>&1)
assert_contains "$out" "0 jobs enqueued, 3 already present"

# A batch name may not hold ':' (batch "A:jobs" would collide with batch A's job list).
set +e
"$IMGQ_BIN/imgq" submit --batch 'A:jobs' "$IMGQ_TMP/good.jsonl" 2>"$IMGQ_TMP/err"
rc=$?
set -e
assert_eq "2" "$rc" "a batch name with ':' is a usage error"
assert_contains "$(cat "$IMGQ_TMP/err")" "--batch 'A:jobs'"

# Status of a batch that does not exist is an error naming it.
set +e
"$IMGQ_BIN/imgq" batch status nope 2>"$IMGQ_TMP/err"
rc=$?
set -e
[ "$rc" -eq 3 ] || fail "status of a missing batch returned $rc (3: not found)"
assert_contains "$(cat "$IMGQ_TMP/err")" "no batch 'nope'"
echo "PASS submit_validation"
