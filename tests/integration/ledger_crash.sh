#!/usr/bin/env bash
# The ledger after crashes: 3 workers, a batch of identical calls (so every usage-based call
# costs the same, C), and rounds of `kill -9` of a worker in the middle of its provider calls.
# After recovery:
#   - every ledger entry is one provider call attempt: 'usage' entries are priced from the usage
#     they carry (C each, recomputed here from the catalog); a call whose worker died after
#     reserving it is a 'lost' entry charged at its reservation, the catalog's ceiling;
#   - the ledger total = #usage x C + #lost x ceiling (the documented charges), and the
#     simulator saw between #usage and #usage + #lost calls (a lost reservation may or may not
#     have reached the provider);
#   - the ledger total, `imgq report`, the spent counter and the batch's cost all agree to the
#     micro-dollar; nothing is reserved any more.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/env.sh"
imgq_env_setup
start_redis
start_s3 imgq-ledger-crash
start_sim --latency-ms 300 --latency-jitter-ms 600 --seed 5
"$IMGQ_BIN/imgq" budget set global --limit 1000 --window total >/dev/null # reservations on

jobs=${LEDGER_JOBS:-300}
rounds=${LEDGER_ROUNDS:-8}
for ((i = 0; i < jobs; i++)); do
    printf '{"id":"c-%03d","prompt":"catalog item %03d, studio light","model":"gpt-image-1-mini","quality":"low","size":"1024x1024"}\n' "$i" "$i"
done >"$IMGQ_TMP/jobs.jsonl"
"$IMGQ_BIN/imgq" submit --batch crash "$IMGQ_TMP/jobs.jsonl" >/dev/null

declare -a pid
generation=0
start_worker() { # start_worker SLOT
    generation=$((generation + 1))
    "$IMGQ_BIN/imgq-worker" --concurrency 16 --lease-ms 1500 --retry-base-ms 100 \
        --breaker-threshold 1000 --log-level info >"$IMGQ_TMP/w$1-$generation.log" 2>&1 &
    pid[$1]=$!
    track_pid $!
}
for slot in 0 1 2; do start_worker $slot; done
ended() { "$IMGQ_BIN/imgq" batch status crash --json | grep -q '"finished":true'; }
in_flight() { [ "$(curl -s "http://127.0.0.1:$SIM_PORT/sim/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["in_flight"])')" -gt 0 ]; }

killed=0
for ((r = 1; r <= rounds; r++)); do
    sleep "0.$((RANDOM % 5 + 3))"
    ended && break
    in_flight || continue
    slot=$((RANDOM % 3))
    kill_pid 9 "${pid[$slot]}"
    killed=$((killed + 1))
    start_worker "$slot"
done
wait_until 300 "the batch to finish" ended
for slot in 0 1 2; do kill -TERM "${pid[$slot]}" 2>/dev/null || true; done
for slot in 0 1 2; do wait_pid "${pid[$slot]}" 40 || true; done
note "killed $killed workers mid-call"
[ "$killed" -ge 1 ] || fail "no worker was killed mid-call"

status=$("$IMGQ_BIN/imgq" batch status crash --json)
assert_contains "$status" "\"done\":$jobs"

# The ledger, entry by entry.
redis-cli -p "$REDIS_PORT" --json xrange 'imgq:{default}:ledger' - + >"$IMGQ_TMP/ledger.json" 2>/dev/null ||
    redis-cli -p "$REDIS_PORT" xrange 'imgq:{default}:ledger' - + >"$IMGQ_TMP/ledger.txt"
sim_calls=$(curl -s "http://127.0.0.1:$SIM_PORT/sim/stats" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"]["generations"]["total"])')
spent=$(redis-cli -p "$REDIS_PORT" hget 'imgq:{default}:spent' total)
[ -n "$spent" ] || spent=$(redis-cli -p "$REDIS_PORT" get 'imgq:{default}:spent')
report=$("$IMGQ_BIN/imgq" report --by batch --json)
budget=$("$IMGQ_BIN/imgq" budget show global --json)
batch_cost=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["cost_micros"])' "$status")
python3 - "$IMGQ_TMP" "$IMGQ_SOURCE_DIR/deploy/catalog.json" "$sim_calls" "$spent" "$batch_cost" \
    "$report" "$budget" <<'PYEOF' || fail "the ledger does not add up"
import json, os, sys
tmp, catalog, sim_calls, spent, batch_cost, report, budget = sys.argv[1:]
sim_calls, spent, batch_cost = int(sim_calls), int(spent), int(batch_cost)
report, budget = json.loads(report), json.loads(budget)
prices = json.load(open(catalog))["models"]["gpt-image-1-mini"]["prices"]

entries = []
if os.path.exists(tmp + "/ledger.json"):
    for _id, fields in json.load(open(tmp + "/ledger.json")):
        entries.append(dict(zip(fields[0::2], fields[1::2])) if isinstance(fields, list) else fields)
else:
    raise SystemExit("redis-cli without --json: cannot read the ledger")

def priced(u):  # micro-USD, rounded half up once: the catalog's rule
    d = u.get("input_tokens_details") or {}
    text = d.get("text_tokens", u.get("input_tokens", 0))
    num = text * prices["text_in"] + u["output_tokens"] * prices["image_out"]
    return (num + 500000) // 1000000

by_reason = {}
for e in entries:
    by_reason.setdefault(e["reason"], []).append(e)
usage = by_reason.get("usage", [])
lost = by_reason.get("lost", [])
# A job whose images a dying worker had already stored is done from them at $0 (dedup).
dedup = by_reason.get("dedup", [])
assert all(int(e["cost"]) == 0 for e in dedup), dedup
others = {k: len(v) for k, v in by_reason.items() if k not in ("usage", "lost", "dedup")}
assert not others, "unexpected ledger reasons %r" % others
C = None
for e in usage:
    cost = int(e["cost"])
    assert cost == priced(json.loads(e["usage"])), e
    C = cost if C is None else C
    assert cost == C, "usage-based calls of identical jobs cost the same: %r" % e
ceilings = {int(e["cost"]) for e in lost}
assert len(ceilings) <= 1, ceilings
total = sum(int(e["cost"]) for e in entries)
print("usage %d, lost %d (%s), sim calls %d, ledger %d, spent counter %d, batch cost %d, "
      "report %d, budget spent %d reserved %d" %
      (len(usage), len(lost), sorted(ceilings), sim_calls, total, spent, batch_cost,
       report["total"]["spend_micros"], budget["spent_micros"], budget["reserved_micros"]))
assert total == len(usage) * C + sum(int(e["cost"]) for e in lost)
assert len(usage) <= sim_calls <= len(usage) + len(lost), (len(usage), len(lost), sim_calls)
assert len(usage) + len(dedup) >= int(os.environ.get("LEDGER_JOBS", 300))
assert spent == total, (spent, total)
assert report["total"]["spend_micros"] == total, report["total"]
assert report["matches_spent_counter"] is True
assert batch_cost == total, (batch_cost, total)
assert budget["reserved_micros"] == 0, budget
assert budget["spent_micros"] == total, budget
print("ledger: %d usage x %d + %d lost x %s = %d micro-USD (%d dedup at $0); the simulator "
      "saw %d calls" % (len(usage), C, len(lost), sorted(ceilings), total, len(dedup), sim_calls))
PYEOF
echo "PASS ledger_crash"
