#!/usr/bin/env bash
# Asynchronous providers end to end (DashScope, Replicate, fal.ai, Black Forest Labs) through
# the real adapters, a real worker, Redis and S3, against imgq-sim:
#   - success: the task goes pending -> running -> done, its images are downloaded and stored,
#     and the cost is the catalog's per-image price times the images the provider reported;
#   - each failure: moderation as a task state (content policy, $0, no retry), a task failing
#     while polled (server: retried, then failed), a poll failing in transit (polled again),
#     refused credentials (auth);
#   - a worker killed with kill -9 mid-poll: another worker finishes its jobs by polling the
#     same tasks, without a second submission to any provider.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/env.sh"
imgq_env_setup
start_redis
start_s3 imgq-async
start_sim --latency-ms 600
SIM="http://127.0.0.1:$SIM_PORT" # start_sim points every provider's base URL at it

stat_of() { # stat_of API FIELD
    curl -s "$SIM/sim/stats" | python3 -c "import json,sys; print(json.load(sys.stdin)['requests']['$1']['$2'])"
}
submit() { # submit BATCH JSONL-TEXT
    printf '%s\n' "$2" >"$IMGQ_TMP/$1.jsonl"
    "$IMGQ_BIN/imgq" submit --batch "$1" "$IMGQ_TMP/$1.jsonl" >/dev/null
}
work() { # work LOG [flags...]: one worker until the queue is idle
    local log=$1
    shift
    "$IMGQ_BIN/imgq-worker" --exit-when-idle --poll-ms 100 --retry-base-ms 50 --retry-max-ms 200 \
        --log-level debug "$@" 2>"$IMGQ_TMP/$log.log"
}
field() { # field RESULTS-LINE-GREP KEY: a job's field from batch results
    grep "\"client_id\":\"$1\"" | grep -o "\"$2\":[^,}]*" | head -1 | cut -d: -f2- | tr -d '"'
}
show() { # show CLIENT-ID BATCH: imgq job show of a job named by its client id
    "$IMGQ_BIN/imgq" job show "$("$IMGQ_BIN/imgq" batch results "$2" | field "$1" id || true)"
}
price() { # the catalog's per-image price of a model, micro-USD
    python3 -c "import json; print(json.load(open('$IMGQ_SOURCE_DIR/deploy/catalog.json'))['models']['$1']['prices']['per_image'])"
}

# --- success through every adapter ---------------------------------------------------------
submit ok "$(
    cat <<'EOF'
{"id":"dash","prompt":"a linen tote bag","model":"qwen-image-2.0","size":"1024x1024","n":2}
{"id":"rep","prompt":"a walnut desk","model":"flux-schnell","size":"1024x1024","n":2,"seed":7}
{"id":"fal","prompt":"a wool scarf","model":"fal-flux-dev","size":"1024x1024"}
{"id":"bfl","prompt":"a copper kettle","model":"flux-1.1-pro","size":"1024x1024","n":2}
EOF
)"
work ok
r=$("$IMGQ_BIN/imgq" batch results ok)
for id in dash rep fal bfl; do
    assert_eq "done" "$(field "$id" state <<<"$r")" "job $id is done"
