#!/usr/bin/env bash
# Dedup that never pays twice, through a real worker (imgq-sim, s3rver, redis-server): the same
# catalog submitted again (as a new batch) makes no provider call, creates no object and costs
# $0; each job is done from the stored images, and `imgq report` shows what that saved (the
# expected cost `imgq quote` gives); "dedup": false opts a job out; a job whose images are not
# all stored is generated as usual.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/env.sh"
imgq_env_setup
start_redis
start_s3 imgq-dedup
start_sim --latency-ms 10
imgq() { "$IMGQ_BIN/imgq" "$@"; }
calls() { curl -s "http://127.0.0.1:$SIM_PORT/sim/stats" | python3 -c 'import json,sys; r=json.load(sys.stdin)["requests"]; print(r["generations"]["total"] + r["gemini"]["total"])'; }
objects() { find "$IMGQ_TMP" -path '*imgq-dedup/images/*' -name '*._S3rver_object' ! -name '*.json._S3rver_object' | wc -l; }
work() { "$IMGQ_BIN/imgq-worker" --exit-when-idle --retry-base-ms 50 2>"$IMGQ_TMP/$1.log" || fail "worker $1 failed"; }
batch_json() { imgq batch status "$1" --json; }
jget() { python3 -c "import json,sys; d=json.load(sys.stdin); print(d$1)"; }

cat >"$IMGQ_TMP/catalog.jsonl" <<'EOF'
{"prompt":"a walnut chair on white","model":"gpt-image-1-mini","quality":"low"}
{"prompt":"a walnut table on white","model":"gpt-image-1-mini","quality":"medium","n":2}
{"prompt":"a walnut stool on white","model":"gemini-2.5-flash-image","n":2}
EOF
imgq submit --batch first "$IMGQ_TMP/catalog.jsonl" >/dev/null
work first
assert_eq 3 "$(batch_json first | jget '["counts"]["done"]')" "first run: all done"
c1=$(calls)
o1=$(objects)
assert_eq 4 "$c1" "first run: 1 + 1 + 2 provider calls"
assert_eq 5 "$o1" "first run: 5 images stored"
cost1=$(batch_json first | jget '["cost_micros"]')
[ "$cost1" -gt 0 ] || fail "the first run cost nothing"

# The same catalog again: no call, no object, $0, billed as dedup.
imgq submit --batch again "$IMGQ_TMP/catalog.jsonl" >/dev/null
work again
assert_eq 3 "$(batch_json again | jget '["counts"]["done"]')" "second run: all done"
assert_eq "$c1" "$(calls)" "second run: no provider call"
assert_eq "$o1" "$(objects)" "second run: no new object"
assert_eq 0 "$(batch_json again | jget '["cost_micros"]')" "second run: \$0"
imgq batch results again >"$IMGQ_TMP/again.jsonl"
assert_eq 3 "$(grep -c '"billed":"dedup"' "$IMGQ_TMP/again.jsonl")" "every job billed as dedup"
assert_eq "$(imgq batch results first | grep -o '"key":"[^"]*"' | sort | tr '\n' ' ')" \
    "$(grep -o '"key":"[^"]*"' "$IMGQ_TMP/again.jsonl" | sort | tr '\n' ' ')" "the same objects"
assert_contains "$(cat "$IMGQ_TMP/again.log")" "already stored: done at \$0 (dedup"

# The report: the second batch saved what `imgq quote` expects the catalog to cost.
expected=$(imgq quote "$IMGQ_TMP/catalog.jsonl" --json | jget '["total"]["expected_micros"]')
report=$(imgq report --by batch --json)
saved=$(jget '["groups"]' <<<"$report" | python3 -c "
import ast, sys
for g in ast.literal_eval(sys.stdin.read()):
    if g['batch'] == 'again': print(g['dedup_saved_micros'], g['calls'], g['spend_micros'])")
assert_eq "$expected 0 0" "$saved" "savings equal the expected cost; no calls, no spend"
assert_eq "True" "$(jget '["matches_spent_counter"]' <<<"$report")"

# "dedup": false generates again; a job with one image missing is generated as usual.
printf '{"prompt":"a walnut chair on white","model":"gpt-image-1-mini","quality":"low","dedup":false}\n' >"$IMGQ_TMP/optout.jsonl"
imgq submit --batch optout "$IMGQ_TMP/optout.jsonl" >/dev/null
work optout
assert_eq $((c1 + 1)) "$(calls)" "dedup:false makes a call"
printf '{"prompt":"a walnut table on white","model":"gpt-image-1-mini","quality":"medium","n":3}\n' >"$IMGQ_TMP/more.jsonl"
imgq submit --batch more "$IMGQ_TMP/more.jsonl" >/dev/null
work more
assert_eq $((c1 + 2)) "$(calls)" "n=3 where 2 are stored: generated"
out=$(printf '{"prompt":"x","model":"gpt-image-1-mini","quality":"low","dedup":"no"}\n' | imgq submit --batch bad - 2>&1 || true)
assert_contains "$out" "dedup: must be true or false"
echo "PASS dedup"
