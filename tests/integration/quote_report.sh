#!/usr/bin/env bash
# Money before and after: imgq quote and imgq submit --max-cost (the worst case the worker would
# reserve, before anything is enqueued), imgq cost (the seeds' monthly and per-image tables) and
# imgq report (spend from the ledger stream, grouped, filtered, and checked against the spent
# counter).  The seeds' figures are reproduced:
#   seeds/003: 10,000 images, 70% flux-schnell, 25% dall-e-3 standard, 5% dall-e-3 hd = $161.00
#              a month, against $800.00 for all of them on dall-e-3 hd;
#   seeds/000: 10M text-in + 20M image-in + 100M image-out tokens of gpt-image-1 = $4,250.00
#              list, $1,275.00 TreeRouter standard, $3,612.50 enterprise; its per-image table;
#   seeds/001: gpt-image-2 at 1024x1024, 196 / 1,756 / 7,024 output tokens = $0.00588 /
#              $0.05268 / $0.21072.
# The ledger entries are written with redis-cli XADD in the worker's format.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/env.sh"
imgq_env_setup
start_redis
IMGQ="$IMGQ_BIN/imgq"
rcli() { redis-cli -p "$REDIS_PORT" "$@"; }

# ---- seeds/003 through imgq quote ------------------------------------------------------------
# dall-e-3 is retired in the shipped catalog (shutdown 2026-05-12): a catalog without the
# lifecycle dates lets the seed's workload be validated and quoted as it was written.
jq '.models["dall-e-3"] |= del(.lifecycle) | .models["gpt-image-1"] |= del(.lifecycle)' \
    "$IMGQ_ROOT/deploy/catalog.json" >"$IMGQ_TMP/catalog.json"
export IMGQ_CATALOG="$IMGQ_TMP/catalog.json"

awk 'BEGIN {
  for (i = 0; i < 7000; i++)
    printf "{\"id\":\"thumb-%d\",\"prompt\":\"thumbnail %d\",\"model\":\"flux-schnell\",\"size\":\"1024x1024\"}\n", i, i
  for (i = 0; i < 2500; i++)
    printf "{\"id\":\"shot-%d\",\"prompt\":\"product shot %d\",\"model\":\"dall-e-3\",\"quality\":\"standard\",\"size\":\"1024x1024\"}\n", i, i
  for (i = 0; i < 500; i++)
    printf "{\"id\":\"hero-%d\",\"prompt\":\"hero image %d\",\"model\":\"dall-e-3\",\"quality\":\"hd\",\"size\":\"1024x1024\"}\n", i, i
}' >"$IMGQ_TMP/routed.jsonl"
awk 'BEGIN {
  for (i = 0; i < 10000; i++)
    printf "{\"id\":\"all-hd-%d\",\"prompt\":\"image %d\",\"model\":\"dall-e-3\",\"quality\":\"hd\",\"size\":\"1024x1024\"}\n", i, i
}' >"$IMGQ_TMP/naive.jsonl"

note "quote: seeds/003 routed"
out=$("$IMGQ" quote "$IMGQ_TMP/routed.jsonl")
printf '%s\n' "$out"
assert_match "$out" 'flux-schnell +7,000 +7,000 +7,000 +\$21\.00 +\$21\.00' "flux-schnell row"
assert_match "$out" 'dall-e-3 +3,000 +3,000 +3,000 +\$140\.00 +\$140\.00' "dall-e-3 row"
assert_match "$out" 'TOTAL +10,000 +10,000 +10,000 +\$161\.00 +\$161\.00' "seeds/003 routed total"
json=$("$IMGQ" quote --json "$IMGQ_TMP/routed.jsonl")
assert_eq "161000000" "$(jq -r .total.own_worst_micros <<<"$json")" "routed worst case on the own models, micros"
# flux-schnell's circuit breaker may move its jobs to flux-1.1-pro ($0.04): the true worst case.
assert_eq "420000000" "$(jq -r .total.worst_micros <<<"$json")" "routed worst case, micros"
assert_eq "161000000" "$(jq -r .total.expected_micros <<<"$json")" "routed expected, micros"
assert_eq '$161.00' "$(jq -r .total.own_worst <<<"$json")" "routed worst case text"
assert_eq '$420.00' "$(jq -r .total.worst <<<"$json")" "routed worst case with fallbacks"
assert_eq "null" "$(jq -r '.models[0].stage' <<<"$json")" "no pipeline, no stage"
assert_eq "null" "$(jq -r .route <<<"$json")" "each job's own route"
assert_eq "21000000" "$(jq -r '.models[] | select(.model=="flux-schnell") | .own_worst_micros' <<<"$json")"
assert_eq "280000000" "$(jq -r '.models[] | select(.model=="flux-schnell") | .worst_micros' <<<"$json")"

