#!/usr/bin/env bash
# sim_openai.sh - imgq-sim speaks the OpenAI Images API: success shape, real PNG/WebP of the
# requested size, usage from the catalog's token table, every injected failure, auth, bad
# requests, /sim/stats, config file, latency and a clean SIGTERM.
#
# Self-contained: needs bash, curl, base64 and od.  Starts its own simulators on ports the
# kernel picks (--port 0) and removes everything it made on exit.
set -euo pipefail

SIM_TEST=openai
source "$(dirname "${BASH_SOURCE[0]}")/../lib/sim_checks.sh"

# gen PORT BODY [extra curl args...]: POST a generation; body in $TMP/body, headers in
# $TMP/head, status echoed.
gen() {
    local port=$1 body=$2
    shift 2
    curl -sS -o "$TMP/body" -D "$TMP/head" -w '%{http_code}' \
        -H 'Authorization: Bearer sk-imgq-test' -H 'Content-Type: application/json' \
        "$@" --data-binary "$body" "http://127.0.0.1:$port/v1/images/generations"
}

# json_int FILE KEY: the first integer value of "KEY": in FILE.
json_int() { grep -o "\"$2\":[0-9]*" "$1" | head -1 | cut -d: -f2; }

# b64_image FILE INDEX OUT: decode data[INDEX].b64_json into OUT.
b64_image() {
    grep -o '"b64_json":"[^"]*"' "$1" | sed -n "$(($2 + 1))p" | cut -d'"' -f4 | base64 -d >"$3"
}

# be32 FILE OFFSET / le16 FILE OFFSET: unsigned integers from a binary file.
be32() { od -An -tu1 -j "$2" -N4 "$1" | awk '{print $1*16777216 + $2*65536 + $3*256 + $4}'; }
le16() { od -An -tu1 -j "$2" -N2 "$1" | awk '{print $1 + $2*256}'; }
ascii() { od -An -c -j "$2" -N "$3" "$1" | tr -d ' \n'; }

stats_field() { # stats_field ENDPOINT FIELD (from $TMP/stats)
    grep -o "\"$1\":{[^}]*}" "$TMP/stats" | grep -o "\"$2\":[0-9]*" | cut -d: -f2
}

start_sim main --seed 42 --retry-after 7
P=$PORT_main

# ---- health ----
expect_eq healthz "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$P/healthz")" 200

# ---- success: shape, PNG size, usage ----
code=$(gen "$P" '{"model":"gpt-image-1","prompt":"a red fox on a hill","size":"1536x1024","quality":"high","n":2}')
expect_eq "success status" "$code" 200
cp "$TMP/body" "$TMP/success.json"
for key in '"created":' '"data":[{"b64_json":"' '"background":"opaque"' '"output_format":"png"' \
    '"quality":"high"' '"size":"1536x1024"' '"input_tokens_details":{"text_tokens":5,"image_tokens":0}' \
    '"output_tokens_details":{"image_tokens":12416,"text_tokens":0}'; do
    expect_has "success body" "$TMP/success.json" "$key"
done
expect_eq "images returned" "$(grep -o '"b64_json"' "$TMP/success.json" | wc -l)" 2
# 19 characters -> 5 text tokens; gpt-image-1 high 1536x1024 = 6208 tokens/image (the
# published table in the shipped catalog) x n=2.
expect_eq input_tokens "$(json_int "$TMP/success.json" input_tokens)" 5
expect_eq output_tokens "$(json_int "$TMP/success.json" output_tokens)" 12416
expect_eq total_tokens "$(json_int "$TMP/success.json" total_tokens)" 12421
expect_has "rate-limit headers" "$TMP/head" "x-ratelimit-remaining-requests:"
expect_has "request id" "$TMP/head" "x-request-id: req_"
for i in 0 1; do
    b64_image "$TMP/success.json" $i "$TMP/img$i.png"
    expect_eq "png signature $i" "$(od -An -tx1 -N8 "$TMP/img$i.png" | tr -d ' \n')" 89504e470d0a1a0a
    expect_eq "png IHDR $i" "$(ascii "$TMP/img$i.png" 12 4)" IHDR
    expect_eq "png width $i" "$(be32 "$TMP/img$i.png" 16)" 1536
    expect_eq "png height $i" "$(be32 "$TMP/img$i.png" 20)" 1024
