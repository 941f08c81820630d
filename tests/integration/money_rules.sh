#!/usr/bin/env bash
# The money rules, end to end (real redis-server, s3rver, imgq-sim, one worker):
#   (a) a response without usage is billed at the catalog's ceiling for the call, in a ledger
#       entry with reason 'ceiling' and exactly that amount (the worst case `imgq quote` gives);
#   (b) a provider the catalog marks "charges_failures": true is charged its ceiling for each
#       failed call (reason 'failure'), counted in the job's cost; others' failures cost $0 and
#       leave no ledger entry (reason 'free' is never written);
#   (c) a job over a hard cap waits in blocked_budget (batch status, stats, job show say so)
#       and `imgq cancel` (by job and by batch) ends it: nothing stays delayed, blocked or
#       reserved; a reservation a dead worker left on a job is charged as 'lost' when it is
#       cancelled;
#   (d) `imgq report --by model` adds up to the ledger, model by model, and to the spent counter.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/env.sh"
imgq_env_setup

# A catalog where seedream-4-0 charges failed calls; the CLI and the worker both read it.
python3 - "$IMGQ_SOURCE_DIR/deploy/catalog.json" "$IMGQ_TMP/catalog.json" <<'PYEOF'
import json, sys
c = json.load(open(sys.argv[1]))
assert c["models"]["seedream-4-0"]["charges_failures"] is False
assert c["models"]["gpt-image-1-mini"]["charges_failures"] is False
c["models"]["seedream-4-0"]["charges_failures"] = True
json.dump(c, open(sys.argv[2], "w"), indent=1)
PYEOF
export IMGQ_CATALOG=$IMGQ_TMP/catalog.json

start_redis
start_s3 imgq-money-rules
start_sim --latency-ms 20 --seed 11

