#!/usr/bin/env bash
# Webhook delivery from the outbox, end to end (redis-server, s3rver, imgq-sim, real workers),
# against an independent Standard Webhooks receiver written in Node (webhook_receiver.js):
#   - the receiver's verifier passes the spec's published vector (so it is itself proven);
#   - receiver down while a batch completes: messages stay pending with their attempts logged
#     (next after 5 s, then 5 min); receiver up and the queue clock past those steps: every
#     event delivered, each webhook-id accepted exactly once, both rotation signatures valid
#     each alone, bodies equal to "imgq webhooks show", at most 8 at once to one host;
#   - --exit-when-idle waits for the deliveries its jobs caused;
#   - 410 disables the endpoint (later messages 'disabled' without a request), enable +
#     replay delivers them; 3xx is a failure, not followed; retry-after (seconds and HTTP
#     date) honoured; webhook-delivery: abort-message fails the message;
#   - kill -9 of a worker mid-delivery: after the lease the message is sent again under the
#     same webhook-id (the receiver sees a duplicate, accepted once); SIGTERM lets a delivery
#     in flight finish;
#   - a URL the SSRF guard refuses: failed with the reason, nothing connected to;
#   - per-endpoint secrets from the config file; bad or missing secrets stop the worker; a
#     worker without a secret delivers nothing and says so;
#   - imgq webhooks list/show/replay/enable/disabled output and errors; retention.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/env.sh"
imgq_env_setup
T=$IMGQ_TMP
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
RECEIVER="$HERE/webhook_receiver.js"
imgq() { "$IMGQ_BIN/imgq" "$@"; }

note "the receiver's verifier against the published vector"
node "$RECEIVER" --selftest >"$T/selftest.out" || { cat "$T/selftest.out" >&2; fail "selftest"; }
assert_eq 9 "$(grep -c '^ok ' "$T/selftest.out")" "selftest checks passed"

start_redis
start_s3 imgq-webhooks
start_sim --latency-ms 10

newsecret() { python3 -c 'import base64,os; print("whsec_" + base64.b64encode(os.urandom(32)).decode())'; }
S1=$(newsecret)
S2=$(newsecret)
CMS=$(newsecret)
export IMGQ_WEBHOOK_SECRET="$S1, $S2" # comma and space: both separators
export IMGQ_SSRF_ALLOW=127.0.0.1
RPORT=$(free_port)
TRAP_PORT=$(free_port)
R="http://127.0.0.1:$RPORT"
cat >"$T/config.json" <<EOF
{"webhooks": {"endpoints": [{"url_prefix": "$R/cms/", "secret_env": "CMS_SECRET"}]}}
EOF
export CMS_SECRET=$CMS
LOG=$T/received.jsonl
RULES=$T/rules.json
: >"$LOG"
: >"$T/trap.jsonl"
# rules 'PATH: RULE, ...': how the receiver answers (see webhook_receiver.js), plus $FAILING,
# the endpoints that keep failing once set up.
FAILING=
rules() {
    printf '{%s%s%s}\n' "$FAILING" "${FAILING:+${1:+, }}" "$1" >"$RULES.tmp"
    mv "$RULES.tmp" "$RULES"
}
rules ''

RECV_PID=
start_receiver() {
    node "$RECEIVER" --port "$RPORT" --log "$LOG" --rules "$RULES" --secret "S1=$S1" \
        --secret "S2=$S2" --secret "CMS=$CMS" --trap-host 127.0.0.2 --trap-port "$TRAP_PORT" \
        --trap-log "$T/trap.jsonl" >"$T/receiver.log" 2>&1 &
    RECV_PID=$!
    track_pid "$RECV_PID"
    wait_until 10 "the receiver listens" _imgq_port_listening "$RPORT"
}

WORKER_PID=
start_worker() { # NAME [FLAGS...]
    local name=$1
    shift
    "$IMGQ_BIN/imgq-worker" --config "$T/config.json" --retry-base-ms 50 --log-level debug "$@" \
        2>>"$T/$name.log" &
    WORKER_PID=$!
    track_pid "$WORKER_PID"
}

