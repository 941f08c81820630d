#!/usr/bin/env bash
# Budgets (src/lua/budget.lua, budget_settle in lib.lua, reconciliation in reap.lua) against a
# real redis-server, loaded the way the binaries load them (lib.lua prepended), with jobs
# submitted and claimed through the real CLI and claim script, and `imgq budget` on top.  Time
# moves through the queue's clock offset, set to fixed instants so windows are deterministic.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/env.sh"
imgq_env_setup
start_redis

PFX='imgq:{default}:' # the CLI's default prefix and queue
imgq=("$IMGQ_BIN/imgq")
rcli() { redis-cli -p "$REDIS_PORT" --raw "$@"; }
load() { rcli SCRIPT LOAD "$(cat "$IMGQ_ROOT/src/lua/lib.lua" "$IMGQ_ROOT/src/lua/$1.lua")"; }
BUDGET=$(load budget) CLAIM=$(load claim) REAP=$(load reap)
bud() { rcli EVALSHA "$BUDGET" 1 "${PFX}stats" "$PFX" "$@"; }
# bud_lines MODE ARGS... - the reply into the array R, one element a line.
bud_lines() { mapfile -t R < <(bud "$@"); }
hget() { rcli HGET "$PFX$1" "$2"; }
win() { # win NAME WINDOW FIELD - a budget window's counter (0 when absent)
    local v
    v=$(hget "bw:$1:$2" "$3")
    echo "${v:-0}"
}
events() { rcli XRANGE "${PFX}events" - + | grep -c "^$1\$" || true; }
ledger_len() { rcli XLEN "${PFX}ledger"; }
ledger_last() { rcli XREVRANGE "${PFX}ledger" + - COUNT 1 | tail -n +2 | paste -sd' '; }
spent_total() { local v; v=$(rcli HGET "${PFX}spent" total); echo "${v:-0}"; }
jget() { rcli HGET "${PFX}j:$1" "$2"; }
bcount() { local v; v=$(rcli HGET "${PFX}b:$1" "$2"); echo "${v:-0}"; }

# set_clock ISO - the queue's clock reads ISO now (an instant with its offset).
set_clock() {
    local target now
    target=$(($(date -d "$1" +%s) * 1000))
    mapfile -t t < <(rcli TIME)
    now=$((t[0] * 1000 + t[1] / 1000))
    rcli SET "${PFX}clock_offset" $((target - now)) >/dev/null
}
ms_of() { echo $(($(date -d "$1" +%s) * 1000)); }
queue_now() {
    local off
    mapfile -t t < <(rcli TIME)
    off=$(rcli GET "${PFX}clock_offset")
    echo $((t[0] * 1000 + t[1] / 1000 + ${off:-0}))
}

# submit BATCH TEAM COUNT [SUBMIT-FLAGS...] - COUNT jobs BATCH-i of TEAM.
submit() {
    local batch=$1 team=$2 n=$3 i
    shift 3
    for ((i = 1; i <= n; i++)); do
        printf '{"id":"%s-%d","prompt":"item %d","model":"gpt-image-1-mini","quality":"low"}\n' \
            "$batch" "$i" "$i"
    done >"$IMGQ_TMP/$batch.jsonl"
    "${imgq[@]}" submit --batch "$batch" --team "$team" "$@" "$IMGQ_TMP/$batch.jsonl" >/dev/null
}
# claim [LEASE_MS] - lease the next ready job: sets JOB, TOK, ATT.
claim() {
    mapfile -t c < <(rcli EVALSHA "$CLAIM" 1 "${PFX}stats" "$PFX" w1 "${1:-60000}" 1 tok$RANDOM)
    [[ ${c[0]} == 1 ]] || fail "nothing to claim: ${c[*]}"
    JOB=${c[3]} TOK=${c[4]} ATT=${c[5]}
}
claim_none() {
    mapfile -t c < <(rcli EVALSHA "$CLAIM" 1 "${PFX}stats" "$PFX" w1 60000 1 tok$RANDOM)
    assert_eq 0 "${c[0]}" "nothing claimable"
}