done
if cmp -s "$TMP/img0.png" "$TMP/img1.png"; then bad "the two images of n=2 are identical"; else ok; fi
# Deterministic: the same prompt gives the same first image.
gen "$P" '{"model":"gpt-image-1","prompt":"a red fox on a hill","size":"1536x1024","quality":"high"}' >/dev/null
b64_image "$TMP/body" 0 "$TMP/again.png"
if cmp -s "$TMP/img0.png" "$TMP/again.png"; then ok; else bad "same prompt, different image"; fi

# quality auto is reported and billed as medium (the simulator's --auto-quality default).
code=$(gen "$P" '{"model":"gpt-image-1-mini","prompt":"auto quality"}')
expect_eq "auto status" "$code" 200
expect_has "auto quality" "$TMP/body" '"quality":"medium"'
expect_has "auto size" "$TMP/body" '"size":"1024x1024"'
expect_eq "auto output_tokens" "$(json_int "$TMP/body" output_tokens)" 1056

# A flat-priced model (dall-e-3): no usage, the prompt echoed as revised_prompt.
code=$(gen "$P" '{"model":"dall-e-3","prompt":"a \"quoted\" lighthouse","size":"1792x1024"}')
expect_eq "dall-e-3 status" "$code" 200
expect_has "dall-e-3 revised_prompt" "$TMP/body" '"revised_prompt":"a \"quoted\" lighthouse"'
expect_not "dall-e-3 no usage" "$TMP/body" '"usage"'
b64_image "$TMP/body" 0 "$TMP/dalle.png"
expect_eq "dall-e-3 width" "$(be32 "$TMP/dalle.png" 16)" 1792

# WebP output: a real WebP of the requested size (VP8 frame header: width/height at 26/28).
code=$(gen "$P" '{"model":"gpt-image-1.5","prompt":"webp please","size":"1024x1536","quality":"low","output_format":"webp","output_compression":60}')
expect_eq "webp status" "$code" 200
expect_has "webp format" "$TMP/body" '"output_format":"webp"'
b64_image "$TMP/body" 0 "$TMP/img.webp"
expect_eq "webp riff" "$(ascii "$TMP/img.webp" 0 4)$(ascii "$TMP/img.webp" 8 4)" RIFFWEBP
expect_eq "webp chunk" "$(ascii "$TMP/img.webp" 12 3)" VP8
expect_eq "webp width" "$(($(le16 "$TMP/img.webp" 26) & 16383))" 1024
expect_eq "webp height" "$(($(le16 "$TMP/img.webp" 28) & 16383))" 1536

# ---- injected failures by prompt trigger ----
code=$(gen "$P" '{"model":"gpt-image-1","prompt":"x [sim:429]"}')
expect_eq "429 status" "$code" 429
expect_has "429 code" "$TMP/body" '"code":"rate_limit_exceeded"'
expect_has "429 retry-after" "$TMP/head" "retry-after: 7"
expect_has "429 retry-after-ms" "$TMP/head" "retry-after-ms: 7000"
expect_has "429 remaining" "$TMP/head" "x-ratelimit-remaining-requests: 0"

code=$(gen "$P" '{"model":"gpt-image-1","prompt":"x [sim:500]"}')
expect_eq "500 status" "$code" 500
expect_has "500 type" "$TMP/body" '"type":"server_error"'

code=$(gen "$P" '{"model":"gpt-image-1","prompt":"x [sim:moderation]"}')
expect_eq "moderation status" "$code" 400
expect_has "moderation type" "$TMP/body" '"type":"image_generation_user_error"'
expect_has "moderation code" "$TMP/body" '"code":"moderation_blocked"'
expect_has "moderation details" "$TMP/body" '"moderation_details":{"moderation_stage":"output","categories":["sexual"]}'
expect_has "moderation param" "$TMP/body" '"param":null'
rid=$(sed -n 's/^x-request-id: \(req_[0-9a-z]*\).*/\1/p' "$TMP/head")
expect_has "moderation names its request id" "$TMP/body" "include the request ID $rid."

