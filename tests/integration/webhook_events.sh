#!/usr/bin/env bash
# Which events reach which webhook, through a real worker and a receiver that checks every
# signature itself (Python's hmac): job.completed (with the job's metadata and its images) to
# the job's own URL, job.failed (with the classified error) and batch.completed to the batch's
# URL, budget.threshold to the URL the budget was set with; nothing for a batch without one.
# Each field of each payload has the type src/lua/event_fields.def gives it.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/env.sh"
imgq_env_setup
start_redis
start_s3 imgq-events
start_sim --latency-ms 10
export IMGQ_SSRF_ALLOW=127.0.0.1
export IMGQ_WEBHOOK_SECRET="whsec_$(head -c 24 /dev/urandom | base64 -w0)"
imgq() { "$IMGQ_BIN/imgq" "$@"; }
PORT=$(free_port)
cat >"$IMGQ_TMP/receiver.py" <<'PY'
import base64, hashlib, hmac, http.server, json, os, sys
key = base64.b64decode(os.environ["IMGQ_WEBHOOK_SECRET"][len("whsec_"):])
out = open(sys.argv[2], "a")
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        mid, ts = self.headers["webhook-id"], self.headers["webhook-timestamp"]
        want = "v1," + base64.b64encode(hmac.new(key, f"{mid}.{ts}.".encode() + body, hashlib.sha256).digest()).decode()
        ok = want in self.headers["webhook-signature"].split(" ")
        out.write(json.dumps({"path": self.path, "id": mid, "ok": ok, "body": json.loads(body)}) + "\n")
        out.flush()
        self.send_response(204 if ok else 401)
        self.end_headers()
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
python3 "$IMGQ_TMP/receiver.py" "$PORT" "$IMGQ_TMP/got.jsonl" &
track_pid $!
wait_until 10 "the receiver" curl -s -o /dev/null "http://127.0.0.1:$PORT/"
HOOK="http://127.0.0.1:$PORT"

imgq budget set batch:ev --limit 5 --soft 0.003 --window total --webhook "$HOOK/budget" >/dev/null
curl -sf -X POST "http://127.0.0.1:$SIM_PORT/sim/fail" -d '{"model":"gemini-2.5-flash-image","status":400,"rate":1}' >/dev/null
cat >"$IMGQ_TMP/jobs.jsonl" <<EOF
{"id":"own","prompt":"a cedar box","model":"gpt-image-1-mini","quality":"low","webhook":"$HOOK/own","metadata":{"sku":"CB-1","ean":12345678901234567,"tags":[],"note":"a \"quoted\" {brace}"}}
{"id":"plain","prompt":"a cedar shelf","model":"gpt-image-1-mini","quality":"low"}
{"id":"bad","prompt":"a cedar bench","model":"gemini-2.5-flash-image"}
EOF
imgq submit --batch ev --webhook "$HOOK/batch" "$IMGQ_TMP/jobs.jsonl" >/dev/null
printf '{"id":"quiet","prompt":"a cedar stool","model":"gpt-image-1-mini","quality":"low"}\n' |
    imgq submit --batch quiet - >/dev/null
"$IMGQ_BIN/imgq-worker" --exit-when-idle --retry-base-ms 50 2>"$IMGQ_TMP/worker.log" || fail "the worker failed"
five() { [ "$(wc -l <"$IMGQ_TMP/got.jsonl")" -ge 5 ]; }
wait_until 20 "five deliveries" five
PYTHONPATH="$(dirname "${BASH_SOURCE[0]}")/../lib" python3 - "$IMGQ_TMP/got.jsonl" <<'PY' || fail "the events are not where they belong"
import json, sys
from event_types import check
got = [json.loads(l) for l in open(sys.argv[1])]
assert all(g["ok"] for g in got), "a signature did not verify"
# Every field of every payload has its one type (src/lua/event_fields.def)
for g in got:
    check(g["body"]["type"], g["body"]["data"])
by = {}
for g in got:
    by.setdefault((g["path"], g["body"]["type"]), []).append(g["body"]["data"])
kinds = sorted(by)
want = [("/batch", "batch.completed"), ("/batch", "job.completed"), ("/batch", "job.failed"),
        ("/budget", "budget.threshold"), ("/own", "job.completed")]
assert kinds == want, kinds
assert all(len(v) == 1 for v in by.values()), {k: len(v) for k, v in by.items()}
own = by[("/own", "job.completed")][0]
# metadata comes back exactly as submitted: 17-digit numbers (not 1.2345678901235e+16, a
# float), empty arrays (not {}), escapes
assert own["metadata"] == {"sku": "CB-1", "ean": 12345678901234567, "tags": [],
                           "note": 'a "quoted" {brace}'}, own["metadata"]
assert own["state"] == "done", own
assert own["result"]["images"][0]["key"].endswith(".webp") and own["cost_micros"] > 0, own
failed = by[("/batch", "job.failed")][0]
assert failed["error"]["class"] == "invalid_request" and failed["state"] == "failed", failed
batch = by[("/batch", "batch.completed")][0]
assert batch["batch"] == "ev" and batch["total"] == 3 and batch["done"] == 2 and batch["failed"] == 1, batch
assert batch["completion"] == 1 and type(batch["drafts"]) is int and batch["drafts"] == 0, batch
assert batch["cost_micros"] == own["cost_micros"] + by[("/batch", "job.completed")][0]["cost_micros"], batch
b = by[("/budget", "budget.threshold")][0]
assert b["budget"] == "batch:ev" and b["used_micros"] >= b["soft_micros"] == 3000, b
assert len({g["id"] for g in got}) == len(got), "a webhook-id was used twice"
PY
# The quiet batch (no URL anywhere) wrote nothing to the outbox.
assert_eq 5 "$(imgq webhooks list --json | wc -l)" "five messages in the outbox, none for the quiet batch"
echo "PASS webhook_events"