# jobs BATCH N [WEBHOOK-OF-ODD-JOBS]: N small jobs as JSONL on stdout.
jobs() {
    local i
    for ((i = 1; i <= $2; i++)); do
        if ((i % 2)) && [[ -n "${3:-}" ]]; then
            printf '{"id":"%s-%02d","prompt":"mug %d","model":"gpt-image-1-mini","quality":"low","size":"1024x1024","webhook":"%s"}\n' "$1" "$i" "$i" "$3"
        else
            printf '{"id":"%s-%02d","prompt":"mug %d","model":"gpt-image-1-mini","quality":"low","size":"1024x1024"}\n' "$1" "$i" "$i"
        fi
    done
}
# one_job URL: a single job whose own webhook is URL.
one_job() {
    printf '{"prompt":"vase %s","model":"gpt-image-1-mini","quality":"low","size":"1024x1024","webhook":"%s"}\n' "$RANDOM" "$1"
}

# msgs [LIST-FLAGS...]: the outbox as JSON lines.
msgs() { imgq webhooks list --limit 100000 --json "$@"; }
# count_where PYTHON-CONDITION [LIST-FLAGS...]: how many messages m satisfy the condition.
count_where() {
    local cond=$1
    shift
    msgs "$@" | python3 -c "
import json, sys
n = 0
for line in sys.stdin:
    m = json.loads(line)
    n += bool($cond)
print(n)"
}
has_count() { [[ "$(count_where "$1" "${@:3}")" == "$2" ]]; }
# received PYTHON-CONDITION: requests the receiver logged that satisfy it (r is one line).
received() {
    python3 -c "
import json, sys
n = 0
for line in open(sys.argv[1]):
    r = json.loads(line)
    n += bool($1)
print(n)" "$LOG"
}
received_is() { [[ "$(received "$2")" == "$1" ]]; }
show() { imgq webhooks show "$1" --json; }
field() { show "$1" | python3 -c "import json,sys; m=json.load(sys.stdin); print($2)"; }
field_is() { [[ "$(field "$1" "$2")" == "$3" ]]; }

# ---- receiver down while a batch completes ----------------------------------------------------
note "receiver down: 20 jobs (10 with their own webhook) and a batch webhook"
jobs b1 20 "$R/jobs/own" >"$T/b1.jsonl"
imgq submit --batch b1 --webhook "$R/batch" "$T/b1.jsonl" >/dev/null
start_worker w1
W1=$WORKER_PID
wait_until 30 "21 messages attempted once" has_count "m['attempts'] >= 1" 21
assert_eq 21 "$(count_where "m['state'] == 'pending'")" "undelivered messages stay pending"
assert_eq 20 "$(count_where "m['type'] == 'job.completed'")" "one job.completed per job"
assert_eq 1 "$(count_where "m['type'] == 'batch.completed'")" "one batch.completed"
assert_eq 10 "$(count_where "m['url'].endswith('/jobs/own')")" "jobs with their own webhook"
assert_eq 11 "$(count_where "m['url'].endswith('/batch')")" "the rest go to the batch's"
msgs | python3 -c 'import json,sys; [print(json.loads(l)["id"]) for l in sys.stdin]' >"$T/b1.ids"
first=$(head -n 1 "$T/b1.ids")
assert_contains "$(field "$first" "m['last']")" "onnect" "the last attempt says why"
assert_eq 5000 "$(field "$first" "m['attempt_log'][0]['next'] - m['attempt_log'][0]['t']")" \
    "first retry 5 s after the failed attempt"
imgq clock --advance 6 >/dev/null
wait_until 20 "second attempts" has_count "m['attempts'] >= 2" 21
for id in $(head -n 3 "$T/b1.ids"); do
    assert_eq 300000 "$(field "$id" "m['attempt_log'][1]['next'] - m['attempt_log'][1]['t']")" \
        "second retry 5 min after the second failure"
    assert_eq pending "$(field "$id" "m['state']")"
done

kill_pid TERM "$W1"

