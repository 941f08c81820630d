#!/usr/bin/env bash
# Reference images on Gemini, Seedream and DashScope end to end (issue 13 item 8): jobs with one
# and with several s3:// references on gemini-2.5-flash-image, seedream-4-0 and qwen-image-2.0
# (DashScope's edit model) through a real worker, redis-server, s3rver and imgq-sim.
#   - every reference arrives: each prompt says [sim:refs:N] (the simulator refuses a request
#     without exactly N reference images, as a provider refuses one whose images are missing),
#     and /sim/stats counts the references and their decoded bytes per provider, which must be
#     the uploaded files' sizes, call by call (a fanned-out n=2 Gemini job sends them twice);
#   - DashScope edits go to the synchronous multimodal-generation API, a job without images
#     still to the text2image task API;
#   - the ledger bills the reference input from the provider's usage: Gemini's prompt IMAGE
#     tokens (1297 per reference, the catalog's ref_image_tokens, which `imgq quote` counted),
#     Seedream's usage.input_images, DashScope's image_count; each call's cost is its usage
#     priced by the catalog;
#   - broken references: a job whose request lacks a reference the prompt told of fails in the
#     simulator as invalid_request (not retried, $0, no ledger entry), and the simulator refuses
#     a reference that is not an image, or is cut short, in each provider's own error shape;
#   - submit-time refusals: references on a model that cannot take them (flux-1.1-pro), more
#     than a model's max_references.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/env.sh"
: "${IMGQ_SOURCE_DIR:=$IMGQ_ROOT}"
imgq_env_setup
start_redis
BUCKET=imgq-edits-providers
start_s3 "$BUCKET"
start_sim --latency-ms 10 --seed 3
SIM="http://127.0.0.1:$SIM_PORT"
CATALOG="$IMGQ_SOURCE_DIR/deploy/catalog.json"
export IMGQ_CATALOG=$CATALOG
PFX='imgq:{default}:'

# ---- helpers ------------------------------------------------------------------------------

stat_of() { # stat_of ENDPOINT FIELD: a /sim/stats counter
    curl -s "$SIM/sim/stats" | python3 -c "import json,sys; print(json.load(sys.stdin)['requests']['$1']['$2'])"
}
submit() { # submit BATCH JSONL-TEXT
    printf '%s\n' "$2" >"$IMGQ_TMP/$1.jsonl"
    "$IMGQ_BIN/imgq" submit --batch "$1" "$IMGQ_TMP/$1.jsonl" >/dev/null
}
work() { # work LOG: one worker until the queue is idle
    "$IMGQ_BIN/imgq-worker" --exit-when-idle --poll-ms 100 --retry-base-ms 50 --retry-max-ms 200 \
        --log-level debug 2>"$IMGQ_TMP/$1.log" || fail "the worker failed ($1): $(tail -5 "$IMGQ_TMP/$1.log")"
}
results() { "$IMGQ_BIN/imgq" batch results "$1"; }
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
ledger() { # the ledger as JSON lines of its fields
    redis-cli -p "$REDIS_PORT" --json xrange "${PFX}ledger" - + | python3 -c '
import json, sys
for _id, f in json.load(sys.stdin):
    print(json.dumps(dict(zip(f[0::2], f[1::2])) if isinstance(f, list) else f))'
}
# check_ledger JOB-ID MODEL REFS N-CALLS IMAGES-PER-CALL: the job's ledger entries are N-CALLS
# 'usage' entries whose usage shows REFS reference images the provider took in (each the
# provider's own way), and whose cost is that usage priced by the catalog.
check_ledger() {
    ledger | python3 -c '
import json, sys
job, model, refs, ncalls, per_call = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
m = json.load(open(sys.argv[6]))["models"][model]
p = m["prices"]
entries = [e for e in map(json.loads, sys.stdin) if e["job"] == job]
if len(entries) != ncalls:
    sys.exit("%s: %d ledger entries, want %d: %s" % (job, len(entries), ncalls, entries))
for e in entries:
    u = json.loads(e["usage"])
    if e["reason"] != "usage":
        sys.exit("%s: reason %s, want usage" % (job, e["reason"]))
    if m["api"] == "gemini-generate-content":
        d = {x["modality"]: x["tokenCount"] for x in u["promptTokensDetails"]}
        want = refs * m["ref_image_tokens"]
        if d.get("IMAGE", 0) != want:
            sys.exit("%s: %s IMAGE prompt tokens, want %d (%d references): %s" % (job, d.get("IMAGE"), want, refs, u))
        if d["TEXT"] + d.get("IMAGE", 0) != u["promptTokenCount"]:
            sys.exit("%s: prompt details do not add up: %s" % (job, u))
        micros = d["TEXT"] * p["text_in"] + d.get("IMAGE", 0) * p["image_in"] + u["candidatesTokenCount"] * p["image_out"]
        cost = (micros + 500000) // 1000000
    elif m["api"] == "seedream":
        if u.get("input_images", 0) != refs or u["generated_images"] != per_call:
            sys.exit("%s: usage %s, want input_images %d" % (job, u, refs))
        cost = u["generated_images"] * p["per_image"]
    else:
        if u["image_count"] != per_call:
            sys.exit("%s: usage %s, want image_count %d" % (job, u, per_call))
        cost = u["image_count"] * p["per_image"]
    if int(e["cost"]) != cost:
        sys.exit("%s: ledger cost %s, want %d from its usage %s" % (job, e["cost"], cost, u))
print("ok")' "$1" "$2" "$3" "$4" "$5" "$CATALOG"
}

