#!/usr/bin/env bash
# Failure billing with the shipped catalog (issue 13 item 6), through real workers, Redis and
# imgq-sim: sd-3.5-large's provider bills failed requests (deploy/catalog.json says so, with its
# source), so
#   - each failed call of it gets a ledger entry with reason 'failure' at the call's ceiling
#     (the worst case `imgq quote` gives), counted in the job's cost;
#   - "model": "auto" prices it at its ceiling divided by the success rate the queue observed
#     for it (imgq route --explain), and a model whose provider does not bill failures stays at
#     its price whatever its rate.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/env.sh"
imgq_env_setup
unset IMGQ_CATALOG # the shipped catalog, as the binaries find it
start_redis
start_s3 imgq-failure-billing
start_sim --latency-ms 10
SIM="http://127.0.0.1:$SIM_PORT"
PFX='imgq:{default}:'
rcli() { redis-cli -p "$REDIS_PORT" "$@"; }
imgq=("$IMGQ_BIN/imgq")

python3 - "$IMGQ_SOURCE_DIR/deploy/catalog.json" <<'PYEOF' || fail "the shipped catalog does not mark sd-3.5-large"
import json, sys
m = json.load(open(sys.argv[1]))["models"]["sd-3.5-large"]
assert m["charges_failures"] is True and "seeds/004" in m["charges_failures_source"], m
PYEOF

sim_fail() { # sim_fail PROVIDER-MODEL RATE
    curl -sf -X POST -H 'Content-Type: application/json' \
        -d "{\"model\":\"$1\",\"status\":500,\"rate\":$2}" "$SIM/sim/fail" >/dev/null
}
work() { # work LOG: breakers out of the way (no fallback), one attempt per job
    "$IMGQ_BIN/imgq-worker" --exit-when-idle --concurrency 4 --breaker-threshold 1000 \
        2>"$IMGQ_TMP/$1.log"
}
jobs() { # jobs BATCH FROM TO [PROMPT-SUFFIX]
    for i in $(seq "$2" "$3"); do
        printf '{"id":"%s-%d","prompt":"a stoneware jug number %d%s","model":"sd-3.5-large","max_attempts":1}\n' \
            "$1" "$i" "$i" "${4:-}"
    done >"$IMGQ_TMP/$1.jsonl"
    "${imgq[@]}" submit --batch "$1" "$IMGQ_TMP/$1.jsonl" >/dev/null
}
ledger() { # the ledger as JSON lines of its fields
    rcli --json xrange "${PFX}ledger" - + | python3 -c '
import json, sys
for _id, f in json.load(sys.stdin):
    print(json.dumps(dict(zip(f[0::2], f[1::2])) if isinstance(f, list) else f))'
}
stat() { # stat ok|fail MODEL
    local v
    v=$(rcli HGET "${PFX}models" "$1:$2")
    [[ "$v" =~ ^[0-9]+$ ]] && echo "$v" || echo 0
}

# The worst case of one sd-3.5-large call, as `imgq quote` prices it.
printf '{"prompt":"a stoneware jug number 1","model":"sd-3.5-large"}\n' >"$IMGQ_TMP/one.jsonl"
ceiling=$("${imgq[@]}" quote "$IMGQ_TMP/one.jsonl" --json |
    python3 -c 'import json,sys; t=json.load(sys.stdin)["total"]; print(t["own_worst_micros"] // t["calls"])')
[ "$ceiling" -gt 0 ] || fail "a ceiling of 0"
note "sd-3.5-large ceiling per call: $ceiling"

# --- a request the provider refused is not billed -------------------------------------------
# (Replicate bills a prediction that started and then failed, not a create it answered 500.)
sim_fail stability-ai/stable-diffusion-3.5-large 1
jobs refused 1 3
work refused
"${imgq[@]}" batch results refused >"$IMGQ_TMP/refused.jsonl"
assert_eq "3" "$(grep -c '"state":"failed"' "$IMGQ_TMP/refused.jsonl")" "every refused job failed"
assert_eq "0" "$(ledger | grep -c . || true)" "a refused request leaves no ledger entry"
sim_fail stability-ai/stable-diffusion-3.5-large 0
rcli HDEL "${PFX}models" fail:sd-3.5-large >/dev/null # (the rates below count from here)

# --- a failed call is booked at the ceiling, reason failure ----------------------------------
# The predictions start, then fail while polled ([sim:task-fail]): billed.
jobs down 1 5 " [sim:task-fail]"
work down
"${imgq[@]}" batch results down >"$IMGQ_TMP/down.jsonl"
assert_eq "5" "$(grep -c '"state":"failed"' "$IMGQ_TMP/down.jsonl")" "every job of a failing model failed"
entries=$(ledger | python3 -c '
import json, sys
print(" ".join(sorted("%s:%s:%s" % (e["model"], e["reason"], e["cost"]) for e in map(json.loads, sys.stdin))))')
assert_eq "$(for i in 1 2 3 4 5; do printf 'sd-3.5-large:failure:%s ' "$ceiling"; done | sed 's/ $//')" \
    "$entries" "one failure entry at the ceiling per failed call"
costs=$(grep -o '"cost_micros":[0-9]*' "$IMGQ_TMP/down.jsonl" | cut -d: -f2 | sort -u)
assert_eq "$ceiling" "$costs" "each failed job costs its failed call"

# --- auto routing divides its price by the observed success rate -----------------------------
jobs up 1 20
work up
ok=$(stat ok sd-3.5-large)
failed=$(stat fail sd-3.5-large)
assert_eq "20:5" "$ok:$failed" "the observed outcomes"
assert_eq "5" "$(ledger | grep -c '"reason": "failure"')" "no failure entry for a success"
# As the router computes it: the ceiling over ok / (ok + failed), rounded to the micro-dollar.
expected=$(python3 -c "import sys; c, ok, n = map(int, sys.argv[1:]); print('%.6f' % (int(c / (ok / n) + 0.5) / 1e6))" \
    "$ceiling" "$ok" "$((ok + failed))")
# guidance_scale 8 is sd-3.5-large's alone among the shipped models.
printf '{"prompt":"a stoneware jug","model":"auto","quality":"medium","guidance_scale":8}\n' >"$IMGQ_TMP/auto.json"
explain=$("${imgq[@]}" route --explain "$IMGQ_TMP/auto.json")
note "$explain"
line=$(grep '^ *sd-3.5-large ' <<<"$explain" || true)
[ -n "$line" ] || fail "sd-3.5-large is not listed by route --explain"
assert_contains "$line" "expected \$$expected" "expected = ceiling / success rate"
assert_contains "$line" "80%" "the observed success rate is shown"
# A model whose provider does not bill failures is priced as before, whatever its rate.
rcli HSET "${PFX}models" ok:flux-1.1-pro 60 fail:flux-1.1-pro 40 >/dev/null
printf '{"prompt":"a stoneware jug","model":"auto","quality":"medium","guidance_scale":3}\n' >"$IMGQ_TMP/auto3.json"
line=$("${imgq[@]}" route --explain "$IMGQ_TMP/auto3.json" | grep '^ *flux-1.1-pro ' || true)
assert_contains "$line" 'expected $0.040000' "no division where failures are free"
echo "PASS failure_billing"