note "receiver up, clock past the 5 min step: an --exit-when-idle worker delivers every event"
rules '"/": {"hold_ms": 300}'
start_receiver
imgq clock --advance 301 >/dev/null
# Nothing but due messages in the queue: the worker stays until they are delivered.
"$IMGQ_BIN/imgq-worker" --config "$T/config.json" --exit-when-idle --log-level debug \
    2>>"$T/idle.log" || fail "the worker failed"
assert_eq 21 "$(count_where "m['state'] == 'delivered'")" "delivered before the worker exited"
# Bodies as imgq webhooks show has them, by id.
for id in $(cat "$T/b1.ids"); do show "$id"; done >"$T/b1.show"
python3 - "$LOG" "$T/b1.show" <<'PYEOF' || fail "deliveries differ from the outbox"
import json, sys
log = [json.loads(l) for l in open(sys.argv[1])]
shown = {m["id"]: m for m in map(json.loads, open(sys.argv[2]))}
got = {}
for r in log:
    assert r["accepted"], r
    assert r["method"] == "POST" and r["content_type"] == "application/json", r
    # Rotation: two v1 signatures, each of the two secrets verifies alone; not the CMS one.
    assert r["signatures"] == 2 and r["valid"] == {"S1": True, "S2": True, "CMS": False}, r
    got.setdefault(r["id"], []).append(r)
assert set(got) == set(shown), (len(got), len(shown))
for mid, rs in got.items():
    assert len(rs) == 1 and not rs[0]["dup"], ("delivered more than once", mid)
    m = shown[mid]
    assert rs[0]["body"] == m["body"], mid
    assert m["attempts"] == 3 and m["state"] == "delivered" and m["last"] == "200", m
    assert rs[0]["path"] == m["url"][m["url"].index("/", 8):], (rs[0]["path"], m["url"])
bodies = [json.loads(m["body"]) for m in shown.values()]
done = [b for b in bodies if b["type"] == "job.completed"]
assert len(done) == 20 and len([b for b in bodies if b["type"] == "batch.completed"]) == 1
# Every job's completion, once.
jobs = {b["data"]["job"] for b in done}
assert len(jobs) == 20, jobs
batch = [b for b in bodies if b["type"] == "batch.completed"][0]["data"]
assert batch["batch"] == "b1" and batch["total"] == 20 and batch["done"] == 20, batch
# The per-host cap: never more than 8 requests at once, and concurrency was used.
peak = max(r["concurrent"] for r in log)
assert 4 <= peak <= 8, peak
print("21 delivered once each, peak concurrency", peak)
PYEOF
assert_eq 21 "$(received "r['accepted'] and not r['dup']")" "accepted ids"

# ---- --exit-when-idle waits for its deliveries ----------------------------------------------
note "--exit-when-idle also waits for the deliveries its own jobs caused"
rules ''
jobs b5 3 >"$T/b5.jsonl"
imgq submit --batch b5 --webhook "$R/final" "$T/b5.jsonl" >/dev/null
"$IMGQ_BIN/imgq-worker" --config "$T/config.json" --exit-when-idle --retry-base-ms 50 \
    2>>"$T/idle.log" || fail "the worker failed"
assert_eq 4 "$(received "r['path'] == '/final' and r['accepted']")" \
    "every message of the batch was delivered before the worker exited"
assert_eq 4 "$(count_where "m['state'] == 'delivered'" --batch b5)"