PFX='imgq:{default}:'
rcli() { redis-cli -p "$REDIS_PORT" "$@"; }
imgq=("$IMGQ_BIN/imgq")
field() { grep -o "\"$2\":[^,}]*" <<<"$1" | head -1 | cut -d: -f2- | tr -d '"'; }
jqv() { python3 -c 'import json,sys; v=json.loads(sys.argv[1])
for k in sys.argv[2:]: v=v[k]
print(v)' "$@"; }
run_worker() { # run_worker LOG: one worker until the queue has nothing it can do
    "$IMGQ_BIN/imgq-worker" --concurrency 4 --retry-base-ms 50 --retry-max-ms 200 \
        --breaker-threshold 1000 --exit-when-idle >"$IMGQ_TMP/$1" 2>&1 &
    track_pid $!
    wait_pid $! 120 || fail "the worker did not finish ($1)"
}

# The worst case of one job line, per provider call on its own model, as `imgq quote` prices it.
ceiling_of() { # ceiling_of JOB-LINE
    printf '%s\n' "$1" >"$IMGQ_TMP/one.jsonl"
    local q
    q=$("${imgq[@]}" quote "$IMGQ_TMP/one.jsonl" --json)
    python3 -c 'import json,sys; t=json.loads(sys.argv[1])["total"]; print(t["own_worst_micros"] // t["calls"])' "$q"
}

no_usage='{"id":"nousage","prompt":"a linen tote bag on white [sim:no-usage]","model":"gpt-image-1-mini","quality":"low","size":"1024x1024"}'
sd_fail='{"id":"sd500","prompt":"a desk lamp [sim:500]","model":"seedream-4-0","size":"1024x1024","max_attempts":2}'
gpt_fail='{"id":"gpt500","prompt":"a desk chair [sim:500]","model":"gpt-image-1-mini","quality":"low","size":"1024x1024","max_attempts":2}'
ok='{"id":"ok","prompt":"a ceramic vase on white","model":"gpt-image-1-mini","quality":"low","size":"1024x1024"}'
printf '%s\n' "$no_usage" "$sd_fail" "$gpt_fail" "$ok" >"$IMGQ_TMP/jobs.jsonl"
ceil_nousage=$(ceiling_of "$no_usage")
ceil_sd=$(ceiling_of "$sd_fail")
ceil_gpt=$(ceiling_of "$gpt_fail")
note "ceilings per call: no-usage $ceil_nousage, seedream $ceil_sd, gpt-image-1-mini $ceil_gpt"
[ "$ceil_nousage" -gt 0 ] && [ "$ceil_sd" -gt 0 ] && [ "$ceil_gpt" -gt 0 ] || fail "a ceiling of 0"

"${imgq[@]}" submit --batch money "$IMGQ_TMP/jobs.jsonl" >/dev/null
run_worker worker1.log

"${imgq[@]}" batch results money >"$IMGQ_TMP/results.jsonl"
result() { grep "\"client_id\":\"$1\"" "$IMGQ_TMP/results.jsonl" || fail "no result for $1"; }
jid() { result "$1" | grep -o '"id":"j[0-9a-z]*"' | cut -d'"' -f4; }
ledger() { # the ledger as JSON lines of its fields
    rcli --json xrange "${PFX}ledger" - + | python3 -c '
import json, sys
for _id, f in json.load(sys.stdin):
    print(json.dumps(dict(zip(f[0::2], f[1::2])) if isinstance(f, list) else f))'
}
entries() { # entries JOB-ID: "reason:cost" of its ledger entries, in order
    ledger | python3 -c '
import json, sys
print(" ".join("%s:%s" % (e["reason"], e["cost"]) for e in map(json.loads, sys.stdin)
               if e["job"] == sys.argv[1]))' "$1"
}

note "(a) no usage: billed at the ceiling, ledger reason ceiling"
r=$(result nousage)
assert_eq "done" "$(field "$r" state)" "no-usage job state"
assert_eq "ceiling" "$(field "$r" billed)" "no-usage job billed"
assert_eq "ceiling:$ceil_nousage" "$(entries "$(jid nousage)")" "no-usage ledger entry"
assert_eq "$ceil_nousage" "$(field "$r" cost_micros)" "no-usage job cost"

note "(b) failed calls: charged where the catalog says so, free elsewhere"
r=$(result sd500)
assert_eq "failed" "$(field "$r" state)" "seedream job state"
assert_eq "2" "$(field "$r" attempts)" "seedream job attempts"
assert_eq "failure:$ceil_sd failure:$ceil_sd" "$(entries "$(jid sd500)")" "seedream ledger entries"
assert_eq "$((2 * ceil_sd))" "$(field "$r" cost_micros)" "seedream job cost = its failed calls"
r=$(result gpt500)
assert_eq "failed" "$(field "$r" state)" "gpt job state"
assert_eq "2" "$(field "$r" attempts)" "gpt job attempts"
assert_eq "" "$(entries "$(jid gpt500)")" "gpt failures leave no ledger entry"
assert_eq "0" "$(field "$r" cost_micros)" "gpt failures cost nothing"
r=$(result ok)
assert_eq "done" "$(field "$r" state)" "plain job state"
assert_match "$(entries "$(jid ok)")" '^usage:[1-9][0-9]*$' "plain job: one usage entry"
assert_eq "0" "$(ledger | grep -c '"reason": "free"' || true)" "no 'free' entries"
status=$("${imgq[@]}" batch status money --json)
sum=$(grep -o '"cost_micros":[0-9]*' "$IMGQ_TMP/results.jsonl" | cut -d: -f2 | awk '{s += $1} END {print s}')
assert_eq "$sum" "$(field "$status" cost_micros)" "batch cost = sum of the job costs"

note "(c) a job over a hard cap is blocked; cancel ends it and leaves nothing reserved"
"${imgq[@]}" budget set global --limit 0.000001 --window total >/dev/null
printf '{"id":"b%d","prompt":"a wool scarf %d","model":"gpt-image-1-mini","quality":"low","size":"1024x1024"}\n' \
    1 1 2 2 3 3 >"$IMGQ_TMP/blocked.jsonl"
"${imgq[@]}" submit --batch capped "$IMGQ_TMP/blocked.jsonl" >/dev/null
run_worker worker2.log # exits: blocked jobs are nothing a worker can do
"${imgq[@]}" batch results capped >"$IMGQ_TMP/capped.jsonl"
b1=$(grep '"client_id":"b1"' "$IMGQ_TMP/capped.jsonl" | grep -o '"id":"j[0-9a-z]*"' | cut -d'"' -f4)
b2=$(grep '"client_id":"b2"' "$IMGQ_TMP/capped.jsonl" | grep -o '"id":"j[0-9a-z]*"' | cut -d'"' -f4)
[ -n "$b1" ] && [ -n "$b2" ] || fail "no job ids for the capped batch"
show=$("${imgq[@]}" job show "$b1")
assert_contains "$show" '"state": "blocked_budget"'
assert_match "$show" '"blocked": "budget .global. total: .* > \$0\.000001"' "the blocked message"
status=$("${imgq[@]}" batch status capped --json)
assert_eq "3" "$(jqv "$status" counts blocked_budget)" "batch status --json: blocked"
assert_match "$("${imgq[@]}" batch status capped)" 'blocked_budget +3' "batch status: blocked"
assert_eq "3" "$(jqv "$("${imgq[@]}" stats --json)" blocked_budget)" "stats --json: blocked"
assert_match "$("${imgq[@]}" stats)" 'blocked +3 ' "stats: blocked"
assert_eq "0" "$(jqv "$("${imgq[@]}" budget show global --json)" reserved_micros)" "blocked: nothing reserved"

# A reservation a dead worker left on a job (the reaper leaves an asynchronous task's
# reservation standing for the worker that takes the job over): cancelled, it is charged.
rcli hset "${PFX}j:$b2" resv:1.0.0-0000dead "700|bw:global:total|gpt-image-1-mini|" stalls 1 >/dev/null
rcli hincrby "${PFX}bw:global:total" reserved 700 >/dev/null
assert_eq "700" "$(jqv "$("${imgq[@]}" budget show global --json)" reserved_micros)" "left reserved"

assert_contains "$("${imgq[@]}" cancel "$b1")" "1 job(s) cancelled"
assert_contains "$("${imgq[@]}" job show "$b1")" '"state": "canceled"'
assert_not_contains "$("${imgq[@]}" job show "$b1")" '"blocked":' "cancelled: no longer blocked"
status=$("${imgq[@]}" batch status capped --json)
assert_eq "2:1" "$(jqv "$status" counts blocked_budget):$(jqv "$status" counts canceled)" "after cancel JOB"
assert_contains "$("${imgq[@]}" cancel --batch capped)" "2 job(s) cancelled"
status=$("${imgq[@]}" batch status capped --json)
assert_eq "0:3:True" "$(jqv "$status" counts blocked_budget):$(jqv "$status" counts canceled):$(jqv "$status" finished)" \
    "after cancel --batch"
assert_eq "0" "$(jqv "$("${imgq[@]}" stats --json)" blocked_budget)" "stats: none blocked"
assert_eq "0:0" "$(rcli zcard "${PFX}delayed"):$(rcli zcard "${PFX}blocked")" "nothing delayed or blocked"
budget=$("${imgq[@]}" budget show global --json)
assert_eq "0" "$(jqv "$budget" reserved_micros)" "nothing reserved after the cancels"
assert_eq "700" "$(jqv "$budget" spent_micros)" "the dead worker's reservation is spent"
assert_eq "lost:700" "$(entries "$b2")" "charged as lost, at its reservation"
assert_eq "700" "$(jqv "$("${imgq[@]}" job show "$b2")" cost)" "in the job's cost"
assert_eq "0" "$(entries "$b1" | wc -w)" "the blocked job never called the provider"

note "(d) imgq report --by model = the ledger"
report=$("${imgq[@]}" report --by model --json 2>/dev/null)
python3 - "$report" "$(ledger)" "$(rcli hget "${PFX}spent" total)" <<'PYEOF' || fail "the report does not match the ledger"
import json, sys
report, spent = json.loads(sys.argv[1]), int(sys.argv[3])
by_model = {}
for line in sys.argv[2].splitlines():
    e = json.loads(line)
    by_model[e["model"]] = by_model.get(e["model"], 0) + int(e["cost"])
total = sum(by_model.values())
got = {g["model"]: g["spend_micros"] for g in report["groups"]}
print("ledger by model %r, total %d; report %r, total %d; spent counter %d" %
      (by_model, total, got, report["total"]["spend_micros"], spent))
assert set(by_model) == {"gpt-image-1-mini", "seedream-4-0"}, by_model
assert got == by_model, (got, by_model)
assert report["total"]["spend_micros"] == total == spent
assert report["matches_spent_counter"] is True
PYEOF
echo "PASS money_rules"
