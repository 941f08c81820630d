#!/usr/bin/env bash
# sim_async.sh - imgq-sim speaks the four asynchronous provider APIs: DashScope's task API,
# Replicate's predictions (with Prefer: wait), fal.ai's queue and Black Forest Labs' FLUX API.
# For each: submit, the state progression (queued -> running -> done) over --latency-ms, the
# image file (a PNG of the asked size from /sim/files/), every error class in the provider's
# shape (auth, 429 with a retry hint, 500, invalid input), moderation as a task state,
# [sim:task-fail] while polling, [sim:poll-503] once; then /sim/fail per model (also on the
# OpenAI, Gemini and Seedream endpoints), the per-endpoint counters and /sim/reset.
#
# Needs bash, curl, od and python3 (to read JSON).  Starts its own simulators on ports the
# kernel picks (--port 0) and removes everything it made on exit.
# shellcheck disable=SC2154 # PORT_<name> and PID_<name> are set by start_sim (printf -v)
set -euo pipefail

SIM_TEST=async
source "$(dirname "${BASH_SOURCE[0]}")/../lib/sim_checks.sh"

# req METHOD URL [curl args...]: status echoed; body in $TMP/body, headers in $TMP/head.
req() {
    local m=$1 u=$2
    shift 2
    curl -sS -X "$m" -o "$TMP/body" -D "$TMP/head" -w '%{http_code}' "$@" "$u"
}
# j EXPR [FILE]: a Python expression over the JSON document d (default $TMP/body).
j() {
    python3 -c 'import json,sys; d=json.load(open(sys.argv[2])); v=eval(sys.argv[1]); print(json.dumps(v) if isinstance(v,(dict,list,bool)) or v is None else v)' \
        "$1" "${2:-$TMP/body}" 2>/dev/null || echo "(no such value)"
}
be32() { od -An -tu1 -j "$2" -N4 "$1" | awk '{print $1*16777216 + $2*65536 + $3*256 + $4}'; }
# expect_png NAME URL WxH: the URL serves a PNG of that size.
expect_png() {
    local code
    code=$(curl -sS -o "$TMP/img.png" -D "$TMP/imghead" -w '%{http_code}' "$2")
    expect_eq "$1 file status" "$code" 200
    expect_has "$1 file type" "$TMP/imghead" "Content-Type: image/png"
    expect_eq "$1 png signature" "$(od -An -tx1 -N8 "$TMP/img.png" | tr -d ' \n')" 89504e470d0a1a0a
    expect_eq "$1 png size" "$(be32 "$TMP/img.png" 16)x$(be32 "$TMP/img.png" 20)" "$3"
}
now_ms() { echo $(($(date +%s%N) / 1000000)); }
# submitted CODE-VAR SUBMIT-FUNCTION ARGS...: runs the submit, its HTTP status into CODE-VAR;
# T0 and T1 = the wall-clock ms before its request and after its answer: the simulator created
# the task in between.
submitted() {
    local -n code_=$1
    shift
    T0=$(now_ms)
    # shellcheck disable=SC2034 # code_ is a nameref: this sets the caller's variable
    code_=$("$@")
    T1=$(now_ms)
}
# age_window: LO and HI bound the task's age (ms) when the simulator answered a request made
# between $1 and $2 (ms) for the task submitted between T0 and T1.  The simulator's clock is the
# loop's, truncated to the ms: 2 ms of slack either side.
age_window() {
    LO=$(($1 - T1 - 2))
    HI=$(($2 - T0 + 2))
}
# progression WHAT LATENCY-MS POLL ID QUEUED RUNNING FINAL: polls POLL ID (every 0.1 s) until
# it prints FINAL or another end state, and checks each answer against the time it was given.
# A task is QUEUED for the first third of its latency, RUNNING until the latency is up, FINAL
# after (sim_task_phase).  A poll that the machine's load makes late may see a later phase
# than an idle machine would, so no answer is compared with a fixed expectation: each must be
# a phase the task was in at some moment between the poll's request and its answer (given
# T0/T1 of the submit); the phases must come in order; the last must be FINAL.  Every phase
# the polls' timing pins down is so checked (on an idle machine the first poll is well inside
# QUEUED and a later one inside RUNNING).  The states seen go to stderr.
progression() {
    local what=$1 lat=$2 fn=$3 id=$4 q=$5 r=$6 d=$7 st ps pr seen="" prev="" rank last=0 n=0 errs=""
    while ((n < 3000)); do
        n=$((n + 1))
        ps=$(now_ms)
        st=$("$fn" "$id")
        pr=$(now_ms)
        age_window "$ps" "$pr"
        case $st in "$q") rank=1 ;; "$r") rank=2 ;; "$d") rank=3 ;; *) rank=9 ;; esac
        [[ $st == "${prev:-}" ]] || seen+="${seen:+ }$st"
        prev=$st
        if ((rank == 9)); then
            errs+=" '$st' at age ${LO}..${HI} ms is none of $q/$r/$d;"
            break
        fi
        # The phases the task was in while the age went from LO to HI.
        local allowed=""
        ((LO * 3 < lat)) && allowed+=" 1"
        ((HI * 3 >= lat && LO < lat)) && allowed+=" 2"
        ((HI >= lat)) && allowed+=" 3"
        [[ " $allowed " == *" $rank "* ]] || errs+=" '$st' at age ${LO}..${HI} ms (latency $lat);"
        ((rank >= last)) || errs+=" '$st' after a later phase;"
        last=$rank
        ((rank == 3)) && break
        sleep 0.1
    done
    ((last == 3)) || errs+=" never reached $d (last: $st);"
    echo "$what: states seen: $seen" >&2
    if [[ -z $errs ]]; then ok; else bad "$what progression:$errs seen: $seen"; fi
}

