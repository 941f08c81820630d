#!/usr/bin/env bash
# sim_seedream.sh - imgq-sim speaks BytePlus ModelArk's Seedream images API
# (POST /api/v3/images/generations): success shape, a real PNG of the asked size, usage
# (generated_images 1, output_tokens = w*h/256), every injected failure in ModelArk's error
# shape (429 RateLimitExceeded.EndpointRPMExceeded + retry-after, 500 InternalServiceError,
# 400 OutputImageSensitiveContentDetected / InputTextSensitiveContentDetected, no usage),
# auth (401), unknown or other-api model (404), bad requests (400: size, n, url,
# sequential_image_generation, ...), /sim/stats under "seedream", --rpm and a clean SIGTERM.
#
# Self-contained: needs bash, curl, base64 and od.  Starts its own simulators on ports the
# kernel picks (--port 0) and removes everything it made on exit.
# shellcheck disable=SC2154 # PORT_<name> and PID_<name> are set by start_sim (printf -v)
set -euo pipefail

SIM_TEST=seedream
source "$(dirname "${BASH_SOURCE[0]}")/../lib/sim_checks.sh"

# ark PORT BODY [extra curl args...]: POST the body with a Bearer key; body in $TMP/body,
# headers in $TMP/head, status echoed.
ark() {
    local port=$1 body=$2
    shift 2
    curl -sS -o "$TMP/body" -D "$TMP/head" -w '%{http_code}' \
        -H 'Authorization: Bearer ark-imgq-test' -H 'Content-Type: application/json' \
        "$@" --data-binary "$body" "http://127.0.0.1:$port/api/v3/images/generations"
}
# req PROMPT [EXTRA-JSON-MEMBERS]: a seedream-4-0 1024x1024 b64_json request.
req() {
    printf '{"model":"seedream-4-0","prompt":"%s","size":"1024x1024","response_format":"b64_json"%s}' \
        "$1" "${2:+,$2}"
}

json_int() { grep -o "\"$2\":[0-9]*" "$1" | head -1 | cut -d: -f2; }
b64_image() { grep -o '"b64_json":"[^"]*"' "$1" | head -1 | cut -d'"' -f4 | base64 -d >"$2"; }
be32() { od -An -tu1 -j "$2" -N4 "$1" | awk '{print $1*16777216 + $2*65536 + $3*256 + $4}'; }
ascii() { od -An -c -j "$2" -N "$3" "$1" | tr -d ' \n'; }
png_size() { echo "$(be32 "$1" 16)x$(be32 "$1" 20)"; }
stats_field() { # stats_field ENDPOINT FIELD (from $TMP/stats)
    grep -o "\"$1\":{[^}]*}" "$TMP/stats" | grep -o "\"$2\":[0-9]*" | cut -d: -f2
}
# expect_error NAME STATUS CODE PARAM BODY: one request answered with ModelArk's error shape.
expect_error() {
    local name=$1 status=$2 code=$3 param=$4 body=$5
    expect_eq "$name status" "$(ark "$P" "$body")" "$status"
    expect_has "$name code" "$TMP/body" "{\"error\":{\"code\":\"$code\",\"message\":\""
    [[ -n "$param" ]] && expect_has "$name param" "$TMP/body" "\"param\":\"$param\",\"type\":\"BadRequest\"}}"
    return 0
}

start_sim main --seed 42 --retry-after 7
P=$PORT_main

