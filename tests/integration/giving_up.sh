#!/usr/bin/env bash
# The end of a failing job tells the truth, through a real worker, Redis and imgq-sim: its last
# attempt (max_attempts used) is logged "giving up", not "will retry", and its attempt log
# entry, its error and its dead-letter entry say "retry": false, with why ("2 of 2 attempts
# used"); the attempts before it say "will retry" and "retry": true.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/env.sh"
imgq_env_setup
start_redis
start_s3 imgq-giving-up
start_sim --latency-ms 20 --seed 7

jobid() { # jobid BATCH CLIENT_ID
    "$IMGQ_BIN/imgq" batch results "$1" | python3 -c "
import json, sys
for line in sys.stdin:
    j = json.loads(line)
    if j.get('client_id') == '$2':
        print(j['id'])"
}
dead_letter() { # dead_letter BATCH JOB: "CLASS RETRY" of its dead-letter entry (JSON lines)
    "$IMGQ_BIN/imgq" dlq list --batch "$1" --json | python3 -c "
import json, sys
for line in sys.stdin:
    e = json.loads(line)
    if e['id'] == '$2':
        print(e['error']['class'], e['error']['retry'])"
}
py() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

cat >"$IMGQ_TMP/fail.jsonl" <<'EOF'
{"id":"broken","prompt":"a desk lamp [sim:500]","model":"gpt-image-1-mini","quality":"low","max_attempts":2}
EOF
"$IMGQ_BIN/imgq" submit --batch broken "$IMGQ_TMP/fail.jsonl" >/dev/null
BROKEN=$(jobid broken broken)
"$IMGQ_BIN/imgq-worker" --concurrency 2 --retry-base-ms 50 --retry-max-ms 100 --exit-when-idle \
    --breaker-threshold 1000 >"$IMGQ_TMP/worker.log" 2>&1 &
WORKER=$!
track_pid "$WORKER"
wait_pid "$WORKER" 120 || fail "the worker did not finish the failing job"
log=$(grep "$BROKEN attempt" "$IMGQ_TMP/worker.log" || true)
note "worker log: $log"
assert_contains "$(grep "$BROKEN attempt 1:" <<<"$log")" "will retry"
assert_contains "$(grep "$BROKEN attempt 2:" <<<"$log")" "giving up"
assert_not_contains "$(grep "$BROKEN attempt 2:" <<<"$log")" "will retry"
"$IMGQ_BIN/imgq" job show "$BROKEN" >"$IMGQ_TMP/broken.json"
assert_eq "failed" "$(py 'd["state"]' <"$IMGQ_TMP/broken.json")" "the failing job's state"
assert_eq "True False" "$(py '" ".join(str(e["retry"]) for e in d["attempt_log"])' <"$IMGQ_TMP/broken.json")" "attempt log: retry per attempt"
assert_eq "False" "$(py 'd["error"]["retry"]' <"$IMGQ_TMP/broken.json")" "the job's error: retry"
assert_contains "$(py 'd["error"]["giving_up"]' <"$IMGQ_TMP/broken.json")" "2 of 2 attempts used"
assert_eq "server False" "$(dead_letter broken "$BROKEN")" "the failing job's dead letter"
echo "giving_up: ok"