start_sim main --seed 42 --latency-ms 1500 --retry-after 7
B=http://127.0.0.1:$PORT_main

# ================================ DashScope ================================================
DS_SUBMIT=$B/api/v1/services/aigc/text2image/image-synthesis
DS=(-H 'Authorization: Bearer ds-test' -H 'X-DashScope-Async: enable')
ds_body() { printf '{"model":"wan2.2-t2i-flash","input":{"prompt":"%s"},"parameters":{"size":"%s","n":%s}}' "$1" "${2:-512*384}" "${3:-1}"; }
ds_submit() { req POST "$DS_SUBMIT" "${DS[@]}" --data-binary "$1"; }
ds_poll() {
    local code
    code=$(req GET "$B/api/v1/tasks/$1" -H 'Authorization: Bearer ds-test')
    if [[ $code == 200 ]]; then j 'd["output"]["task_status"]'; else echo "http:$code"; fi
}

submitted code ds_submit "$(ds_body 'a red fox [sim:latency:6000]' '512*384' 2)"
expect_eq "ds submit" "$code" 200
cp "$TMP/body" "$TMP/submit.json"
id=$(j 'd["output"]["task_id"]')
progression "ds" 6000 ds_poll "$id" PENDING RUNNING SUCCEEDED
expect_eq "ds submit status" "$(j 'd["output"]["task_status"]' "$TMP/submit.json")" PENDING
expect_eq "ds submit keys" "$(j 'sorted(d)' "$TMP/submit.json")" '["output", "request_id"]'
expect_eq "ds image_count" "$(j 'd["usage"]["image_count"]')" 2
expect_eq "ds metrics" "$(j 'd["output"]["task_metrics"]')" '{"TOTAL": 2, "SUCCEEDED": 2, "FAILED": 0}'
expect_eq "ds results" "$(j 'len(d["output"]["results"])')" 2
expect_eq "ds times" "$(j '[k for k in ("submit_time","scheduled_time","end_time") if k in d["output"]]')" '["submit_time", "scheduled_time", "end_time"]'
expect_eq "ds actual_prompt" "$(j 'd["output"]["results"][0]["actual_prompt"]')" "a red fox [sim:latency:6000]"
url=$(j 'd["output"]["results"][1]["url"]')
expect_eq "ds url" "${url%/*}" "$B/sim/files"
expect_png "ds" "$url" 512x384

code=$(req POST "$DS_SUBMIT" -H 'X-DashScope-Async: enable' --data-binary "$(ds_body x)")
expect_eq "ds no key" "$code" 401
expect_eq "ds no key code" "$(j 'd["code"]')" InvalidApiKey
expect_eq "ds error shape" "$(j 'sorted(d)')" '["code", "message", "request_id"]'
code=$(req POST "$DS_SUBMIT" -H 'Authorization: Bearer ds-test' --data-binary "$(ds_body x)")
expect_eq "ds no async header" "$code" 403
expect_eq "ds no async code" "$(j 'd["code"]')" AccessDenied
expect_has "ds no async message" "$TMP/body" "does not support synchronous calls"
expect_eq "ds bad size" "$(ds_submit "$(ds_body x '100*100')")" 400
expect_eq "ds bad size code" "$(j 'd["code"]')" InvalidParameter
expect_eq "ds bad n" "$(ds_submit "$(ds_body x '512*512' 5)")" 400
expect_eq "ds no prompt" "$(ds_submit '{"model":"wan2.2-t2i-flash","input":{}}')" 400
expect_eq "ds 429" "$(ds_submit "$(ds_body 'x [sim:429]')")" 429
expect_eq "ds 429 code" "$(j 'd["code"]')" Throttling.RateQuota
expect_has "ds 429 retry" "$TMP/head" "Retry-After: 7"
expect_eq "ds 500" "$(ds_submit "$(ds_body 'x [sim:500]')")" 500
expect_eq "ds 500 code" "$(j 'd["code"]')" InternalError
expect_eq "ds prompt-blocked" "$(ds_submit "$(ds_body 'x [sim:prompt-blocked]')")" 400
expect_eq "ds prompt-blocked code" "$(j 'd["code"]')" DataInspectionFailed

