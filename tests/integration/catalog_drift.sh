#!/usr/bin/env bash
# Catalog drift: the provider bills, from its own usage, more than the ceiling the worker
# reserved (gpt-image-1-mini's output tokens at 230% of the catalog's table).
#   - the overshoot is reported: a catalog.drift event (model, quality, size, reserved,
#     actual), a WARN line in the worker's log, a count in `imgq stats` (text and JSON);
#   - the cell's ceiling adapts to the observed ratio, kept in Redis: the next reservations of
#     the cell are scaled by it (no second overshoot), and `imgq quote` prices with it;
#   - with one call at a time, the hard cap is passed by at most the first overshoot: after
#     the first overshoot was settled no call takes the spend further past the cap.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/env.sh"
imgq_env_setup
start_redis
start_s3 imgq-drift
start_sim --latency-ms 20 --seed 5

PFX='imgq:{default}:'
rcli() { redis-cli -p "$REDIS_PORT" "$@"; }
imgq=("$IMGQ_BIN/imgq")
CAP_MICROS=13000
"${imgq[@]}" budget set global --limit 0.013 --window total >/dev/null

# The first job's prompt is long: its ceiling holds more prompt (which does not drift) than
# the others', so a ratio learnt from its whole cost would under-scale the short ones.
long=$(printf 'a glazed enamel mug with a speckled rim, %.0s' $(seq 1 20))
for i in $(seq 1 8); do
    p="enamel mug $i on oak"
    [ "$i" -eq 1 ] && p="$long$p"
    printf '{"id":"d-%d","prompt":"[sim:tokens:230] %s","model":"gpt-image-1-mini","quality":"low","size":"1024x1024"}\n' "$i" "$p"
done >"$IMGQ_TMP/jobs.jsonl"
quote_before=$("${imgq[@]}" quote --json "$IMGQ_TMP/jobs.jsonl")
"${imgq[@]}" submit --batch drift "$IMGQ_TMP/jobs.jsonl" >/dev/null

"$IMGQ_BIN/imgq-worker" --concurrency 1 >"$IMGQ_TMP/worker.log" 2>&1 &
wpid=$!
track_pid $wpid
status() { "${imgq[@]}" batch status drift --json; }
settled() { # every job done or blocked by the cap
    python3 -c 'import json,sys; s=json.loads(sys.argv[1]); c=s.get("counts", s)
print(1 if c.get("done",0)+c.get("blocked_budget",0)==8 and c.get("done",0)>0 else 0)' "$(status)" | grep -qx 1
}
wait_until 60 "the batch ran into its cap" settled
kill_pid TERM $wpid

# The ledger, in order (cost, reason), and the drift events (the call's reservation).
python3 - "$CAP_MICROS" <<PYEOF || fail "cap / drift bound"
import json, subprocess, sys
cap = int(sys.argv[1])
def xrange(key):
    # the stream as JSON, through Redis' own encoder: [[id, [field, value, ...]], ...]
    out = subprocess.run(["redis-cli", "-p", "$REDIS_PORT", "eval",
                          "return cjson.encode(redis.call('XRANGE', KEYS[1], '-', '+'))", "1", key],
                         capture_output=True, text=True, check=True).stdout
    entries = []
    for eid, kv in json.loads(out) if out.strip() not in ("", "{}") else []:
        entries.append((eid, dict(zip(kv[0::2], kv[1::2]))))
    return entries
ledger = xrange("${PFX}ledger")
events = [f for _, f in xrange("${PFX}events") if f.get("type") == "catalog.drift"]
assert ledger, "no ledger entries"
assert all(f["reason"] == "usage" for _, f in ledger), [f["reason"] for _, f in ledger]
assert len(events) == 1, "one overshoot expected at concurrency 1 (the ceiling adapts), got %d" % len(events)
e = events[0]
assert e["model"] == "gpt-image-1-mini" and e["quality"] == "low" and e["size"] == "1024x1024", e
reserved, actual = int(e["reserved_micros"]), int(e["actual_micros"])
assert actual > reserved > 0, e
overshoot = actual - reserved
# The first overshoot's job is the first call in the ledger (one call at a time).
first = ledger[0][1]
assert first["job"] == e["job"] and int(first["cost"]) == actual, (first, e)
spent, peak_after = 0, 0
for k, (_, f) in enumerate(ledger):
    spent += int(f["cost"])
    if k > 0:
        assert spent <= max(cap, actual), "call %d took the spend to %d past the cap %d after the first overshoot" % (k, spent, cap)
assert spent <= cap + overshoot, (spent, cap, overshoot)
ppm = int(e["ceiling_ppm"])
# The simulator's tokens: 230% of the table's, rounded down; the ratio is rounded up.
table = json.load(open("$IMGQ_SOURCE_DIR/deploy/catalog.json"))["models"]["gpt-image-1-mini"]["output_tokens"]["1024x1024"]["low"]
assert ppm == -(-(table * 230 // 100) * 1000000 // table), "the cell's ratio is its output tokens over the table's: %d" % ppm
print("ledger %d calls, spent %d, cap %d, first overshoot %d, ceiling x%.6f" % (len(ledger), spent, cap, overshoot, ppm / 1e6))
PYEOF

assert_contains "$(cat "$IMGQ_TMP/worker.log")" "catalog drift: gpt-image-1-mini low 1024x1024"
st=$("${imgq[@]}" stats)
assert_contains "$st" "catalog drift 1"
assert_contains "$st" "gpt-image-1-mini"
stj=$("${imgq[@]}" stats --json)
assert_eq "1" "$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["catalog_drift"]["events"])' "$stj")" "stats --json counts the drift"
ppm=$(rcli hget "${PFX}drift" 'ppm:gpt-image-1-mini|low|1024x1024')
[ "$ppm" -gt 2000000 ] || fail "the cell's ceiling did not adapt: ppm=$ppm"

# Every later reservation of the cell used the adapted ceiling: the quote does too.
quote_after=$("${imgq[@]}" quote --json "$IMGQ_TMP/jobs.jsonl")
python3 - "$quote_before" "$quote_after" "$ppm" "$IMGQ_SOURCE_DIR/deploy/catalog.json" <<'PYEOF' || fail "quote does not use the adapted ceiling"
import json, sys
def worst(q):
    q = json.loads(q)
    t = q.get("total", q)
    return int(t["own_worst_micros"])
b, a, ppm = worst(sys.argv[1]), worst(sys.argv[2]), int(sys.argv[3])
m = json.load(open(sys.argv[4]))["models"]["gpt-image-1-mini"]
# Each call's output-token part of its ceiling is scaled (the prompt's is not).
part = m["output_tokens"]["1024x1024"]["low"] * m["prices"]["image_out"] // 1000000
scaled = -(-part * (ppm - 1000000) // 1000000)
assert a == b + 8 * scaled, (b, a, ppm, part, scaled)
print("quote worst case %d -> %d micros" % (b, a))
PYEOF
echo "PASS catalog_drift"