# ---- reference images in S3 ---------------------------------------------------------------
mkpng "$IMGQ_TMP/r1.png" 64 48
mkpng "$IMGQ_TMP/r2.png" 40 40
mkpng "$IMGQ_TMP/r3.png" 32 56
for f in r1 r2 r3; do upload "$IMGQ_TMP/$f.png" "refs/$f.png"; done
B1=$(stat -c %s "$IMGQ_TMP/r1.png")
B2=$(stat -c %s "$IMGQ_TMP/r2.png")
B3=$(stat -c %s "$IMGQ_TMP/r3.png")
R="s3://$BUCKET/refs"
ONE="[\"$R/r1.png\"]"
THREE="[\"$R/r1.png\",\"$R/r2.png\",\"$R/r3.png\"]"

# The quote counts the references' input tokens (the catalog's ref_image_tokens each).
REF_TOKENS=$(python3 -c "import json; print(json.load(open('$CATALOG'))['models']['gemini-2.5-flash-image']['ref_image_tokens'])")
assert_eq "1297" "$REF_TOKENS" "gemini-2.5-flash-image's ref_image_tokens"
quote_worst() { # quote_worst JOB-LINE: the worst case imgq quote gives the line
    printf '%s\n' "$1" >"$IMGQ_TMP/q.jsonl"
    "$IMGQ_BIN/imgq" quote "$IMGQ_TMP/q.jsonl" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["total"]["own_worst_micros"])'
}
G3_PROMPT="the three pictures as one poster [sim:refs:3]"
q3=$(quote_worst "{\"prompt\":\"$G3_PROMPT\",\"model\":\"gemini-2.5-flash-image\",\"images\":$THREE}")
q0=$(quote_worst "{\"prompt\":\"$G3_PROMPT\",\"model\":\"gemini-2.5-flash-image\"}")
# 3 x 1297 tokens at image_in $0.30/M: 1167.3 micro-USD (rounding once per call).
assert_eq "1" "$(python3 -c "print(int(abs(($q3 - $q0) - 3 * 1297 * 0.3) <= 1))")" "the quote counts 3 x 1297 reference tokens ($q0 -> $q3)"

# ---- one and several references per provider ----------------------------------------------
note "edits on gemini, seedream and dashscope through the worker"
G=gemini-2.5-flash-image
S=seedream-4-0
D=qwen-image-2.0
submit refs "$(
    cat <<EOF
{"id":"g1","prompt":"the fox of the picture, in snow [sim:refs:1]","model":"$G","images":$ONE}
{"id":"g3","prompt":"$G3_PROMPT","model":"$G","images":$THREE}
{"id":"g1x2","prompt":"two takes on the picture [sim:refs:1]","model":"$G","n":2,"images":["$R/r2.png"]}
{"id":"s1","prompt":"the picture as a watercolour [sim:refs:1]","model":"$S","size":"1024x1024","images":$ONE}
{"id":"s3","prompt":"the three pictures as a collage [sim:refs:3]","model":"$S","size":"1024x1024","images":$THREE}
{"id":"d1","prompt":"the picture at dusk [sim:refs:1]","model":"$D","size":"1024x1024","images":$ONE}
{"id":"d3","prompt":"the three pictures side by side [sim:refs:3]","model":"$D","size":"1024x1024","n":2,"images":$THREE}
{"id":"dplain","prompt":"a lighthouse at dusk [sim:refs:0]","model":"$D","size":"1024x1024"}
EOF
)"
work refs
r=$(results refs)
for id in g1 g3 g1x2 s1 s3 d1 d3 dplain; do
    assert_eq "done" "$(field "$id" state <<<"$r")" "job $id is done ($(field "$id" error <<<"$r"))"
    assert_eq "usage" "$(field "$id" billed <<<"$r")" "job $id is billed from its usage"