set_clock 2026-11-22T12:00:00+01:00

note "budget set / show / list, and clear errors"
assert_contains "$("${imgq[@]}" budget set team:shop --limit 5 --soft 4 --window day --tz Europe/Paris)" \
    'budget team:shop: $5.00 per day in Europe/Paris, soft threshold $4.00'
"${imgq[@]}" budget set global --limit 1000 --window total >/dev/null
show=$("${imgq[@]}" budget show team:shop --json)
assert_contains "$show" '"window_id":"2026-11-22"'
assert_contains "$show" '"limit_micros":5000000'
assert_contains "$show" '"soft_micros":4000000'
assert_contains "$show" '"remaining_micros":5000000'
assert_contains "$show" '"window_start":"2026-11-22T00:00:00+01:00"'
assert_contains "$show" '"window_end":"2026-11-23T00:00:00+01:00"'
assert_contains "$show" '"tz_rules_stale":false'
list=$("${imgq[@]}" budget list)
assert_contains "$list" "global"
assert_contains "$list" "team:shop"
assert_contains "$list" '2026-11-22T00:00:00+01:00 .. 2026-11-23T00:00:00+01:00 (Europe/Paris)'
assert_eq 2 "$("${imgq[@]}" budget list --json | grep -o '"name":' | wc -l)" "two budgets listed"
set +e
err=$("${imgq[@]}" budget set team:x --limit 1 --window day --tz Mars/Olympus 2>&1)
rc=$?
set -e
assert_eq 2 "$rc" "unknown zone is a usage error"
assert_contains "$err" "budget set: --tz 'Mars/Olympus': unknown time zone"
assert_contains "$("${imgq[@]}" budget set 'team:a b' --limit 1 2>&1 || true)" "'team:a b'"
assert_contains "$("${imgq[@]}" budget set team:x --limit 1 --window week 2>&1 || true)" "--window 'week'"
assert_contains "$("${imgq[@]}" budget set team:x --limit abc 2>&1 || true)" "--limit 'abc'"
assert_contains "$("${imgq[@]}" budget set team:x --limit 1 --soft 2 2>&1 || true)" "above --limit"
assert_contains "$("${imgq[@]}" budget show team:nope 2>&1 || true)" "no budget 'team:nope'"
assert_status 3 "${imgq[@]}" budget show team:nope

note "reserve up to the exact micro-dollar, then one micro more is refused"
submit shop shop 1
claim
J1=$JOB T1=$TOK
assert_eq 0 "$(bud reserve "$J1" "$T1" 1.0.0 4980000 gpt-image-1-mini '' | head -1)" "reserve \$4.98"
assert_eq "4980000|bw:global:total,bw:team:shop:2026-11-22|gpt-image-1-mini|||4980000" \
    "$(jget "$J1" resv:1.0.0)" "reservation recorded on the job, with its windows"
assert_eq 4980000 "$(win team:shop 2026-11-22 reserved)" "reserved in the day window"
assert_eq 4980000 "$(win global total reserved)" "reserved in the global total"
assert_eq 1 "$(events budget.threshold)" "the soft threshold (\$4) fired"
assert_eq 0 "$(bud reserve "$J1" "$T1" 1.0.1 20000 gpt-image-1-mini '' | head -1)" "reserve to exactly \$5.00"
assert_eq 5000000 "$(win team:shop 2026-11-22 reserved)"
bud_lines reserve "$J1" "$T1" 1.0.2 1 gpt-image-1-mini ''
assert_eq 1 "${R[0]}" "one micro over the cap is refused"
assert_eq team:shop "${R[2]}" "the budget that refused"
bud_lines reserve "$J1" "$T1" 1.0.2 50000 gpt-image-1-mini ''
assert_eq "budget 'team:shop' day 2026-11-22 (Europe/Paris): \$0.00 spent + \$5.00 reserved + \$0.05 > \$5.00" \
    "${R[3]}" "block message"
