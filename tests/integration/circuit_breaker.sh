#!/usr/bin/env bash
# Circuit breakers and fallbacks, through real workers, Redis and imgq-sim:
#   - provider model A (gpt-image-1.5) fails every call: after --breaker-threshold failures in a
#     row its breaker opens and jobs move to A's fallback B (gpt-image-2) within a bounded
#     number of failed calls; every job finishes, and records which model served it and why;
#   - A recovers: after the cooldown one probe goes to A, succeeds, closes the breaker, and the
#     traffic returns to A.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/env.sh"
imgq_env_setup
start_redis
start_s3 imgq-breaker
start_sim --latency-ms 30
SIM="http://127.0.0.1:$SIM_PORT"
THRESHOLD=3
CONCURRENCY=4

sim_fail() { # sim_fail MODEL RATE
    curl -sf -X POST -H 'Content-Type: application/json' \
        -d "{\"model\":\"$1\",\"status\":500,\"rate\":$2}" "$SIM/sim/fail" >/dev/null
}
server_errors() {
    curl -s "$SIM/sim/stats" |
        python3 -c "import json,sys; print(json.load(sys.stdin)['requests']['generations']['server_error'])"
}
jobs() { # jobs BATCH FROM TO
    for i in $(seq "$2" "$3"); do
        # (prompts differ per batch: an image the fallback stored would be served by dedup)
        printf '{"id":"%s-%d","prompt":"a stoneware bowl number %d for %s","model":"gpt-image-1.5","quality":"medium"}\n' "$1" "$i" "$i" "$1"
    done >"$IMGQ_TMP/$1.jsonl"
    "$IMGQ_BIN/imgq" submit --batch "$1" "$IMGQ_TMP/$1.jsonl" >/dev/null
}
work() { # work LOG
    "$IMGQ_BIN/imgq-worker" --exit-when-idle --concurrency "$CONCURRENCY" --retry-base-ms 50 \
        --retry-max-ms 200 --breaker-threshold "$THRESHOLD" --breaker-cooldown-ms 60000 \
        2>"$IMGQ_TMP/$1.log"
}
served_by() { # served_by BATCH MODEL: jobs of the batch done on MODEL
    "$IMGQ_BIN/imgq" batch results "$1" | python3 -c "
import json, sys
n = 0
for line in sys.stdin:
    j = json.loads(line)
    if j.get('state') == 'done' and j.get('model') == '$2':
        n += 1
print(n)"
}

# --- A fails every call: jobs move to B ----------------------------------------------------
sim_fail gpt-image-1.5 1
jobs down 1 30
work down
assert_eq "30" "$("$IMGQ_BIN/imgq" batch status down --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["counts"]["done"])')" "every job finished"
assert_eq "30" "$(served_by down gpt-image-2)" "every job was served by the fallback"
failed_calls=$(server_errors)
# The threshold's failures, plus at most the calls already in flight when the breaker opened.
[ "$failed_calls" -ge "$THRESHOLD" ] || fail "only $failed_calls failed calls reached A"
[ "$failed_calls" -le $((THRESHOLD + CONCURRENCY)) ] ||
    fail "$failed_calls failed calls reached A before the jobs moved (bound $((THRESHOLD + CONCURRENCY)))"
one=$("$IMGQ_BIN/imgq" batch results down | head -1)
assert_contains "$one" '"fallback":{"from":"gpt-image-1.5"'
assert_contains "$one" 'gpt-image-1.5 open for'
events=$("$IMGQ_BIN/imgq" events)
assert_contains "$events" "breaker.opened"
assert_contains "$("$IMGQ_BIN/imgq" stats)" "gpt-image-1.5"

# --- A recovers: after the cooldown a probe closes the breaker; traffic returns ---------------
sim_fail gpt-image-1.5 0
"$IMGQ_BIN/imgq" clock --advance 61 >/dev/null # seconds: past the cooldown, in queue time
before=$(server_errors)
jobs up 1 20
work up
assert_eq "$before" "$(server_errors)" "no failed call after the recovery"
back=$(served_by up gpt-image-1.5)
# Jobs started while the probe was in flight may still go to B; the rest return to A.
[ "$back" -ge $((20 - CONCURRENCY)) ] || fail "only $back of 20 jobs returned to the recovered model"
events=$("$IMGQ_BIN/imgq" events)
assert_contains "$events" "breaker.half_open"
assert_contains "$events" "breaker.closed"
assert_contains "$("$IMGQ_BIN/imgq" stats --json)" '"state":"closed"'
echo "PASS circuit_breaker"
