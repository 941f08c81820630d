#!/usr/bin/env bash
# Tokens-per-window limit, in scaled time: 3 workers share a limit that fits 3 calls of the
# job shape per 1.5-second window (gpt-image-1-mini, low, 1024x1024: 272 output tokens plus a
# 23-byte prompt = 295 estimated tokens a call; 900 tokens fit 3, not 4).  The simulator logs
# when each request arrives: no window ever holds more than 3, and every job finishes.  A
# call whose own estimate exceeds the limit fails at once, naming the limit.  Bad
# --rate-limit values are refused with a message naming the bad part.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/env.sh"
imgq_env_setup

# Bad values first: refused before anything starts (exit status 2, the part named).
bad() {
    local out rc=0
    out=$("$IMGQ_BIN/imgq-worker" --noop --rate-limit "$1" 2>&1) || rc=$?
    assert_eq 2 "$rc" "exit status for --rate-limit '$1'"
    assert_contains "$out" "$2" "message for --rate-limit '$1'"
}
bad 'openai=images=x' "--rate-limit: 'openai=images=x': images must be a positive integer"
bad 'openai=tokens=0' "tokens must be a positive integer"
bad 'openai=concurrent=-1' "concurrent must be a positive integer"
bad 'openai=speed=3' "unknown limit 'speed' (images, tokens or concurrent)"
bad 'openai=no-such-tier' "'no-such-tier' is not a preset of the catalog's rate_limit_presets"
bad 'openai' "expected PROVIDER=SPEC"
bad 'openai=' "empty limit"
bad 'openai=5,,concurrent=2' "empty item in the list"
out=$(IMGQ_RATE_LIMITS='openai=openai-tier-2;google=images=ten' "$IMGQ_BIN/imgq-worker" --noop 2>&1) &&
    fail "a bad IMGQ_RATE_LIMITS was accepted"
assert_contains "$out" "IMGQ_RATE_LIMITS: 'google=images=ten': images must be a positive integer"
printf '{"rate_limits": {"openai": "concurrent=many"}}\n' >"$IMGQ_TMP/bad.json"
out=$("$IMGQ_BIN/imgq-worker" --noop --config "$IMGQ_TMP/bad.json" 2>&1) &&
    fail "a bad rate_limits in the config file was accepted"
assert_contains "$out" "rate_limits.openai: 'concurrent=many': concurrent must be a positive integer"

start_redis
start_s3 imgq-rate-tokens
start_sim --latency-ms 10 --verbose

jobs=15
window=1500
for i in $(seq 1 "$jobs"); do
    printf '{"id":"tk-%d","prompt":"a brass door handle %03d","model":"gpt-image-1-mini","quality":"low","output_format":"png"}\n' "$i" "$i"
done >"$IMGQ_TMP/jobs.jsonl"
"$IMGQ_BIN/imgq" submit --batch tokens "$IMGQ_TMP/jobs.jsonl" >/dev/null
# 4,183 estimated tokens alone: over the limit whatever the window holds.
printf '{"id":"tk-big","prompt":"a brass door handle 999","model":"gpt-image-1-mini","quality":"high","output_format":"png"}\n' |
    "$IMGQ_BIN/imgq" submit --batch big - >/dev/null
# Warm the simulator's picture cache, so its arrival stamps measure arrivals, not rendering.
for i in $(seq 1 32); do
    curl -s -o /dev/null -H "Authorization: Bearer sk-test" -H 'Content-Type: application/json' \
        -d "{\"model\":\"gpt-image-1-mini\",\"prompt\":\"warm $i\",\"size\":\"1024x1024\",\"quality\":\"low\"}" \
        "$OPENAI_BASE_URL/images/generations"
done
start=$(date +%s%N)
pids=()
for w in 1 2 3; do
    "$IMGQ_BIN/imgq-worker" --concurrency 8 --rate-limit openai=tokens=900 \
        --rate-window-ms "$window" --exit-when-idle 2>"$IMGQ_TMP/worker-$w.log" &
    pids+=($!)
    track_pid $!
done
for p in "${pids[@]}"; do wait_pid "$p" 120 || fail "a rate-limited worker did not finish"; done
elapsed=$((($(date +%s%N) - start) / 1000000))
assert_contains "$("$IMGQ_BIN/imgq" batch status tokens --json)" "\"done\":$jobs"
assert_contains "$("$IMGQ_BIN/imgq" batch status big --json)" "\"failed\":1"
assert_contains "$("$IMGQ_BIN/imgq" batch results big)" "estimated tokens exceed the openai tokens limit"

grep -o 'POST /v1/images/generations 200 .*arrived=[0-9]*' "$IMGQ_TMP"/sim-*.log |
    grep -o 'arrived=[0-9]*' | cut -d= -f2 | sort -n |
    awk -v s=$((start / 1000000)) '$1 >= s' >"$IMGQ_TMP/arrivals"
assert_eq "$jobs" "$(wc -l <"$IMGQ_TMP/arrivals")" "one provider call per job (none for the big one)"
most=$(awk -v w=$((window - 50)) '{ t[NR] = $1 } END {
    max = 0; j = 1
    for (i = 1; i <= NR; i++) { while (t[i] - t[j] >= w) j++; if (i - j + 1 > max) max = i - j + 1 }
    print max }' "$IMGQ_TMP/arrivals")
echo "at most $most requests in any ${window} ms window (limit: 3 by tokens); $jobs jobs in $elapsed ms"
[ "$most" -le 3 ] || fail "$most requests in one window, over the 900-token limit (3 calls)"
[ "$most" -ge 2 ] || fail "at most $most request per window: the limit let too little through"
# 15 calls at 3 per window need at least four full windows.
[ "$elapsed" -ge $((4 * window)) ] || fail "finished in $elapsed ms: the limit did not hold"
echo "PASS rate_limit_tokens"