done
assert_eq "$((2 * $(price qwen-image-2.0)))" "$(field dash cost_micros <<<"$r")" "DashScope: 2 x per-image"
assert_eq "$((2 * $(price flux-schnell)))" "$(field rep cost_micros <<<"$r")" "Replicate: 2 x per-image"
fal=$(python3 -c "import json; print(json.load(open('$IMGQ_SOURCE_DIR/deploy/catalog.json'))['models']['fal-flux-dev']['image_prices']['1024x1024']['auto'])")
assert_eq "$fal" "$(field fal cost_micros <<<"$r")" "fal: the 1024x1024 price"
assert_eq "$((2 * $(price flux-1.1-pro)))" "$(field bfl cost_micros <<<"$r")" "BFL: 2 calls x per-image"
assert_eq "7" "$(grep -o '"key":"[^"]*"' <<<"$r" | sort -u | wc -l)" "seven stored objects"
objects=$(find "$IMGQ_TMP" -path '*imgq-async/images/*' -name '*._S3rver_object' ! -name '*.json._S3rver_object' | wc -l)
assert_eq "7" "$objects" "seven objects in S3"
# One submission per call (BFL returns one image per call: n=2 is two tasks), then polls.
assert_eq "1" "$(stat_of dashscope submits)" "one DashScope submission"
assert_eq "1" "$(stat_of replicate submits)" "one Replicate submission"
assert_eq "1" "$(stat_of fal submits)" "one fal submission"
assert_eq "2" "$(stat_of bfl submits)" "two BFL submissions"
[ "$(stat_of dashscope polls)" -ge 3 ] || fail "DashScope was polled $(stat_of dashscope polls) times"
[ "$(stat_of files total)" -ge 7 ] || fail "images were not downloaded from the provider's URLs"
# The task was seen pending, then running, then done.
log=$(cat "$IMGQ_TMP/ok.log")
assert_match "$log" "call 1/1: task PENDING [0-9a-f-]+"        # DashScope: a task id
assert_match "$log" "call 1/1: task RUNNING [0-9a-f-]+"
assert_match "$log" "call 1/1: task IN_(QUEUE|PROGRESS) http://"  # fal: its status URL
assert_match "$log" "call 2/2: task Pending http://.*get_result"  # BFL: its polling URL
assert_not_contains "$log" "DASHSCOPE_API_KEY"
assert_not_contains "$log" "$DASHSCOPE_API_KEY"

# --- failures ------------------------------------------------------------------------------
submit bad "$(
    cat <<'EOF'
{"id":"dmod","prompt":"a shirt [sim:moderation]","model":"qwen-image-2.0","size":"1024x1024"}
{"id":"bmod","prompt":"a shirt [sim:moderation]","model":"flux-1.1-pro","size":"1024x1024"}
{"id":"rmod","prompt":"a shirt [sim:moderation]","model":"flux-schnell","size":"1024x1024"}
{"id":"fmod","prompt":"a shirt [sim:moderation]","model":"fal-flux-dev","size":"1024x1024"}
{"id":"dfail","prompt":"a hat [sim:task-fail]","model":"qwen-image-2.0","size":"1024x1024","max_attempts":2}
{"id":"bfail","prompt":"a hat [sim:task-fail]","model":"flux-1.1-pro","size":"1024x1024","max_attempts":2}
{"id":"rfail","prompt":"a hat [sim:task-fail]","model":"flux-schnell","size":"1024x1024","max_attempts":2}
{"id":"d503","prompt":"a mug [sim:poll-503]","model":"qwen-image-2.0","size":"1024x1024"}
{"id":"r503","prompt":"a mug [sim:poll-503]","model":"flux-schnell","size":"1024x1024"}
EOF
)"
before_dash=$(stat_of dashscope submits)
work bad
r=$("$IMGQ_BIN/imgq" batch results bad)
for id in dmod bmod rmod fmod; do
    assert_eq "failed" "$(field "$id" state <<<"$r")" "$id: moderation fails the job"
    assert_eq "1" "$(field "$id" attempts <<<"$r")" "$id: content policy is not retried"
    assert_eq "0" "$(field "$id" cost_micros <<<"$r")" "$id: a moderated task costs nothing"
done
assert_contains "$(show dmod bad)" "content_policy"
assert_contains "$(show dmod bad)" "DataInspectionFailed"
for id in dfail bfail rfail; do
    assert_eq "failed" "$(field "$id" state <<<"$r")" "$id: a task failing while polled fails"
    assert_eq "2" "$(field "$id" attempts <<<"$r")" "$id: a failed task is retried (server)"
done
assert_contains "$(show bfail bad)" '"class": "server"'
for id in d503 r503; do
    assert_eq "done" "$(field "$id" state <<<"$r")" "$id: a poll failing in transit is polled again"
    assert_eq "1" "$(field "$id" attempts <<<"$r")" "$id: within one attempt"
