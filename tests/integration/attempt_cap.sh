#!/usr/bin/env bash
# Seed 002's attempt cap per asset: a job with max_generations N (per line, or
# `imgq submit --max-generations N`) that failed after N paid generations goes to state
# `review` (event job.review) instead of running and paying again; failures that generated
# nothing (free) do not count; a cap that is not reached leaves retries alone.  Driven through
# the real scripts (lib.lua prepended, as the binaries load them) against a real redis-server.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/env.sh"
imgq_env_setup
start_redis

PFX='imgq:{default}:'
rcli() { redis-cli -p "$REDIS_PORT" --raw "$@"; }
load() { rcli SCRIPT LOAD "$(cat "$IMGQ_ROOT/src/lua/lib.lua" "$IMGQ_ROOT/src/lua/$1.lua")"; }
BUDGET=$(load budget) CLAIM=$(load claim) FAIL=$(load fail)
jget() { rcli HGET "${PFX}j:$1" "$2"; }
jspec() { rcli GET "${PFX}j:$1:s"; } # the spec has a key of its own (lib.lua)
claim() { # claim: lease the next ready job, sets JOB TOK ATT
    mapfile -t c < <(rcli EVALSHA "$CLAIM" 1 "${PFX}stats" "$PFX" w1 60000 1 "tok$RANDOM")
    [[ ${c[0]} == 1 ]] || fail "nothing to claim: ${c[*]}"
    JOB=${c[3]} TOK=${c[4]} ATT=${c[5]}
}
settle() { # settle COST REASON: one provider call of the claimed job, settled
    rcli EVALSHA "$BUDGET" 1 "${PFX}stats" "$PFX" settle "$JOB" "$ATT.0.0-${TOK: -4}" "$1" "$2" \
        gpt-image-1-mini list "$ATT" 0 '' '' >/dev/null
}
fail_attempt() { # fail the claimed job's attempt as retryable (delay 0); prints the status
    rcli EVALSHA "$FAIL" 1 "${PFX}stats" "$PFX" "$JOB" "$TOK" \
        '{"class":"storage","message":"S3 down"}' 0 0 1 w1 60000 0 t | head -1
}
cat >"$IMGQ_TMP/jobs.jsonl" <<'EOF'
{"id":"capped","prompt":"a walnut stool","model":"gpt-image-1-mini","quality":"low","max_generations":2}
{"id":"roomy","prompt":"a walnut bench","model":"gpt-image-1-mini","quality":"low","max_generations":5}
EOF
"$IMGQ_BIN/imgq" submit --batch cap "$IMGQ_TMP/jobs.jsonl" >/dev/null

# A bad value is refused at submit, naming the field.
printf '{"prompt":"x","model":"gpt-image-1-mini","quality":"low","max_generations":0}\n' >"$IMGQ_TMP/bad.jsonl"
out=$("$IMGQ_BIN/imgq" submit --batch bad "$IMGQ_TMP/bad.jsonl" 2>&1 || true)
assert_contains "$out" "max_generations: must be an integer from 1 to 100"
out=$("$IMGQ_BIN/imgq" submit --max-generations 0 --batch bad "$IMGQ_TMP/bad.jsonl" 2>&1 || true)
assert_contains "$out" "--max-generations '0': use 1 to 100"

claim
first=$JOB
[[ "$(jspec "$JOB")" == *'"max_generations":2'* ]] || fail "the cap is not on the spec"
settle 2500 usage # generation 1, paid
assert_eq 1 "$(fail_attempt)" "under the cap: retried"
assert_match "$(jget "$first" state)" '^(retrying|queued)$' "due again at once (delay 0)"
assert_eq 1 "$(jget "$first" generations)"

claim # roomy: a free failure (nothing generated) does not count
roomy=$JOB
settle 0 free
assert_eq 1 "$(fail_attempt)"
assert_eq "" "$(jget "$roomy" generations)" "free failures are no generations"

claim # capped, attempt 2: generation 2, then it fails again: review, not a third generation
assert_eq "$first" "$JOB"
settle 2500 usage
settle 2500 usage # the same call settled twice counts once
assert_eq 2 "$(jget "$first" generations)"
assert_eq 2 "$(fail_attempt)" "at the cap: the job ends"
assert_eq review "$(jget "$first" state)"
rcli XRANGE "${PFX}events" - + | grep -q '^job.review$' || fail "no job.review event"
assert_eq 1 "$(rcli HGET "${PFX}b:cap" review)" "the batch counts it"
assert_eq "" "$(rcli ZSCORE "${PFX}dead" "$first")" "review is not the dead-letter set"
# The cost of both generations stays on the job (the ledger is the source).
assert_eq 5000 "$(jget "$first" cost)"

# --max-generations on the command line applies to lines without their own cap.
printf '{"id":"flag","prompt":"a walnut shelf","model":"gpt-image-1-mini","quality":"low"}\n' >"$IMGQ_TMP/flag.jsonl"
"$IMGQ_BIN/imgq" submit --batch flag --max-generations 1 "$IMGQ_TMP/flag.jsonl" >/dev/null
claim
[[ "$JOB" == "$roomy" ]] && claim # roomy's retry may come first
[[ "$(jspec "$JOB")" == *'"max_generations":1'* ]] || fail "--max-generations did not reach the job"
echo "PASS attempt_cap"