# Over only because of calls in flight: look again in 10 s, their settlement may free room.
assert_eq 10000 "${R[1]}" "in-flight shortfall rechecks soon"
assert_eq 5000000 "$(win team:shop 2026-11-22 reserved)" "a refused reservation reserves nothing"
assert_eq "" "$(jget "$J1" resv:1.0.2)" "nothing recorded for a refused call"
assert_eq -1 "$(bud reserve "$J1" wrongtoken 1.0.3 1 gpt-image-1-mini '' | head -1)" "a lost lease cannot reserve"
assert_eq 0 "$(bud reserve "$J1" "$T1" 1.0.0 4980000 gpt-image-1-mini '' | head -1)" "a repeated reserve"
assert_eq 5000000 "$(win team:shop 2026-11-22 reserved)" "a repeated reserve reserves once"

note "settle: to the actual cost, once; the ledger and the spent counter"
l0=$(ledger_len)
assert_eq 1 "$(bud settle "$J1" 1.0.0 4900000 usage gpt-image-1-mini '' 1 0 '{"output_tokens":99}' req-1)"
assert_eq 4900000 "$(win team:shop 2026-11-22 spent)" "spent the actual cost"
assert_eq 20000 "$(win team:shop 2026-11-22 reserved)" "the rest of the reservation freed"
assert_eq "" "$(jget "$J1" resv:1.0.0)" "reservation gone from the job"
assert_eq $((l0 + 1)) "$(ledger_len)" "one ledger entry"
last=$(ledger_last)
for kv in "job $J1" "batch shop" "team shop" "attempt 1" "call 0" "key 1.0.0" \
    "model gpt-image-1-mini" "cost 4900000" "reason usage" 'usage {"output_tokens":99}' \
    "request_id req-1"; do
    assert_contains "$last" "$kv" "ledger field"
done
assert_match "$last" " t [0-9]{13}" "ledger time"
assert_eq 4900000 "$(spent_total)" "spent counter"
assert_eq 0 "$(bud settle "$J1" 1.0.0 4900000 usage gpt-image-1-mini '' 1 0 '' req-1)" "settle again"
assert_eq 0 "$(bud settle "$J1" 1.0.0 123 ceiling gpt-image-1-mini '' 1 0 '' req-1)" "settle again, other cost"
assert_eq 4900000 "$(win team:shop 2026-11-22 spent)" "a second settle changes nothing"
assert_eq 20000 "$(win team:shop 2026-11-22 reserved)"
assert_eq $((l0 + 1)) "$(ledger_len)" "a second settle writes no ledger entry"
assert_eq 4900000 "$(spent_total)"
assert_eq 4900000 "$(jget "$J1" cost)" "the job's cost is the sum of its settlements, once"

note "a free failure releases; a charged failure is a ledger entry"
assert_eq 1 "$(bud settle "$J1" 1.0.1 0 free gpt-image-1-mini '' 1 0 '' '')"
assert_eq 0 "$(win team:shop 2026-11-22 reserved)" "free failure released its reservation"
assert_eq 4900000 "$(win team:shop 2026-11-22 spent)"
assert_eq $((l0 + 1)) "$(ledger_len)" "a free call is not in the ledger"
assert_eq 0 "$(bud reserve "$J1" "$T1" 1.1.0 60000 gpt-image-1-mini '' | head -1)"
assert_eq 1 "$(bud settle "$J1" 1.1.0 60000 failure gpt-image-1-mini '' 1 1 '' '')"
assert_contains "$(ledger_last)" "reason failure"
assert_eq 4960000 "$(win team:shop 2026-11-22 spent)"
assert_eq 4960000 "$(spent_total)"
assert_eq 1 "$(events budget.threshold)" "the threshold fires once per window"
# A call made without a reservation (no budget applied) is still in the ledger.
assert_eq 1 "$(bud settle "$J1" 1.2.0 7000 ceiling gpt-image-1-mini '' 1 2 '' '')"
assert_contains "$(ledger_last)" "reason ceiling"
assert_eq 4967000 "$(spent_total)"
assert_eq 4960000 "$(win team:shop 2026-11-22 spent)" "no reservation, no budget charge"