note "quote: seeds/003 naive, all dall-e-3 hd"
json=$("$IMGQ" quote --json "$IMGQ_TMP/naive.jsonl")
assert_eq '$800.00' "$(jq -r .total.worst <<<"$json")" "naive total"
assert_eq '$800.00' "$(jq -r .total.expected <<<"$json")" "naive expected"
assert_eq "10000" "$(jq -r .total.images <<<"$json")" "naive images"

note "quote --route: every job on the TreeRouter standard group (x0.30)"
json=$("$IMGQ" quote --json --route treerouter-standard "$IMGQ_TMP/routed.jsonl")
assert_eq '$48.30' "$(jq -r .total.own_worst <<<"$json")" "routed at 0.30"
assert_eq "treerouter-standard" "$(jq -r .route <<<"$json")"

note "quote: worst case against expected on token models, fan-out and references"
cat >"$IMGQ_TMP/tokens.jsonl" <<'EOF'
{"id":"t1","prompt":"abcd","model":"gpt-image-2","quality":"low","size":"1024x1024","n":3}
{"id":"t2","prompt":"abcd","model":"gemini-2.5-flash-image","size":"1024x1024","n":2,"images":["s3://bkt/ref.png"]}
EOF
json=$("$IMGQ" quote --json "$IMGQ_TMP/tokens.jsonl")
# gpt-image-2 low 1024x1024: 196 output tokens at $30/M = 5880 per image, x3 in one call;
# the worst case adds the prompt bounded by its bytes (4 x 3 text tokens at $5/M = 60 micros).
assert_eq "17640" "$(jq -r '.models[] | select(.model=="gpt-image-2") | .expected_micros' <<<"$json")"
assert_eq "17700" "$(jq -r '.models[] | select(.model=="gpt-image-2") | .own_worst_micros' <<<"$json")"
assert_eq "1" "$(jq -r '.models[] | select(.model=="gpt-image-2") | .calls' <<<"$json")"
# gemini fans out (one image per call): 2 calls; reference tokens count in both figures.
assert_eq "2" "$(jq -r '.models[] | select(.model=="gemini-2.5-flash-image") | .calls' <<<"$json")"
gem_e=$(jq -r '.models[] | select(.model=="gemini-2.5-flash-image") | .expected_micros' <<<"$json")
gem_w=$(jq -r '.models[] | select(.model=="gemini-2.5-flash-image") | .own_worst_micros' <<<"$json")
[ "$gem_w" -gt "$gem_e" ] || fail "worst case $gem_w is not above expected $gem_e"
[ "$gem_e" -gt 77400 ] || fail "gemini expected $gem_e leaves out the reference image tokens"

note "quote: invalid lines are reported as submit reports them; no quote"
cat >"$IMGQ_TMP/bad.jsonl" <<'EOF'
{"id":"ok","prompt":"a mug","model":"flux-schnell"}
{"id":"bad-model","prompt":"a lamp","model":"gpt-image-9"}
EOF
set +e
"$IMGQ" quote "$IMGQ_TMP/bad.jsonl" >"$IMGQ_TMP/out" 2>"$IMGQ_TMP/err"
rc=$?
set -e
assert_eq 1 "$rc" "quote of an invalid file"
assert_contains "$(cat "$IMGQ_TMP/err")" "bad.jsonl:2: model: 'gpt-image-9' is not in the catalog"
assert_eq "0" "$(wc -c <"$IMGQ_TMP/out")" "no quote on stdout"
assert_eq "0" "$(rcli dbsize)" "quote writes nothing to Redis"

# ---- imgq submit --max-cost ---------------------------------------------------------------
note "submit --max-cost: refused over the cap, nothing enqueued"
set +e
"$IMGQ" submit --batch capped --max-cost 419.99 "$IMGQ_TMP/routed.jsonl" >"$IMGQ_TMP/out" 2>"$IMGQ_TMP/err"
rc=$?
set -e
cat "$IMGQ_TMP/err"
assert_eq 1 "$rc" "exit status of a refused submit"
assert_contains "$(cat "$IMGQ_TMP/err")" 'worst case $420.00 for 10000 jobs is over --max-cost $419.99'
assert_contains "$(cat "$IMGQ_TMP/err")" "nothing was enqueued"
assert_eq "0" "$(rcli dbsize)" "nothing written to Redis"
assert_status 2 "$IMGQ" submit --max-cost lots "$IMGQ_TMP/routed.jsonl"