submitted code ds_submit "$(ds_body 'x [sim:moderation] [sim:latency:4000]')"
expect_eq "ds moderation submit" "$code" 200
expect_eq "ds moderation submit status" "$(j 'd["output"]["task_status"]')" PENDING
id=$(j 'd["output"]["task_id"]')
progression "ds moderation" 4000 ds_poll "$id" PENDING RUNNING FAILED
expect_eq "ds moderation code" "$(j 'd["output"]["code"]')" DataInspectionFailed
expect_eq "ds moderation no results" "$(j '"results" in d["output"]')" false
expect_eq "ds moderation no file" "$(curl -s -o /dev/null -w '%{http_code}' "$B/sim/files/$id-0.png")" 404
submitted code ds_submit "$(ds_body 'x [sim:task-fail] [sim:latency:4000]')"
id=$(j 'd["output"]["task_id"]')
progression "ds task-fail" 4000 ds_poll "$id" PENDING RUNNING FAILED
expect_eq "ds task-fail code" "$(j 'd["output"]["code"]')" InternalError
ds_submit "$(ds_body 'x [sim:poll-503] [sim:latency:0]')" >/dev/null
id=$(j 'd["output"]["task_id"]')
expect_eq "ds poll-503 first" "$(ds_poll "$id")" http:503
expect_eq "ds poll-503 code" "$(j 'd["code"]')" ServiceUnavailable
expect_eq "ds poll-503 second" "$(ds_poll "$id")" SUCCEEDED
expect_eq "ds unknown task" "$(ds_poll 0000-nope)" UNKNOWN

# ================================ Replicate ================================================
RP=(-H 'Authorization: Bearer r8_test')
rp_create() { req POST "$B/v1/models/black-forest-labs/flux-schnell/predictions" "${RP[@]}" "$@"; }
rp_poll() {
    local code
    code=$(req GET "$B/v1/predictions/$1" "${RP[@]}")
    if [[ $code == 200 ]]; then j 'd["status"]'; else echo "http:$code"; fi
}

submitted code rp_create --data-binary '{"input":{"prompt":"a red fox [sim:latency:6000]","num_outputs":2,"aspect_ratio":"16:9","output_format":"png"}}'
expect_eq "rp create" "$code" 201
cp "$TMP/body" "$TMP/submit.json"
id=$(j 'd["id"]')
progression "rp" 6000 rp_poll "$id" starting processing succeeded
cp "$TMP/body" "$TMP/done.json"
S1=$TMP/submit.json
expect_eq "rp create status" "$(j 'd["status"]' "$S1")" starting
expect_eq "rp create output" "$(j 'd["output"]' "$S1")" null
expect_eq "rp keys" "$(j 'sorted(k for k in d if k in ("id","model","version","input","output","logs","error","status","created_at","started_at","completed_at","urls","metrics"))' "$S1")" \
    '["completed_at", "created_at", "error", "id", "input", "logs", "metrics", "model", "output", "started_at", "status", "urls", "version"]'
expect_eq "rp model" "$(j 'd["model"]' "$S1")" black-forest-labs/flux-schnell
expect_eq "rp urls.get" "$(j 'd["urls"]["get"]' "$S1")" "$B/v1/predictions/$id"
cp "$TMP/done.json" "$TMP/body"
expect_eq "rp outputs" "$(j 'len(d["output"])')" 2
expect_eq "rp metrics" "$(j 'sorted(d["metrics"])')" '["image_count", "predict_time", "total_time"]'
expect_eq "rp completed_at" "$(j 'd["completed_at"] is not None and d["started_at"] is not None')" true
expect_png "rp" "$(j 'd["output"][0]')" 1344x768

code=$(req POST "$B/v1/models/a/b/predictions" --data-binary '{"input":{"prompt":"x"}}')
expect_eq "rp no key" "$code" 401
expect_eq "rp no key title" "$(j 'd["title"]')" Unauthenticated
expect_eq "rp 422" "$(rp_create --data-binary '{"input":{"prompt":"x","width":9}}')" 422
expect_eq "rp 422 field" "$(j 'd["invalid_fields"][0]["field"]')" input.width
expect_eq "rp 422 shape" "$(j 'sorted(d)')" '["detail", "invalid_fields", "status", "title"]'
expect_eq "rp 422 no prompt" "$(rp_create --data-binary '{"input":{}}')" 422
expect_eq "rp 429" "$(rp_create --data-binary '{"input":{"prompt":"x [sim:429]"}}')" 429
expect_eq "rp 429 detail" "$(j 'd["detail"]')" "Request was throttled. Your rate limit resets in ~7s."
expect_has "rp 429 retry" "$TMP/head" "Retry-After: 7"
expect_eq "rp 500" "$(rp_create --data-binary '{"input":{"prompt":"x [sim:500]"}}')" 500
expect_eq "rp 500 status member" "$(j 'd["status"]')" 500