done
assert_match "$(cat "$IMGQ_TMP/bad.log")" "poll failed: server \(503\); polling again"
# dmod, dfail x2, d503: one submission each, none for the transient poll failure.
assert_eq "$((before_dash + 4))" "$(stat_of dashscope submits)" "DashScope submissions"

# Credentials refused: auth, not retried, and the key never in the log.
submit auth '{"id":"noauth","prompt":"a lamp","model":"qwen-image-2.0","size":"1024x1024"}'
DASHSCOPE_API_KEY= work auth
r=$("$IMGQ_BIN/imgq" batch results auth)
assert_eq "failed" "$(field noauth state <<<"$r")" "missing key fails"
assert_contains "$(show noauth auth)" '"class": "auth"'

# --- a worker killed mid-poll --------------------------------------------------------------
kill_pid TERM "$SIM_PID"
start_sim --latency-ms 10000 # tasks long enough that the kill lands mid-poll, even on a busy host
SIM="http://127.0.0.1:$SIM_PORT"
submit kill "$(
    cat <<'EOF'
{"id":"k1","prompt":"a linen apron","model":"qwen-image-2.0","size":"1024x1024"}
{"id":"k2","prompt":"a linen apron","model":"flux-schnell","size":"1024x1024"}
{"id":"k3","prompt":"a linen apron","model":"fal-flux-dev","size":"1024x1024"}
{"id":"k4","prompt":"a linen apron","model":"flux-1.1-pro","size":"1024x1024"}
{"id":"k5","prompt":"a cotton apron","model":"flux-1.1-pro","size":"1024x1024","n":2}
EOF
)"
handles() { # the poll handles recorded on all jobs
    local k n=0
    for k in $(redis-cli -p "$REDIS_PORT" --scan --pattern 'imgq:{default}:j:*'); do
        n=$((n + $(redis-cli -p "$REDIS_PORT" hkeys "$k" 2>/dev/null | grep -c '^poll:' || true)))
    done
    echo "$n"
}
handles0=$(handles)
"$IMGQ_BIN/imgq-worker" --poll-ms 100 --lease-ms 1500 --log-level debug 2>"$IMGQ_TMP/killed.log" &
victim=$!
track_pid "$victim"
submits() { echo $(($(stat_of dashscope submits) + $(stat_of replicate submits) + $(stat_of fal submits) + $(stat_of bfl submits))); }
all_submitted() { [ "$(submits)" -eq 6 ]; } # k5: BFL makes one image per task, so two
wait_until 20 "the first worker's six submissions" all_submitted
# Answered (Replicate holds its answer up to 1 s) and the six handles recorded on the jobs
# (HSET poll:<call> by the poll script; the earlier batches' jobs keep theirs), and polling:
# conditions, not a fixed sleep, which a loaded machine could outlast.
recorded_and_polling() { [ "$(handles)" -eq $((handles0 + 6)) ] && [ "$(stat_of dashscope polls)" -ge 1 ]; }
wait_until 30 "the first worker's six task handles recorded, and polling" recorded_and_polling
kill_pid KILL "$victim"
done_at_kill=$("$IMGQ_BIN/imgq" batch status kill --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["counts"].get("done", 0))')
[ "$done_at_kill" -lt 5 ] || fail "every job finished before the kill: nothing was left mid-poll"
work takeover --lease-ms 1500
r=$("$IMGQ_BIN/imgq" batch results kill)
for id in k1 k2 k3 k4 k5; do
    assert_eq "done" "$(field "$id" state <<<"$r")" "$id finished after its worker was killed"
done
assert_eq "6" "$(submits)" "no task was submitted a second time"
assert_contains "$(cat "$IMGQ_TMP/takeover.log")" "resuming the provider's task"
assert_eq "$((2 * $(price flux-1.1-pro)))" "$(field k5 cost_micros <<<"$r")" "the resumed tasks are billed once"
echo "PASS async_providers"
