#!/usr/bin/env bash
# OpenAI image edits end to end: jobs with "images" (and a "mask") on gpt-image-1.5 through a
# real worker, redis-server, s3rver and imgq-sim.
#   - references by s3:// (uploaded to s3rver), by data: URI and by http://127.0.0.1 (a local
#     python3 http.server): the worker fetches them and calls /v1/images/edits, never
#     /v1/images/generations;
#   - the cost is the usage-based price with the references' input image tokens (1025 each at
#     the catalog's image_in price): a 2-reference job costs exactly 2 x 1025 x image_in / 1e6
#     micro-USD more than the same job without references;
#   - failures: a missing s3:// reference, a reference that is not an image, a missing http://
#     reference (all invalid_request before any provider call, naming the reference), a mask of
#     the wrong size (the provider's 400 -> invalid_request), none retried;
#   - submit-time refusals (nothing enqueued): too many references, a mask without images,
#     images on a model that cannot edit;
#   - two jobs differing only in their references get different content-addressed keys (and
#     identical ones the same key).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/env.sh"
: "${IMGQ_SOURCE_DIR:=$IMGQ_ROOT}"
imgq_env_setup
start_redis
BUCKET=imgq-edits
start_s3 "$BUCKET"
start_sim --latency-ms 10
SIM="http://127.0.0.1:$SIM_PORT"
CATALOG="$IMGQ_SOURCE_DIR/deploy/catalog.json"
MODEL=gpt-image-1.5
PROMPT="a linen shirt, dyed indigo"

# ---- helpers ------------------------------------------------------------------------------