submitted code rp_create --data-binary '{"input":{"prompt":"x [sim:moderation] [sim:latency:4000]"}}'
expect_eq "rp moderation status" "$(j 'd["status"]')" starting
progression "rp moderation" 4000 rp_poll "$(j 'd["id"]')" starting processing failed
expect_has "rp moderation error" "$TMP/body" '"error":"NSFW content detected'
expect_eq "rp moderation output" "$(j 'd["output"]')" null
submitted code rp_create --data-binary '{"input":{"prompt":"x [sim:task-fail] [sim:latency:4000]"}}'
progression "rp task-fail" 4000 rp_poll "$(j 'd["id"]')" starting processing failed
expect_eq "rp task-fail error" "$(j 'd["error"]')" "Prediction interrupted; please retry (code: PA)"
rp_create --data-binary '{"input":{"prompt":"x [sim:poll-503] [sim:latency:0]"}}' >/dev/null
id=$(j 'd["id"]')
expect_eq "rp poll-503 first" "$(rp_poll "$id")" http:503
expect_has "rp poll-503 retry" "$TMP/head" "Retry-After: 7"
expect_eq "rp poll-503 second" "$(rp_poll "$id")" succeeded
expect_eq "rp unknown" "$(rp_poll nope)" http:404

# Prefer: wait: a short prediction comes back finished, when it ends (not when the 60 s wait
# is up); a long one comes back when the wait is up, not finished.  The upper bounds sit
# far from the wrong answer's time, so a slow machine does not fail them.
t0=$(date +%s%N)
expect_eq "rp wait short" "$(rp_create -H 'Prefer: wait' --data-binary '{"input":{"prompt":"x [sim:latency:400]"}}')" 201
ms=$((($(date +%s%N) - t0) / 1000000))
expect_eq "rp wait short status" "$(j 'd["status"]')" succeeded
expect_eq "rp wait short output" "$(j 'len(d["output"])')" 1
if ((ms >= 380 && ms < 30000)); then ok; else bad "rp wait short: answered in $ms ms, want about 400 (not 60000)"; fi
t0=$(date +%s%N)
expect_eq "rp wait long" "$(rp_create -H 'Prefer: wait=1' --data-binary '{"input":{"prompt":"x [sim:latency:60000]"}}')" 201
ms=$((($(date +%s%N) - t0) / 1000000))
expect_eq "rp wait long status" "$(j 'd["status"]')" starting # queued for 20 s
expect_eq "rp wait long output" "$(j 'd["output"]')" null
if ((ms >= 980 && ms < 30000)); then ok; else bad "rp wait long: answered in $ms ms, want about 1000 (not 60000)"; fi
# rp_submits: the simulator's count of Replicate submits (it counts a request as it reads it).
rp_submits() { curl -sS "$1/sim/stats" >"$TMP/stats.json" && j 'd["requests"]["replicate"]["submits"]' "$TMP/stats.json"; }
# wait_submits URL COUNT: until the simulator has read COUNT Replicate submits (60 s at most).
wait_submits() {
    local deadline=$(($(now_ms) + 60000))
    while (($(rp_submits "$1") < $2)); do
        (($(now_ms) < deadline)) || { bad "the simulator did not get the held request"; return 1; }
        sleep 0.05
    done
}
# Holding does not block the loop: once the simulator holds a Prefer: wait=10, /healthz is
# answered while the hold lasts (the held request is still unanswered when it returns).
before=$(rp_submits "$B")
rp_create -H 'Prefer: wait=10' --data-binary '{"input":{"prompt":"held [sim:latency:60000]"}}' >/dev/null &
held=$!
if wait_submits "$B" $((before + 1)); then
    expect_eq "healthz while a Prefer: wait is held" "$(curl -sS -o /dev/null -w '%{http_code}' "$B/healthz")" 200
    if kill -0 "$held" 2>/dev/null; then ok; else bad "healthz was answered only after the held Prefer: wait ended"; fi
fi
wait "$held" || true

# ================================ fal.ai ===================================================
FAL=(-H 'Authorization: Key fal-test')
fal_submit() { req POST "$B/fal/$1" "${FAL[@]}" --data-binary "$2"; }
fal_poll() {
    local code
    code=$(req GET "$1" "${FAL[@]}")
    case $code in 200 | 202) echo "$(j 'd["status"]')" ;; *) echo "http:$code" ;; esac
}