code=$(gen "$P" '{"model":"gpt-image-1","prompt":"x [sim:no-usage]"}')
expect_eq "no-usage status" "$code" 200
expect_has "no-usage data" "$TMP/body" '"b64_json":"'
expect_not "no-usage body" "$TMP/body" '"usage"'

expect_eq "fail-once first" "$(gen "$P" '{"model":"gpt-image-1","prompt":"[sim:fail-once:job-7] y"}')" 500
expect_eq "fail-once second" "$(gen "$P" '{"model":"gpt-image-1","prompt":"[sim:fail-once:job-7] y"}')" 200
expect_eq "fail-once other key" "$(gen "$P" '{"model":"gpt-image-1","prompt":"[sim:fail-once:job-8] y"}')" 500

# ---- auth and bad requests ----
code=$(curl -sS -o "$TMP/body" -w '%{http_code}' --data-binary '{"model":"gpt-image-1","prompt":"x"}' \
    "http://127.0.0.1:$P/v1/images/generations")
expect_eq "no key" "$code" 401
expect_has "no key body" "$TMP/body" '"type":"invalid_request_error"'
code=$(curl -sS -o "$TMP/body" -w '%{http_code}' -H 'Authorization: Bearer nope-123456' \
    --data-binary '{"model":"gpt-image-1","prompt":"x"}' "http://127.0.0.1:$P/v1/images/generations")
expect_eq "bad key" "$code" 401
expect_has "bad key code" "$TMP/body" '"code":"invalid_api_key"'

expect_eq "unknown model" "$(gen "$P" '{"model":"gpt-imagine-9","prompt":"x"}')" 400
expect_has "unknown model param" "$TMP/body" '"param":"model"'
expect_has "unknown model lists" "$TMP/body" "'gpt-image-1'"
expect_eq "non-openai model" "$(gen "$P" '{"model":"flux-schnell","prompt":"x"}')" 400
expect_eq "bad size" "$(gen "$P" '{"model":"gpt-image-1","prompt":"x","size":"1254x836"}')" 400
expect_has "bad size message" "$TMP/body" "Invalid value: '1254x836'. Supported values are: '1024x1024', '1024x1536', '1536x1024', and 'auto'."
expect_eq "no prompt" "$(gen "$P" '{"model":"gpt-image-1"}')" 400
expect_has "no prompt code" "$TMP/body" '"code":"missing_required_parameter"'
expect_eq "n too big" "$(gen "$P" '{"model":"gpt-image-1","prompt":"x","n":11}')" 400
expect_eq "dall-e-3 n=2" "$(gen "$P" '{"model":"dall-e-3","prompt":"x","n":2}')" 400
expect_eq "jpeg" "$(gen "$P" '{"model":"gpt-image-1","prompt":"x","output_format":"jpeg"}')" 400
expect_eq "bad json" "$(gen "$P" '{"model":')" 400
expect_eq "unknown param" "$(gen "$P" '{"model":"gpt-image-1","prompt":"x","sedd":3}')" 400
expect_eq "wrong method" "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$P/v1/images/generations")" 405
expect_eq "unknown path" "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$P/v1/nothing")" 404

# ---- HTTP details: Expect: 100-continue, keep-alive, malformed requests ----
code=$(gen "$P" '{"model":"gpt-image-1-mini","prompt":"continue","quality":"low"}' -H 'Expect: 100-continue')
expect_eq "expect 100-continue" "$code" 200
# Two requests on one connection: curl reports reuse in its verbose output.
curl -sv -o /dev/null -o /dev/null "http://127.0.0.1:$P/healthz" "http://127.0.0.1:$P/healthz" 2>"$TMP/verbose"
expect_has "keep-alive reuse" "$TMP/verbose" "Re-using existing connection"
exec 3<>"/dev/tcp/127.0.0.1/$P"
printf 'GARBAGE\r\n\r\n' >&3
IFS= read -r -t 5 line <&3 || line=""
exec 3<&- 3>&-
expect_eq "malformed request" "${line%$'\r'}" "HTTP/1.1 400 Bad Request"