stat_of() { # stat_of ENDPOINT FIELD: a /sim/stats counter
    curl -s "$SIM/sim/stats" | python3 -c "import json,sys; print(json.load(sys.stdin)['requests']['$1']['$2'])"
}
submit() { # submit BATCH JSONL-TEXT
    printf '%s\n' "$2" >"$IMGQ_TMP/$1.jsonl"
    "$IMGQ_BIN/imgq" submit --batch "$1" "$IMGQ_TMP/$1.jsonl" >/dev/null
}
work() { # work LOG: one worker until the queue is idle
    "$IMGQ_BIN/imgq-worker" --exit-when-idle --retry-base-ms 50 --retry-max-ms 200 \
        --log-level debug 2>"$IMGQ_TMP/$1.log"
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
usage_cost() { # usage_cost CLIENT-ID (results on stdin): the cost from the job's usage, by
    # the catalog's token prices (micro-USD per 1M tokens), rounded half-up once per call
    python3 -c '
import json, sys
cat = json.load(open(sys.argv[2]))["models"][sys.argv[3]]["prices"]
for line in sys.stdin:
    o = json.loads(line)
    if o.get("client_id") == sys.argv[1]:
        u = o["usage"]
        d = u.get("input_tokens_details", {})
        s = (d["text_tokens"] * cat["text_in"] + d.get("image_tokens", 0) * cat["image_in"]
             + u["output_tokens"] * cat["image_out"])
        print((s + 500000) // 1000000)
        break
else:
    sys.exit("no job " + sys.argv[1])' "$1" "$CATALOG" "$MODEL"
}
catalog() { # catalog PYTHON-EXPR over m (the model's catalog entry)
    python3 -c "import json; m = json.load(open('$CATALOG'))['models']['$MODEL']; print($1)"
}
IMAGE_IN=$(catalog "m['prices']['image_in']")
REF_TOKENS=$(catalog "m['ref_image_tokens']")
MAX_REFS=$(catalog "m['max_references']")
assert_eq "1025" "$REF_TOKENS" "the catalog's ref_image_tokens for $MODEL"

# ---- reference images: s3rver, a data: URI, a local HTTP server ---------------------------
mkpng "$IMGQ_TMP/ref1.png" 64 48
mkpng "$IMGQ_TMP/ref2.png" 40 40
mkpng "$IMGQ_TMP/mask.png" 64 48 rgba       # the first image's size
mkpng "$IMGQ_TMP/mask_small.png" 32 32 rgba # not the first image's size
printf 'shopping list: linen, wool, copper\n' >"$IMGQ_TMP/notes.txt"
for f in ref1.png ref2.png mask.png mask_small.png notes.txt; do
    upload "$IMGQ_TMP/$f" "refs/$f"
done
S3REF="s3://$BUCKET/refs"
DATA_URI="data:image/png;base64,$(base64 -w0 "$IMGQ_TMP/ref2.png")"

mkdir -p "$IMGQ_TMP/www"
cp "$IMGQ_TMP/ref1.png" "$IMGQ_TMP/www/ref1.png"
WWW_PORT=$(free_port)
python3 -m http.server --bind 127.0.0.1 --directory "$IMGQ_TMP/www" "$WWW_PORT" \
    </dev/null >"$IMGQ_TMP/www.log" 2>&1 &
track_pid $!
www_up() { [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$WWW_PORT/ref1.png")" == 200 ]]; }
wait_until 15 "the local HTTP server" www_up
WWW="http://127.0.0.1:$WWW_PORT"

# The SSRF guard refuses loopback URLs unless the operator allows them (local development).
submit guard "{\"id\":\"guarded\",\"prompt\":\"$PROMPT\",\"model\":\"$MODEL\",\"quality\":\"low\",\"images\":[\"$WWW/ref1.png\"]}"
IMGQ_SSRF_ALLOW= work guard
r=$(results guard)
assert_eq "failed" "$(field guarded state <<<"$r")" "a loopback reference is refused"
assert_contains "$(field guarded error <<<"$r")" "refused by the SSRF guard"
assert_contains "$(field guarded error <<<"$r")" "loopback"
assert_contains "$(field guarded error <<<"$r")" '"class": "invalid_request"'
out=$(IMGQ_SSRF_ALLOW="10.0.0.0/99" "$IMGQ_BIN/imgq-worker" --exit-when-idle 2>&1 || true)
assert_contains "$out" "IMGQ_SSRF_ALLOW / ssrf_allow"
export IMGQ_SSRF_ALLOW=127.0.0.1

# ---- edits: s3:// references with a mask, a data: URI, an http:// URL ---------------------
note "edits through the worker"
submit edits "$(
    cat <<EOF
{"id":"two","prompt":"$PROMPT","model":"$MODEL","quality":"low","images":["$S3REF/ref1.png","$S3REF/ref2.png"],"mask":"$S3REF/mask.png"}
{"id":"data","prompt":"$PROMPT","model":"$MODEL","quality":"low","images":["$DATA_URI"]}
{"id":"http","prompt":"$PROMPT","model":"$MODEL","quality":"low","images":["$WWW/ref1.png"]}
EOF
)"
work edits
r=$(results edits)
for id in two data http; do
    assert_eq "done" "$(field "$id" state <<<"$r")" "edit job $id is done"
    assert_eq "1" "$(field "$id" provider_calls <<<"$r")" "edit job $id: one provider call"
    assert_eq "usage" "$(field "$id" billed <<<"$r")" "edit job $id is billed from its usage"
done
assert_eq "3" "$(stat_of edits total)" "three calls to /v1/images/edits"
assert_eq "3" "$(stat_of edits ok)" "three successful edits"
assert_eq "0" "$(stat_of generations total)" "no generation call for an edit job"
assert_contains "$(cat "$IMGQ_TMP/www.log")" "GET /ref1.png HTTP/1.1\" 200" "the http:// reference was fetched"
# The usage counts 1025 input image tokens per reference (the mask adds none).
usage_of() { field "$1" usage <<<"$r" | python3 -c 'import json,sys; print(json.load(sys.stdin)["input_tokens_details"]["image_tokens"])'; }
assert_eq "$((2 * REF_TOKENS))" "$(usage_of two)" "image tokens of a 2-reference edit"
assert_eq "$REF_TOKENS" "$(usage_of data)" "image tokens of a data: URI edit"
assert_eq "$REF_TOKENS" "$(usage_of http)" "image tokens of an http:// edit"
for id in two data http; do
    assert_eq "$(usage_cost "$id" <<<"$r")" "$(field "$id" cost_micros <<<"$r")" "$id: cost from usage"
