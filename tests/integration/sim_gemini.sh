#!/usr/bin/env bash
# sim_gemini.sh - imgq-sim speaks Gemini's generateContent for image output: success shape,
# a real PNG of the size each aspectRatio maps to, usageMetadata from the catalog (reference
# images add ref_image_tokens), every injected failure in Google's shapes (429 RetryInfo,
# 500 INTERNAL, IMAGE_SAFETY, promptFeedback, no usageMetadata), auth (403), unknown model
# (404), bad requests (400), /sim/stats under "gemini", latency and a clean SIGTERM.
#
# Self-contained: needs bash, curl, base64 and od.  Starts its own simulators on ports the
# kernel picks (--port 0) and removes everything it made on exit.
# shellcheck disable=SC2154 # PORT_<name> and PID_<name> are set by start_sim (printf -v)
set -euo pipefail

SIM_TEST=gemini
source "$(dirname "${BASH_SOURCE[0]}")/../lib/sim_checks.sh"

MODEL=gemini-2.5-flash-image

# gem PORT BODY [extra curl args...]: POST generateContent for $MODEL with a key header; body in
# $TMP/body, headers in $TMP/head, status echoed.  GEM_MODEL overrides the model.
gem() {
    local port=$1 body=$2
    shift 2
    curl -sS -o "$TMP/body" -D "$TMP/head" -w '%{http_code}' \
        -H 'x-goog-api-key: AIza-imgq-test' -H 'Content-Type: application/json' \
        "$@" --data-binary "$body" \
        "http://127.0.0.1:$port/v1beta/models/${GEM_MODEL:-$MODEL}:generateContent"
}
# prompt_body TEXT [GENERATION-CONFIG-JSON]: a one-part request.
prompt_body() {
    if [[ -n "${2:-}" ]]; then
        printf '{"contents":[{"role":"user","parts":[{"text":"%s"}]}],"generationConfig":%s}' "$1" "$2"
    else
        printf '{"contents":[{"role":"user","parts":[{"text":"%s"}]}]}' "$1"
    fi
}

json_int() { grep -o "\"$2\":[0-9]*" "$1" | head -1 | cut -d: -f2; }
# inline_image FILE OUT: decode the first inlineData.data of a response into OUT.
inline_image() { grep -o '"data":"[^"]*"' "$1" | head -1 | cut -d'"' -f4 | base64 -d >"$2"; }
be32() { od -An -tu1 -j "$2" -N4 "$1" | awk '{print $1*16777216 + $2*65536 + $3*256 + $4}'; }
ascii() { od -An -c -j "$2" -N "$3" "$1" | tr -d ' \n'; }
stats_field() { # stats_field ENDPOINT FIELD (from $TMP/stats)
    grep -o "\"$1\":{[^}]*}" "$TMP/stats" | grep -o "\"$2\":[0-9]*" | cut -d: -f2
}

start_sim main --seed 42 --retry-after 7
P=$PORT_main

# ---- success: shape, PNG, usageMetadata ----
expect_eq "success status" "$(gem "$P" "$(prompt_body 'a red fox on a hill' '{"responseModalities":["TEXT","IMAGE"]}')")" 200
cp "$TMP/body" "$TMP/success.json"
for key in '"candidates":[{"content":{"parts":[{"text":"Here is your image"},{"inlineData":{"mimeType":"image/png","data":"' \
    '"role":"model"},"finishReason":"STOP","index":0}]' \
    '"promptTokensDetails":[{"modality":"TEXT","tokenCount":5}]' \
    '"candidatesTokensDetails":[{"modality":"IMAGE","tokenCount":1290}]' \
    "\"modelVersion\":\"$MODEL\"" '"responseId":"sim'; do
    expect_has "success body" "$TMP/success.json" "$key"