note "block: waits in blocked_budget until the window resets, no attempt consumed"
bud_lines reserve "$J1" "$T1" 1.3.0 50000 gpt-image-1-mini ''
assert_eq 1 "${R[0]}"
end=$(ms_of 2026-11-23T00:00:00+01:00)
now=$(queue_now)
wait=${R[1]}
((wait > end - now - 5000 && wait <= end - now + 5000)) || fail "wait $wait is not until local midnight ($((end - now)))"
att_before=$(jget "$J1" attempts)
assert_eq 1 "$(bud block "$J1" "$T1" "$wait" "${R[2]}" "${R[3]}")"
assert_eq blocked_budget "$(jget "$J1" state)"
assert_eq "${R[3]}" "$(jget "$J1" blocked)" "the message on the job"
assert_eq $((att_before - 1)) "$(jget "$J1" attempts)" "waiting is not an attempt"
assert_eq "" "$(jget "$J1" token)" "lease released"
assert_eq "" "$(rcli ZSCORE "${PFX}leases" "$J1")"
assert_eq 1 "$(bcount shop blocked_budget)"
assert_eq 0 "$(bcount shop running)"
assert_eq 1 "$(events job.blocked)"
due=$(rcli ZSCORE "${PFX}blocked" "$J1")
((due >= end - 5000 && due <= end + 5000)) || fail "blocked until $due, not local midnight $end"
assert_eq 0 "$(bud block "$J1" "$T1" 1000 team:shop x)" "block without the lease"
# Not claimable before the window resets; claimable after.
claim_none
set_clock 2026-11-23T00:00:05+01:00
claim
assert_eq "$J1" "$JOB" "the blocked job runs again after local midnight"
T1=$TOK
assert_eq "" "$(rcli ZSCORE "${PFX}blocked" "$J1")" "no longer blocked"
assert_eq "" "$(jget "$J1" blocked)" "message cleared"
assert_eq 0 "$(bcount shop blocked_budget)"
assert_eq 0 "$(bud reserve "$J1" "$T1" 1.3.0 50000 gpt-image-1-mini '' | head -1)" "the new day has room"
assert_eq 50000 "$(win team:shop 2026-11-23 reserved)"
assert_eq 4960000 "$(win team:shop 2026-11-22 spent)" "yesterday keeps its spend"

note "window rollover: reserved before local midnight, settled after, belongs to the old day"
"${imgq[@]}" budget set team:night --limit 1 --window day --tz America/New_York >/dev/null
set_clock 2026-11-23T23:59:00-05:00
submit night night 1
claim
assert_eq 0 "$(bud reserve "$JOB" "$TOK" 1.0.0 300000 gpt-image-1-mini '' | head -1)"
assert_eq 300000 "$(win team:night 2026-11-23 reserved)"
"${imgq[@]}" clock --advance 120 >/dev/null
assert_eq 1 "$(bud settle "$JOB" 1.0.0 250000 usage gpt-image-1-mini '' 1 0 '' '')"
assert_eq 250000 "$(win team:night 2026-11-23 spent)" "the old window keeps its spend"
assert_eq 0 "$(win team:night 2026-11-23 reserved)"
show=$("${imgq[@]}" budget show team:night --json)
assert_contains "$show" '"window_id":"2026-11-24"'
assert_contains "$show" '"spent_micros":0,"reserved_micros":0,"remaining_micros":1000000'
assert_contains "$show" '"window_start":"2026-11-24T00:00:00-05:00"'

