#!/usr/bin/env bash
# imgq quote and submit --max-cost on draft->refine pipelines, against real workers, imgq-sim,
# s3rver and redis-server: the quoted worst case covers every stage (the drafts, n of them on the
# draft model with its fan-out, and the refine with the chosen draft as its reference image), so
# a file submitted with --max-cost just above it spends no more than it in the ledger, and
# --max-cost just below it refuses the file.  (Once the quote priced only the refine, without its
# reference: a file quoted at $0.633 was accepted under --max-cost 0.64 and spent $0.683.)
# Then quote --budgets: each budget set for the file's jobs, its room in the current window and
# whether the worst case fits; quote without --budgets needs no Redis.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/env.sh"
imgq_env_setup
start_redis
start_s3 imgq-quote
start_sim --latency-ms 5
export IMGQ_SSRF_ALLOW=127.0.0.1
IMGQ="$IMGQ_BIN/imgq"
rcli() { redis-cli -p "$REDIS_PORT" "$@"; }

# Drafts on a ten-per-call model and on a one-per-call model (fanned out), refines with the draft
# as reference, and one prompt-only refine.
cat >"$IMGQ_TMP/pipes.jsonl" <<'EOF'
{"id":"chair","prompt":"a walnut chair, studio light","size":"1024x1024","pipeline":{"draft":{"model":"gpt-image-1-mini","n":3,"quality":"low"},"select":{"mode":"auto"},"refine":{"model":"gpt-image-1.5","quality":"medium","use_draft_as_reference":true}}}
{"id":"lamp","prompt":"a brass lamp on a desk","size":"1024x1024","pipeline":{"draft":{"model":"gemini-2.5-flash-image","n":2},"select":{"mode":"auto"},"refine":{"model":"gpt-image-1.5","quality":"low","use_draft_as_reference":true}}}
{"id":"vase","prompt":"a blue vase","size":"1024x1024","pipeline":{"draft":{"model":"gpt-image-1-mini","n":2,"quality":"low"},"select":{"mode":"auto"},"refine":{"model":"gpt-image-2","quality":"low","use_draft_as_reference":false}}}
EOF

# A budget over everything, so --budgets below has spend in its window.
"$IMGQ" budget set global --limit 100 --window day >/dev/null

note "quote: the worst case of every stage"
json=$("$IMGQ" quote --json "$IMGQ_TMP/pipes.jsonl")
worst=$(jq -r .total.worst_micros <<<"$json")
own=$(jq -r '.total.own_worst_micros // .total.worst_micros' <<<"$json")
echo "worst case $worst micros ($own on the jobs' own models)"

note "submit --max-cost just below the worst case: refused, nothing enqueued"
below=$(awk -v w="$worst" 'BEGIN { printf "%.6f", (w - 1) / 1e6 }')
above=$(awk -v w="$worst" 'BEGIN { printf "%.6f", (w + 1) / 1e6 }')
set +e
"$IMGQ" submit --batch pipes --max-cost "$below" "$IMGQ_TMP/pipes.jsonl" >/dev/null 2>"$IMGQ_TMP/err"
rc=$?
set -e
assert_eq 1 "$rc" "submit over --max-cost"
assert_contains "$(cat "$IMGQ_TMP/err")" "is over --max-cost"
assert_eq "0" "$(rcli exists 'imgq:{default}:b:pipes:jobs')" "nothing enqueued"
assert_eq "0" "$(rcli hget 'imgq:{default}:stats' queued | sed 's/^$/0/')" "no job queued"

note "submit --max-cost just above it, run the worker: the ledger stays within the quote"
"$IMGQ" submit --batch pipes --max-cost "$above" "$IMGQ_TMP/pipes.jsonl" >/dev/null
"$IMGQ_BIN/imgq-worker" --exit-when-idle --retry-base-ms 50 2>"$IMGQ_TMP/worker.log" ||
    fail "the worker failed"
states=$("$IMGQ" batch results pipes | jq -r 'select(.draft_of == null) | "\(.client_id)=\(.state)"' | sort | tr '\n' ' ')
assert_eq "chair=done lamp=done vase=done " "$states" "every pipeline job done"
spent=$("$IMGQ" report --json --by batch 2>/dev/null | jq -r .total.spend_micros)
echo "ledger: $spent micros spent, quoted worst case $worst"
[ "$spent" -gt 0 ] || fail "nothing was spent"
[ "$spent" -le "$worst" ] || fail "the ledger spent $spent micros, over the quoted worst case $worst"
[ "$spent" -le "$own" ] || fail "the ledger spent $spent micros, over the own models' worst case $own"
# Every call the quote counted was made: four for the drafts (two fanned out), three refines.
assert_eq "$(jq -r .total.calls <<<"$json")" "$("$IMGQ" report --json --by batch 2>/dev/null | jq -r .total.calls)" "calls in the ledger"

