#!/usr/bin/env bash
# Identical requests in flight at once are coalesced, through a real worker (imgq-sim, s3rver,
# redis-server): four identical jobs submitted together make one provider call, all four
# complete with the same object, the ledger charges one call and records three dedup hits;
# the Redis index answers a later identical job without asking S3, and when the index is
# lost, S3 (the truth) still does: no call either way.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/env.sh"
imgq_env_setup
start_redis
start_s3 imgq-coalesce
start_sim --latency-ms 1500
imgq() { "$IMGQ_BIN/imgq" "$@"; }
calls() { curl -s "http://127.0.0.1:$SIM_PORT/sim/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"]["generations"]["total"])'; }
objects() { find "$IMGQ_TMP" -path '*imgq-coalesce/images/*' -name '*._S3rver_object' ! -name '*.json._S3rver_object' | wc -l; }
work() { "$IMGQ_BIN/imgq-worker" --exit-when-idle --concurrency 8 --retry-base-ms 50 2>"$IMGQ_TMP/$1.log" || fail "worker $1 failed"; }
jget() { python3 -c "import json,sys; d=json.load(sys.stdin); print(d$1)"; }
rcli() { redis-cli -p "$REDIS_PORT" "$@"; }

for id in a b c d; do
    printf '{"id":"%s","prompt":"a brass lamp on white","model":"gpt-image-1-mini","quality":"low"}\n' "$id"
done >"$IMGQ_TMP/same.jsonl"
# A different request beside them is not held back.
printf '{"id":"e","prompt":"a brass bowl on white","model":"gpt-image-1-mini","quality":"low"}\n' >>"$IMGQ_TMP/same.jsonl"
imgq submit --batch together "$IMGQ_TMP/same.jsonl" >/dev/null
work together
assert_eq 5 "$(imgq batch status together --json | jget '["counts"]["done"]')" "all five done"
assert_eq 2 "$(calls)" "one provider call for the four identical jobs, one for the other"
assert_eq 2 "$(objects)" "two objects"
imgq batch results together >"$IMGQ_TMP/together.jsonl"
assert_eq 1 "$(grep '"client_id":"[abcd]"' "$IMGQ_TMP/together.jsonl" | grep -o '"key":"[^"]*"' | sort -u | wc -l)" \
    "the four identical jobs share one object"
assert_eq 3 "$(grep -c '"billed":"dedup"' "$IMGQ_TMP/together.jsonl")" "three of them billed as dedup"
assert_contains "$(cat "$IMGQ_TMP/together.log")" "the same request is in flight as job"
# The ledger: two paid calls, three dedup entries (at \$0, saving the expected cost each).
ledger=$(rcli XRANGE 'imgq:{default}:ledger' - + | paste -sd' ')
assert_eq 2 "$(grep -o 'reason usage' <<<"${ledger//$' '/ }" | wc -l)" "two paid calls in the ledger"
assert_eq 3 "$(grep -o 'reason dedup' <<<"${ledger//$' '/ }" | wc -l)" "three dedup entries"
assert_eq 0 "$(rcli KEYS 'imgq:{default}:inflight:*' | wc -w)" "no leader left behind"

# A generation longer than the lease (1.5 s here, against a 1 s lease, renewed): the others
# still wait for the leader instead of calling again when their wait of one lease is over.
for id in p q r; do
    printf '{"id":"%s","prompt":"a pewter jug on white","model":"gpt-image-1-mini","quality":"low"}\n' "$id"
done >"$IMGQ_TMP/slow.jsonl"
imgq submit --batch slow "$IMGQ_TMP/slow.jsonl" >/dev/null
"$IMGQ_BIN/imgq-worker" --exit-when-idle --concurrency 8 --lease-ms 1000 2>"$IMGQ_TMP/slow.log" || fail "worker slow failed"
assert_eq 3 "$(imgq batch status slow --json | jget '["counts"]["done"]')" "all three done"
assert_eq 3 "$(calls)" "one call for three identical jobs however long it takes"

# Later, the same request: answered by the Redis index, no HEAD needed, no call.
printf '{"id":"f","prompt":"a brass lamp on white","model":"gpt-image-1-mini","quality":"low"}\n' >"$IMGQ_TMP/later.jsonl"
imgq submit --batch later "$IMGQ_TMP/later.jsonl" >/dev/null
work later
assert_eq 3 "$(calls)" "no call for a stored image"
assert_contains "$(cat "$IMGQ_TMP/later.log")" "done at \$0 (dedup, index)"
# The index is a cache: without it, S3 still says the image is there.
rcli DEL 'imgq:{default}:objects' >/dev/null
printf '{"id":"g","prompt":"a brass lamp on white","model":"gpt-image-1-mini","quality":"low"}\n' >"$IMGQ_TMP/lost.jsonl"
imgq submit --batch lost "$IMGQ_TMP/lost.jsonl" >/dev/null
work lost
assert_eq 3 "$(calls)" "no call with the index gone"
assert_contains "$(cat "$IMGQ_TMP/lost.log")" "done at \$0 (dedup, S3)"
assert_eq 3 "$(objects)" "still three objects"
echo "PASS coalesce"