# ---- success: shape, PNG, usage ----
expect_eq "success status" "$(ark "$P" "$(req 'a red fox on a hill' '"seed":7,"watermark":false,"sequential_image_generation":"disabled"')")" 200
cp "$TMP/body" "$TMP/success.json"
expect_has "success model" "$TMP/success.json" '{"model":"seedream-4-0","created":'
expect_has "success data" "$TMP/success.json" '"data":[{"b64_json":"'
expect_has "success size" "$TMP/success.json" '","size":"1024x1024"}]'
expect_has "success usage" "$TMP/success.json" '"usage":{"generated_images":1,"output_tokens":4096,"total_tokens":4096}}'
expect_has "content type" "$TMP/head" "Content-Type: application/json"
expect_has "request id" "$TMP/head" "x-request-id: req_sim"
expect_not "no retry-after on success" "$TMP/head" "retry-after"
b64_image "$TMP/success.json" "$TMP/img.png"
expect_eq "png signature" "$(od -An -tx1 -N8 "$TMP/img.png" | tr -d ' \n')" 89504e470d0a1a0a
expect_eq "png IHDR" "$(ascii "$TMP/img.png" 12 4)" IHDR
expect_eq "png size" "$(png_size "$TMP/img.png")" 1024x1024
# Deterministic: the same prompt and seed give the same picture; another seed changes it.
ark "$P" "$(req 'a red fox on a hill' '"seed":7')" >/dev/null
b64_image "$TMP/body" "$TMP/again.png"
if cmp -s "$TMP/img.png" "$TMP/again.png"; then ok; else bad "same prompt and seed, different image"; fi
ark "$P" "$(req 'a red fox on a hill' '"seed":8')" >/dev/null
b64_image "$TMP/body" "$TMP/seeded.png"
if cmp -s "$TMP/img.png" "$TMP/seeded.png"; then bad "seed 8 did not change the image"; else ok; fi
# seedream-4-5 at 2560x1440: 2560*1440/256 = 14400 tokens.
expect_eq "4.5 status" "$(ark "$P" '{"model":"seedream-4-5","prompt":"wide","size":"2560x1440","response_format":"b64_json"}')" 200
b64_image "$TMP/body" "$TMP/wide.png"
expect_eq "4.5 png size" "$(png_size "$TMP/wide.png")" 2560x1440
expect_eq "4.5 output_tokens" "$(json_int "$TMP/body" output_tokens)" 14400
expect_eq "4.5 total_tokens" "$(json_int "$TMP/body" total_tokens)" 14400
expect_has "4.5 model" "$TMP/body" '{"model":"seedream-4-5",'
# No size: 2048x2048 (2048*2048/256 = 16384); no response_format: b64_json.
expect_eq "default size status" "$(ark "$P" '{"model":"seedream-4-0","prompt":"defaults"}')" 200
b64_image "$TMP/body" "$TMP/default.png"
expect_eq "default png size" "$(png_size "$TMP/default.png")" 2048x2048
expect_eq "default output_tokens" "$(json_int "$TMP/body" output_tokens)" 16384
# Reference images: data URIs of images that decode (a real 2x2 PNG, 79 bytes).
REF="data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAFklEQVR4nGNgYOcTlVFmYOTgF5NVAQAE7ADZqu7qTwAAAABJRU5ErkJggg=="
expect_eq "image refs" "$(ark "$P" "$(req 'with refs' "\"image\":[\"$REF\",\"$REF\"]")")" 200
expect_has "image refs usage" "$TMP/body" '"usage":{"input_images":2,"generated_images":1,'

# ---- auth: 401 AuthenticationError ----
U="http://127.0.0.1:$P/api/v3/images/generations"
code=$(curl -sS -o "$TMP/body" -w '%{http_code}' --data-binary "$(req x)" "$U")
expect_eq "no key" "$code" 401
expect_has "no key code" "$TMP/body" '{"error":{"code":"AuthenticationError","message":"'
expect_has "no key type" "$TMP/body" '"type":"Unauthorized"}}'
code=$(curl -sS -o "$TMP/body" -w '%{http_code}' -H 'Authorization: Bearer ' --data-binary "$(req x)" "$U")
expect_eq "empty key" "$code" 401

# ---- unknown model, model of another api: 404 ----
expect_error "unknown model" 404 InvalidEndpointOrModel.NotFound "" '{"model":"seedream-9","prompt":"x"}'
expect_has "unknown model type" "$TMP/body" '"type":"NotFound"}}'
expect_error "openai model" 404 InvalidEndpointOrModel.NotFound "" '{"model":"gpt-image-1","prompt":"x"}'

