#!/usr/bin/env bash
# Draft->refine pipelines end to end (imgq-sim, s3rver, redis-server, real workers):
#   - auto: the drafts run as a child job (one call for n drafts), the worker scores them in C
#     and refines the best as an edit of it (gpt-image-1.5 /v1/images/edits); both stages'
#     costs are on record and add up to the job's and the batch's cost;
#   - manual: the job parks in awaiting_selection with a selection.required event (outbox),
#     survives its worker being killed, `imgq select` lists the drafts with working links and
#     chooses one; the refine uses that draft; bad choices get clear errors;
#   - prompt-only refine (use_draft_as_reference false) is a generation, not an edit;
#   - failure paths: drafts that fail fail the job; a cancelled pipeline job cancels its drafts.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/env.sh"
imgq_env_setup
start_redis
start_s3 imgq-pipe
start_sim --latency-ms 20
export IMGQ_SSRF_ALLOW=127.0.0.1
imgq() { "$IMGQ_BIN/imgq" "$@"; }
stat_of() { curl -s "http://127.0.0.1:$SIM_PORT/sim/stats" | python3 -c "import json,sys; print(json.load(sys.stdin)['requests']['$1']['$2'])"; }
work() { "$IMGQ_BIN/imgq-worker" --exit-when-idle --retry-base-ms 50 2>"$IMGQ_TMP/$1.log" || fail "worker $1 failed"; }
results() { imgq batch results "$1"; }
# field CLIENT_ID KEY (python expression on the line) < results
field() { python3 -c "
import json, sys
for l in sys.stdin:
    d = json.loads(l)
    if d.get('client_id') == '$1':
        v = d$2
        print(json.dumps(v) if isinstance(v, (dict, list)) else v)"; }
rcli() { redis-cli -p "$REDIS_PORT" "$@"; }
job_state() { rcli HGET "imgq:{default}:j:$1" state; }
state_is() { [ "$(job_state "$1")" = "$2" ]; }

PIPE_AUTO='{"draft":{"model":"gpt-image-1-mini","n":3,"quality":"low"},"select":{"mode":"auto"},"refine":{"model":"gpt-image-1.5","quality":"medium","use_draft_as_reference":true}}'

# ---- auto ------------------------------------------------------------------------------------
note "auto selection"
printf '{"id":"chair","prompt":"a walnut chair, studio light","size":"1024x1024","pipeline":%s}\n' "$PIPE_AUTO" >"$IMGQ_TMP/auto.jsonl"
imgq submit --batch auto "$IMGQ_TMP/auto.jsonl" >/dev/null
work auto
r=$(results auto)
assert_eq "done" "$(field chair '["state"]' <<<"$r")" "the pipeline job is done"
assert_eq "1" "$(stat_of generations total)" "one generation call made the three drafts"
assert_eq "1" "$(stat_of edits total)" "one edit call refined the chosen draft"
drafts_line=$(python3 -c "
import json, sys
for l in sys.stdin:
    d = json.loads(l)
    if d.get('draft_of'): print(l.strip())" <<<"$r")
[ -n "$drafts_line" ] || fail "no draft job in the batch"
assert_eq "3" "$(python3 -c 'import json,sys; print(len(json.load(sys.stdin)["images"]))' <<<"$drafts_line")" "three drafts stored"
pipe=$(field chair '["pipeline"]' <<<"$r")
python3 - "$pipe" "$drafts_line" <<'PY' || fail "the auto choice is not the best-scored draft"
import json, sys
p, d = json.loads(sys.argv[1]), json.loads(sys.argv[2])
scores = [s["total"] for s in p["selection"]["scores"]]
assert p["selection"]["mode"] == "auto", p
assert len(scores) == 3, scores
best = max(range(3), key=lambda i: (scores[i], -i))
assert p["chosen"] == best, (p["chosen"], scores)
assert len(set(scores)) > 1, "the drafts all scored the same: the measure decided nothing"
key = d["images"][best]["key"]
assert p["draft"].endswith("/" + key), (p["draft"], key)
PY
# Costs: drafts + refine = the job's cost = the batch's cost; each stage from its own usage.
dcost=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["cost_micros"])' <<<"$drafts_line")
stage=$(field chair '["stage_costs"]' <<<"$r")
assert_eq "$dcost" "$(python3 -c 'import json,sys; print(json.load(sys.stdin)["draft_micros"])' <<<"$stage")" "draft stage cost"
rcost=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["refine_micros"])' <<<"$stage")
[ "$rcost" -gt 0 ] && [ "$dcost" -gt 0 ] || fail "a stage cost nothing"
assert_eq "$((dcost + rcost))" "$(field chair '["cost_micros"]' <<<"$r")" "the job's cost is both stages"
assert_eq "$((dcost + rcost))" "$(imgq batch status auto --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["cost_micros"])')" "the batch's cost"
# The report: one accepted asset (the drafts are not), costing both stages.
rep=$(imgq report --by batch --json | python3 -c '
import json, sys
for g in json.load(sys.stdin)["groups"]:
    if g["batch"] == "auto": print(g["images"], g["spend_micros"], g["per_image_micros"])')
assert_eq "1 $((dcost + rcost)) $((dcost + rcost))" "$rep" "report: cost per accepted asset"

# ---- manual, with the worker killed while the job waits -------------------------------------
note "manual selection"
PIPE_MANUAL='{"draft":{"model":"gpt-image-1-mini","n":2,"quality":"low"},"select":{"mode":"manual"},"refine":{"model":"gpt-image-1.5","quality":"low"}}'
printf '{"id":"lamp","prompt":"a brass lamp, studio light","size":"1024x1024","webhook":"http://127.0.0.1:9/hook","pipeline":%s}\n' "$PIPE_MANUAL" >"$IMGQ_TMP/manual.jsonl"
imgq submit --batch manual "$IMGQ_TMP/manual.jsonl" >/dev/null
jid=$(rcli LINDEX 'imgq:{default}:b:manual:jobs' 0)
"$IMGQ_BIN/imgq-worker" 2>"$IMGQ_TMP/manual1.log" &
wpid=$!
track_pid $wpid
wait_until 30 "the job to await selection" state_is "$jid" awaiting_selection
kill_pid KILL $wpid
out=$(imgq select "$jid")
assert_eq 2 "$(wc -l <<<"$out")" "imgq select lists two drafts"
url1=$(awk -F'\t' '$1 == 1 {print $3}' <<<"$out")
key1=$(awk -F'\t' '$1 == 1 {print $2}' <<<"$out")
curl -sf "$url1" -o "$IMGQ_TMP/draft1" || fail "the draft's link does not work"
assert_eq "RIFF" "$(head -c4 "$IMGQ_TMP/draft1")" "the link serves the WebP draft"
# selection.required is in the outbox, with the drafts and their links.
msg=$(rcli ZRANGE 'imgq:{default}:whlog' 0 -1 | while read -r m; do
    [ "$(rcli HGET "imgq:{default}:whm:$m" type)" = selection.required ] && rcli HGET "imgq:{default}:whm:$m" body
done)
python3 - "$msg" "$jid" "$key1" <<'PY' || fail "selection.required is missing or wrong"
import json, sys
b = json.loads(sys.argv[1])
assert b["type"] == "selection.required" and b["data"]["job"] == sys.argv[2], b
assert [d["index"] for d in b["data"]["drafts"]] == [0, 1], b
assert b["data"]["drafts"][1]["key"] == sys.argv[3] and b["data"]["drafts"][1]["url"].startswith("http")
PY
# Bad choices.
out=$(imgq select "$jid" 2 2>&1 || true)
assert_contains "$out" "out of range: the job has 2 drafts"
out=$(imgq select "$jid" x 2>&1 || true)
assert_contains "$out" "INDEX 'x'"
out=$(imgq select nosuchjob 0 2>&1 || true)
assert_contains "$out" "no job nosuchjob"
assert_eq "awaiting_selection" "$(job_state "$jid")" "bad choices change nothing"
# A new worker after the choice refines draft 1.
imgq select "$jid" 1 >/dev/null
edits_before=$(stat_of edits total)
gens_before=$(stat_of generations total)
work manual2
r=$(results manual)
assert_eq "done" "$(field lamp '["state"]' <<<"$r")" "the manual pipeline job is done"
assert_eq "1" "$(field lamp '["pipeline"]["chosen"]' <<<"$r")" "draft 1 was refined"
assert_contains "$(field lamp '["pipeline"]["draft"]' <<<"$r")" "$key1"
assert_eq "$((edits_before + 1))" "$(stat_of edits total)" "one edit for the refine"
assert_eq "$gens_before" "$(stat_of generations total)" "no new drafts after the worker died"
out=$(imgq select "$jid" 0 2>&1 || true)
assert_contains "$out" "is done, not awaiting_selection"

# ---- webhook: a team's own scorer -------------------------------------------------------------
note "webhook selection"
export IMGQ_WEBHOOK_SECRET="whsec_$(head -c 32 /dev/urandom | base64 -w0)"
SCORER_PORT=$(free_port)
# The scorer: checks the Standard Webhooks signature itself (Python's hmac, not imgq's code),
# answers 503 once (the job retries), then picks the last draft.
cat >"$IMGQ_TMP/scorer.py" <<'PY'
import base64, hashlib, hmac, http.server, json, os, sys, time
key = base64.b64decode(os.environ["IMGQ_WEBHOOK_SECRET"][len("whsec_"):])
calls = []
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        mid, ts = self.headers["webhook-id"], self.headers["webhook-timestamp"]
        want = base64.b64encode(hmac.new(key, f"{mid}.{ts}.".encode() + body, hashlib.sha256).digest()).decode()
        ok = any(s == "v1," + want for s in self.headers["webhook-signature"].split(" "))
        ok = ok and abs(time.time() - int(ts)) < 300
        req = json.loads(body)
        calls.append({"ok": ok, "id": mid, "drafts": len(req["drafts"]), "urls": all(d["url"].startswith("http") for d in req["drafts"])})
        open(sys.argv[2], "w").write(json.dumps(calls))
        if not ok:
            self.send_response(401); self.end_headers(); return
        if len(calls) == 1:
            self.send_response(503); self.end_headers(); return
        out = json.dumps({"index": len(req["drafts"]) - 1}).encode()
        self.send_response(200); self.send_header("content-length", str(len(out))); self.end_headers()
        self.wfile.write(out)
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
python3 "$IMGQ_TMP/scorer.py" "$SCORER_PORT" "$IMGQ_TMP/scorer.json" &
track_pid $!
wait_until 10 "the scorer" curl -s -o /dev/null "http://127.0.0.1:$SCORER_PORT/"
PIPE_HOOK='{"draft":{"model":"gpt-image-1-mini","n":3,"quality":"low"},"select":{"mode":"webhook","url":"http://127.0.0.1:'$SCORER_PORT'/score","timeout_s":10},"refine":{"model":"gpt-image-1.5","quality":"low"}}'
printf '{"id":"desk","prompt":"an oak desk","size":"1024x1024","pipeline":%s}\n' "$PIPE_HOOK" >"$IMGQ_TMP/hook.jsonl"
imgq submit --batch hook "$IMGQ_TMP/hook.jsonl" >/dev/null
work hook
r=$(results hook)
assert_eq "done" "$(field desk '["state"]' <<<"$r")" "the webhook-selected job is done"
assert_eq "2" "$(field desk '["pipeline"]["chosen"]' <<<"$r")" "the scorer's choice was refined"
assert_eq "webhook" "$(field desk '["pipeline"]["selection"]["mode"]' <<<"$r")"
python3 - "$IMGQ_TMP/scorer.json" <<'PY' || fail "the scorer's requests were not as expected"
import json, sys
calls = json.load(open(sys.argv[1]))
assert len(calls) == 2, calls                       # 503, then the answer
assert all(c["ok"] and c["drafts"] == 3 and c["urls"] for c in calls), calls
PY
assert_contains "$(field desk '["attempts"]' <<<"$r")" "2"
unset IMGQ_WEBHOOK_SECRET

# ---- prompt-only refine ----------------------------------------------------------------------
note "prompt-only refine"
PIPE_PROMPT='{"draft":{"model":"gpt-image-1-mini","n":2,"quality":"low"},"select":{"mode":"auto"},"refine":{"model":"gpt-image-1.5","quality":"low","use_draft_as_reference":false}}'
printf '{"id":"rug","prompt":"a wool rug","size":"1024x1024","pipeline":%s}\n' "$PIPE_PROMPT" >"$IMGQ_TMP/prompt.jsonl"
edits_before=$(stat_of edits total)
gens_before=$(stat_of generations total)
imgq submit --batch prompt "$IMGQ_TMP/prompt.jsonl" >/dev/null
work prompt
assert_eq "done" "$(field rug '["state"]' <<<"$(results prompt)")" "prompt-only pipeline done"
assert_eq "$edits_before" "$(stat_of edits total)" "no edit for a prompt-only refine"
assert_eq "$((gens_before + 2))" "$(stat_of generations total)" "drafts and refine are generations"

# ---- failure paths ---------------------------------------------------------------------------
note "failures"
# Validation at submit names the stage's field.
out=$(printf '{"prompt":"x","size":"1024x1024","pipeline":{"draft":{"model":"gpt-image-1-mini","quality":"ultra"},"select":{"mode":"auto"},"refine":{"model":"gpt-image-1.5"}}}\n' | imgq submit --batch bad - 2>&1 || true)
assert_contains "$out" "pipeline.draft: quality: 'ultra' is not allowed"
out=$(printf '{"prompt":"x","size":"1024x1024","pipeline":{"draft":{"model":"gpt-image-1-mini"},"select":{"mode":"vote"},"refine":{"model":"gpt-image-1.5"}}}\n' | imgq submit --batch bad - 2>&1 || true)
assert_contains "$out" "pipeline.select.mode: must be auto, webhook or manual"
out=$(printf '{"prompt":"x","size":"1024x1024","pipeline":{"draft":{"model":"gpt-image-1-mini"},"select":{"mode":"webhook","url":"http://169.254.169.254/score"},"refine":{"model":"gpt-image-1.5"}}}\n' | imgq submit --batch bad - 2>&1 || true)
assert_contains "$out" "link-local"
# Drafts that fail for good fail the pipeline job (and cost nothing more).
curl -sf -X POST "http://127.0.0.1:$SIM_PORT/sim/fail" -d '{"model":"gpt-image-1-mini","status":400,"rate":1}' >/dev/null
printf '{"id":"vase","prompt":"a glass vase","size":"1024x1024","pipeline":%s}\n' "$PIPE_AUTO" >"$IMGQ_TMP/fails.jsonl"
imgq submit --batch fails "$IMGQ_TMP/fails.jsonl" >/dev/null
work fails
r=$(results fails)
assert_eq "failed" "$(field vase '["state"]' <<<"$r")" "the pipeline job fails with its drafts"
assert_contains "$(field vase '["error"]' <<<"$r")" "ended failed"
curl -sf -X POST "http://127.0.0.1:$SIM_PORT/sim/fail" -d '{"model":"gpt-image-1-mini","rate":0}' >/dev/null
# Retried from the dead-letter set once the model works again: its drafts get another go.
vid=$(rcli LINDEX 'imgq:{default}:b:fails:jobs' 0)
assert_contains "$(imgq dlq retry "$vid")" "1 job(s) back in the queue"
work fails2
r=$(results fails)
assert_eq "done" "$(field vase '["state"]' <<<"$r")" "the retried pipeline job is done"
# A job awaiting selection past its batch's deadline ends as expired, like its batch.
PIPE_MANUAL2='{"draft":{"model":"gpt-image-1-mini","n":2,"quality":"low"},"select":{"mode":"manual"},"refine":{"model":"gpt-image-1.5","quality":"low"}}'
printf '{"id":"mug","prompt":"a stoneware mug","size":"1024x1024","pipeline":%s}\n' "$PIPE_MANUAL2" >"$IMGQ_TMP/late.jsonl"
imgq submit --batch late --deadline +1h "$IMGQ_TMP/late.jsonl" >/dev/null
work late
mid=$(rcli LINDEX 'imgq:{default}:b:late:jobs' 0)
assert_eq "awaiting_selection" "$(job_state "$mid")" "waiting for a person"
imgq clock --advance 3700 >/dev/null
"$IMGQ_BIN/imgq-worker" --lease-ms 1000 2>"$IMGQ_TMP/late2.log" & # its reaper sweeps deadlines
wpid=$!
track_pid $wpid
wait_until 20 "the deadline sweep" state_is "$mid" expired
kill_pid TERM $wpid
assert_eq "expired" "$(job_state "$mid")" "past the deadline, the waiting job expired"
assert_eq "1" "$(rcli HGET 'imgq:{default}:b:late' expired)" "and the batch counts it"
# A draft that cannot be read (deleted from the bucket behind the dedup index's back) fails the
# selection cleanly, naming the draft, once every other draft's fetch and scoring is back.
printf '{"id":"pot","prompt":"a clay pot","size":"1024x1024","pipeline":%s}\n' "$PIPE_AUTO" >"$IMGQ_TMP/pot1.jsonl"
imgq submit --batch pot1 "$IMGQ_TMP/pot1.jsonl" >/dev/null
work pot1
gone=$(results pot1 | python3 -c '
import json, sys
for l in sys.stdin:
    d = json.loads(l)
    if d.get("draft_of"): print(d["images"][1]["key"])')
find "$IMGQ_TMP" -path "*imgq-pipe/$gone._S3rver_object" -delete
printf '{"id":"pot2","prompt":"a clay pot","size":"1024x1024","max_attempts":1,"pipeline":%s}\n' "$PIPE_AUTO" >"$IMGQ_TMP/pot2.jsonl"
imgq submit --batch pot2 "$IMGQ_TMP/pot2.jsonl" >/dev/null
work pot2
r=$(results pot2)
assert_eq "failed" "$(field pot2 '["state"]' <<<"$r")" "a pipeline with an unreadable draft fails"
assert_contains "$(field pot2 '["error"]' <<<"$r")" "draft 1 ($gone) could not be read"
# Cancelling a pipeline job while it drafts cancels the drafts too.
printf '{"id":"cup","prompt":"a tea cup","size":"1024x1024","pipeline":%s}\n' "$PIPE_AUTO" >"$IMGQ_TMP/cancel.jsonl"
imgq submit --batch cancel "$IMGQ_TMP/cancel.jsonl" >/dev/null
cid=$(rcli LINDEX 'imgq:{default}:b:cancel:jobs' 0)
# (the drafts' model answers 500 meanwhile: the drafts wait out a long retry backoff)
curl -sf -X POST "http://127.0.0.1:$SIM_PORT/sim/fail" -d '{"model":"gpt-image-1-mini","status":500,"rate":1}' >/dev/null
"$IMGQ_BIN/imgq-worker" --retry-base-ms 60000 2>"$IMGQ_TMP/cancel.log" &
wpid=$!
track_pid $wpid
wait_until 30 "the drafts to wait for a retry" state_is "$cid-draft" retrying
assert_eq "drafting" "$(job_state "$cid")" "the pipeline job waits for its drafts"
out=$(imgq cancel "$cid")
assert_contains "$out" "2 job(s) cancelled"
assert_eq "canceled" "$(job_state "$cid-draft")" "the drafts were cancelled with their job"
assert_eq "canceled" "$(job_state "$cid")" "and the job"
kill_pid TERM $wpid
echo "PASS pipeline"