note "submit --max-cost: accepted at the cap"
batch=$("$IMGQ" submit --batch capped --max-cost 420 "$IMGQ_TMP/routed.jsonl" 2>"$IMGQ_TMP/err")
assert_eq "capped" "$batch"
assert_contains "$(cat "$IMGQ_TMP/err")" "10000 jobs enqueued"
assert_eq "10000" "$(rcli hget 'imgq:{default}:stats' queued)" "10,000 jobs queued"
rcli flushall >/dev/null

# ---- imgq cost: seeds/000 and seeds/001 on the shipped catalog ------------------------------
unset IMGQ_CATALOG
note "cost: seeds/000 monthly workload"
out=$("$IMGQ" cost --model gpt-image-1 --text-in 10M --image-in 20M --image-out 100M)
printf '%s\n' "$out"
assert_match "$out" 'list +1\.00 +\$4,250\.00' "official"
assert_match "$out" 'treerouter-standard +0\.30 +\$1,275\.00' "standard route"
assert_match "$out" 'treerouter-enterprise +0\.85 +\$3,612\.50' "enterprise route"

note "cost: seeds/000 per-image table (gpt-image-1, quality x size)"
out=$("$IMGQ" cost --model gpt-image-1 --route list)
printf '%s\n' "$out"
assert_match "$out" 'quality +1024x1024 +1024x1536 +1536x1024' "table header"
assert_match "$out" 'low +\$0\.01088 +\$0\.01632 +\$0\.016' "low row"
assert_match "$out" 'medium +\$0\.04224 +\$0\.06336 +\$0\.06272' "medium row"
assert_match "$out" 'high +\$0\.1664 +\$0\.2496 +\$0\.24832' "high row"
json=$("$IMGQ" cost --model gpt-image-1 --json)
cell() { jq -r --arg r "$1" --arg q "$2" --arg s "$3" \
    '.[] | select(.route==$r and .quality==$q and .size==$s) | .cost_micros' <<<"$json"; }
# The seed's table is OpenAI's published estimate, rounded to the tenth of a cent; the token
# table x $40/M gives the same figure in every cell but two, where OpenAI rounded up ($0.167
# for 0.1664 and $0.250 for 0.24832).
seed_list=("low 1024x1024 0.011" "low 1024x1536 0.016" "low 1536x1024 0.016"
    "medium 1024x1024 0.042" "medium 1024x1536 0.063" "medium 1536x1024 0.063"
    "high 1024x1536 0.250")
for row in "${seed_list[@]}"; do
    read -r q s want <<<"$row"
    got=$(awk -v m="$(cell list "$q" "$s")" 'BEGIN { printf "%.3f", m / 1e6 }')
    assert_eq "$want" "$got" "seeds/000 estimate, $q $s"
done
assert_eq "166400" "$(cell list high 1024x1024)" "high 1024x1024 = 4,160 tokens x \$40/M"
# The seed's route columns at 1024x1024 (its figures: 0.30 / 0.85 of the rounded list price).
assert_eq "3264" "$(cell treerouter-standard low 1024x1024)" "standard low"     # seed $0.0033
assert_eq "12672" "$(cell treerouter-standard medium 1024x1024)" "standard medium" # seed $0.0126
assert_eq "35904" "$(cell treerouter-enterprise medium 1024x1024)" "enterprise medium" # $0.0357
assert_eq "36" "$(jq length <<<"$json")" "3 x 3 cells on each of the 4 routes"

note "cost: seeds/001 gpt-image-2 output at 1024x1024"
for row in "196 \$0.005880" "1756 \$0.052680" "7024 \$0.210720"; do
    read -r tokens want <<<"$row"
    out=$("$IMGQ" cost --model gpt-image-2 --image-out "$tokens" --route list)
    assert_match "$out" "list +1\.00 +\\$want" "gpt-image-2, $tokens output tokens"
done
out=$("$IMGQ" cost --model gpt-image-2 --route list)
printf '%s\n' "$out"
assert_match "$out" 'low +\$0\.00588 ' "table: 196 tokens"
assert_match "$out" 'medium +\$0\.05268 ' "table: 1,756 tokens"
assert_match "$out" 'high +\$0\.21072 ' "table: 7,024 tokens"
out=$("$IMGQ" cost --model dall-e-3 --route list)
assert_match "$out" 'hd +\$0\.08 +\$0\.12 +\$0\.12' "flat model table"