# ---- /sim/stats counts what happened, /sim/reset zeroes it ----
curl -sS "http://127.0.0.1:$P/sim/stats" >"$TMP/stats"
# ok: success, again, auto, dall-e-3, webp, fail-once second, expect = 7; no_usage 1; 429 1;
# 500: [sim:500] + two fail-once firsts = 3; moderation 1; 401 x2; invalid: 9 x 400 + 1 x 405.
expect_eq "stats ok" "$(stats_field generations ok)" 7
expect_eq "stats no_usage" "$(stats_field generations no_usage)" 1
expect_eq "stats rate_limited" "$(stats_field generations rate_limited)" 1
expect_eq "stats server_error" "$(stats_field generations server_error)" 3
expect_eq "stats moderation" "$(stats_field generations moderation)" 1
expect_eq "stats unauthorized" "$(stats_field generations unauthorized)" 2
expect_eq "stats invalid" "$(stats_field generations invalid_request)" 10
expect_eq "stats total" "$(stats_field generations total)" 25
expect_eq "stats images" "$(json_int "$TMP/stats" images)" 9
expect_eq "stats in_flight" "$(json_int "$TMP/stats" in_flight)" 0
expect_eq "reset" "$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$P/sim/reset")" 200
curl -sS "http://127.0.0.1:$P/sim/stats" >"$TMP/stats"
expect_eq "after reset" "$(stats_field generations total)" 0

# ---- rates, config file, latency ----
cat >"$TMP/sim.json" <<'EOF'
{"fail_429": 1, "retry_after": 3, "seed": 5, "latency_ms": 400}
EOF
start_sim conf --config "$TMP/sim.json"
expect_eq "config fail_429" "$(gen "$PORT_conf" '{"model":"gpt-image-1","prompt":"x"}')" 429
expect_has "config retry_after" "$TMP/head" "retry-after: 3"
start_sim over --config "$TMP/sim.json" --fail-429 0 --no-usage 1
t0=$(date +%s%N)
expect_eq "flag overrides config" "$(gen "$PORT_over" '{"model":"gpt-image-1","prompt":"x"}')" 200
elapsed_ms=$((($(date +%s%N) - t0) / 1000000))
if ((elapsed_ms >= 400)); then ok; else bad "latency: answered in ${elapsed_ms} ms, want >= 400"; fi
expect_not "--no-usage 1" "$TMP/body" '"usage"'
start_sim rates --fail-500 1 --seed 9
expect_eq "--fail-500 1" "$(gen "$PORT_rates" '{"model":"gpt-image-1","prompt":"x"}')" 500
expect_eq "trigger beats rates" "$(gen "$PORT_rates" '{"model":"gpt-image-1","prompt":"[sim:moderation]"}')" 400

# Bad flags are refused with a message.
if "$SIM" --catalog "$CATALOG" --fail-429 2 >/dev/null 2>"$TMP/flagerr"; then
    bad "--fail-429 2 accepted"
else
    expect_has "bad flag message" "$TMP/flagerr" "fail-429"
fi

# ---- SIGTERM stops cleanly (exit status 0) even with a request held open ----
curl -s -m 10 -o /dev/null -H 'Authorization: Bearer sk-x' \
    --data-binary '{"model":"gpt-image-1","prompt":"[sim:latency:5000] held"}' \
    "http://127.0.0.1:$P/v1/images/generations" &
held=$!
sleep 0.3
kill -TERM "$PID_main"
status=0
wait "$PID_main" || status=$?
expect_eq "exit status after SIGTERM" "$status" 0
wait "$held" 2>/dev/null || true
# The others too (under ASan a leak would show as a non-zero status here).
for name in conf over rates; do
    pidvar=PID_$name
    kill -TERM "${!pidvar}"
    status=0
    wait "${!pidvar}" || status=$?
    expect_eq "exit status of $name" "$status" 0
    expect_not "sanitizer report from $name" "$TMP/$name.err" "Sanitizer"
done

echo "sim_openai: $CHECKS checks, $FAILS failed"
[[ $FAILS -eq 0 ]]
