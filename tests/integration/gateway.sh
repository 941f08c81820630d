#!/usr/bin/env bash
# An OpenAI-compatible gateway by base URL with its own price group, end to end: two imgq-sim
# instances (the gateway and "OpenAI"), a config file with
#   "gateways": {"treerouter-standard": {"base_url": "http://127.0.0.1:PORT/v1"}}
# and the gateway's key in IMGQ_GATEWAY_TREEROUTER_STANDARD_API_KEY.
#   - jobs of OpenAI models on route treerouter-standard go to the gateway; the default route,
#     another route without a gateway, and a non-OpenAI model on the gateway's route go to
#     their providers' own endpoints;
#   - the gateway job is priced from its usage at the route's multiplier (300000 ppm), rounded
#     half-up once: the list cost of the same usage x 0.30, and what `imgq cost` says;
#   - without the gateway's key the job fails as auth (not retried, and the OpenAI key is not
#     sent to the gateway instead); no key ever appears in a log or the job record;
#   - a config file holding a gateway api_key is refused with a message saying where it goes.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/env.sh"
: "${IMGQ_SOURCE_DIR:=$IMGQ_ROOT}"
imgq_env_setup
start_redis
start_s3 imgq-gateway
# The gateway's simulator first: the second start_sim points every provider at itself.
start_sim --latency-ms 10
GW_PORT=$SIM_PORT
start_sim --latency-ms 10
DIRECT_PORT=$SIM_PORT
assert_ne "$GW_PORT" "$DIRECT_PORT" "two simulators"
assert_eq "http://127.0.0.1:$DIRECT_PORT/v1" "$OPENAI_BASE_URL" "OpenAI is the second simulator"
CATALOG="$IMGQ_SOURCE_DIR/deploy/catalog.json"
ROUTE=treerouter-standard
MODEL=gpt-image-1-mini
# Distinct keys (imgq-sim takes any "sk-..."), so that a leak of either would be recognised.
export OPENAI_API_KEY=sk-direct-openai-5b1e9c27d4
GW_KEY=sk-gateway-treerouter-8e2f4a61c3
export IMGQ_GATEWAY_TREEROUTER_STANDARD_API_KEY=$GW_KEY
export IMGQ_CONFIG="$IMGQ_TMP/imgq.json"
cat >"$IMGQ_CONFIG" <<EOF
{"gateways": {"$ROUTE": {"base_url": "http://127.0.0.1:$GW_PORT/v1"}}}
EOF

