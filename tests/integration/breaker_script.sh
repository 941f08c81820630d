#!/usr/bin/env bash
# Per-model circuit breakers (src/lua/breaker.lua) against a real redis-server, loaded the way
# the binaries load it (lib.lua prepended): every transition, driven in the queue's own clock
# (P:{Q}:clock_offset) instead of sleeping, then what `imgq stats` shows of them.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/env.sh"
imgq_env_setup
start_redis

PFX='imgq:{default}:' # the CLI's default prefix and queue, so `imgq stats` sees these breakers
SCRIPT=$(cat "$IMGQ_ROOT/src/lua/lib.lua" "$IMGQ_ROOT/src/lua/breaker.lua")
# Time moves through the clock offset, not by sleeping; the real time a slow machine takes
# between two calls only has to stay well under these.
THRESHOLD=5 COOLDOWN=5000 PROBE_TTL=3000

rcli() { redis-cli -p "$REDIS_PORT" --raw "$@"; }
# cb MODE TOKEN ARGS... - one breaker call; the reply one element a line.
cb() {
    local mode=$1 tok=$2
    shift 2
    rcli EVAL "$SCRIPT" 1 "${PFX}stats" "$PFX" "$mode" "$tok" "$THRESHOLD" "$COOLDOWN" \
        "$PROBE_TTL" "$@"
}
report() { cb report "$1" "$2" "$3" "${4:-}" "${5:-}"; } # report TOKEN MODEL ok|fail [CLASS [hinted]]
# choose TOKEN MODEL... - sets PICK, WAIT, REASON, WHY.
choose() {
    local out
    out=$(cb choose "$@")
    mapfile -t r <<<"$out"
    [[ ${#r[@]} == 4 ]] || fail "choose $*: expected 4 lines, got: $out"
    PICK=${r[0]} WAIT=${r[1]} REASON=${r[2]} WHY=${r[3]}
}
field() { rcli HGET "${PFX}cb:$1" "$2"; }
OFFSET=0
advance() { # advance MS - move the queue's clock forward
    OFFSET=$((OFFSET + $1))
    rcli SET "${PFX}clock_offset" "$OFFSET" >/dev/null
}
events() { rcli XRANGE "${PFX}events" - + | grep -c "^$1\$" || true; }

note "closed: a success resets the count"
assert_eq closed "$(report t1 m1 fail server)" "1st failure"
assert_eq closed "$(report t1 m1 fail timeout)" "2nd failure"
assert_eq 2 "$(field m1 fails)" "two counted failures"
assert_eq closed "$(report t1 m1 ok)" "success"
assert_eq 0 "$(field m1 fails)" "a success resets the count"

note "closed: 429s with a retry hint are the account's limit, not the model's failure"
for i in $(seq 1 $((THRESHOLD + 2))); do
    assert_eq closed "$(report t1 m9 fail rate_limit hinted)" "hinted 429 #$i"
done
assert_eq "" "$(field m9 fails)" "hinted 429s are not counted"
assert_eq closed "$(report t1 m9 fail rate_limit)" "a 429 without a hint counts"
assert_eq 1 "$(field m9 fails)" "a 429 without a hint is counted"
assert_eq closed "$(report t1 m9 fail server hinted)" "'hinted' is only for rate_limit"
assert_eq 2 "$(field m9 fails)" "a hinted server error still counts"
rcli DEL "${PFX}cb:m9" >/dev/null
rcli SREM "${PFX}breakers" m9 >/dev/null

note "closed: 4 counted failures stay closed, uncounted classes do not count, the 5th opens"
for cls in server timeout network rate_limit; do
    assert_eq closed "$(report t1 m1 fail $cls)" "failure ($cls)"
done
for cls in invalid_request content_policy auth; do
    assert_eq closed "$(report t1 m1 fail $cls)" "uncounted failure ($cls)"
done
assert_eq 4 "$(field m1 fails)" "uncounted classes neither count nor reset"
assert_eq 0 "$(events breaker.opened)" "no breaker.opened event yet"
assert_eq open "$(report t1 m1 fail bad_response)" "5th counted failure opens"
assert_eq 1 "$(events breaker.opened)" "breaker.opened emitted"
assert_eq open "$(field m1 state)" "state in the hash"
assert_eq "$COOLDOWN" "$(field m1 cooldown)" "first cooldown"

note "open: choose skips to the fallback and says why"
choose t2 m1 m2
assert_eq 1 "$PICK" "fallback picked"
assert_eq 0 "$WAIT" "no wait when a model admits"
assert_eq closed "$REASON" "fallback admits as closed"
assert_match "$WHY" '^m1 open for [0-5]\.[0-9] s more; m2 closed$' "why"
choose t2 m2 m1
assert_eq 0 "$PICK" "own model when closed"
assert_eq "m2 closed" "$WHY" "why, own model"

note "open: a late success from a call admitted while closed does not close it"
assert_eq open "$(report t0 m1 ok)" "late success while open"
assert_eq open "$(report t0 m1 fail server)" "late failure while open"
assert_eq 6 "$(field m1 fails)" "late failure still counted"

note "all open: -1 and the wait until the earliest may admit"
for _ in 1 2 3 4 5; do report t1 m2 fail rate_limit >/dev/null; done
assert_eq open "$(field m2 state)" "m2 opened by persistent 429s"
choose t2 m1 m2
assert_eq -1 "$PICK" "nothing admits"
assert_eq open "$REASON" "reason when nothing admits"
((WAIT >= 1 && WAIT <= COOLDOWN)) || fail "wait $WAIT not in 1..$COOLDOWN"
assert_match "$WHY" '^m1 open for [0-9.]+ s more; m2 open for [0-9.]+ s more$' "why, all open"
advance 200
choose t2 m1 m2
((WAIT >= 1 && WAIT <= COOLDOWN - 200)) || fail "the clock offset moved: wait $WAIT"

note "half-open: exactly one probe permit among two callers"
advance "$COOLDOWN" # past both cooldowns
choose pA m1
assert_eq 0 "$PICK" "first caller gets the probe"
assert_eq probe "$REASON" "reason probe"
assert_eq 1 "$(events breaker.half_open)" "breaker.half_open emitted once"
choose pB m1
assert_eq -1 "$PICK" "second caller refused while the probe is in flight"
((WAIT >= 1 && WAIT <= 1000)) || fail "wait for a busy probe (looks again within 1 s): $WAIT"
assert_match "$WHY" 'm1 half-open, probe in flight' "why, busy probe"
choose pA m1
assert_eq 0 "$PICK" "the prober asking again keeps its permit"
choose pB m1 m2
assert_eq 1 "$PICK" "second caller probes the fallback instead"
assert_eq probe "$REASON" "fallback probe"
assert_eq 2 "$(events breaker.half_open)" "m2 half-open too"

note "half-open: a non-prober's success does not close it, the probe's success does"
assert_eq half_open "$(report pB m1 ok)" "non-prober success"
assert_eq half_open "$(report t0 m1 fail server)" "non-prober failure"
assert_eq 0 "$(events breaker.closed)" "not closed yet"
assert_eq closed "$(report pA m1 ok)" "probe success closes"
assert_eq 1 "$(events breaker.closed)" "breaker.closed emitted"
assert_eq 0 "$(field m1 fails)" "counts cleared"
assert_eq "" "$(field m1 opened_at)" "opened_at cleared"
choose pB m1
assert_eq 0 "$PICK" "closed again: admits anyone"
assert_eq closed "$REASON" "closed again"
rcli XRANGE "${PFX}events" - + | grep -A1 -x model | grep -qx m1 || fail "events name the model"

note "half-open: a probe failure reopens with a fresh opened_at and a doubled cooldown"
assert_eq open "$(report pB m2 fail server)" "probe failure reopens"
assert_eq 3 "$(events breaker.opened)" "breaker.opened emitted again"
assert_eq $((2 * COOLDOWN)) "$(field m2 cooldown)" "cooldown doubled"
choose pC m2
assert_eq -1 "$PICK" "reopened"
((WAIT > COOLDOWN && WAIT <= 2 * COOLDOWN)) || fail "doubled wait: $WAIT"
advance $((COOLDOWN + 10))
choose pC m2
assert_eq -1 "$PICK" "still open after one (undoubled) cooldown"
advance $((COOLDOWN))
choose pC m2
assert_eq probe "$REASON" "half-open after the doubled cooldown"

note "half-open: an expired probe permit goes to another caller"
choose pD m2
assert_eq -1 "$PICK" "pD refused while pC's permit lives"
advance $((PROBE_TTL + 1))
choose pD m2
assert_eq 0 "$PICK" "pC's permit expired: pD probes"
assert_eq probe "$REASON" "pD probe"
assert_eq half_open "$(report pC m2 ok)" "the expired prober's late success does not close it"
note "half-open: a neutral failure of the prober releases the permit"
assert_eq half_open "$(report pD m2 fail content_policy)" "neutral probe outcome"
choose pE m2
assert_eq probe "$REASON" "next caller probes at once"

note "cooldown cap: repeated probe failures double up to 8 x cooldown"
for _ in 1 2 3 4; do
    choose pE m2
    assert_eq probe "$REASON" "probe granted"
    report pE m2 fail timeout >/dev/null
    advance $((8 * COOLDOWN + 1))
done
assert_eq $((8 * COOLDOWN)) "$(field m2 cooldown)" "cooldown capped"

note "state"
state=$(cb state "" | paste -sd' ')
assert_match "$state" '^m1 closed 0 0 0 1  m2 half_open [0-9]+ [0-9]+ 0 6 timeout$' "state listing"

note "errors"
# (redis-cli exits 0 on an error reply: look at the text)
assert_contains "$(cb report t m1 maybe 2>&1)" "outcome must be ok or fail" "bad outcome"
assert_contains "$(cb frobnicate t 2>&1)" "mode must be choose, report, rates or state" "bad mode"

note "rates: the routing statistics of the models asked about, read-only"
rcli HSET "${PFX}models" ok:m1 7 fail:m1 2 ok:m3 1 >/dev/null
assert_eq "7 2 0 0 1 0" "$(cb rates "" m1 m2 m3 | paste -sd' ')" "ok and fail per model"

note "imgq stats shows the breakers"
stats=$("$IMGQ_BIN/imgq" stats)
assert_match "$stats" 'breakers' "stats section"
assert_match "$stats" 'm1 +closed' "m1 line"
assert_match "$stats" 'm2 +half_open' "m2 line"
json=$("$IMGQ_BIN/imgq" stats --json)
assert_contains "$json" '"breakers":[{' "json breakers array"
assert_contains "$json" '"model":"m1"' "json m1"
assert_contains "$json" '"state":"half_open"' "json m2 state"
echo "PASS breaker_script"