# ---- bad requests: 400 ----
expect_error "size below the 1024x1024 floor" 400 InvalidParameter size '{"model":"seedream-4-0","prompt":"x","size":"1024x1000"}'
expect_error "size 1K on 4.5" 400 InvalidParameter size '{"model":"seedream-4-5","prompt":"x","size":"1024x1024"}'
expect_error "n" 400 InvalidParameter n "$(req x '"n":1')"
expect_error "url" 400 InvalidParameter response_format '{"model":"seedream-4-0","prompt":"x","size":"1024x1024","response_format":"url"}'
expect_has "url message" "$TMP/body" "url responses are not simulated"
expect_error "sequential auto" 400 InvalidParameter sequential_image_generation "$(req x '"sequential_image_generation":"auto"')"
expect_error "seed type" 400 InvalidParameter seed "$(req x '"seed":"7"')"
expect_error "watermark type" 400 InvalidParameter watermark "$(req x '"watermark":"yes"')"
expect_error "no prompt" 400 MissingParameter prompt '{"model":"seedream-4-0"}'
expect_error "no model" 400 MissingParameter model '{"prompt":"x"}'
expect_error "bad json" 400 InvalidParameter "" '{"model":'

# ---- injected failures by prompt trigger ----
expect_eq "429 status" "$(ark "$P" "$(req 'x [sim:429]')")" 429
expect_has "429 code" "$TMP/body" '{"error":{"code":"RateLimitExceeded.EndpointRPMExceeded","message":"'
expect_has "429 type" "$TMP/body" '"type":"TooManyRequests"}}'
expect_has "429 retry-after" "$TMP/head" "retry-after: 7"

expect_eq "500 status" "$(ark "$P" "$(req 'x [sim:500]')")" 500
expect_has "500 code" "$TMP/body" '{"error":{"code":"InternalServiceError","message":"'

expect_eq "moderation status" "$(ark "$P" "$(req 'x [sim:moderation]')")" 400
expect_has "moderation body" "$TMP/body" '{"error":{"code":"OutputImageSensitiveContentDetected","message":"The request failed because the output image may contain sensitive information.'
expect_has "moderation param/type" "$TMP/body" '"param":"","type":"BadRequest"}}'

expect_eq "prompt-blocked status" "$(ark "$P" "$(req 'x [sim:prompt-blocked]')")" 400
expect_has "prompt-blocked code" "$TMP/body" '{"error":{"code":"InputTextSensitiveContentDetected","message":"'
expect_has "prompt-blocked param/type" "$TMP/body" '"param":"","type":"BadRequest"}}'

expect_eq "no-usage status" "$(ark "$P" "$(req 'x [sim:no-usage]')")" 200
expect_has "no-usage image" "$TMP/body" '"data":[{"b64_json":"'
expect_not "no-usage body" "$TMP/body" '"usage"'

expect_eq "fail-once first" "$(ark "$P" "$(req '[sim:fail-once:sd-1] y')")" 500
expect_eq "fail-once second" "$(ark "$P" "$(req '[sim:fail-once:sd-1] y')")" 200

# ---- /sim/stats counts under "seedream"; the others untouched ----
curl -sS "http://127.0.0.1:$P/sim/stats" >"$TMP/stats"
# ok: success, again, seeded, 4.5, default, refs, fail-once second = 7 (4096 tokens x5 (1024²
# at 4-0: success, again, seeded, refs, fail-once second) + 14400 + 16384); no_usage 1 (4096);
# 429 1; 500: [sim:500] + fail-once first = 2; moderation 2; 401 x2; 404 x2; invalid x10.
expect_eq "stats ok" "$(stats_field seedream ok)" 7
expect_eq "stats no_usage" "$(stats_field seedream no_usage)" 1
expect_eq "stats rate_limited" "$(stats_field seedream rate_limited)" 1
expect_eq "stats server_error" "$(stats_field seedream server_error)" 2
expect_eq "stats moderation" "$(stats_field seedream moderation)" 2
expect_eq "stats unauthorized" "$(stats_field seedream unauthorized)" 2
expect_eq "stats not_found" "$(stats_field seedream not_found)" 2
expect_eq "stats invalid" "$(stats_field seedream invalid_request)" 10
expect_eq "stats total" "$(stats_field seedream total)" 27
expect_eq "stats openai untouched" "$(stats_field generations total)" 0
expect_eq "stats gemini untouched" "$(stats_field gemini total)" 0
expect_eq "stats images" "$(json_int "$TMP/stats" images)" 8
expect_eq "stats output_tokens" "$(json_int "$TMP/stats" output_tokens)" $((6 * 4096 + 14400 + 16384))
expect_eq "stats in_flight" "$(json_int "$TMP/stats" in_flight)" 0
expect_eq "reset" "$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$P/sim/reset")" 200
curl -sS "http://127.0.0.1:$P/sim/stats" >"$TMP/stats"
expect_eq "after reset" "$(stats_field seedream total)" 0