submitted code fal_submit fal-ai/flux/dev '{"prompt":"a red fox [sim:latency:60000]","image_size":{"width":640,"height":480},"num_images":1,"seed":7,"guidance_scale":3.5,"num_inference_steps":28}'
expect_eq "fal submit" "$code" 200
cp "$TMP/body" "$TMP/submit.json"
expect_eq "fal submit status" "$(j 'd["status"]')" IN_QUEUE
id=$(j 'd["request_id"]')
RU=$B/fal/fal-ai/flux/requests/$id
# The task takes 60 s: these two answers come long before it ends, however slow the machine.
expect_eq "fal queued code" "$(req GET "$RU/status" "${FAL[@]}")" 202
expect_eq "fal early result" "$(req GET "$RU" "${FAL[@]}")" 400
expect_has "fal early result detail" "$TMP/body" '{"detail":"Request is still in progress"}'
expect_eq "fal early cancel" "$(req PUT "$RU/cancel" "${FAL[@]}")" 202 # out of the queue below
submitted code fal_submit fal-ai/flux/dev '{"prompt":"a red fox [sim:latency:6000]","image_size":{"width":640,"height":480},"num_images":1,"seed":7,"guidance_scale":3.5,"num_inference_steps":28}'
cp "$TMP/body" "$TMP/submit.json"
id=$(j 'd["request_id"]')
RU=$B/fal/fal-ai/flux/requests/$id
progression "fal" 6000 fal_poll "$RU/status" IN_QUEUE IN_PROGRESS COMPLETED
S1=$TMP/submit.json
expect_eq "fal status_url" "$(j 'd["status_url"]' "$S1")" "$B/fal/fal-ai/flux/requests/$id/status"
expect_eq "fal response_url" "$(j 'd["response_url"]' "$S1")" "$B/fal/fal-ai/flux/requests/$id"
expect_eq "fal cancel_url" "$(j 'd["cancel_url"]' "$S1")" "$B/fal/fal-ai/flux/requests/$id/cancel"
expect_eq "fal queue_position" "$(j 'd["queue_position"]' "$S1")" 0
expect_eq "fal completed code" "$(req GET "$RU/status" "${FAL[@]}")" 200
expect_eq "fal completed response_url" "$(j 'd["response_url"]')" "$RU"
expect_eq "fal result" "$(req GET "$RU" "${FAL[@]}")" 200
expect_eq "fal result image" "$(j '[d["images"][0][k] for k in ("width","height","content_type")]')" '[640, 480, "image/png"]'
expect_eq "fal result seed" "$(j 'd["seed"]')" 7
expect_eq "fal result nsfw" "$(j 'd["has_nsfw_concepts"]')" '[false]'
expect_eq "fal result timings" "$(j '"inference" in d["timings"]')" true
expect_png "fal" "$(j 'd["images"][0]["url"]')" 640x480
# Named sizes; a two-segment model id.
fal_submit fal-ai/flux-pro '{"prompt":"wide [sim:latency:0]","image_size":"landscape_16_9","num_images":2}' >/dev/null
expect_eq "fal two segments" "$(j 'd["response_url"]')" "$B/fal/fal-ai/flux-pro/requests/$(j 'd["request_id"]')"
req GET "$(j 'd["response_url"]')" "${FAL[@]}" >/dev/null
expect_eq "fal landscape_16_9" "$(j '[(i["width"], i["height"]) for i in d["images"]]')" '[[1024, 576], [1024, 576]]'

code=$(req POST "$B/fal/fal-ai/flux/dev" -H 'Authorization: Bearer fal-test' --data-binary '{"prompt":"x"}')
expect_eq "fal bearer is not a key" "$code" 401
expect_has "fal 401 detail" "$TMP/body" "Authentication is required"
expect_eq "fal 422" "$(fal_submit fal-ai/flux/dev '{"prompt":"x","num_images":9}')" 422
expect_eq "fal 422 loc" "$(j 'd["detail"][0]["loc"]')" '["body", "num_images"]'
expect_eq "fal 422 no prompt" "$(fal_submit fal-ai/flux/dev '{}')" 422
expect_eq "fal 429" "$(fal_submit fal-ai/flux/dev '{"prompt":"x [sim:429]"}')" 429
expect_has "fal 429 retry" "$TMP/head" "Retry-After: 7"
expect_eq "fal 500" "$(fal_submit fal-ai/flux/dev '{"prompt":"x [sim:500]"}')" 500

submitted code fal_submit fal-ai/flux/dev '{"prompt":"x [sim:moderation] [sim:latency:4000]"}'
RU=$(j 'd["response_url"]')
progression "fal moderation" 4000 fal_poll "$RU/status" IN_QUEUE IN_PROGRESS COMPLETED
expect_eq "fal moderation result" "$(req GET "$RU" "${FAL[@]}")" 422
expect_eq "fal moderation type" "$(j 'd["detail"][0]["type"]')" content_policy_violation
expect_eq "fal moderation loc" "$(j 'd["detail"][0]["loc"]')" '["body", "prompt"]'
expect_has "fal moderation retryable" "$TMP/head" "X-Fal-Retryable: false"
submitted code fal_submit fal-ai/flux/dev '{"prompt":"x [sim:task-fail] [sim:latency:4000]"}'
RU=$(j 'd["response_url"]')
progression "fal task-fail" 4000 fal_poll "$RU/status" IN_QUEUE IN_PROGRESS COMPLETED
code=$(req GET "$RU" "${FAL[@]}")
if ((code >= 500)); then ok; else bad "fal task-fail result: got $code, want 5xx"; fi
expect_eq "fal task-fail error_type" "$(j 'd["error_type"]')" runner_scheduling_failure
expect_has "fal task-fail header" "$TMP/head" "X-Fal-Error-Type: runner_scheduling_failure"
fal_submit fal-ai/flux/dev '{"prompt":"x [sim:poll-503] [sim:latency:0]"}' >/dev/null
RU=$(j 'd["response_url"]')
expect_eq "fal poll-503 first" "$(fal_poll "$RU/status")" http:503
expect_eq "fal poll-503 second" "$(fal_poll "$RU/status")" COMPLETED
expect_eq "fal unknown" "$(fal_poll "$B/fal/fal-ai/flux/requests/nope/status")" http:404
# Cancel while queued: a task queued for 200 s (the default 1.5 s latency left it queued for
# only 0.5 s, which a loaded machine could spend before the cancel arrived).
fal_submit fal-ai/flux/dev '{"prompt":"to cancel [sim:latency:600000]"}' >/dev/null
RU=$(j 'd["response_url"]')
expect_eq "fal cancel" "$(req PUT "$RU/cancel" "${FAL[@]}")" 202
expect_eq "fal cancel status" "$(j 'd["status"]')" CANCELLATION_REQUESTED

