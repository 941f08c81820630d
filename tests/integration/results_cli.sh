#!/usr/bin/env bash
# imgq results: a batch run for real (imgq submit, imgq-worker against imgq-sim, s3rver,
# redis-server), then every image of every done job is listed with its key, size, format and
# byte count; each presigned URL fetches the stored object (HTTP 200, a valid WebP or PNG of
# the listed size and length); an expired link is refused (403); jobs not done are reported
# on stderr (or on stdout with --all); bad arguments give clear errors and exit status 2.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/env.sh"
imgq_env_setup
start_redis
start_s3 imgq-results
start_sim --latency-ms 10
imgq() { "$IMGQ_BIN/imgq" "$@"; }

# The command must be wired into the CLI (src/cli/main.c's table of commands).
help=$(imgq results --help 2>&1 || true)
if [[ "$help" == *"unknown command"* ]]; then
    fail "imgq has no 'results' command: add {\"results\", imgq_cmd_results} to src/cli/main.c"
fi

cat >"$IMGQ_TMP/jobs.jsonl" <<'EOF'
{"id":"r-1","prompt":"a blue mug on oak","model":"gpt-image-1-mini","quality":"low","size":"1024x1024","n":2}
{"id":"r-2","prompt":"a linen tote","model":"gpt-image-1-mini","quality":"low","size":"1024x1536","output_format":"png"}
{"id":"r-3","prompt":"a red scarf [sim:moderation]","model":"gpt-image-1-mini","quality":"low"}
{"prompt":"a wool rug","model":"gpt-image-1-mini","quality":"low","size":"1536x1024"}
EOF
assert_eq "res" "$(imgq submit --batch res "$IMGQ_TMP/jobs.jsonl")" "submit prints the batch id"
"$IMGQ_BIN/imgq-worker" --exit-when-idle --retry-base-ms 50 2>"$IMGQ_TMP/worker.log" ||
    fail "the worker failed"

# ---- plain listing: one tab-separated line per image, not-done jobs on stderr -------------
imgq results res >"$IMGQ_TMP/plain.txt" 2>"$IMGQ_TMP/plain.err" || fail "imgq results failed"
cat "$IMGQ_TMP/plain.txt" "$IMGQ_TMP/plain.err"
assert_eq 4 "$(wc -l <"$IMGQ_TMP/plain.txt")" "four images: 2 + 1 + 1"
awk -F'\t' 'NF != 8 {exit 1}' "$IMGQ_TMP/plain.txt" || fail "lines have 8 columns without --presign"
r1=$(grep -P '^\S+\tr-1\t' "$IMGQ_TMP/plain.txt" | cut -f3- | cut -f1,2,4,5 | sort)
assert_eq "$(printf '0\timgq-results\t1024x1024\twebp\n1\timgq-results\t1024x1024\twebp')" \
    "$r1" "r-1: images 0 and 1, WebP 1024x1024 in the worker's bucket"
assert_match "$(grep -P '\tr-2\t' "$IMGQ_TMP/plain.txt")" \
    $'\t0\timgq-results\timages/[0-9a-f]{2}/[0-9a-f]{64}\\.png\t1024x1536\tpng\t[0-9]+$' "r-2: a PNG"
assert_match "$(grep -P '^\S+\t-\t' "$IMGQ_TMP/plain.txt")" $'\t0\timgq-results\t.*\t1536x1024\twebp\t' \
    "a job without client id shows '-'"
assert_eq 4 "$(cut -f5 "$IMGQ_TMP/plain.txt" | sort -u | wc -l)" "four distinct keys"
err=$(cat "$IMGQ_TMP/plain.err")
assert_contains "$err" "(r-3): failed"
assert_contains "$err" "1 of 4 jobs not done (failed 1)"
assert_not_contains "$(cat "$IMGQ_TMP/plain.txt")" "r-3"