done
# 19 characters -> 5 text tokens; 1290 output tokens per image (the catalog's table).
expect_eq promptTokenCount "$(json_int "$TMP/success.json" promptTokenCount)" 5
expect_eq candidatesTokenCount "$(json_int "$TMP/success.json" candidatesTokenCount)" 1290
expect_eq totalTokenCount "$(json_int "$TMP/success.json" totalTokenCount)" 1295
expect_not "no IMAGE prompt detail without references" "$TMP/success.json" '{"modality":"IMAGE","tokenCount":1297}'
expect_has "content type" "$TMP/head" "Content-Type: application/json; charset=UTF-8"
expect_not "no Retry-After on success" "$TMP/head" "retry-after"
inline_image "$TMP/success.json" "$TMP/img.png"
expect_eq "png signature" "$(od -An -tx1 -N8 "$TMP/img.png" | tr -d ' \n')" 89504e470d0a1a0a
expect_eq "png IHDR" "$(ascii "$TMP/img.png" 12 4)" IHDR
expect_eq "default 1:1 width" "$(be32 "$TMP/img.png" 16)" 1024
expect_eq "default 1:1 height" "$(be32 "$TMP/img.png" 20)" 1024
# Deterministic: the same prompt gives the same picture; a seed changes it.
gem "$P" "$(prompt_body 'a red fox on a hill')" >/dev/null
inline_image "$TMP/body" "$TMP/again.png"
if cmp -s "$TMP/img.png" "$TMP/again.png"; then ok; else bad "same prompt, different image"; fi
gem "$P" "$(prompt_body 'a red fox on a hill' '{"seed":7}')" >/dev/null
inline_image "$TMP/body" "$TMP/seeded.png"
if cmp -s "$TMP/img.png" "$TMP/seeded.png"; then bad "seed 7 did not change the image"; else ok; fi
# ["IMAGE"] alone: the image part without the text part.
expect_eq "image-only status" "$(gem "$P" "$(prompt_body 'only pixels' '{"responseModalities":["IMAGE"]}')")" 200
expect_not "image-only has no text part" "$TMP/body" '"text":'
expect_has "image-only has the image" "$TMP/body" '{"inlineData":{"mimeType":"image/png"'