# ================================ Black Forest Labs ========================================
BFL=(-H 'x-key: bfl-test')
bfl_submit() { req POST "$B/bfl/v1/$1" "${BFL[@]}" --data-binary "$2"; }
bfl_poll() { # Pending while queued (progress null), Pending+ while running (a progress)
    local code st
    code=$(req GET "$1" "${BFL[@]}")
    [[ $code == 200 ]] || { echo "http:$code"; return; }
    st=$(j 'd["status"]')
    if [[ $st == Pending && $(j 'd["progress"]') != null ]]; then st=Pending+; fi
    echo "$st"
}

submitted code bfl_submit flux-pro-1.1 '{"prompt":"a red fox [sim:latency:6000]","width":1024,"height":768,"seed":3,"output_format":"png"}'
expect_eq "bfl submit" "$code" 200
cp "$TMP/body" "$TMP/submit.json"
PU=$(j 'd["polling_url"]')
progression "bfl" 6000 bfl_poll "$PU" Pending Pending+ Ready
S1=$TMP/submit.json
id=$(j 'd["id"]' "$S1")
expect_eq "bfl polling_url" "$PU" "$B/bfl/v1/get_result?id=$id"
expect_eq "bfl cost" "$(j 'd["cost"]' "$S1")" 4.0
expect_eq "bfl mp" "$(j '[d["input_mp"], d["output_mp"]]' "$S1")" '[0, 0.79]'
expect_eq "bfl result keys" "$(j 'sorted(d)')" '["details", "id", "preview", "progress", "result", "status"]'
expect_eq "bfl result seed" "$(j 'd["result"]["seed"]')" 3
expect_png "bfl" "$(j 'd["result"]["sample"]')" 1024x768

code=$(req POST "$B/bfl/v1/flux-pro-1.1" --data-binary '{"prompt":"x"}')
expect_eq "bfl no key" "$code" 403
expect_eq "bfl no key detail" "$(j 'd["detail"]')" "Not authenticated"
expect_eq "bfl 422" "$(bfl_submit flux-pro-1.1 '{"prompt":"x","width":1000}')" 422
expect_eq "bfl 422 loc" "$(j 'd["detail"][0]["loc"]')" '["body", "width"]'
expect_eq "bfl 422 no prompt" "$(bfl_submit flux-pro-1.1 '{}')" 422
expect_eq "bfl 429" "$(bfl_submit flux-pro-1.1 '{"prompt":"x [sim:429]"}')" 429
expect_has "bfl 429 detail" "$TMP/body" "too many active tasks"
expect_has "bfl 429 retry" "$TMP/head" "Retry-After: 7"
expect_eq "bfl 500" "$(bfl_submit flux-pro-1.1 '{"prompt":"x [sim:500]"}')" 500
for c in "moderation:Content Moderated" "prompt-blocked:Request Moderated" "task-fail:Error"; do
    submitted code bfl_submit flux-dev "{\"prompt\":\"x [sim:${c%%:*}] [sim:latency:4000]\"}"
    progression "bfl ${c%%:*}" 4000 bfl_poll "$(j 'd["polling_url"]')" Pending Pending+ "${c#*:}"
    expect_eq "bfl ${c%%:*} result" "$(j 'd["result"]')" null
done
bfl_submit flux-dev '{"prompt":"x [sim:poll-503] [sim:latency:0]"}' >/dev/null
PU=$(j 'd["polling_url"]')
expect_eq "bfl poll-503 first" "$(bfl_poll "$PU")" http:503
expect_eq "bfl poll-503 second" "$(bfl_poll "$PU")" Ready
expect_eq "bfl unknown" "$(bfl_poll "$B/bfl/v1/get_result?id=nope")" "Task not found"

# ================================ --fail-* rates at submit =================================
start_sim rates --fail-429 1 --retry-after 3 --seed 5
R=http://127.0.0.1:$PORT_rates
expect_eq "rate ds" "$(req POST "$R/api/v1/services/aigc/text2image/image-synthesis" "${DS[@]}" --data-binary "$(ds_body x)")" 429
expect_eq "rate rp" "$(req POST "$R/v1/models/a/b/predictions" "${RP[@]}" --data-binary '{"input":{"prompt":"x"}}')" 429
expect_eq "rate fal" "$(req POST "$R/fal/fal-ai/flux/dev" "${FAL[@]}" --data-binary '{"prompt":"x"}')" 429
expect_eq "rate bfl" "$(req POST "$R/bfl/v1/flux-dev" "${BFL[@]}" --data-binary '{"prompt":"x"}')" 429
expect_has "rate bfl retry" "$TMP/head" "Retry-After: 3"
start_sim mod --fail-moderation 1 --latency-ms 0 --seed 5
M=http://127.0.0.1:$PORT_mod
req POST "$M/bfl/v1/flux-dev" "${BFL[@]}" --data-binary '{"prompt":"x"}' >/dev/null
expect_eq "rate moderation is a task state" "$(bfl_poll "$(j 'd["polling_url"]')")" "Content Moderated"

