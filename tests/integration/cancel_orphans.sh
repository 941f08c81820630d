#!/usr/bin/env bash
# A job cancelled while running, whose worker had died (its lease not yet run out): the calls
# that worker reserved and never settled stay reserved until the lease would have ended; then
# the reaper charges them as lost calls (reason 'lost', at the reserved worst case), so no
# reservation stays held for good.  A worker that is alive settles its calls itself first (a
# settled call is not charged again).  Real scripts against a real redis-server.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/env.sh"
imgq_env_setup
start_redis

PFX='imgq:{default}:'
rcli() { redis-cli -p "$REDIS_PORT" --raw "$@"; }
load() { rcli SCRIPT LOAD "$(cat "$IMGQ_ROOT/src/lua/lib.lua" "$IMGQ_ROOT/src/lua/$1.lua")"; }
BUDGET=$(load budget) CLAIM=$(load claim) REAP=$(load reap)
bud() { rcli EVALSHA "$BUDGET" 1 "${PFX}stats" "$PFX" "$@"; }
reserved() { "$IMGQ_BIN/imgq" budget show global --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["reserved_micros"])'; }
claim() {
    mapfile -t c < <(rcli EVALSHA "$CLAIM" 1 "${PFX}stats" "$PFX" w1 "$1" 1 "tok$RANDOM")
    [[ ${c[0]} == 1 ]] || fail "nothing to claim: ${c[*]}"
    JOB=${c[3]} TOK=${c[4]} ATT=${c[5]}
}
"$IMGQ_BIN/imgq" budget set global --limit 10 --window total >/dev/null
printf '{"id":"o%d","prompt":"a linen napkin %d","model":"gpt-image-1-mini","quality":"low"}\n' 1 1 2 2 >"$IMGQ_TMP/jobs.jsonl"
"$IMGQ_BIN/imgq" submit --batch orph "$IMGQ_TMP/jobs.jsonl" >/dev/null

# Job 1: its worker reserved two calls, settled one, then died; the job is cancelled.
claim 60000
dead=$JOB
assert_eq 0 "$(bud reserve "$JOB" "$TOK" "$ATT.0.0-dead" 3000 gpt-image-1-mini list | head -1)"
assert_eq 0 "$(bud reserve "$JOB" "$TOK" "$ATT.1.0-dead" 3000 gpt-image-1-mini list | head -1)"
assert_eq 1 "$(bud settle "$JOB" "$ATT.0.0-dead" 2500 usage gpt-image-1-mini list "$ATT" 0 '' '')"
assert_eq 3000 "$(reserved)"
assert_eq 1 "$("$IMGQ_BIN/imgq" cancel "$dead" >/dev/null && echo 1)"
assert_eq canceled "$(rcli HGET "${PFX}j:$dead" state)"
assert_eq 3000 "$(reserved)" "kept while the lease could still end in a settlement"
ledger0=$(rcli XLEN "${PFX}ledger")
assert_eq 0 "$(rcli EVALSHA "$REAP" 1 "${PFX}stats" "$PFX" 100)" "nothing due yet"
assert_eq 3000 "$(reserved)"

# Past the lease: the reaper charges the unsettled call as lost; the settled one stays as it was.
"$IMGQ_BIN/imgq" clock --advance 61 >/dev/null
rcli EVALSHA "$REAP" 1 "${PFX}stats" "$PFX" 100 >/dev/null
assert_eq 0 "$(reserved)" "nothing stays reserved"
assert_eq $((ledger0 + 1)) "$(rcli XLEN "${PFX}ledger")" "one lost charge"
last=$(rcli XREVRANGE "${PFX}ledger" + - COUNT 1 | paste -sd' ')
assert_contains "$last" "reason lost"
assert_contains "$last" "cost 3000"
assert_eq 5500 "$(rcli HGET "${PFX}j:$dead" cost)" "the job's cost: the settled call and the lost one"
assert_eq 0 "$(rcli ZCARD "${PFX}orphans")"
# A second pass charges nothing more.
rcli EVALSHA "$REAP" 1 "${PFX}stats" "$PFX" 100 >/dev/null
assert_eq $((ledger0 + 1)) "$(rcli XLEN "${PFX}ledger")"
echo "PASS cancel_orphans"