note "month windows in a DST zone: March in Paris starts in winter time, ends in summer time"
set_clock 2027-03-31T23:58:00+02:00
"${imgq[@]}" budget set model:gpt-image-1-mini --limit 0.10 --window month --tz Europe/Paris >/dev/null
show=$("${imgq[@]}" budget show model:gpt-image-1-mini --json)
assert_contains "$show" '"window_id":"2027-03"'
assert_contains "$show" '"window_start":"2027-03-01T00:00:00+01:00"'
assert_contains "$show" '"window_end":"2027-04-01T00:00:00+02:00"'
assert_contains "$show" "\"window_start_ms\":$(ms_of 2027-03-01T00:00:00+01:00)"
assert_contains "$show" "\"window_end_ms\":$(ms_of 2027-04-01T00:00:00+02:00)"
submit mar mar 1
claim
bud_lines reserve "$JOB" "$TOK" 1.0.0 200000 gpt-image-1-mini ''
assert_eq 1 "${R[0]}" "over the model's month"
assert_eq model:gpt-image-1-mini "${R[2]}"
((R[1] > 115000 && R[1] <= 120000)) || fail "wait ${R[1]} is not the 2 minutes to April"
assert_contains "${R[3]}" "month 2027-03 (Europe/Paris)"
assert_eq 0 "$(bud reserve "$JOB" "$TOK" 1.0.0 100000 gpt-image-1-mini '' | head -1)" "a call that fits"
assert_eq 100000 "$(win model:gpt-image-1-mini 2027-03 reserved)"
"${imgq[@]}" clock --advance 180 >/dev/null
assert_eq 0 "$(bud reserve "$JOB" "$TOK" 1.0.1 100000 gpt-image-1-mini '' | head -1)" "April is a new window"
assert_eq 100000 "$(win model:gpt-image-1-mini 2027-04 reserved)"
assert_contains "$("${imgq[@]}" budget show model:gpt-image-1-mini --json)" '"window_end":"2027-05-01T00:00:00+02:00"'
# A model budget caps that model only.
assert_eq 0 "$(bud reserve "$JOB" "$TOK" 1.0.2 500000 other-model '' | head -1)" "another model is not capped"
bud settle "$JOB" 1.0.0 0 free gpt-image-1-mini '' 1 0 '' '' >/dev/null
bud settle "$JOB" 1.0.1 0 free gpt-image-1-mini '' 1 0 '' '' >/dev/null
bud settle "$JOB" 1.0.2 0 free other-model '' 1 0 '' '' >/dev/null
"${imgq[@]}" budget delete model:gpt-image-1-mini >/dev/null

note "a lifetime budget blocks until raised; raising it wakes the blocked jobs"
"${imgq[@]}" budget set batch:life --limit 0.10 --window total >/dev/null
submit life life 2
claim
LJ1=$JOB
bud_lines reserve "$JOB" "$TOK" 1.0.0 200000 gpt-image-1-mini ''
assert_eq "1 -1 batch:life" "${R[0]} ${R[1]} ${R[2]}" "lifetime: wait until raised"
assert_eq "budget 'batch:life' total: \$0.00 spent + \$0.00 reserved + \$0.20 > \$0.10" "${R[3]}"
assert_eq 1 "$(bud block "$JOB" "$TOK" -1 "${R[2]}" "${R[3]}")"
assert_eq 253402300799000 "$(rcli ZSCORE "${PFX}blocked" "$LJ1")" "blocked for good"
claim
LJ2=$JOB
bud_lines reserve "$JOB" "$TOK" 1.0.0 200000 gpt-image-1-mini ''
assert_eq 1 "$(bud block "$JOB" "$TOK" "${R[1]}" "${R[2]}" "${R[3]}")"
assert_eq 2 "$(bcount life blocked_budget)"
"${imgq[@]}" clock --advance 86400 >/dev/null
claim_none
out=$("${imgq[@]}" budget set batch:life --limit 1 --window total)
assert_contains "$out" "2 blocked job(s) look again now"
claim
first=$JOB
assert_eq 0 "$(bud reserve "$JOB" "$TOK" 1.0.0 200000 gpt-image-1-mini '' | head -1)" "room after the raise"
claim
assert_eq "$(printf '%s\n' "$LJ1" "$LJ2" | sort | paste -sd' ')" "$(printf '%s\n' "$first" "$JOB" | sort | paste -sd' ')" "both woken jobs claimed"
assert_eq 0 "$(bcount life blocked_budget)"
assert_eq 2 "$(bcount life running)"
assert_eq 0 "$(rcli ZCARD "${PFX}blocked")"