stat_of() { # stat_of PORT ENDPOINT FIELD: a /sim/stats counter of one simulator
    curl -s "http://127.0.0.1:$1/sim/stats" |
        python3 -c "import json,sys; print(json.load(sys.stdin)['requests']['$2']['$3'])"
}
submit() { # submit BATCH JSONL-TEXT
    printf '%s\n' "$2" >"$IMGQ_TMP/$1.jsonl"
    "$IMGQ_BIN/imgq" submit --batch "$1" "$IMGQ_TMP/$1.jsonl" >/dev/null
}
work() { # work LOG: one worker until the queue is idle
    "$IMGQ_BIN/imgq-worker" --exit-when-idle --retry-base-ms 50 --retry-max-ms 200 \
        --log-level debug 2>"$IMGQ_TMP/$1.log"
}
field() { # field CLIENT-ID KEY (results on stdin): a job's top-level field, JSON-encoded
    python3 -c '
import json, sys
for line in sys.stdin:
    o = json.loads(line)
    if o.get("client_id") == sys.argv[1]:
        v = o.get(sys.argv[2])
        print(v if isinstance(v, str) else json.dumps(v, sort_keys=True))
        break
else:
    sys.exit("no job " + sys.argv[1])' "$1" "$2"
}
usage_cost() { # usage_cost CLIENT-ID MODEL MULTIPLIER-PPM (results on stdin): the cost of the
    # job's usage at the catalog's token prices and the multiplier, rounded half-up once
    python3 -c '
import json, sys
cid, model, mult = sys.argv[1], sys.argv[2], int(sys.argv[3])
p = json.load(open(sys.argv[4]))["models"][model]["prices"]
for line in sys.stdin:
    o = json.loads(line)
    if o.get("client_id") == cid:
        u = o["usage"]
        d = u.get("input_tokens_details", {})
        s = (d["text_tokens"] * p["text_in"] + d.get("image_tokens", 0) * p["image_in"]
             + u["output_tokens"] * p["image_out"])
        print((s * mult + 10**12 // 2) // 10**12)
        break
else:
    sys.exit("no job " + cid)' "$1" "$2" "$3" "$CATALOG"
}
multiplier() {
    python3 -c "import json; print(json.load(open('$CATALOG'))['routes']['$1']['multiplier_ppm'])"
}
MULT=$(multiplier "$ROUTE")
assert_eq "300000" "$MULT" "the catalog's multiplier of $ROUTE"

# ---- gateway and direct jobs --------------------------------------------------------------
note "gateway and direct jobs"
# (the same image on three routes: "dedup": false, so that each route is really called)
PROMPT="a linen tote bag on a wooden chair"
submit mixed "$(
    cat <<EOF
{"id":"gw1","dedup":false,"prompt":"$PROMPT","model":"$MODEL","quality":"low","route":"$ROUTE"}
{"id":"gw3","prompt":"$PROMPT","model":"$MODEL","quality":"medium","n":3,"route":"$ROUTE"}
{"id":"list1","dedup":false,"prompt":"$PROMPT","model":"$MODEL","quality":"low"}
{"id":"ent1","dedup":false,"prompt":"$PROMPT","model":"$MODEL","quality":"low","route":"treerouter-enterprise"}
{"id":"gem","prompt":"$PROMPT","model":"gemini-2.5-flash-image","route":"$ROUTE"}
EOF
)"
work mixed
r=$("$IMGQ_BIN/imgq" batch results mixed)
for id in gw1 gw3 list1 ent1 gem; do
    assert_eq "done" "$(field "$id" state <<<"$r")" "job $id is done"
    assert_eq "usage" "$(field "$id" billed <<<"$r")" "job $id is billed from its usage"
done
# Where the calls went: the two gateway jobs to the gateway, everything else direct.
assert_eq "2" "$(stat_of "$GW_PORT" generations total)" "the gateway served the two gateway jobs"
assert_eq "2" "$(stat_of "$GW_PORT" generations ok)" "both successfully"
assert_eq "2" "$(stat_of "$DIRECT_PORT" generations total)" "OpenAI served the list and enterprise jobs"
assert_eq "0" "$(stat_of "$GW_PORT" gemini total)" "a Gemini job on the gateway's route is not sent to it"
assert_eq "1" "$(stat_of "$DIRECT_PORT" gemini total)" "it goes to Gemini"
assert_eq "0" "$(stat_of "$GW_PORT" generations unauthorized)" "the gateway accepted its key"
# Prices: from the usage, at the route's multiplier, rounded once.
assert_eq "$(usage_cost gw1 "$MODEL" "$MULT" <<<"$r")" "$(field gw1 cost_micros <<<"$r")" "gw1: usage x 0.30"
assert_eq "$(usage_cost gw3 "$MODEL" "$MULT" <<<"$r")" "$(field gw3 cost_micros <<<"$r")" "gw3: usage x 0.30"
assert_eq "$(usage_cost list1 "$MODEL" 1000000 <<<"$r")" "$(field list1 cost_micros <<<"$r")" "list1: list price"
ENT=$(multiplier treerouter-enterprise)
assert_eq "$(usage_cost ent1 "$MODEL" "$ENT" <<<"$r")" "$(field ent1 cost_micros <<<"$r")" "ent1: usage x 0.85"
# gw1 and list1 are the same request: the same usage, and gw1 costs list1 x 0.30.
assert_eq "$(field list1 usage <<<"$r")" "$(field gw1 usage <<<"$r")" "the same usage through the gateway"
list=$(field list1 cost_micros <<<"$r")
gw=$(field gw1 cost_micros <<<"$r")
((list > 0)) || fail "the list job cost nothing"
# 0.30 x list, half-up: exact here because gpt-image-1-mini's token prices are whole micro-USD.
assert_eq "$(((list * MULT + 500000) / 1000000))" "$gw" "the gateway job costs the list cost x 0.30"
assert_ne "$list" "$gw" "the gateway job is not billed at list"
# And what `imgq cost` prints for the same tokens on the route.
u=$(field gw1 usage <<<"$r")
text_in=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["input_tokens_details"]["text_tokens"])' "$u")
image_out=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["output_tokens"])' "$u")
c=$("$IMGQ_BIN/imgq" cost --model "$MODEL" --text-in "$text_in" --image-out "$image_out" --json)
assert_eq "$gw" "$(python3 -c 'import json,sys; print([o for o in json.loads(sys.argv[1]) if o["route"] == sys.argv[2]][0]["cost_micros"])' "$c" "$ROUTE")" \
    "imgq cost agrees with the gateway job's cost"
