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

# Standard input works, and priorities are strict: on a queue of its own, a worker taking one
# job at a time runs the high-priority job first although it was submitted last.
printf '{"id":"p-low","prompt":"x","model":"gpt-image-1-mini","priority":"low"}\n{"id":"p-normal","prompt":"y","model":"gpt-image-1-mini"}\n{"id":"p-high","prompt":"z","model":"gpt-image-1-mini","priority":"high"}\n' |
    "$IMGQ_BIN/imgq" --queue prio submit --batch prio - >/dev/null
"$IMGQ_BIN/imgq-worker" --queue prio --noop --concurrency 1 --exit-when-idle 2>/dev/null
order=$(redis-cli -p "$REDIS_PORT" xrange 'imgq:{prio}:events' - + | grep -A1 '^job$' | grep '^j' |
    while read -r id; do "$IMGQ_BIN/imgq" --queue prio job show "$id" | grep -o '"id": "p-[a-z]*"' | cut -d'"' -f4; done | paste -sd' ')
assert_eq "p-high p-normal p-low" "$order" "completion order follows priority"

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
[ "$rc" -eq 1 ] || fail "status of a missing batch returned $rc"
assert_contains "$(cat "$IMGQ_TMP/err")" "no batch 'nope'"
echo "PASS submit_validation"