# ================================ /sim/fail per model ======================================
start_sim fail --seed 9 --latency-ms 0
F=http://127.0.0.1:$PORT_fail
setfail() { req POST "$F/sim/fail" --data-binary "$1"; }
expect_eq "fail set bfl" "$(setfail '{"model":"flux-pro-1.1","status":500,"rate":1.0}')" 200
expect_eq "fail set openai" "$(setfail '{"model":"gpt-image-1","status":503,"rate":1}')" 200
expect_eq "fail set ds" "$(setfail '{"model":"wan2.2-t2i-flash","status":429}')" 200
expect_eq "fail set rp" "$(setfail '{"model":"a/b","status":500}')" 200
expect_eq "fail set fal" "$(setfail '{"model":"fal-ai/flux/dev","status":502}')" 200
expect_eq "fail set gemini" "$(setfail '{"model":"gemini-2.5-flash-image","status":500}')" 200
expect_eq "fail set seedream" "$(setfail '{"model":"seedream-4-0","status":500}')" 200
expect_eq "fail bad rate" "$(setfail '{"model":"x","rate":2}')" 400
expect_eq "fail bad status" "$(setfail '{"model":"x","status":200}')" 400
expect_eq "fail list" "$(req GET "$F/sim/fail")" 200
expect_eq "fail list models" "$(j 'sorted(r["model"] for r in d["rules"])')" \
    '["a/b", "fal-ai/flux/dev", "flux-pro-1.1", "gemini-2.5-flash-image", "gpt-image-1", "seedream-4-0", "wan2.2-t2i-flash"]'
expect_eq "fail bfl" "$(req POST "$F/bfl/v1/flux-pro-1.1" "${BFL[@]}" --data-binary '{"prompt":"x"}')" 500
expect_eq "fail bfl shape" "$(j 'sorted(d)')" '["detail"]'
expect_eq "fail bfl other model ok" "$(req POST "$F/bfl/v1/flux-dev" "${BFL[@]}" --data-binary '{"prompt":"x"}')" 200
expect_eq "fail ds" "$(req POST "$F/api/v1/services/aigc/text2image/image-synthesis" "${DS[@]}" --data-binary "$(ds_body x)")" 429
expect_eq "fail ds code" "$(j 'd["code"]')" Throttling.RateQuota
expect_eq "fail rp" "$(req POST "$F/v1/models/a/b/predictions" "${RP[@]}" --data-binary '{"input":{"prompt":"x"}}')" 500
expect_eq "fail rp other" "$(req POST "$F/v1/models/a/c/predictions" "${RP[@]}" --data-binary '{"input":{"prompt":"x"}}')" 201
expect_eq "fail fal" "$(req POST "$F/fal/fal-ai/flux/dev" "${FAL[@]}" --data-binary '{"prompt":"x"}')" 502
expect_has "fal fail header" "$TMP/head" "X-Fal-Error-Type:"
OA=(-H 'Authorization: Bearer sk-test' -H 'Content-Type: application/json')
OA_BODY='{"model":"gpt-image-1","prompt":"a red fox","size":"1024x1024","quality":"low"}'
expect_eq "fail openai" "$(req POST "$F/v1/images/generations" "${OA[@]}" --data-binary "$OA_BODY")" 503
expect_eq "fail openai type" "$(j 'd["error"]["type"]')" server_error
expect_eq "fail openai other model" "$(req POST "$F/v1/images/generations" "${OA[@]}" --data-binary '{"model":"gpt-image-1-mini","prompt":"x","size":"1024x1024","quality":"low"}')" 200
expect_eq "fail gemini" "$(req POST "$F/v1beta/models/gemini-2.5-flash-image:generateContent" -H 'x-goog-api-key: g' --data-binary '{"contents":[{"parts":[{"text":"x"}]}]}')" 500
expect_eq "fail gemini status" "$(j 'd["error"]["status"]')" INTERNAL
expect_eq "fail seedream" "$(req POST "$F/api/v3/images/generations" -H 'Authorization: Bearer a' --data-binary '{"model":"seedream-4-0","prompt":"x","size":"1024x1024"}')" 500
expect_eq "fail seedream code" "$(j 'd["error"]["code"]')" InternalServiceError
# rate 0 clears
for m in flux-pro-1.1 gpt-image-1 wan2.2-t2i-flash a/b fal-ai/flux/dev gemini-2.5-flash-image seedream-4-0; do
    setfail "{\"model\":\"$m\",\"rate\":0}" >/dev/null