note "on_budget_exhausted: fail"
assert_status 2 "${imgq[@]}" submit --batch nope --on-budget-exhausted maybe "$IMGQ_TMP/life.jsonl"
"${imgq[@]}" budget set batch:fb --limit 0.01 --window total >/dev/null
submit fb fb 1 --on-budget-exhausted fail
assert_eq fail "$(rcli HGET "${PFX}b:fb" on_budget_exhausted)"
assert_eq 1 "$(bcount fb total)" "the option did not disturb the submission"
claim
bud_lines reserve "$JOB" "$TOK" 1.0.0 200000 gpt-image-1-mini ''
assert_eq 2 "$(bud block "$JOB" "$TOK" "${R[1]}" "${R[2]}" "${R[3]}")" "the batch says fail"
assert_eq failed "$(jget "$JOB" state)"
assert_contains "$(jget "$JOB" error)" "batch:fb"
assert_ne "" "$(rcli ZSCORE "${PFX}dead" "$JOB")" "dead-lettered"
assert_eq 1 "$(bcount fb failed)"
assert_eq 0 "$(bcount fb blocked_budget)"
assert_contains "$(rcli HGET "${PFX}b:fb" finished)" "1" "the batch finished"
submit fw fw 1 --on-budget-exhausted wait
assert_eq wait "$(rcli HGET "${PFX}b:fw" on_budget_exhausted)"
claim
rcli ZREM "${PFX}leases" "$JOB" >/dev/null # (out of the way of the reaper below)

note "reap: a dead worker's reservations become 'lost' charges, except calls with a poll handle"
# The earlier sections' jobs keep running without leases: the reaper sees only this one.
rcli DEL "${PFX}leases" >/dev/null
"${imgq[@]}" budget set team:reap --limit 10 --window day --tz UTC >/dev/null
submit rp reap 1
claim 1000
RJ=$JOB
day=$(rcli EVALSHA "$BUDGET" 1 "${PFX}stats" "$PFX" get team:reap | sed -n 6p)
assert_eq 0 "$(bud reserve "$RJ" "$TOK" "$ATT.0.0" 400000 gpt-image-1-mini openrouter | head -1)"
assert_eq 0 "$(bud reserve "$RJ" "$TOK" "$ATT.1.0" 250000 gpt-image-1-mini openrouter | head -1)"
assert_eq 0 "$(bud reserve "$RJ" "$TOK" "$ATT.2.0" 90000 gpt-image-1-mini openrouter | head -1)"
assert_eq 1 "$(bud settle "$RJ" "$ATT.2.0" 80000 usage gpt-image-1-mini openrouter "$ATT" 2 '' '')"
rcli HSET "${PFX}j:$RJ" poll:1 "$ATT|123|$ATT.1.0|task-1" >/dev/null
rcli HSET "${PFX}j:$RJ" poll:0 "$((ATT + 7))|123|old|task-0" >/dev/null # another attempt's
cost0=$(bcount rp cost)
l0=$(ledger_len)
s0=$(spent_total)
"${imgq[@]}" clock --advance 5 >/dev/null
assert_eq 1 "$(rcli EVALSHA "$REAP" 1 "${PFX}stats" "$PFX" 100)" "one expired lease"
assert_eq queued "$(jget "$RJ" state)"
assert_eq $((l0 + 1)) "$(ledger_len)" "one lost charge"
last=$(ledger_last)
assert_contains "$last" "key $ATT.0.0"
assert_contains "$last" "reason lost"
assert_contains "$last" "cost 400000"
assert_contains "$last" "model gpt-image-1-mini"
assert_contains "$last" "route openrouter"
assert_eq $((s0 + 400000)) "$(spent_total)"
assert_eq 480000 "$(win team:reap "$day" spent)" "lost charge at the reserved amount"
assert_eq 250000 "$(win team:reap "$day" reserved)" "the polled call stays reserved"
assert_eq "" "$(jget "$RJ" "resv:$ATT.0.0")"
assert_contains "$(jget "$RJ" "resv:$ATT.1.0")" "250000|"
assert_eq 480000 "$(jget "$RJ" cost)" "the job's cost: its settled call and the lost one"
assert_eq $((cost0 + 400000)) "$(bcount rp cost)" "the batch's cost counts the lost call"
# The worker taking over settles the polled call with its real usage.
claim 60000
assert_eq "$RJ" "$JOB"
assert_eq 1 "$(bud settle "$RJ" "$ATT.1.0" 200000 usage gpt-image-1-mini openrouter "$ATT" 1 '' '')"
assert_eq 0 "$(win team:reap "$day" reserved)"
assert_eq 680000 "$(win team:reap "$day" spent)"
# It runs the same attempt, so the dead worker's call key comes back: a new call, settled once.
assert_eq "$ATT" "$(jget "$RJ" attempts)" "the same attempt again"
assert_eq 0 "$(bud reserve "$RJ" "$TOK" "$ATT.0.0" 400000 gpt-image-1-mini openrouter | head -1)"
assert_eq 1 "$(bud settle "$RJ" "$ATT.0.0" 300000 usage gpt-image-1-mini openrouter "$ATT" 0 '' '')"
assert_eq 0 "$(bud settle "$RJ" "$ATT.0.0" 300000 usage gpt-image-1-mini openrouter "$ATT" 0 '' '')"
assert_eq 0 "$(win team:reap "$day" reserved)" "the reused call key's reservation settled"
assert_eq 980000 "$(win team:reap "$day" spent)"
# A second expiry of the same attempt finds nothing more to charge.
rcli ZADD "${PFX}leases" 0 "$RJ" >/dev/null
assert_eq 1 "$(rcli EVALSHA "$REAP" 1 "${PFX}stats" "$PFX" 100)"
assert_eq $((l0 + 3)) "$(ledger_len)" "nothing charged twice"
assert_eq 980000 "$(jget "$RJ" cost)" "every settlement of the job, each once"
claim
assert_eq "$RJ" "$JOB"
rcli ZREM "${PFX}leases" "$JOB" >/dev/null