# ---- imgq report from the ledger --------------------------------------------------------------
LEDGER='imgq:{default}:ledger'
SPENT='imgq:{default}:spent'
ts() { echo $(($(date -u -d "$1" +%s) * 1000)); }
ledger() { # job batch team model route cost reason time [attempt call]
    rcli xadd "$LEDGER" '*' job "$1" batch "$2" team "$3" attempt "${9:-1}" call "${10:-0}" \
        key "${9:-1}.${10:-0}.1" model "$4" route "$5" cost "$6" reason "$7" \
        usage '{"output_tokens":196}' request_id "req-$1" t "$(ts "$8")" >/dev/null
}
job_done() { # id images
    local imgs='[]' i
    for ((i = 0; i < $2; i++)); do imgs=$(jq -c '. + [{"key":"k"}]' <<<"$imgs"); done
    rcli hset "imgq:{default}:j:$1" state done result "{\"images\":$imgs}" >/dev/null
}
ledger J1 b1 red gpt-image-2 list 52680 usage 2026-06-01T10:00:00Z
ledger J2 b1 red flux-schnell list 12000 usage 2026-06-02T02:00:00Z
ledger J3 b2 blue gpt-image-2 treerouter-standard 63216 ceiling 2026-06-02T12:00:00Z
ledger J4 b2 blue seedream-4-0 list 30000 failure 2026-06-02T13:00:00Z
ledger J4 b2 blue seedream-4-0 list 30000 lost 2026-06-03T09:00:00Z 2
ledger J5 b2 blue seedream-4-0 list 0 failure 2026-06-03T09:30:00Z
ledger J5 b2 blue seedream-4-0 list 30000 usage 2026-06-03T10:00:00Z 2
ledger J6 b3 red flux-schnell list 3000 usage 2026-06-03T11:00:00Z
job_done J1 1
job_done J2 4
job_done J3 1
job_done J5 1
rcli hset 'imgq:{default}:j:J4' state failed >/dev/null # J6: deleted after the retention
rcli hincrby "$SPENT" total 220896 >/dev/null

note "report --by model"
out=$("$IMGQ" report 2>"$IMGQ_TMP/err")
printf '%s\n' "$out"
assert_match "$out" 'flux-schnell +2 +4 +\$0\.015 +0 +\$0\.00 +\$0\.00375 +\$0\.00' "flux row"
assert_match "$out" 'gpt-image-2 +2 +2 +\$0\.115896 +0 +\$0\.00 +\$0\.057948' "gpt-image-2 row"
assert_match "$out" 'seedream-4-0 +4 +1 +\$0\.09 +3 +\$0\.06 +\$0\.09 ' "seedream row"
assert_match "$out" 'TOTAL +8 +7 +\$0\.220896 +3 +\$0\.06 ' "total row"
assert_contains "$out" 'ledger total $0.220896 equals the spent counter'
assert_not_contains "$out" "warning"
assert_contains "$(cat "$IMGQ_TMP/err")" "1 jobs of the ledger are no longer in Redis"

note "report --json, every dimension"
j() { "$IMGQ" report --json "$@" 2>/dev/null; }
json=$(j --by model)
assert_eq "220896" "$(jq -r .total.spend_micros <<<"$json")" "total spend"
assert_eq "$(rcli hget "$SPENT" total)" "$(jq -r .total.spend_micros <<<"$json")" "total = spent"
assert_eq "true" "$(jq -r .matches_spent_counter <<<"$json")"
assert_eq "0" "$(jq -r '[.groups[].dedup_saved_micros] | add' <<<"$json")" "dedup savings"
assert_eq "90000" "$(jq -r '.groups[] | select(.model=="seedream-4-0") | .per_image_micros' <<<"$json")"
json=$(j --by team)
assert_eq "red:3:5:67680 blue:5:2:153216" \
    "$(jq -r '[.groups[] | "\(.team):\(.calls):\(.images):\(.spend_micros)"] | sort | reverse | join(" ")' <<<"$json")" "by team"
json=$(j --by batch)
assert_eq "b1:2:5:64680 b2:5:2:153216 b3:1:0:3000" \
    "$(jq -r '[.groups[] | "\(.batch):\(.calls):\(.images):\(.spend_micros)"] | join(" ")' <<<"$json")" "by batch"
assert_eq "null" "$(jq -r '.groups[] | select(.batch=="b3") | .per_image_micros' <<<"$json")" "no images, no per-image"
json=$(j --by route)
assert_eq "list:7:6:157680 treerouter-standard:1:1:63216" \
    "$(jq -r '[.groups[] | "\(.route):\(.calls):\(.images):\(.spend_micros)"] | join(" ")' <<<"$json")" "by route"