# ---- reference images: checked as the API would, counted, and [sim:refs:N] holds ----
expect_eq "one ref, told 1" "$(ark "$P" "$(req 'one [sim:refs:1]' "\"image\":\"$REF\"")")" 200
expect_has "one ref usage" "$TMP/body" '"usage":{"input_images":1,'
expect_error "told 1, has 0" 400 InvalidParameter image "$(req 'dropped [sim:refs:1]')"
expect_has "told 1 message" "$TMP/body" 'says the job has 1 reference image(s) ([sim:refs:1]) but the request carries 0'
expect_error "ref URL" 400 InvalidParameter image "$(req x '"image":"https://example.com/a.png"')"
expect_has "ref URL message" "$TMP/body" 'imgq-sim does not fetch image URLs'
expect_error "ref not an image" 400 InvalidParameter image "$(req x "\"image\":\"data:image/png;base64,$(printf 'plain text' | base64 -w0)\"")"
expect_has "ref not an image message" "$TMP/body" 'image 0: the data is not an image'
expect_error "ref not base64" 400 InvalidParameter image "$(req x '"image":["data:image/png;base64,@@@@"]')"
expect_error "ref not a data URI" 400 InvalidParameter image "$(req x '"image":"a.png"')"
curl -sS "http://127.0.0.1:$P/sim/stats" >"$TMP/stats"
expect_eq "refs requests" "$(stats_field seedream with_references)" 1
expect_eq "refs counted" "$(stats_field seedream references)" 1
expect_eq "refs bytes" "$(stats_field seedream reference_bytes)" 79

# ---- rates, latency and --rpm apply as for the others ----
start_sim rates --fail-429 1 --retry-after 3 --seed 5
expect_eq "--fail-429 1" "$(ark "$PORT_rates" "$(req x)")" 429
expect_has "--retry-after 3" "$TMP/head" "retry-after: 3"
start_sim mod --fail-moderation 1 --seed 5
expect_eq "--fail-moderation 1" "$(ark "$PORT_mod" "$(req x)")" 400
expect_has "--fail-moderation code" "$TMP/body" '"code":"OutputImageSensitiveContentDetected"'
start_sim slow --no-usage 1 --latency-ms 400 --seed 5
t0=$(date +%s%N)
expect_eq "--no-usage 1" "$(ark "$PORT_slow" "$(req x)")" 200
elapsed_ms=$((($(date +%s%N) - t0) / 1000000))
if ((elapsed_ms >= 400)); then ok; else bad "latency: answered in ${elapsed_ms} ms, want >= 400"; fi
expect_not "--no-usage body" "$TMP/body" '"usage"'
start_sim rpm --rpm 1 --seed 5
expect_eq "--rpm 1 first" "$(ark "$PORT_rpm" "$(req x)")" 200
expect_eq "--rpm 1 second" "$(ark "$PORT_rpm" "$(req x)")" 429

# ---- SIGTERM stops cleanly (exit status 0) even with a generation held open ----
curl -s -m 10 -o /dev/null -H 'Authorization: Bearer k' --data-binary "$(req '[sim:latency:5000] held')" "$U" &
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

echo "sim_seedream: $CHECKS checks, $FAILS failed"
[[ $FAILS -eq 0 ]]