note "concurrency: 8 workers reserving against \$1.00 never overspend it"
"${imgq[@]}" budget set team:conc --limit 1 --window total >/dev/null
"${imgq[@]}" budget set team:conc2 --limit 1 --window total >/dev/null
submit conc conc 8
submit conc2 conc2 8
CJ=() CT=() CJ2=() CT2=()
for i in $(seq 16); do
    claim
    if [[ $(jget "$JOB" team) == conc ]]; then
        CJ+=("$JOB") CT+=("$TOK")
    else
        CJ2+=("$JOB") CT2+=("$TOK")
    fi
done
assert_eq "8 8" "${#CJ[@]} ${#CJ2[@]}" "8 jobs of each team claimed"
# racer JOB TOKEN OUT SETTLE - 60 reservations of random amounts; admitted ones into OUT
# ("amount charged"), half of them settled at half their amount when SETTLE is 1.
racer() {
    local job=$1 tok=$2 out=$3 settle=$4 k amt r
    for ((k = 0; k < 60; k++)); do
        amt=$((RANDOM % 60000 + 1))
        r=$(bud reserve "$job" "$tok" "1.$k.0" "$amt" m '')
        r=${r%%$'\n'*}
        if [[ $r == 0 ]]; then
            if [[ $settle == 1 && $((RANDOM % 2)) == 0 ]]; then
                bud settle "$job" "1.$k.0" $((amt / 2)) usage m '' 1 "$k" '' '' >/dev/null
                echo "$amt $((amt / 2))" >>"$out"
            else
                echo "$amt $amt" >>"$out"
            fi
        fi
    done
}
pids=()
for i in 0 1 2 3 4 5 6 7; do
    racer "${CJ[i]}" "${CT[i]}" "$IMGQ_TMP/race.$i" 0 &
    pids+=($!)
    racer "${CJ2[i]}" "${CT2[i]}" "$IMGQ_TMP/race2.$i" 1 &
    pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