# The batch total is the sum of the jobs.
total=$(python3 -c '
import json, sys
print(sum(json.loads(l)["cost_micros"] for l in sys.stdin))' <<<"$r")
st=$("$IMGQ_BIN/imgq" batch status mixed --json)
assert_contains "$st" "$total" "the batch's cost is the sum of its jobs'"

# ---- the gateway without its key ----------------------------------------------------------
note "a gateway without its key"
gw_before=$(stat_of "$GW_PORT" generations total)
direct_before=$(stat_of "$DIRECT_PORT" generations total)
# (dedup off: the same job was stored above, and would be served from S3 without a call)
submit nokey "{\"id\":\"nokey\",\"prompt\":\"$PROMPT\",\"model\":\"$MODEL\",\"quality\":\"low\",\"route\":\"$ROUTE\",\"dedup\":false}"
(
    unset IMGQ_GATEWAY_TREEROUTER_STANDARD_API_KEY
    work nokey
)
r=$("$IMGQ_BIN/imgq" batch results nokey)
assert_eq "failed" "$(field nokey state <<<"$r")" "a gateway job without the gateway's key fails"
assert_eq "1" "$(field nokey attempts <<<"$r")" "auth is not retried"
assert_eq "0" "$(field nokey cost_micros <<<"$r")" "and costs nothing"
assert_contains "$(field nokey error <<<"$r")" '"class": "auth"' "it fails as auth"
assert_contains "$(field nokey error <<<"$r")" '"status": 401' "the gateway refused it"
# It went to the gateway, unauthenticated: not to OpenAI, and not with OpenAI's key (which the
# simulator would have accepted).
assert_eq "$((gw_before + 1))" "$(stat_of "$GW_PORT" generations total)" "the call went to the gateway"
assert_eq "1" "$(stat_of "$GW_PORT" generations unauthorized)" "and was refused there"
assert_eq "$direct_before" "$(stat_of "$DIRECT_PORT" generations total)" "not to OpenAI"
# No key in any worker log, nor in the job records.
logs=$(cat "$IMGQ_TMP"/mixed.log "$IMGQ_TMP"/nokey.log)
assert_contains "$logs" "done: $MODEL" "the logs are the workers' (sanity)"
for key in "$OPENAI_API_KEY" "$GW_KEY" "${OPENAI_API_KEY#sk-}" "${GW_KEY#sk-}" "${GW_KEY: -8}" "${OPENAI_API_KEY: -8}"; do
    assert_not_contains "$logs" "$key" "a key in a worker log"
done
for batch in mixed nokey; do
    for id in $("$IMGQ_BIN/imgq" batch results "$batch" | python3 -c 'import json,sys; [print(json.loads(l)["id"]) for l in sys.stdin]'); do
        rec=$("$IMGQ_BIN/imgq" job show "$id")
        assert_not_contains "$rec" "${GW_KEY#sk-}" "the gateway key in job $id"
        assert_not_contains "$rec" "${OPENAI_API_KEY#sk-}" "the OpenAI key in job $id"
    done
done

# ---- a config file holding a gateway key is refused ---------------------------------------
note "a config file with a gateway api_key"
bad="$IMGQ_TMP/secret.json"
cat >"$bad" <<EOF
{"gateways": {"$ROUTE": {"base_url": "http://127.0.0.1:$GW_PORT/v1", "api_key": "sk-in-file-0a9d8c7b6e"}}}
EOF
rc=0
out=$("$IMGQ_BIN/imgq-worker" --config "$bad" --exit-when-idle 2>&1) || rc=$?
assert_ne "0" "$rc" "imgq-worker refuses a config file with a gateway api_key"
assert_contains "$out" "$bad" "the refusal names the file"
assert_contains "$out" "'api_key' does not belong in a config file" "the refusal says why"
assert_contains "$out" "set IMGQ_GATEWAY_TREEROUTER_STANDARD_API_KEY instead" \
    "the refusal names the variable the key goes in"
assert_not_contains "$out" "in-file-0a9d8c7b6e" "the refusal does not echo the key"
rc=0
out=$(IMGQ_CONFIG="$bad" "$IMGQ_BIN/imgq" stats 2>&1) || rc=$?
assert_ne "0" "$rc" "imgq refuses it too (IMGQ_CONFIG)"
assert_contains "$out" "'api_key' does not belong in a config file" "imgq's refusal says why"
assert_not_contains "$out" "in-file-0a9d8c7b6e" "imgq's refusal does not echo the key"
echo "PASS gateway"
