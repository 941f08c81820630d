#!/usr/bin/env bash
# Calls the provider had but never answered are charged (issue 13: every answered provider call
# has exactly one ledger entry, and a call whose answer nobody waits for is charged at its
# reservation, reason 'lost'):
#   1. a call that times out after its request went out: the provider generated (and bills) it,
#      so each try is one 'lost' ledger entry at its reservation, one per generation the
#      simulator billed;
#   2. a call that never reached the provider (nothing listens) costs nothing: no entry;
#   3. SIGTERM while a fan-out has one image paid for and the other still at the provider: the
#      job is not handed back (that would pay for the first image again) but finishes within
#      the grace period; every image generated once.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/env.sh"
: "${IMGQ_SOURCE_DIR:=$IMGQ_ROOT}"
imgq_env_setup
start_redis
start_s3 imgq-unanswered
start_sim --latency-ms 20
SIM="http://127.0.0.1:$SIM_PORT"
PFX='imgq:{default}:'
imgq() { "$IMGQ_BIN/imgq" "$@"; }
ledger() { # reason:cost of every entry, in order
    redis-cli -p "$REDIS_PORT" eval "return cjson.encode(redis.call('XRANGE', KEYS[1], '-', '+'))" 1 "${PFX}ledger" |
        python3 -c 'import json,sys; print(" ".join("%s:%s" % (d["reason"], d["cost"]) for d in (dict(zip(kv[0::2], kv[1::2])) for _, kv in (json.load(sys.stdin) or []))))'
}
billed() { curl -s "$SIM/sim/bill" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["generations"]))'; }

note "1. a timeout after the request went out: charged as lost, once per generation"
printf '{"id":"slow","prompt":"a birch stool [sim:latency:2500]","model":"gpt-image-1-mini","quality":"low","max_attempts":2}\n' >"$IMGQ_TMP/slow.jsonl"
reserve=$(imgq quote --json "$IMGQ_TMP/slow.jsonl" | python3 -c 'import json,sys; print(json.load(sys.stdin)["total"]["own_worst_micros"])')
imgq submit --batch slow "$IMGQ_TMP/slow.jsonl" >/dev/null
"$IMGQ_BIN/imgq-worker" --provider-timeout-ms 1000 --retry-base-ms 50 --retry-max-ms 100 \
    --exit-when-idle >"$IMGQ_TMP/w1.log" 2>&1 || true
sim_idle() { [ "$(curl -s "$SIM/sim/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["in_flight"])')" -eq 0 ]; }
wait_until 30 "the simulator to finish the generations nobody waited for" sim_idle
assert_eq 2 "$(billed)" "the simulator generated both tries"
assert_eq "lost:$reserve lost:$reserve" "$(ledger)" "each try is charged as lost at its reservation"
assert_contains "$(imgq batch status slow --json)" '"failed":1' "the job failed after its two attempts"

note "2. a provider nobody listens on: nothing was sent, nothing is charged"
port=$(free_port)
printf '{"id":"down","prompt":"an elm bench","model":"gpt-image-1-mini","quality":"low","max_attempts":1}\n' >"$IMGQ_TMP/down.jsonl"
imgq submit --batch down "$IMGQ_TMP/down.jsonl" >/dev/null
OPENAI_BASE_URL="http://127.0.0.1:$port/v1" "$IMGQ_BIN/imgq-worker" --exit-when-idle \
    >"$IMGQ_TMP/w2.log" 2>&1 || true
assert_contains "$(imgq batch status down --json)" '"failed":1' "the job failed"
assert_eq "lost:$reserve lost:$reserve" "$(ledger)" "no entry for a request that never went out"

note "3. SIGTERM with one image of a fan-out paid for: the job finishes, nothing is paid twice"
printf '{"id":"fan","prompt":"a linen towel [sim:latency:3000]","model":"seedream-4-0","size":"1024x1024","n":2}\n' >"$IMGQ_TMP/fan.jsonl"
imgq submit --batch fan "$IMGQ_TMP/fan.jsonl" >/dev/null
# One call at a time: the second call starts when the first is answered; the simulator holds
# each call 3 s ([sim:latency:3000]).
curl -sf -X POST "$SIM/sim/reset" >/dev/null
"$IMGQ_BIN/imgq-worker" --rate-limit byteplus=concurrent=1 --grace-ms 500 >"$IMGQ_TMP/w3.log" 2>&1 &
w3=$!
track_pid $w3
one_billed() { [ "$(billed)" -ge 1 ]; }
wait_until 30 "the first image of the fan-out generated" one_billed
kill -TERM $w3
wait_pid $w3 60 || fail "the worker did not stop"
assert_contains "$(imgq batch status fan --json)" '"done":1' "the fan-out finished on the same worker"
assert_eq 2 "$(billed)" "each image generated once"