# ---- --presign: every link fetches the object listed --------------------------------------
imgq results res --presign 300 >"$IMGQ_TMP/signed.txt" 2>/dev/null || fail "imgq results --presign failed"
assert_eq 4 "$(wc -l <"$IMGQ_TMP/signed.txt")" "four images with links"
n=0
while IFS=$'\t' read -r _job _client _index _bucket key dims format bytes url; do
    assert_match "$url" "^http://127\.0\.0\.1:$S3_PORT/imgq-results/$key\?.*X-Amz-Expires=300" "URL"
    assert_contains "$url" "X-Amz-Signature="
    code=$(curl -s -o "$IMGQ_TMP/obj" -w '%{http_code}' "$url")
    assert_eq 200 "$code" "GET $key through its presigned URL"
    assert_eq "$bytes" "$(stat -c %s "$IMGQ_TMP/obj")" "size of $key as listed"
    w=${dims%x*} h=${dims#*x}
    case $format in
    webp)
        assert_eq "RIFF" "$(head -c 4 "$IMGQ_TMP/obj")" "RIFF header of $key"
        assert_eq "WEBP" "$(dd if="$IMGQ_TMP/obj" bs=1 skip=8 count=4 2>/dev/null)" "WebP of $key"
        if command -v dwebp >/dev/null; then
            info=$(dwebp "$IMGQ_TMP/obj" -o /dev/null 2>&1) || fail "dwebp cannot decode $key"
            assert_contains "$info" "Dimensions: $w x $h"
        fi
        ;;
    png)
        assert_eq "89504e470d0a1a0a" "$(head -c 8 "$IMGQ_TMP/obj" | od -An -tx1 | tr -d ' \n')" \
            "PNG signature of $key"
        assert_eq "$(printf '%08x%08x' "$w" "$h")" \
            "$(dd if="$IMGQ_TMP/obj" bs=1 skip=16 count=8 2>/dev/null | od -An -tx1 | tr -d ' \n')" \
            "PNG dimensions of $key"
        ;;
    *) fail "unexpected format '$format'" ;;
    esac
    n=$((n + 1))
done <"$IMGQ_TMP/signed.txt"
assert_eq 4 "$n" "four links fetched"

# ---- --json: one object per image, with url and expiry -----------------------------------
imgq results res --json --presign 600 >"$IMGQ_TMP/out.jsonl" 2>/dev/null
assert_eq 4 "$(wc -l <"$IMGQ_TMP/out.jsonl")" "four JSON lines"
first=$(grep '"client_id":"r-1"' "$IMGQ_TMP/out.jsonl" | head -1)
assert_match "$first" '^\{"job":"[^"]+","client_id":"r-1","state":"done","index":0,"bucket":"imgq-results","key":"images/[0-9a-f]{2}/[0-9a-f]{64}\.webp","width":1024,"height":1024,"format":"webp","bytes":[0-9]+,"url":"http://127\.0\.0\.1:[0-9]+/imgq-results/images/[^"]+","expires":"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}Z"\}$'
assert_not_contains "$(grep -v client_id "$IMGQ_TMP/out.jsonl")" "null" "no client_id: left out"
url=$(grep -o '"url":"[^"]*"' <<<"$first" | cut -d'"' -f4)
assert_eq 200 "$(curl -s -o /dev/null -w '%{http_code}' "$url")" "the JSON line's link works"
# Without --presign: no url.
assert_not_contains "$(imgq results res --json 2>/dev/null)" '"url"'

# ---- --all: not-done jobs on stdout ------------------------------------------------------
all=$(imgq results res --all 2>"$IMGQ_TMP/all.err")
assert_eq 5 "$(wc -l <<<"$all")" "four images and the failed job"
assert_match "$(grep -P '\tr-3\t' <<<"$all")" $'^\\S+\tr-3\t-\tfailed\t' "the failed job, with its message"
assert_contains "$(cat "$IMGQ_TMP/all.err")" "1 of 4 jobs not done"
assert_not_contains "$(cat "$IMGQ_TMP/all.err")" "(r-3): failed"
allj=$(imgq results res --all --json 2>/dev/null | grep '"r-3"')
assert_match "$allj" '^\{"job":"[^"]+","client_id":"r-3","state":"failed","error":\{.*"message":'

# ---- an expired link is refused ----------------------------------------------------------
short=$(imgq results res --presign 1 | head -1 | cut -f9)
sleep 2.2
assert_eq 403 "$(curl -s -o "$IMGQ_TMP/expired.xml" -w '%{http_code}' "$short")" "expired link"
assert_contains "$(cat "$IMGQ_TMP/expired.xml")" "expired"

# ---- bad arguments: clear errors ---------------------------------------------------------
expect() { # expect STATUS TEXT ARGS... - imgq results ARGS exits STATUS, stderr has TEXT
    local want=$1 text=$2 got=0 out
    shift 2
    out=$(imgq results "$@" 2>&1 >/dev/null) || got=$?
    assert_eq "$want" "$got" "exit status of 'imgq results $*'"
    assert_contains "$out" "$text" "message of 'imgq results $*'"
}
expect 2 "missing BATCH"
expect 2 "missing BATCH" --json
expect 2 "--presign needs a value" res --presign
expect 2 "from 1 to 604800" res --presign 0
expect 2 "from 1 to 604800" res --presign 604801
expect 2 "from 1 to 604800" res --presign 10s
expect 2 "from 1 to 604800" res --presign=-5
expect 2 "unknown option '--bogus'" res --bogus
expect 2 "unexpected argument 'other'" res other
expect 3 "no such batch" nope
(
    unset AWS_ACCESS_KEY_ID
    expect 1 "cannot presign" res --presign 60
)
assert_status 0 imgq results res --presign=60
assert_contains "$(imgq results --help)" "usage: imgq results BATCH"
echo "results_cli: OK"