done
req GET "$F/sim/fail" >/dev/null
expect_eq "fail cleared" "$(j 'd["rules"]')" '[]'
expect_eq "cleared bfl" "$(req POST "$F/bfl/v1/flux-pro-1.1" "${BFL[@]}" --data-binary '{"prompt":"x"}')" 200
expect_eq "cleared openai" "$(req POST "$F/v1/images/generations" "${OA[@]}" --data-binary "$OA_BODY")" 200
expect_eq "cleared ds" "$(req POST "$F/api/v1/services/aigc/text2image/image-synthesis" "${DS[@]}" --data-binary "$(ds_body x)")" 200
# A partial rate fails some requests and lets others through.
setfail '{"model":"flux-dev","status":500,"rate":0.5}' >/dev/null
fails=0
for _ in $(seq 1 40); do
    [[ $(req POST "$F/bfl/v1/flux-dev" "${BFL[@]}" --data-binary '{"prompt":"x"}') == 500 ]] && fails=$((fails + 1))
done
if ((fails > 5 && fails < 35)); then ok; else bad "rate 0.5 failed $fails of 40"; fi

# ================================ counters and reset =======================================
start_sim stats --seed 3 --latency-ms 0
S=http://127.0.0.1:$PORT_stats
stat() { curl -sS "$S/sim/stats" >"$TMP/stats" && j "d[\"requests\"][\"$1\"][\"$2\"]" "$TMP/stats"; }
for i in 1 2; do
    req POST "$S/api/v1/services/aigc/text2image/image-synthesis" "${DS[@]}" --data-binary "$(ds_body "s$i")" >/dev/null
done
ds_id=$(j 'd["output"]["task_id"]')
for _ in 1 2 3; do req GET "$S/api/v1/tasks/$ds_id" -H 'Authorization: Bearer k' >/dev/null; done
ds_url=$(j 'd["output"]["results"][0]["url"]')
req POST "$S/v1/models/a/b/predictions" "${RP[@]}" --data-binary '{"input":{"prompt":"x"}}' >/dev/null
rp_id=$(j 'd["id"]')
for _ in 1 2; do req GET "$S/v1/predictions/$rp_id" "${RP[@]}" >/dev/null; done
req POST "$S/fal/fal-ai/flux/dev" "${FAL[@]}" --data-binary '{"prompt":"x"}' >/dev/null
fal_ru=$(j 'd["response_url"]')
for _ in 1 2; do req GET "$fal_ru/status" "${FAL[@]}" >/dev/null; done
req GET "$fal_ru" "${FAL[@]}" >/dev/null
fal_url=$(j 'd["images"][0]["url"]')
req POST "$S/bfl/v1/flux-dev" "${BFL[@]}" --data-binary '{"prompt":"x"}' >/dev/null
bfl_pu=$(j 'd["polling_url"]')
for _ in 1 2 3 4; do req GET "$bfl_pu" "${BFL[@]}" >/dev/null; done
for u in "$ds_url" "$fal_url" "$(j 'd["result"]["sample"]')"; do curl -sS -o /dev/null "$u"; done
expect_eq "stats ds submits" "$(stat dashscope submits)" 2
expect_eq "stats ds polls" "$(stat dashscope polls)" 3
expect_eq "stats rp submits" "$(stat replicate submits)" 1
expect_eq "stats rp polls" "$(stat replicate polls)" 2
expect_eq "stats fal submits" "$(stat fal submits)" 1
expect_eq "stats fal polls" "$(stat fal polls)" 2
expect_eq "stats fal results" "$(stat fal results)" 1
expect_eq "stats bfl submits" "$(stat bfl submits)" 1
expect_eq "stats bfl polls" "$(stat bfl polls)" 4
expect_eq "stats files" "$(stat files ok)" 3
expect_eq "stats tasks" "$(j 'd["tasks"]' "$TMP/stats")" 5
expect_eq "reset" "$(curl -s -o /dev/null -w '%{http_code}' -X POST "$S/sim/reset")" 200
expect_eq "reset ds submits" "$(stat dashscope submits)" 0
expect_eq "reset bfl polls" "$(stat bfl polls)" 0
expect_eq "reset tasks" "$(j 'd["tasks"]' "$TMP/stats")" 0
expect_eq "reset forgets tasks" "$(req GET "$S/api/v1/tasks/$ds_id" -H 'Authorization: Bearer k' >/dev/null; j 'd["output"]["task_status"]')" UNKNOWN
expect_eq "reset forgets files" "$(curl -s -o /dev/null -w '%{http_code}' "$ds_url")" 404

# ================================ SIGTERM with a Prefer: wait held open ====================
before=$(rp_submits "$B")
curl -s -m 60 -o /dev/null -H 'Prefer: wait=30' "${RP[@]}" --data-binary '{"input":{"prompt":"held [sim:latency:60000]"}}' \
    "$B/v1/models/a/b/predictions" &
held=$!
wait_submits "$B" $((before + 1)) || true
for name in main rates mod fail stats; do
    pidvar=PID_$name
    kill -TERM "${!pidvar}"
    status=0
    wait "${!pidvar}" || status=$?
    expect_eq "exit status of $name" "$status" 0
    expect_not "sanitizer report from $name" "$TMP/$name.err" "Sanitizer"
done
wait "$held" 2>/dev/null || true

echo "sim_async: $CHECKS checks, $FAILS failed"
[[ $FAILS -eq 0 ]]