done
assert_eq "2" "$(field g1x2 provider_calls <<<"$r")" "g1x2 fans out to two Gemini calls"

# The simulator saw every reference, byte for byte, on every call.
assert_eq "4" "$(stat_of gemini with_references)" "Gemini calls with references (g1, g3, g1x2 x2)"
assert_eq "6" "$(stat_of gemini references)" "Gemini references"
assert_eq "$((B1 + B1 + B2 + B3 + 2 * B2))" "$(stat_of gemini reference_bytes)" "Gemini reference bytes"
assert_eq "2" "$(stat_of seedream with_references)" "Seedream calls with references"
assert_eq "4" "$(stat_of seedream references)" "Seedream references"
assert_eq "$((B1 + B1 + B2 + B3))" "$(stat_of seedream reference_bytes)" "Seedream reference bytes"
assert_eq "2" "$(stat_of dashscope with_references)" "DashScope edits with references"
assert_eq "4" "$(stat_of dashscope references)" "DashScope references"
assert_eq "$((B1 + B1 + B2 + B3))" "$(stat_of dashscope reference_bytes)" "DashScope reference bytes"
# DashScope: the edits on the synchronous API, the job without images on the task API.
assert_eq "1" "$(stat_of dashscope submits)" "one text2image task (dplain)"
assert_eq "0" "$(stat_of dashscope invalid_request)" "no DashScope request refused"
assert_eq "0" "$(stat_of gemini invalid_request)" "no Gemini request refused"
assert_eq "0" "$(stat_of seedream invalid_request)" "no Seedream request refused"

# The ledger bills the references' input from the provider's usage.
jid() { field "$1" id <<<"$r"; }
assert_eq "ok" "$(check_ledger "$(jid g1)" "$G" 1 1 1)" "g1's ledger"
assert_eq "ok" "$(check_ledger "$(jid g3)" "$G" 3 1 1)" "g3's ledger"
assert_eq "ok" "$(check_ledger "$(jid g1x2)" "$G" 1 2 1)" "g1x2's ledger"
assert_eq "ok" "$(check_ledger "$(jid s1)" "$S" 1 1 1)" "s1's ledger"
assert_eq "ok" "$(check_ledger "$(jid s3)" "$S" 3 1 1)" "s3's ledger"
assert_eq "ok" "$(check_ledger "$(jid d1)" "$D" 1 1 1)" "d1's ledger"
assert_eq "ok" "$(check_ledger "$(jid d3)" "$D" 3 1 2)" "d3's ledger"
assert_eq "ok" "$(check_ledger "$(jid dplain)" "$D" 0 1 1)" "dplain's ledger"
# g3 costs at most its quote (the same line), and its references' tokens more than g1's one.
g3cost=$(field g3 cost_micros <<<"$r")
g1cost=$(field g1 cost_micros <<<"$r")
[[ "$g3cost" -le "$q3" ]] || fail "g3 cost $g3cost above its quote's worst case $q3"
assert_eq "1" "$(python3 -c "print(int($g3cost - $g1cost >= int(2 * 1297 * 0.3)))")" "g3 pays for its 2 more references ($g1cost -> $g3cost)"

# ---- a reference missing from the request fails in the simulator ---------------------------
note "a request without a reference the job has"
submit missing "$(
    cat <<EOF
{"id":"gmiss","prompt":"two pictures [sim:refs:2]","model":"$G","images":$ONE}
{"id":"smiss","prompt":"two pictures [sim:refs:2]","model":"$S","size":"1024x1024","images":$ONE}
{"id":"dmiss","prompt":"two pictures [sim:refs:2]","model":"$D","size":"1024x1024","images":$ONE}
EOF
)"
before=$(ledger | wc -l)
work missing
r=$(results missing)
for id in gmiss smiss dmiss; do
    assert_eq "failed" "$(field "$id" state <<<"$r")" "$id fails"
    assert_eq "1" "$(field "$id" attempts <<<"$r")" "$id is not retried"
    assert_eq "0" "$(field "$id" cost_micros <<<"$r")" "$id costs nothing"
    err=$(field "$id" error <<<"$r")
    assert_contains "$err" '"class": "invalid_request"' "$id: invalid_request"
    assert_contains "$err" '"status": 400' "$id: the provider's 400"
    assert_contains "$err" "[sim:refs:2]) but the request carries 1" "$id: the simulator says why"