note "quote: per model and stage, text and JSON"
rows=$(jq -r '[.models[] | "\(.model)/\(.stage):\(.jobs):\(.calls):\(.images)"] | join(" ")' <<<"$json")
assert_eq "gpt-image-1-mini/draft:2:2:5 gpt-image-1.5/refine:2:2:2 gemini-2.5-flash-image/draft:1:2:2 gpt-image-2/refine:1:1:1" "$rows" "rows"
assert_eq "3 7 10" "$(jq -r '.total | "\(.jobs) \(.calls) \(.images)"' <<<"$json")" "total"
assert_eq "$worst" "$(jq '[.models[].worst_micros] | add' <<<"$json")" "rows add up to the total"
assert_eq "$own" "$(jq '[.models[].own_worst_micros] | add' <<<"$json")" "own rows add up"
out=$("$IMGQ" quote "$IMGQ_TMP/pipes.jsonl")
printf '%s\n' "$out"
assert_match "$out" 'gpt-image-1-mini \(draft\) +2 +2 +5 ' "draft row"
assert_match "$out" 'gpt-image-1\.5 \(refine\) +2 +2 +2 ' "refine row"
assert_match "$out" 'gemini-2\.5-flash-image \(draft\) +1 +2 +2 ' "fanned-out draft row"

note "quote without --budgets needs no Redis; --budgets does"
IMGQ_REDIS_URL="redis://127.0.0.1:1/0" "$IMGQ" quote "$IMGQ_TMP/pipes.jsonl" >/dev/null ||
    fail "quote without Redis"
set +e
IMGQ_REDIS_URL="redis://127.0.0.1:1/0" "$IMGQ" quote --budgets "$IMGQ_TMP/pipes.jsonl" >/dev/null 2>"$IMGQ_TMP/err"
rc=$?
set -e
assert_eq 1 "$rc" "quote --budgets without Redis"
assert_contains "$(cat "$IMGQ_TMP/err")" "imgq:"

note "quote --budgets"
"$IMGQ" budget set team:red --limit 0.01 --window total >/dev/null
"$IMGQ" budget set team:blue --limit 1 --window total >/dev/null
"$IMGQ" budget set model:gpt-image-1-mini --limit 5 --window month >/dev/null
"$IMGQ" budget set batch:next --limit 0.05 --window total >/dev/null
bj=$("$IMGQ" quote --json --budgets --team red --batch next "$IMGQ_TMP/pipes.jsonl")
jq -c .budgets <<<"$bj"
assert_eq "batch:next global model:gpt-image-1-mini team:red" "$(jq -r '[.budgets[].name] | sort | join(" ")' <<<"$bj")" "the budgets of the file's jobs (not team:blue)"
b() { jq -r --arg n "$1" ".budgets[] | select(.name == \$n) | $2" <<<"$bj"; }
gspent=$("$IMGQ" budget show global --json | jq -r '.spent_micros + .reserved_micros')
assert_eq "$((100000000 - gspent))" "$(b global .remaining_micros)" "global: the room left today"
[ "$gspent" -gt 0 ] || fail "the global budget shows nothing spent"
assert_eq "$worst true" "$(b global '"\(.worst_micros) \(.fits)"')" "global: the whole file fits"
assert_eq "$worst false 10000" "$(b team:red '"\(.worst_micros) \(.fits) \(.remaining_micros)"')" "team:red is too small"
assert_eq "false" "$(b batch:next .fits)" "batch:next is too small"
mini=$(jq '[.models[] | select(.model == "gpt-image-1-mini") | .worst_micros] | add' <<<"$json")
assert_eq "$mini true" "$(b model:gpt-image-1-mini '"\(.worst_micros) \(.fits)"')" "model budget: its stages"
out=$("$IMGQ" quote --budgets --team red --batch next "$IMGQ_TMP/pipes.jsonl")
printf '%s\n' "$out"
assert_match "$out" 'team:red +total +total +\$0\.01 +\$[0-9.]+ +NO' "text: team:red does not fit"
assert_match "$out" 'global +day +[0-9-]+ +\$99\.[0-9]+ +\$[0-9.]+ +yes' "text: global fits"
out=$("$IMGQ" quote --budgets --team green "$IMGQ_TMP/pipes.jsonl")
assert_not_contains "$out" "team:red"
assert_not_contains "$out" "batch:next"
echo "PASS quote_pipeline"