json=$(j --by day)
assert_eq "2026-06-01:1:1:52680 2026-06-02:3:5:105216 2026-06-03:4:1:63000" \
    "$(jq -r '[.groups[] | "\(.day):\(.calls):\(.images):\(.spend_micros)"] | join(" ")' <<<"$json")" "by day, UTC"
assert_eq "1:30000 2:30000" \
    "$(jq -r '[.groups[] | select(.failures > 0) | "\(.failures):\(.failure_micros)"] | join(" ")' <<<"$json")" "failures by day"
json=$(j --by day --tz America/New_York)
assert_eq "2026-06-01:2:5:64680 2026-06-02:2:1:93216 2026-06-03:4:1:63000" \
    "$(jq -r '[.groups[] | "\(.day):\(.calls):\(.images):\(.spend_micros)"] | join(" ")' <<<"$json")" "by day, New York"

note "report --since/--until"
json=$(j --by day --since 2026-06-02 --until 2026-06-03)
assert_eq "2026-06-02:3:105216" \
    "$(jq -r '[.groups[] | "\(.day):\(.calls):\(.spend_micros)"] | join(" ")' <<<"$json")" "one day"
assert_eq "null" "$(jq -r .matches_spent_counter <<<"$json")" "no counter check with a filter"
json=$(j --by model --since 2026-06-02T12:30:00Z --until 2026-06-03T09:30:00Z)
assert_eq "2 60000 2 60000" "$(jq -r '.total | "\(.calls) \(.spend_micros) \(.failures) \(.failure_micros)"' <<<"$json")" "time range"
json=$(j --by model --since 2026-06-03T09:30:00Z)
assert_eq "3" "$(jq -r .total.calls <<<"$json")" "since is inclusive"
json=$(j --by model --since 2026-06-01T06:00 --until 2026-06-01T07:00 --tz America/New_York)
assert_eq "1 52680" "$(jq -r '.total | "\(.calls) \(.spend_micros)"' <<<"$json")" "local times in --tz"
assert_status 2 "$IMGQ" report --since yesterday
assert_status 2 "$IMGQ" report --by colour
assert_status 2 "$IMGQ" report --json --csv

note "report --csv"
csv=$("$IMGQ" report --csv --by team 2>/dev/null)
printf '%s\n' "$csv"
assert_eq "team,calls,images,spend_micros,failures,failure_micros,per_image_micros,dedup_saved_micros" \
    "$(sed -n 1p <<<"$csv")" "CSV header"
assert_eq "blue,5,2,153216,3,60000,76608,0" "$(sed -n 2p <<<"$csv")" "CSV blue"
assert_eq "red,3,5,67680,0,0,13536,0" "$(sed -n 3p <<<"$csv")" "CSV red"
assert_eq "TOTAL,8,7,220896,3,60000,31557,0" "$(sed -n 4p <<<"$csv")" "CSV total"
assert_eq "4" "$(wc -l <<<"$csv")" "CSV lines"

note "report: the spent counter disagrees"
rcli hincrby "$SPENT" total 1 >/dev/null
out=$("$IMGQ" report 2>"$IMGQ_TMP/err")
assert_contains "$out" 'warning: the ledger total $0.220896 does not equal the spent counter $0.220897'
assert_contains "$(cat "$IMGQ_TMP/err")" "does not equal the spent counter"
assert_eq "false" "$(j | jq -r .matches_spent_counter)" "JSON says so too"
"$IMGQ" report --csv >/dev/null 2>"$IMGQ_TMP/err"
assert_contains "$(cat "$IMGQ_TMP/err")" "does not equal the spent counter"

note "report: a ledger larger than one chunk"
for ((i = 0; i < 2500; i++)); do
    printf 'XADD %s * job big%d batch big team t model flux-schnell route list cost 3 reason usage usage "" request_id r t %d\n' \
        "$LEDGER" "$i" "$(ts 2026-06-04T00:00:00Z)"
done | rcli >/dev/null
rcli hincrby "$SPENT" total $((2500 * 3 - 1)) >/dev/null
json=$(j --by batch)
assert_eq "2500 7500" "$(jq -r '.groups[] | select(.batch=="big") | "\(.calls) \(.spend_micros)"' <<<"$json")" "2,500 entries"
assert_eq "true" "$(jq -r .matches_spent_counter <<<"$json")" "total = spent after 3 chunks"
echo "PASS quote_report"