done
assert_eq "$before" "$(ledger | wc -l)" "refused calls leave no ledger entry"

# ---- the simulator refuses broken references in each provider's shape ---------------------
note "broken references, straight to the simulator"
PNG64=$(base64 -w0 "$IMGQ_TMP/r1.png")
TEXT64=$(printf 'a shopping list, not a picture' | base64 -w0)
CUT64=${PNG64:0:80}
post() { # post PATH AUTH-HEADER BODY: status; body in $IMGQ_TMP/body
    curl -sS -o "$IMGQ_TMP/body" -w '%{http_code}' -H "$2" -H 'Content-Type: application/json' \
        --data-binary "$3" "$SIM$1"
}
gem_body() { printf '{"contents":[{"parts":[{"text":"x"},{"inlineData":{"mimeType":"image/png","data":"%s"}}]}]}' "$1"; }
ark_body() { printf '{"model":"seedream-4-0","prompt":"x","size":"1024x1024","response_format":"b64_json","image":"data:image/png;base64,%s"}' "$1"; }
ds_body() { printf '{"model":"qwen-image-2.0","input":{"messages":[{"role":"user","content":[{"image":"data:image/png;base64,%s"},{"text":"x"}]}]},"parameters":{"n":1,"size":"1024*1024"}}' "$1"; }
GEM=(/v1beta/models/$G:generateContent "x-goog-api-key: k")
ARK=(/api/v3/images/generations "Authorization: Bearer k")
DS=(/api/v1/services/aigc/multimodal-generation/generation "Authorization: Bearer k")
for data in "$TEXT64" "$CUT64"; do
    assert_eq "400" "$(post "${GEM[@]}" "$(gem_body "$data")")" "Gemini refuses a broken inline image"
    assert_contains "$(cat "$IMGQ_TMP/body")" '"status":"INVALID_ARGUMENT"'
    assert_contains "$(cat "$IMGQ_TMP/body")" "Unable to process input image"
    assert_eq "400" "$(post "${ARK[@]}" "$(ark_body "$data")")" "Seedream refuses a broken image"
    assert_contains "$(cat "$IMGQ_TMP/body")" '"code":"InvalidParameter"'
    assert_contains "$(cat "$IMGQ_TMP/body")" '"param":"image"'
    assert_eq "400" "$(post "${DS[@]}" "$(ds_body "$data")")" "DashScope refuses a broken image"
    assert_contains "$(cat "$IMGQ_TMP/body")" '"code":"InvalidParameter"'
    assert_contains "$(cat "$IMGQ_TMP/body")" "content[0].image is not a valid image"
done
# The same requests with the whole picture are accepted.
assert_eq "200" "$(post "${GEM[@]}" "$(gem_body "$PNG64")")" "Gemini takes the whole PNG"
assert_eq "200" "$(post "${ARK[@]}" "$(ark_body "$PNG64")")" "Seedream takes the whole PNG"
assert_eq "200" "$(post "${DS[@]}" "$(ds_body "$PNG64")")" "DashScope takes the whole PNG"
assert_contains "$(cat "$IMGQ_TMP/body")" '"usage":{"width":1024,"height":1024,"image_count":1}'

# ---- submit-time refusals -----------------------------------------------------------------
note "submit-time refusals"
refuse() { # refuse BATCH JSONL-TEXT EXPECTED-TEXT...: imgq submit refuses, nothing enqueued
    local batch=$1 text=$2 out rc=0
    shift 2
    printf '%s\n' "$text" >"$IMGQ_TMP/$batch.jsonl"
    out=$("$IMGQ_BIN/imgq" submit --batch "$batch" "$IMGQ_TMP/$batch.jsonl" 2>&1) || rc=$?
    assert_ne "0" "$rc" "imgq submit of $batch refuses"
    for want in "$@"; do
        assert_contains "$out" "$want" "$batch: the refusal"
    done
}
refuse flux "{\"prompt\":\"x\",\"model\":\"flux-1.1-pro\",\"images\":$ONE}" \
    "images" "model 'flux-1.1-pro' takes no reference images"
refuse toomany "{\"prompt\":\"x\",\"model\":\"$D\",\"images\":[\"$R/r1.png\",\"$R/r2.png\",\"$R/r3.png\",\"$R/r1.png\"]}" \
    "images" "model '$D' takes at most 3 reference images (got 4)"
echo "PASS edits_providers"