# ---- 410, disabled endpoint, enable, replay --------------------------------------------------
note "410: endpoint disabled, later messages disabled without a request"
start_worker w2
W2=$WORKER_PID
G="$R/gone/hook"
rules '"/gone": {"status": 410}'
jobs b2 2 >"$T/b2.jsonl"
imgq submit --batch b2 --webhook "$G" "$T/b2.jsonl" >/dev/null
wait_until 30 "b2's messages disabled" has_count "m['state'] == 'disabled'" 3 --batch b2
assert_contains "$(imgq webhooks disabled)" "$G" "imgq webhooks disabled"
hits=$(received "r['path'] == '/gone/hook'")
((hits >= 1 && hits <= 3)) || fail "expected 1 to 3 requests to the gone endpoint, got $hits"
jobs b3 1 >"$T/b3.jsonl"
imgq submit --batch b3 --webhook "$G" "$T/b3.jsonl" >/dev/null
wait_until 30 "b3's messages disabled" has_count "m['state'] == 'disabled'" 2 --batch b3
assert_eq "$hits" "$(received "r['path'] == '/gone/hook'")" "nothing sent to a disabled endpoint"
b3id=$(msgs --batch b3 | head -n 1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
assert_eq "0 endpoint disabled" "$(field "$b3id" "m['attempts'], m['last']" | tr -d "(),'")"
rules ''
# Replayed while still disabled: warned, and disabled again.
out=$(imgq webhooks replay "$b3id" 2>&1)
assert_contains "$out" "is disabled"
assert_contains "$out" "replayed 1 messages"
wait_until 10 "disabled again" has_count "m['state'] == 'disabled'" 2 --batch b3
out=$(imgq webhooks enable "$G")
assert_contains "$out" "enabled $G"
out=$(imgq webhooks enable "$G" 2>&1) && fail "enabling twice succeeded"
assert_contains "$out" "is not disabled"
assert_eq "" "$(imgq webhooks disabled)" "no endpoint disabled any more"
out=$(imgq webhooks replay --state disabled)
assert_eq "replayed 5 messages" "$out"
wait_until 30 "b2 and b3 delivered after replay" has_count \
    "m['state'] == 'delivered' and m['batch'] in ('b2', 'b3')" 5
assert_eq 5 "$(received "r['path'] == '/gone/hook' and r['status'] == 200")" \
    "the replayed messages, same ids as the ones refused with 410"
assert_eq 1 "$(field "$b3id" "m['attempts']")" "replay restarts the attempt count"

# ---- 3xx, retry-after, abort ---------------------------------------------------------------
note "3xx not followed; retry-after honoured; abort-message"
date600=$(python3 -c 'import email.utils,time; print(email.utils.formatdate(time.time() + 600, usegmt=True))')
FAILING="\"/moved\": {\"status\": 301, \"location\": \"$R/elsewhere\"},
         \"/busy\": {\"status\": 429, \"retry_after\": \"120\"},
         \"/busydate\": {\"status\": 503, \"retry_after\": \"$date600\"},
         \"/abort\": {\"status\": 500, \"abort\": true}"
rules ''
for p in moved busy busydate abort; do
    one_job "$R/$p/hook"
done >"$T/b4.jsonl"
imgq submit --batch b4 "$T/b4.jsonl" >/dev/null
wait_until 30 "b4's first attempts" has_count "m['attempts'] >= 1" 4 --batch b4
id_of() { msgs --batch b4 | python3 -c "
import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m['url'].endswith('/$1/hook'): print(m['id'])"; }
moved=$(id_of moved)
busy=$(id_of busy)
busydate=$(id_of busydate)
abort=$(id_of abort)
assert_eq "pending 301 5000" "$(field "$moved" "m['state'], m['last'], m['attempt_log'][0]['next'] - m['attempt_log'][0]['t']" | tr -d "(),'")"
assert_contains "$(field "$moved" "m['attempt_log'][0]['error']")" "not followed"
assert_eq 0 "$(received "r['path'].startswith('/elsewhere')")" "the redirect was not followed"
assert_eq "pending 429 120000" "$(field "$busy" "m['state'], m['last'], m['attempt_log'][0]['next'] - m['attempt_log'][0]['t']" | tr -d "(),'")"
d=$(field "$busydate" "m['attempt_log'][0]['next'] - m['attempt_log'][0]['t']")
((d >= 570000 && d <= 600000)) || fail "retry-after as an HTTP date 600 s ahead gave a delay of $d ms"
assert_eq "failed 500 1" "$(field "$abort" "m['state'], m['last'], m['attempts']" | tr -d "(),'")"

# ---- kill -9 mid-delivery; SIGTERM lets a delivery finish -----------------------------------
note "kill -9 mid-delivery: re-sent after the lease under the same webhook-id"
rules '"/slow": {"hold_ms": 3000}'
one_job "$R/slow/hook" >"$T/b6.jsonl"
imgq submit --batch b6 "$T/b6.jsonl" >/dev/null
wait_until 30 "the slow delivery arrives" received_is 1 "r['path'] == '/slow/hook'"
slow=$(python3 -c "
import json,sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    if r['path'] == '/slow/hook': print(r['id'])" "$LOG")
kill_pid KILL "$W2"
assert_eq "pending 0" "$(field "$slow" "m['state'], m['attempts']" | tr -d "(),'")" \
    "a crashed worker recorded nothing"
rules ''
start_worker w3
W3=$WORKER_PID
sleep 1.5
assert_eq 1 "$(received "r['path'] == '/slow/hook'")" "not re-sent while the lease holds"
imgq clock --advance 61 >/dev/null
wait_until 20 "the slow message delivered" field_is "$slow" "m['state']" delivered
assert_eq "2 1 1" "$(received "r['id'] == '$slow'") $(received "r['id'] == '$slow' and r['dup']") $(received "r['id'] == '$slow' and r['accepted'] and not r['dup']")" \
    "sent twice under the same id: accepted once, one duplicate"

note "SIGTERM: a delivery in flight gets the grace period"
rules '"/slow2": {"hold_ms": 2000}'
one_job "$R/slow2/hook" >"$T/b7.jsonl"
imgq submit --batch b7 "$T/b7.jsonl" >/dev/null
wait_until 30 "the slow2 delivery arrives" received_is 1 "r['path'] == '/slow2/hook'"
kill -TERM "$W3"
st=0
wait_pid "$W3" 15 || st=$?
assert_eq 0 "$st" "the worker stopped cleanly"
assert_eq delivered "$(msgs --batch b7 | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])')" \
    "delivered before the worker exited"

# ---- SSRF, per-endpoint secrets -------------------------------------------------------------
note "a URL the SSRF guard refuses fails with the reason; nothing is connected to"
start_worker w4
W4=$WORKER_PID
one_job "http://127.0.0.2:$TRAP_PORT/ssrf" >"$T/b8.jsonl"
IMGQ_SSRF_ALLOW=127.0.0.0/8 imgq submit --batch b8 "$T/b8.jsonl" >/dev/null
wait_until 30 "the SSRF message failed" has_count "m['state'] == 'failed'" 1 --batch b8
ssrf=$(msgs --batch b8 | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
assert_contains "$(field "$ssrf" "m['last']")" "127.0.0.2 is loopback"
assert_eq 1 "$(field "$ssrf" "m['attempts']")"
assert_eq 0 "$(wc -l <"$T/trap.jsonl")" "nothing connected to the refused address"
python3 -c "import socket; socket.create_connection(('127.0.0.2', $TRAP_PORT), 2).close()"
trap_hit() { [[ "$(wc -l <"$T/trap.jsonl")" == 1 ]]; }
wait_until 30 "the trap notices connections" trap_hit # a deadline, not a wait: a busy machine may take seconds

note "per-endpoint secret from the config file"
one_job "$R/cms/hook" >"$T/b9.jsonl"
imgq submit --batch b9 "$T/b9.jsonl" >/dev/null
wait_until 30 "the CMS message delivered" has_count "m['state'] == 'delivered'" 1 --batch b9
assert_eq 1 "$(received "r['path'] == '/cms/hook' and r['valid'] == {'S1': False, 'S2': False, 'CMS': True} and r['signatures'] == 1")" \
    "signed with the endpoint's secret only"
kill_pid TERM "$W4"

note "secrets: bad ones stop the worker; none means nothing is delivered"
expect_exit2() { # WHAT-STDERR-CONTAINS ENV... -- WORKER-FLAGS...
    local want=$1 out st=0
    shift
    local -a envs=()
    while [[ "$1" != -- ]]; do envs+=("$1"); shift; done
    shift
    out=$(env "${envs[@]}" "$IMGQ_BIN/imgq-worker" --exit-when-idle "$@" 2>&1) || st=$?
    assert_eq 2 "$st" "exit status with $want"
    assert_contains "$out" "$want"
}
expect_exit2 "IMGQ_WEBHOOK_SECRET: secret 1" 'IMGQ_WEBHOOK_SECRET=whsec_%%%' --
expect_exit2 "IMGQ_WEBHOOK_SECRET: secret 2" "IMGQ_WEBHOOK_SECRET=$S1,whsec_" --
expect_exit2 "CMS_SECRET is not set" -u CMS_SECRET -- --config "$T/config.json"
expect_exit2 "CMS_SECRET: secret 1" CMS_SECRET=nope -- --config "$T/config.json"
printf '{"webhooks": {"endpoints": [{"url_prefix": "%s/", "secret_env": "X", "secret": "%s"}]}}\n' "$R" "$S1" >"$T/bad.json"
expect_exit2 "does not belong in a config file" -- --config "$T/bad.json"
before=$(field "$moved" "m['attempts']")
imgq clock --advance 3600 >/dev/null # the moved message is due again
st=0
env -u IMGQ_WEBHOOK_SECRET "$IMGQ_BIN/imgq-worker" --exit-when-idle 2>"$T/nosecret.log" || st=$?
assert_eq 0 "$st" "a worker without a secret exits when idle"
assert_contains "$(cat "$T/nosecret.log")" "no secret is set"
assert_eq "$before pending" "$(field "$moved" "m['attempts'], m['state']" | tr -d "(),'")" \
    "nothing delivered without a secret"

# ---- the CLI ------------------------------------------------------------------------------
note "imgq webhooks list / show / replay errors"
table=$(imgq webhooks list --batch b4)
assert_eq 5 "$(wc -l <<<"$table")" "header and four rows"
assert_match "$(head -n 1 <<<"$table")" '^ID +TYPE +STATE +ATT +NEXT/DELIVERED \(UTC\) +LAST +URL$'
assert_match "$(grep "$abort" <<<"$table")" "^$abort +job.completed +failed +1 +- +500 +$R/abort/hook\$"
assert_eq 2 "$(imgq webhooks list --limit 2 | tail -n +2 | wc -l)" "--limit"
ids_of() { python3 -c 'import json,sys; print(" ".join(sorted(json.loads(l)["id"] for l in sys.stdin)))'; }
pending=$(printf '%s\n' "$moved" "$busy" "$busydate" | sort | tr '\n' ' ')
assert_eq "${pending% }" "$(imgq webhooks list --state pending --json | ids_of)" \
    "--state pending: the three that keep failing"
human=$(imgq webhooks show "$abort")
assert_contains "$human" "state      failed"
assert_contains "$human" "HTTP 500"
assert_contains "$human" "$(field "$abort" "m['body']")"
out=$(imgq webhooks show msg_0_404 2>&1) && fail "show of an unknown id succeeded"
assert_eq "imgq webhooks show: no message msg_0_404" "$out"
out=$(imgq webhooks replay "$abort" msg_0_404 2>&1) && fail "replay of an unknown id succeeded"
assert_contains "$out" "imgq webhooks replay: no message msg_0_404"
assert_eq failed "$(field "$abort" "m['state']")" "a refused replay changes nothing"
assert_status 2 "$IMGQ_BIN/imgq" webhooks replay
assert_status 2 "$IMGQ_BIN/imgq" webhooks replay --state gone
assert_status 2 "$IMGQ_BIN/imgq" webhooks replay "$abort" --state failed
assert_status 2 "$IMGQ_BIN/imgq" webhooks list --limit 0
assert_status 2 "$IMGQ_BIN/imgq" webhooks frobnicate
assert_status 1 "$IMGQ_BIN/imgq" webhooks enable "$R/never"
out=$(imgq webhooks replay --state failed --since +1h)
assert_eq "replayed 0 messages" "$out" "--since in the future"

note "retention: ended messages are deleted with the jobs, pending ones kept"
imgq retention --set 1d >/dev/null
imgq clock --advance 172800 >/dev/null
"$IMGQ_BIN/imgq-worker" --exit-when-idle 2>>"$T/retention.log" || fail "the worker failed"
assert_status 3 "$IMGQ_BIN/imgq" webhooks show "$first"
assert_status 3 "$IMGQ_BIN/imgq" webhooks show "$abort"
assert_eq pending "$(field "$moved" "m['state']")" "a pending message is kept"
assert_eq "${pending% }" "$(msgs | ids_of)" "only the pending messages are left"

echo "PASS webhook_delivery"