done
objects=$(find "$IMGQ_TMP" -path "*$BUCKET/images/*" -name '*._S3rver_object' ! -name '*.json._S3rver_object' | wc -l)
assert_eq "3" "$objects" "three stored results"

# The same job without references: a generation, and exactly the references' tokens cheaper.
submit plain "{\"id\":\"zero\",\"prompt\":\"$PROMPT\",\"model\":\"$MODEL\",\"quality\":\"low\"}"
work plain
r0=$(results plain)
assert_eq "done" "$(field zero state <<<"$r0")" "the job without references is done"
assert_eq "1" "$(stat_of generations total)" "a job without references is a generation"
assert_eq "3" "$(stat_of edits total)" "and not an edit"
assert_eq "$(usage_cost zero <<<"$r0")" "$(field zero cost_micros <<<"$r0")" "zero: cost from usage"
delta=$(($(field two cost_micros <<<"$r") - $(field zero cost_micros <<<"$r0")))
# image_in is micro-USD per 1M tokens: 2 x 1025 tokens, exact when image_in is whole dollars.
(((2 * REF_TOKENS * IMAGE_IN) % 1000000 == 0)) || fail "the catalog's image_in no longer divides evenly"
assert_eq "$((2 * REF_TOKENS * IMAGE_IN / 1000000))" "$delta" "2 references cost 2 x 1025 image tokens more"
assert_eq "16400" "$delta" "2 x 1025 x \$8/M"

# ---- failures -----------------------------------------------------------------------------
note "reference failures"
before_edits=$(stat_of edits total)
submit bad "$(
    cat <<EOF
{"id":"missing","prompt":"$PROMPT","model":"$MODEL","quality":"low","images":["$S3REF/ref1.png","$S3REF/nope.png"]}
{"id":"badmask","prompt":"$PROMPT","model":"$MODEL","quality":"low","images":["$S3REF/ref1.png"],"mask":"$S3REF/mask_small.png"}
{"id":"text","prompt":"$PROMPT","model":"$MODEL","quality":"low","images":["$S3REF/notes.txt"]}
{"id":"gone","prompt":"$PROMPT","model":"$MODEL","quality":"low","images":["$WWW/gone.png"]}
{"id":"otherbucket","prompt":"$PROMPT","model":"$MODEL","quality":"low","images":["s3://someone-elses-bucket/ref1.png"]}
EOF
)"
work bad
r=$(results bad)
for id in missing badmask text gone otherbucket; do
    assert_eq "failed" "$(field "$id" state <<<"$r")" "$id fails"
    assert_eq "1" "$(field "$id" attempts <<<"$r")" "$id is not retried"
    assert_eq "0" "$(field "$id" cost_micros <<<"$r")" "$id costs nothing"
    err=$(field "$id" error <<<"$r")
    assert_contains "$err" '"class": "invalid_request"' "$id: invalid_request"
    assert_contains "$err" '"retry": false' "$id: not retried"
