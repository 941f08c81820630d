#!/usr/bin/env bash
# One job at a time, as Sidekiq and BullMQ users expect: `imgq pause JOB` holds a queued job
# back (it shows as paused in job show and batch status) while a worker runs the rest,
# `imgq resume JOB` lets it run; `imgq promote JOB` runs a scheduled (--not-before) job now.
# `imgq events --follow` prints only what happens from now on; --from-start replays first.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/env.sh"
imgq_env_setup
start_redis
imgq=("$IMGQ_BIN/imgq")
gen() {
    local i
    for ((i = 1; i <= $2; i++)); do
        printf '{"id":"%s-%d","prompt":"product %d","model":"gpt-image-1-mini","quality":"low"}\n' "$1" "$i" "$i"
    done
}
count() { "${imgq[@]}" batch status "$1" --json | grep -o "\"$2\":[0-9]*" | cut -d: -f2; }
has() { [ "$(count "$1" "$2")" -eq "$3" ]; }
job_id() { # BATCH CLIENT_ID
    "${imgq[@]}" batch results "$1" | grep "\"client_id\":\"$2\"" | grep -o '"id":"j[0-9a-z]*"' |
        cut -d'"' -f4
}
state_is() { "${imgq[@]}" job show "$1" | grep -q "\"state\": \"$2\""; }

# --- pause a queued job (one that has not run: a packed entry) and one already keyed.
gen jc 5 >"$IMGQ_TMP/jc.jsonl"
"${imgq[@]}" submit --batch jc "$IMGQ_TMP/jc.jsonl" >/dev/null
held=$(job_id jc jc-3)
[ -n "$held" ] || fail "no id for jc-3"
assert_contains "$("${imgq[@]}" pause "$held")" "job $held paused (it was queued)"
assert_contains "$("${imgq[@]}" job show "$held")" '"state": "paused"'
assert_eq "1" "$(count jc paused)" "batch status --json counts the paused job"
assert_eq "4" "$(count jc queued)" "the others stay queued"
assert_contains "$("${imgq[@]}" batch status jc)" "paused         1"
# Pausing it again, or resuming a job that is not paused, is refused with its state.
set +e
"${imgq[@]}" pause "$held" 2>"$IMGQ_TMP/err"
rc=$?
"${imgq[@]}" promote nosuchjob 2>>"$IMGQ_TMP/err"
rc2=$?
set -e
assert_eq "1 3" "$rc $rc2" "pausing a paused job fails; an unknown job is not found"
assert_contains "$(cat "$IMGQ_TMP/err")" "job '$held' is paused; only a queued, scheduled or retrying job"
assert_contains "$(cat "$IMGQ_TMP/err")" "no job 'nosuchjob'"

"$IMGQ_BIN/imgq-worker" --noop --lease-ms 1000 --log-level info >"$IMGQ_TMP/worker.log" 2>&1 &
worker=$!
track_pid $worker
wait_until 30 "the four other jobs to run" has jc "done" 4
# The worker is idle now with the paused job in the batch: it must not have taken it.
wait_until 10 "the worker to go idle" has jc running 0
sleep 1
assert_eq "1" "$(count jc paused)" "the paused job is still paused"
assert_eq "4" "$(count jc "done")" "and not run"
state_is "$held" paused || fail "job show no longer says paused"
assert_contains "$("${imgq[@]}" batch status jc --json)" '"finished":false'

assert_contains "$("${imgq[@]}" resume "$held")" "job $held resumed"
wait_until 30 "the resumed job to run" has jc "done" 5
assert_eq "0" "$(count jc paused)" "no paused job is counted after it ran"
assert_contains "$("${imgq[@]}" batch status jc --json)" '"finished":true'

# --- a scheduled job paused and resumed stays scheduled; promote runs it now.
gen nb 2 >"$IMGQ_TMP/nb.jsonl"
"${imgq[@]}" submit --batch nb --not-before +2h "$IMGQ_TMP/nb.jsonl" >/dev/null
first=$(job_id nb nb-1)
second=$(job_id nb nb-2)
assert_contains "$("${imgq[@]}" pause "$first")" "(it was scheduled)"
assert_eq "1 1" "$(count nb paused) $(count nb scheduled)" "one paused, one scheduled"
set +e
"${imgq[@]}" promote "$first" 2>"$IMGQ_TMP/err"
rc=$?
set -e
assert_eq "1" "$rc" "a paused job is not promoted"
assert_contains "$("${imgq[@]}" resume "$first")" "resumed"
assert_eq "0 2" "$(count nb paused) $(count nb scheduled)" "back to scheduled"
assert_contains "$("${imgq[@]}" promote "$second")" "job $second promoted: it was scheduled"
wait_until 30 "the promoted job to run at once" has nb "done" 1
assert_eq "1" "$(count nb scheduled)" "the other still waits for its time"
state_is "$first" scheduled || fail "the job not promoted should still be scheduled"
# A cancelled batch with a paused job keeps its counters right.
assert_contains "$("${imgq[@]}" pause "$first")" "paused"
assert_contains "$("${imgq[@]}" cancel --batch nb)" "1 job(s) cancelled"
assert_eq "0 1" "$(count nb paused) $(count nb canceled)" "the paused job is cancelled"
assert_contains "$("${imgq[@]}" batch status nb --json)" '"finished":true'
stats=$(redis-cli -p "$REDIS_PORT" hget 'imgq:{default}:stats' paused_jobs | tr -d '\r')
assert_eq "0" "${stats:-0}" "the queue's count of paused jobs is back to 0"

# --- events --follow: only new events (the stream already holds jc's and nb's).
"${imgq[@]}" events --follow >"$IMGQ_TMP/follow.out" 2>&1 &
follower=$!
track_pid $follower
poke() {
    "${imgq[@]}" pause --batch jc >/dev/null
    "${imgq[@]}" resume --batch jc >/dev/null
    grep -q batch.resumed "$IMGQ_TMP/follow.out"
}
wait_until 30 "events --follow to print a new event" poke
kill_pid TERM $follower
assert_not_contains "$(cat "$IMGQ_TMP/follow.out")" "batch.submitted"
assert_not_contains "$(cat "$IMGQ_TMP/follow.out")" "job.paused"

"${imgq[@]}" events --follow --from-start >"$IMGQ_TMP/replay.out" 2>&1 &
follower=$!
track_pid $follower
wait_until 30 "events --follow --from-start to replay the stream" \
    grep -q batch.submitted "$IMGQ_TMP/replay.out"
kill_pid TERM $follower
assert_contains "$(cat "$IMGQ_TMP/replay.out")" "job.paused"
set +e
"${imgq[@]}" events --from-start >/dev/null 2>&1
rc=$?
set -e
assert_eq "2" "$rc" "--from-start without --follow is a usage error"
kill_pid TERM $worker
echo "job_control: ok"