admitted=$(cat "$IMGQ_TMP"/race.? | awk '{s += $1} END {print s + 0}')
n_admitted=$(cat "$IMGQ_TMP"/race.? | wc -l)
((admitted <= 1000000)) || fail "admitted $admitted micros against a \$1.00 budget"
((admitted > 900000)) || fail "only $admitted admitted: the budget was not filled"
((n_admitted < 480)) || fail "every reservation was admitted: nothing was capped"
assert_eq "$admitted" "$(win team:conc total reserved)" "reserved is exactly what was admitted"
charged=$(cat "$IMGQ_TMP"/race2.? | awk '{s += $2} END {print s + 0}')
used=$(($(win team:conc2 total spent) + $(win team:conc2 total reserved)))
assert_eq "$charged" "$used" "spent + reserved is what the racers hold"
((used <= 1000000)) || fail "spent + reserved $used exceeds \$1.00"
echo "concurrency: $n_admitted of 480 reservations admitted, $admitted micros of 1000000;" \
    "with settlements $used micros held"

note "catalog drift: a usage above the reservation is recorded; the cell's next reservation scales"
submit drift drift 1
claim
J1=$JOB T1=$TOK
CELL='gpt-image-1-mini|low|1024x1024'
assert_eq 0 "$(bud reserve "$J1" "$T1" 1.5.0 1000 gpt-image-1-mini '' "$CELL" | head -1)"
assert_eq "1000|bw:global:total|gpt-image-1-mini||$CELL|1000" \
    "$(jget "$J1" resv:1.5.0)" "the reservation keeps its cell and catalog ceiling"
assert_eq 1 "$(bud settle "$J1" 1.5.0 2300 usage gpt-image-1-mini '' 1 5 '' '')"
assert_eq 2300000 "$(hget drift "ppm:$CELL")" "ratio 2.3 kept for the cell"
assert_eq 1 "$(hget drift "count:$CELL")"
assert_eq 1 "$(events catalog.drift)" "one catalog.drift event"
bud_lines reserve "$J1" "$T1" 1.5.1 1001 gpt-image-1-mini '' "$CELL"
assert_eq "0 2303" "${R[*]}" "the next reservation of the cell: 1001 x 2.3 rounded up"
bud_lines reserve "$J1" "$T1" 1.5.1 1001 gpt-image-1-mini '' "$CELL"
assert_eq "0 2303" "${R[*]}" "a repeated reserve answers what it reserved"
assert_eq 1 "$(bud settle "$J1" 1.5.1 2302 usage gpt-image-1-mini '' 1 5 '' '')"
assert_eq 1 "$(events catalog.drift)" "within the adapted ceiling: no new drift"
assert_eq 1 "$(bud settle "$J1" 1.5.2 0 free gpt-image-1-mini '' 1 5 '' '')"
bud_lines reserve "$J1" "$T1" 1.5.3 1000 gpt-image-1-mini '' "$CELL"
assert_eq "0 2300" "${R[*]}" "a settle within the ceiling does not lower it"
bud_lines reserve "$J1" "$T1" 1.5.5 1000 gpt-image-1-mini '' 'gpt-image-1-mini|medium|1024x1024'
assert_eq "0 1000" "${R[*]}" "another cell is not scaled"
assert_eq 1 "$(bud settle "$J1" 1.5.5 0 free gpt-image-1-mini '' 1 5 '' '')"
bud_lines reserve "$J1" "$T1" 1.5.4 1000 gpt-image-1-mini '' 'no-pipes'
assert_contains "${R[*]}" "drift cell must be MODEL|QUALITY|WxH" "a malformed cell is refused"
assert_eq 1 "$(bud settle "$J1" 1.5.3 0 free gpt-image-1-mini '' 1 5 '' '')"

note "budget list shows every budget"
list=$("${imgq[@]}" budget list --json)
for b in global team:shop team:night batch:life batch:fb team:reap team:conc team:conc2; do
    assert_contains "$list" "\"name\":\"$b\""
done
echo "budget_script: ok"