# ---- PNG size for every aspect ratio (the catalog's sizes) ----
for pair in 1:1=1024x1024 2:3=832x1248 3:2=1248x832 3:4=864x1184 4:3=1184x864 \
    9:16=768x1344 16:9=1344x768 21:9=1536x672; do
    ratio=${pair%%=*}
    size=${pair#*=}
    code=$(gem "$P" "$(prompt_body "ratio $ratio" "{\"imageConfig\":{\"aspectRatio\":\"$ratio\"}}")")
    expect_eq "status $ratio" "$code" 200
    inline_image "$TMP/body" "$TMP/r.png"
    expect_eq "size $ratio" "$(be32 "$TMP/r.png" 16)x$(be32 "$TMP/r.png" 20)" "$size"
    expect_eq "tokens $ratio" "$(json_int "$TMP/body" candidatesTokenCount)" 1290
done
# snake_case spelling (proto JSON accepts both) and a seed.
code=$(gem "$P" '{"contents":[{"parts":[{"text":"snake case"}]}],"generation_config":{"image_config":{"aspect_ratio":"9:16"},"seed":7,"candidate_count":1}}')
expect_eq "snake_case status" "$code" 200
inline_image "$TMP/body" "$TMP/s.png"
expect_eq "snake_case size" "$(be32 "$TMP/s.png" 16)x$(be32 "$TMP/s.png" 20)" 768x1344

# ---- reference images raise promptTokenCount by ref_image_tokens (1297) each ----
# A real 2x2 PNG (79 bytes): the simulator decodes every inline image.
REF=iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAFklEQVR4nGNgYOcTlVFmYOTgF5NVAQAE7ADZqu7qTwAAAABJRU5ErkJggg==
code=$(gem "$P" "{\"contents\":[{\"parts\":[{\"text\":\"a red fox on a hill\"},{\"inlineData\":{\"mimeType\":\"image/png\",\"data\":\"$REF\"}},{\"inline_data\":{\"mime_type\":\"image/png\",\"data\":\"$REF\"}}]}]}")
expect_eq "refs status" "$code" 200
expect_eq "refs promptTokenCount" "$(json_int "$TMP/body" promptTokenCount)" $((5 + 2 * 1297))
expect_eq "refs totalTokenCount" "$(json_int "$TMP/body" totalTokenCount)" $((5 + 2 * 1297 + 1290))
expect_has "refs details" "$TMP/body" '"promptTokensDetails":[{"modality":"TEXT","tokenCount":5},{"modality":"IMAGE","tokenCount":2594}]'

# ---- auth: header or ?key=; none is 403 PERMISSION_DENIED ----
U="http://127.0.0.1:$P/v1beta/models/$MODEL:generateContent"
code=$(curl -sS -o "$TMP/body" -w '%{http_code}' --data-binary "$(prompt_body x)" "$U")
expect_eq "no key" "$code" 403
expect_has "no key shape" "$TMP/body" '{"error":{"code":403,"message":"'
expect_has "no key status" "$TMP/body" '"status":"PERMISSION_DENIED"'
code=$(curl -sS -o "$TMP/body" -w '%{http_code}' -H 'x-goog-api-key:' --data-binary "$(prompt_body x)" "$U")
expect_eq "empty key header" "$code" 403
code=$(curl -sS -o "$TMP/body" -w '%{http_code}' --data-binary "$(prompt_body 'query key')" "$U?key=AIza-q")
expect_eq "query key" "$code" 200

# ---- unknown model, model of another api, other method: 404 NOT_FOUND ----
expect_eq "unknown model" "$(GEM_MODEL=gemini-9-ultra gem "$P" "$(prompt_body x)")" 404
expect_has "unknown model shape" "$TMP/body" '"code":404,"message":"models/gemini-9-ultra is not found for API version v1beta'
expect_has "unknown model status" "$TMP/body" '"status":"NOT_FOUND"'
expect_eq "openai model" "$(GEM_MODEL=gpt-image-1 gem "$P" "$(prompt_body x)")" 404
code=$(curl -sS -o "$TMP/body" -w '%{http_code}' -H 'x-goog-api-key: k' --data-binary '{}' \
    "http://127.0.0.1:$P/v1beta/models/$MODEL:streamGenerateContent")
expect_eq "other rpc" "$code" 404
code=$(curl -sS -o "$TMP/body" -w '%{http_code}' -H 'x-goog-api-key: k' "$U")
expect_eq "GET" "$code" 404

# ---- bad requests: 400 INVALID_ARGUMENT ----
expect_eq "candidateCount 2" "$(gem "$P" "$(prompt_body x '{"candidateCount":2}')")" 400
expect_has "candidateCount message" "$TMP/body" "\"message\":\"Multiple candidates is not enabled for models/$MODEL\""
expect_has "candidateCount status" "$TMP/body" '"status":"INVALID_ARGUMENT"'
expect_eq "unknown ratio" "$(gem "$P" "$(prompt_body x '{"imageConfig":{"aspectRatio":"7:5"}}')")" 400
expect_has "unknown ratio lists" "$TMP/body" "Supported values are: 1:1, 2:3, 3:2, 3:4, 4:3, 9:16, 16:9, 21:9."
expect_eq "ratio not in catalog" "$(gem "$P" "$(prompt_body x '{"imageConfig":{"aspectRatio":"4:5"}}')")" 400
expect_eq "imageSize 2K" "$(gem "$P" "$(prompt_body x '{"imageConfig":{"imageSize":"2K"}}')")" 400
expect_eq "no text part" "$(gem "$P" "{\"contents\":[{\"parts\":[{\"inlineData\":{\"mimeType\":\"image/png\",\"data\":\"$REF\"}}]}]}")" 400
expect_eq "no contents" "$(gem "$P" '{"generationConfig":{}}')" 400
expect_has "no contents message" "$TMP/body" "contents is not specified"
expect_eq "bad json" "$(gem "$P" '{"contents":')" 400
expect_eq "unknown field" "$(gem "$P" '{"contents":[{"parts":[{"text":"x"}]}],"generationConfg":{}}')" 400
expect_has "unknown field message" "$TMP/body" 'Unknown name \"generationConfg\": Cannot find field.'
expect_eq "bad base64" "$(gem "$P" '{"contents":[{"parts":[{"text":"x"},{"inlineData":{"mimeType":"image/png","data":"@@@"}}]}]}')" 400
expect_eq "bad mime" "$(gem "$P" "{\"contents\":[{\"parts\":[{\"text\":\"x\"},{\"inlineData\":{\"mimeType\":\"text/plain\",\"data\":\"$REF\"}}]}]}")" 400
expect_eq "text-only modality" "$(gem "$P" "$(prompt_body x '{"responseModalities":["TEXT"]}')")" 400
expect_eq "seed not int" "$(gem "$P" "$(prompt_body x '{"seed":"abc"}')")" 400

# ---- injected failures by prompt trigger ----
expect_eq "429 status" "$(gem "$P" "$(prompt_body 'x [sim:429]')")" 429
expect_has "429 status name" "$TMP/body" '{"error":{"code":429,"message":"You exceeded your current quota'
expect_has "429 RESOURCE_EXHAUSTED" "$TMP/body" '"status":"RESOURCE_EXHAUSTED"'
expect_has "429 RetryInfo" "$TMP/body" '{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"7s"}'
expect_not "429 no Retry-After header" "$TMP/head" "retry-after"

expect_eq "500 status" "$(gem "$P" "$(prompt_body 'x [sim:500]')")" 500
expect_has "500 shape" "$TMP/body" '"code":500,'
expect_has "500 INTERNAL" "$TMP/body" '"status":"INTERNAL"'

expect_eq "moderation status" "$(gem "$P" "$(prompt_body 'x [sim:moderation]')")" 200
expect_has "moderation finishReason" "$TMP/body" '"candidates":[{"finishReason":"IMAGE_SAFETY","index":0}]'
expect_not "moderation has no image" "$TMP/body" '"inlineData"'
expect_not "moderation has no output tokens" "$TMP/body" '"candidatesTokenCount"'

expect_eq "prompt-blocked status" "$(gem "$P" "$(prompt_body 'x [sim:prompt-blocked]')")" 200
expect_has "prompt-blocked blockReason" "$TMP/body" '"promptFeedback":{"blockReason":"SAFETY"'
expect_not "prompt-blocked has no candidates" "$TMP/body" '"candidates"'

expect_eq "no-usage status" "$(gem "$P" "$(prompt_body 'x [sim:no-usage]')")" 200
expect_has "no-usage image" "$TMP/body" '"inlineData":{"mimeType":"image/png","data":"'
expect_not "no-usage body" "$TMP/body" '"usageMetadata"'

expect_eq "fail-once first" "$(gem "$P" "$(prompt_body '[sim:fail-once:g-1] y')")" 500
expect_eq "fail-once second" "$(gem "$P" "$(prompt_body '[sim:fail-once:g-1] y')")" 200

# ---- /sim/stats counts under "gemini"; OpenAI's counters untouched ----
curl -sS "http://127.0.0.1:$P/sim/stats" >"$TMP/stats"
# ok: success, again, seeded, image-only, 8 ratios, snake_case, refs, query key, fail-once second = 16;
# no_usage 1; 429 1; 500: [sim:500] + fail-once first = 2; moderation: IMAGE_SAFETY +
# prompt-blocked = 2; 403 x2; 404 x4; invalid 400 x12.  Images: ok + no_usage.
expect_eq "stats ok" "$(stats_field gemini ok)" 16
expect_eq "stats no_usage" "$(stats_field gemini no_usage)" 1
expect_eq "stats rate_limited" "$(stats_field gemini rate_limited)" 1
expect_eq "stats server_error" "$(stats_field gemini server_error)" 2
expect_eq "stats moderation" "$(stats_field gemini moderation)" 2
expect_eq "stats unauthorized" "$(stats_field gemini unauthorized)" 2
expect_eq "stats not_found" "$(stats_field gemini not_found)" 4
expect_eq "stats invalid" "$(stats_field gemini invalid_request)" 12
expect_eq "stats total" "$(stats_field gemini total)" 40
expect_eq "stats openai untouched" "$(stats_field generations total)" 0
expect_eq "stats images" "$(json_int "$TMP/stats" images)" 17
expect_eq "stats output_tokens" "$(json_int "$TMP/stats" output_tokens)" $((17 * 1290))
expect_eq "stats in_flight" "$(json_int "$TMP/stats" in_flight)" 0
expect_eq "reset" "$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$P/sim/reset")" 200
curl -sS "http://127.0.0.1:$P/sim/stats" >"$TMP/stats"
expect_eq "after reset" "$(stats_field gemini total)" 0

# ---- reference images are checked as the API would, counted, and [sim:refs:N] holds ----
refs_body() { # refs_body PROMPT DATA...: the prompt, then one inline PNG part per DATA
    local parts="{\"text\":\"$1\"}" d
    shift
    for d in "$@"; do parts+=",{\"inlineData\":{\"mimeType\":\"image/png\",\"data\":\"$d\"}}"; done
    printf '{"contents":[{"parts":[%s]}]}' "$parts"
}
expect_eq "told 2, has 2" "$(gem "$P" "$(refs_body 'two refs [sim:refs:2]' "$REF" "$REF")")" 200
expect_eq "told 1, has 0" "$(gem "$P" "$(refs_body 'a dropped ref [sim:refs:1]')")" 400
expect_has "told 1 message" "$TMP/body" 'says the job has 1 reference image(s) ([sim:refs:1]) but the request carries 0'
expect_eq "told 2, has 1" "$(gem "$P" "$(refs_body 'one dropped [sim:refs:2]' "$REF")")" 400
NOTPNG=$(printf 'not really a png, base64 is all there is' | base64 -w0)
expect_eq "not an image" "$(gem "$P" "$(refs_body 'junk' "$NOTPNG")")" 400
expect_has "not an image message" "$TMP/body" 'Unable to process input image at contents[0].parts[1].inline_data: the data is not an image'
CUT=${REF:0:60}
expect_eq "truncated PNG" "$(gem "$P" "$(refs_body 'cut' "$CUT")")" 400
expect_has "truncated message" "$TMP/body" 'does not decode'
expect_eq "mime mismatch" "$(gem "$P" "{\"contents\":[{\"parts\":[{\"text\":\"x\"},{\"inlineData\":{\"mimeType\":\"image/jpeg\",\"data\":\"$REF\"}}]}]}")" 400
expect_has "mime mismatch message" "$TMP/body" 'the data is a png image, not image/jpeg'
expect_eq "over max_references" "$(gem "$P" "$(refs_body 'four' "$REF" "$REF" "$REF" "$REF")")" 400
curl -sS "http://127.0.0.1:$P/sim/stats" >"$TMP/stats"
expect_eq "refs requests" "$(stats_field gemini with_references)" 1
expect_eq "refs counted" "$(stats_field gemini references)" 2
expect_eq "refs bytes" "$(stats_field gemini reference_bytes)" 158

# ---- rates and latency apply as for OpenAI ----
start_sim rates --fail-429 1 --retry-after 3 --seed 5
expect_eq "--fail-429 1" "$(gem "$PORT_rates" "$(prompt_body x)")" 429
expect_has "--retry-after 3" "$TMP/body" '"retryDelay":"3s"'
start_sim mod --fail-moderation 1 --seed 5
expect_eq "--fail-moderation 1" "$(gem "$PORT_mod" "$(prompt_body x)")" 200
expect_has "--fail-moderation IMAGE_SAFETY" "$TMP/body" '"finishReason":"IMAGE_SAFETY"'
start_sim slow --no-usage 1 --latency-ms 400 --seed 5
t0=$(date +%s%N)
expect_eq "--no-usage 1" "$(gem "$PORT_slow" "$(prompt_body x)")" 200
elapsed_ms=$((($(date +%s%N) - t0) / 1000000))
if ((elapsed_ms >= 400)); then ok; else bad "latency: answered in ${elapsed_ms} ms, want >= 400"; fi
expect_not "--no-usage body" "$TMP/body" '"usageMetadata"'
start_sim rpm --rpm 1 --seed 5
expect_eq "--rpm 1 first" "$(gem "$PORT_rpm" "$(prompt_body x)")" 200
expect_eq "--rpm 1 second" "$(gem "$PORT_rpm" "$(prompt_body x)")" 429

# ---- SIGTERM stops cleanly (exit status 0) even with a generation held open ----
curl -s -m 10 -o /dev/null -H 'x-goog-api-key: k' --data-binary "$(prompt_body '[sim:latency:5000] held')" "$U" &
held=$!
sleep 0.3
kill -TERM "$PID_main"
status=0
wait "$PID_main" || status=$?
expect_eq "exit status after SIGTERM" "$status" 0
wait "$held" 2>/dev/null || true
expect_not "sanitizer report from main" "$TMP/main.err" "Sanitizer"
for name in rates mod slow rpm; do
    pidvar=PID_$name
    kill -TERM "${!pidvar}"
    status=0
    wait "${!pidvar}" || status=$?
    expect_eq "exit status of $name" "$status" 0
    expect_not "sanitizer report from $name" "$TMP/$name.err" "Sanitizer"
done

echo "sim_gemini: $CHECKS checks, $FAILS failed"
[[ $FAILS -eq 0 ]]