done
assert_contains "$(field missing error <<<"$r")" "$S3REF/nope.png" "the error names the missing reference"
assert_contains "$(field missing error <<<"$r")" "no such object"
assert_contains "$(field text error <<<"$r")" "$S3REF/notes.txt" "the error names the non-image"
assert_contains "$(field text error <<<"$r")" "not a PNG, JPEG or WebP image"
assert_contains "$(field gone error <<<"$r")" "$WWW/gone.png" "the error names the missing URL"
# The worker's credentials read only its own bucket (and IMGQ_S3_REFERENCE_BUCKETS).
assert_contains "$(field otherbucket error <<<"$r")" "only from its own bucket and IMGQ_S3_REFERENCE_BUCKETS"
assert_contains "$(field badmask error <<<"$r")" '"status": 400' "the provider refused the mask"
assert_contains "$(field badmask error <<<"$r")" "mask" "the error is about the mask"
# Only the bad mask reached the provider: the others failed while fetching their references.
assert_eq "$((before_edits + 1))" "$(stat_of edits total)" "one edit call (the bad mask)"
assert_eq "1" "$(stat_of edits invalid_request)" "the simulator refused the mask"
assert_eq "1" "$(stat_of generations total)" "still no generation for an edit job"

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
    assert_status 3 "$IMGQ_BIN/imgq" batch status "$batch" # no such batch (3): nothing enqueued
}
many=$(python3 -c "import json; print(json.dumps(['$S3REF/ref%d.png' % i for i in range($MAX_REFS + 1)]))")
good="{\"id\":\"fine\",\"prompt\":\"$PROMPT\",\"model\":\"$MODEL\",\"quality\":\"low\",\"images\":[\"$S3REF/ref1.png\"]}"
refuse toomany "$good
{\"prompt\":\"x\",\"model\":\"$MODEL\",\"images\":$many}" \
    ":2:" "images" "model '$MODEL' takes at most $MAX_REFS reference images (got $((MAX_REFS + 1)))"
refuse maskonly "{\"prompt\":\"x\",\"model\":\"$MODEL\",\"mask\":\"$S3REF/mask.png\"}" \
    "mask" "needs images"
refuse noedit "{\"prompt\":\"x\",\"model\":\"flux-schnell\",\"images\":[\"$S3REF/ref1.png\"]}" \
    "images" "model 'flux-schnell' takes no reference images"
refuse plainhttp "{\"prompt\":\"x\",\"model\":\"$MODEL\",\"images\":[\"http://example.com/a.png\"]}" \
    "images[0]" "http:// is only for 127.0.0.1"
# Exactly max_references is accepted (a dry run: validation only).
exact=$(python3 -c "import json; print(json.dumps(['$S3REF/ref%d.png' % i for i in range($MAX_REFS)]))")
printf '%s\n' "{\"prompt\":\"x\",\"model\":\"$MODEL\",\"images\":$exact}" >"$IMGQ_TMP/exact.jsonl"
assert_status 0 "$IMGQ_BIN/imgq" submit --dry-run --batch exact "$IMGQ_TMP/exact.jsonl"

# ---- content-addressed keys follow the references -----------------------------------------
note "keys of jobs differing only in their references"
submit keys "$(
    cat <<EOF
{"id":"k1","prompt":"a copper kettle","model":"$MODEL","quality":"low","images":["$S3REF/ref1.png"]}
{"id":"k2","prompt":"a copper kettle","model":"$MODEL","quality":"low","images":["$S3REF/ref2.png"]}
{"id":"k1again","prompt":"a copper kettle","model":"$MODEL","quality":"low","images":["$S3REF/ref1.png"]}
EOF
)"
work keys
r=$(results keys)
key_of() { field "$1" images <<<"$r" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["key"])'; }
for id in k1 k2 k1again; do
    assert_eq "done" "$(field "$id" state <<<"$r")" "key job $id is done"
done
assert_match "$(key_of k1)" '^images/[0-9a-f]{2}/[0-9a-f]{64}\.webp$' "a content-addressed key"
assert_ne "$(key_of k1)" "$(key_of k2)" "jobs differing only in their references: different keys"
assert_eq "$(key_of k1)" "$(key_of k1again)" "the same references: the same key"
obj() { find "$IMGQ_TMP" -path "*$BUCKET/$1._S3rver_object" | wc -l; }
assert_eq "1" "$(obj "$(key_of k1)")" "k1's object in S3"
assert_eq "1" "$(obj "$(key_of k2)")" "k2's object in S3"
# Three edits, one generation, and k1 / k2 (k1again wrote k1's object again): six objects.
assert_eq "6" "$(find "$IMGQ_TMP" -path "*$BUCKET/images/*" -name '*._S3rver_object' ! -name '*.json._S3rver_object' | wc -l)" \
    "six stored objects in all"
echo "PASS edits"
