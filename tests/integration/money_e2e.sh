#!/usr/bin/env bash
# The money check, end to end (issue 13): a mixed batch through real redis-server, s3rver and
# imgq-sim, with every provider shape, n>1 and a fan-out, edits with reference images, a
# draft->refine pipeline, a reply without usage, a reply with an unusable usage, an S3 outage
# and a SIGTERM while calls are in flight.  Then, against the simulator's own bill (GET
# /sim/bill, priced from the catalog by tests/lib/bill.py, not by imgq's pricing code):
#   - the sum of the ledger equals the sum of what the simulator billed, to the micro-dollar;
#   - one ledger entry per generation the simulator performed, and the batch's and report's
#     totals equal the ledger;
#   - no image was generated twice (each prompt on each model as many times as it has calls),
#     although S3 was down while paid images waited to be stored.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/env.sh"
: "${IMGQ_SOURCE_DIR:=$IMGQ_ROOT}"
imgq_env_setup
start_redis
BUCKET=imgq-money
start_s3 "$BUCKET"
s3_dir="$IMGQ_TMP/s3-$S3_PORT"
[[ -d "$s3_dir" ]] || fail "s3rver's directory is not $s3_dir"
start_sim --latency-ms 200 --seed 13
SIM="http://127.0.0.1:$SIM_PORT"
CATALOG=${IMGQ_CATALOG:-$IMGQ_SOURCE_DIR/deploy/catalog.json}
PFX='imgq:{default}:'
imgq() { "$IMGQ_BIN/imgq" "$@"; }
rcli() { redis-cli -p "$REDIS_PORT" "$@"; }
simj() { curl -s "$SIM/sim/stats" | python3 -c "import json,sys; s=json.load(sys.stdin); print($1)"; }
s3_up() { curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$S3_PORT/$BUCKET"; }

# A reference image in the bucket (a small PNG made here).
mkpng "$IMGQ_TMP/ref.png" 64 48
upload "$IMGQ_TMP/ref.png" refs/ref.png
REF="\"s3://$BUCKET/refs/ref.png\""
PIPE='{"draft":{"model":"gpt-image-1-mini","n":2,"quality":"low"},"select":{"mode":"auto"},"refine":{"model":"gpt-image-1.5","quality":"low","use_draft_as_reference":true}}'
cat >"$IMGQ_TMP/mix.jsonl" <<EOF2
{"id":"oa-n3","prompt":"an oak chair","model":"gpt-image-1-mini","quality":"low","n":3}
{"id":"oa-edit","prompt":"the shirt in indigo [sim:refs:1]","model":"gpt-image-1.5","quality":"low","images":[$REF]}
{"id":"gm-ref","prompt":"the mug on a table [sim:refs:1]","model":"gemini-2.5-flash-image","size":"1024x1024","images":[$REF]}
{"id":"gm","prompt":"a paper lantern","model":"gemini-2.5-flash-image","size":"1024x1024"}
{"id":"sd-n2","prompt":"a linen towel","model":"seedream-4-0","size":"1024x1024","n":2}
{"id":"sd-ref","prompt":"the towel folded [sim:refs:1]","model":"seedream-4-0","size":"1024x1024","images":[$REF]}
{"id":"ds-n2","prompt":"a clay vase","model":"qwen-image-2.0","size":"1024x1024","n":2}
{"id":"rp","prompt":"a wool hat","model":"flux-schnell","size":"1024x1024"}
{"id":"fal","prompt":"a steel kettle","model":"fal-flux-dev","size":"1024x1024"}
{"id":"bfl","prompt":"a glass lamp","model":"flux-1.1-pro","size":"1024x1024"}
{"id":"pipe","prompt":"a walnut desk, studio light","size":"1024x1024","pipeline":$PIPE}
{"id":"no-usage","prompt":"a tin box [sim:no-usage]","model":"gpt-image-1-mini","quality":"low"}
{"id":"bad-usage","prompt":"a cork board [sim:bad-usage:string]","model":"gpt-image-1-mini","quality":"low"}
{"id":"slow-1","prompt":"a pine stool 1 [sim:latency:3000]","model":"gpt-image-1-mini","quality":"low"}
{"id":"slow-2","prompt":"a pine stool 2 [sim:latency:3000]","model":"gpt-image-1-mini","quality":"low"}
{"id":"slow-3","prompt":"a pine stool 3 [sim:latency:3000]","model":"gemini-2.5-flash-image","size":"1024x1024"}
{"id":"slow-4","prompt":"a pine stool 4 [sim:latency:3000]","model":"seedream-4-0","size":"1024x1024"}
EOF2
JOBS=$(wc -l <"$IMGQ_TMP/mix.jsonl")
quote=$(imgq quote --json "$IMGQ_TMP/mix.jsonl")
imgq submit --batch mix "$IMGQ_TMP/mix.jsonl" >/dev/null

# Worker 1: SIGTERM while the slow calls are at the provider, with S3 down from before their
# answers until after them: their paid images wait (not generated again) and are stored once
# S3 is back, inside the grace period.
"$IMGQ_BIN/imgq-worker" --concurrency 32 --grace-ms 60000 --poll-ms 100 \
    >"$IMGQ_TMP/w1.log" 2>&1 &
w1=$!
track_pid $w1
slow_in_flight() { [ "$(simj 's["in_flight"]')" -ge 4 ]; }
wait_until 60 "the four slow calls at the provider" slow_in_flight
kill_pid 9 "$S3_PID"
! s3_up || fail "s3rver still answers after kill -9"
kill -TERM $w1
slow_billed() { # the simulator answered all four slow calls
    [ "$(curl -s "$SIM/sim/bill" | python3 -c 'import json,sys; print(sum("pine stool" in (g.get("prompt") or "") for g in json.load(sys.stdin)["generations"]))')" -ge 4 ]
}
wait_until 60 "the slow calls answered while S3 is down" slow_billed
# S3 stays down until one job's PUT has failed 5 times: as many tries as an attempt once had
# before it gave up storing and the next attempt paid for the images again.
store_failed_5() {
    grep -q ' attempt [0-9]*: storage (' "$IMGQ_TMP/w1.log" || # (an attempt gave up storing)
    [ "$(grep -o 'job: j[0-9a-z]*: storing failed' "$IMGQ_TMP/w1.log" | sort | uniq -c | sort -rn | awk 'NR == 1 {print $1 + 0}')" -ge 5 ]
}
wait_until 120 "one job's PUT to fail 5 times while S3 is down" store_failed_5
s3rver --address 127.0.0.1 --port "$S3_PORT" --directory "$s3_dir" --configure-bucket "$BUCKET" \
    --silent </dev/null >>"$s3_dir.log" 2>&1 &
S3_PID=$!
track_pid "$S3_PID"
wait_until 30 "s3rver back on port $S3_PORT" s3_up
wait_pid $w1 90 || fail "worker 1 did not stop within its grace period"

# Worker 2 finishes what worker 1 left.
"$IMGQ_BIN/imgq-worker" --concurrency 32 --poll-ms 100 --exit-when-idle >"$IMGQ_TMP/w2.log" 2>&1 &
w2=$!
track_pid $w2
wait_pid $w2 180 || fail "worker 2 did not finish the batch"

status=$(imgq batch status mix --json)
curl -s "$SIM/sim/bill" >"$IMGQ_TMP/bill.json"
rcli eval "return cjson.encode(redis.call('XRANGE', KEYS[1], '-', '+'))" 1 "${PFX}ledger" >"$IMGQ_TMP/ledger.json"
python3 "$IMGQ_SOURCE_DIR/tests/lib/bill.py" "$CATALOG" "$IMGQ_TMP/bill.json" --json >"$IMGQ_TMP/priced.json"
imgq report --json >"$IMGQ_TMP/report.json"
python3 - "$IMGQ_TMP" "$JOBS" "$status" "$quote" <<'PY' || fail "the money does not reconcile"
import collections, json, sys
tmp, jobs, status, quote = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), json.loads(sys.argv[4])
bill = json.load(open(tmp + "/priced.json"))
ledger = [dict(zip(kv[0::2], kv[1::2])) for _, kv in json.load(open(tmp + "/ledger.json"))]
counts = status.get("counts", status)
assert counts.get("done") == jobs + 1, ("every job done, and the pipeline's draft job", counts)
gens = bill["entries"]
assert all(g["answered"] for g in gens), "a generation's client left (a call was handed back)"
calls = [l for l in ledger if l["reason"] != "dedup"]
reasons = collections.Counter(l["reason"] for l in calls)
spent = sum(int(l["cost"]) for l in calls)
print("simulator: %d generations, billed %d micros; ledger: %d entries %s, %d micros" %
      (len(gens), bill["total"], len(calls), dict(reasons), spent))
assert len(calls) == len(gens), "one ledger entry per generation"
assert spent == bill["total"], "ledger %d != billed %d" % (spent, bill["total"])
assert reasons["ceiling"] == 2, "the reply without usage and the unusable one: %s" % reasons
assert set(reasons) <= {"usage", "ceiling"}, reasons
# No image generated twice: each prompt on each model as often as it has calls (seedream's n=2
# fans out into 2 calls; the pipeline's drafts and refine are one call each).
per = collections.Counter((g["prompt"], g["model"]) for g in gens)
twice = {k: v for k, v in per.items() if v != (2 if "linen towel" in k[0] else 1)}
assert not twice, "generated more often than asked: %s" % twice
assert len(gens) == quote["total"]["calls"], ("the calls the quote counted", len(gens), quote["total"])
cost = status.get("cost_micros", status.get("cost"))
assert int(cost) == spent, ("batch cost", cost, spent)
report = json.load(open(tmp + "/report.json"))
total = report.get("total", report)
rs = total.get("spend_micros", total.get("spent_micros", total.get("cost_micros")))
assert int(rs) == spent, ("report total", total, spent)
PY
echo "PASS money_e2e"
