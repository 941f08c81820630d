#!/usr/bin/env bash
# The queue as an operator sees it, against a real redis-server: fairness between batches,
# pause/resume, cancel, dead letters and their replay, stats, events, and batch.completed
# exactly once when several workers finish the last jobs together.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/env.sh"
imgq_env_setup
start_redis
start_s3 imgq-control
start_sim --latency-ms 5
imgq=("$IMGQ_BIN/imgq")
gen() { # gen PREFIX COUNT [EXTRA-PROMPT] - COUNT jobs with ids PREFIX-i
    local i
    for ((i = 1; i <= $2; i++)); do
        printf '{"id":"%s-%d","prompt":"product %d %s","model":"gpt-image-1-mini","quality":"low"}\n' \
            "$1" "$i" "$i" "${3:-}"
    done
}
count() { "${imgq[@]}" batch status "$1" --json | grep -o "\"$2\":[0-9]*" | cut -d: -f2; }
events_of() { redis-cli -p "$REDIS_PORT" xrange 'imgq:{default}:events' - + | tr -d '\r'; }

# --- Fairness: a 10-job batch submitted after a 2,000-job batch at the same priority is served
# in turn with it, not after it.
gen big 2000 >"$IMGQ_TMP/big.jsonl"
gen small 10 >"$IMGQ_TMP/small.jsonl"
"${imgq[@]}" submit --batch big "$IMGQ_TMP/big.jsonl" >/dev/null
"${imgq[@]}" submit --batch small "$IMGQ_TMP/small.jsonl" >/dev/null
"$IMGQ_BIN/imgq-worker" --noop --concurrency 1 --exit-when-idle 2>/dev/null
order=$(events_of | grep -A4 '^job.completed$' | grep -A1 '^batch$' | grep -v '^batch$' | grep -v -- '--')
last_small=$(grep -n '^small$' <<<"$order" | tail -1 | cut -d: -f1)
assert_eq "10" "$(grep -c '^small$' <<<"$order")" "all small jobs completed"
[ "$last_small" -le 20 ] || fail "the small batch finished only at completion $last_small of 2010"
echo "fairness: the 10-job batch finished by completion $last_small of 2010"

# --- Pause and resume a batch: nothing of it is claimed while paused.
gen paused 20 >"$IMGQ_TMP/paused.jsonl"
"${imgq[@]}" submit --batch paused "$IMGQ_TMP/paused.jsonl" >/dev/null
assert_contains "$("${imgq[@]}" pause --batch paused)" "batch paused paused"
"$IMGQ_BIN/imgq-worker" --noop 2>"$IMGQ_TMP/w-paused.log" &
w=$!
track_pid $w
sleep 1
assert_eq "20" "$(count paused queued)" "a paused batch is not dispatched"
assert_contains "$("${imgq[@]}" stats)" "ready       0"
"${imgq[@]}" resume --batch paused >/dev/null
all_done() { [ "$(count "$1" done)" -eq "$2" ]; }
wait_until 30 "the resumed batch to run" all_done paused 20

# The whole queue: pause, submit, nothing runs; resume, it runs.
"${imgq[@]}" pause --queue-wide >/dev/null
gen qp 5 >"$IMGQ_TMP/qp.jsonl"
"${imgq[@]}" submit --batch qp "$IMGQ_TMP/qp.jsonl" >/dev/null
sleep 1 # the running worker is woken by the submit, and must not claim
assert_eq "5" "$(count qp queued)" "a paused queue dispatches nothing"
assert_contains "$("${imgq[@]}" stats --json)" '"paused":1'
"${imgq[@]}" resume --queue-wide >/dev/null
wait_until 30 "the resumed queue to run" all_done qp 5

# A wake message lost (as with a subscriber connection that drops): the queue is resumed by hand
# in Redis, without the message a resume publishes.  The idle worker finds the jobs anyway, by
# the look it takes at the queue every 5 s.
"${imgq[@]}" pause --queue-wide >/dev/null
gen lost 3 >"$IMGQ_TMP/lost.jsonl"
"${imgq[@]}" submit --batch lost "$IMGQ_TMP/lost.jsonl" >/dev/null
sleep 1
assert_eq "3" "$(count lost queued)" "the paused queue waits"
assert_eq "1" "$(redis-cli -p "$REDIS_PORT" del 'imgq:{default}:paused' | tr -d '\r')" "resumed by hand"
wait_until 12 "the silently resumed queue to run" all_done lost 3
kill -TERM $w
wait_pid $w 10 || fail "the worker did not stop on SIGTERM"

# --- Cancel: a queued batch ends as cancelled; nothing of it runs afterwards.
gen gone 30 >"$IMGQ_TMP/gone.jsonl"
"${imgq[@]}" submit --batch gone "$IMGQ_TMP/gone.jsonl" >/dev/null
assert_contains "$("${imgq[@]}" cancel --batch gone)" "30 job(s) cancelled"
assert_eq "30" "$(count gone canceled)" "cancelled count"
assert_contains "$("${imgq[@]}" batch status gone --json)" '"finished":true'
"$IMGQ_BIN/imgq-worker" --noop --exit-when-idle 2>/dev/null
assert_eq "0" "$(count gone done)" "cancelled jobs never run"
set +e
"${imgq[@]}" cancel --batch nope 2>"$IMGQ_TMP/err"
rc=$?
set -e
assert_eq "3" "$rc" "cancel of a missing batch: 3, not found"
assert_contains "$(cat "$IMGQ_TMP/err")" "no batch 'nope'"

# --- Jobs that have not run yet are one entry of their ready list each (packed jobs): listed,
# shown, counted in stats and cancelled one by one like any other.
gen wait 5 >"$IMGQ_TMP/wait.jsonl"
"${imgq[@]}" submit --batch wait "$IMGQ_TMP/wait.jsonl" >/dev/null
keyed=0
for id in $(redis-cli -p "$REDIS_PORT" lrange 'imgq:{default}:b:wait:jobs' 0 -1 | tr -d '\r'); do
    keyed=$((keyed + $(redis-cli -p "$REDIS_PORT" exists "imgq:{default}:j:$id" | tr -d '\r')))
done
assert_eq "0" "$keyed" "no job of a waiting batch has keys of its own"
listed=$("${imgq[@]}" batch results wait)
assert_eq "5" "$(grep -c '"state":"queued"' <<<"$listed")" "the waiting jobs are listed"
assert_contains "$listed" '"model":"gpt-image-1-mini","quality":"low","size":"1024x1024","n":1'
third=$(grep '"client_id":"wait-3"' <<<"$listed" | grep -o '"id":"j[0-9a-z]*"' | cut -d'"' -f4)
[ -n "$third" ] || fail "no id for wait-3 in: $listed"
shown=$("${imgq[@]}" job show "$third")
assert_contains "$shown" '"state": "queued"'
assert_contains "$shown" '"prompt": "product 3 "'
assert_contains "$shown" '"max_attempts": 5'
oldest=$("${imgq[@]}" stats --json | grep -o '"oldest_waiting_ms":-\?[0-9]*' | cut -d: -f2)
[ "${oldest:--1}" -ge 0 ] || fail "stats shows no oldest waiting job: $oldest"
assert_contains "$("${imgq[@]}" cancel "$third")" "1 job(s) cancelled"
shown=$("${imgq[@]}" job show "$third")
assert_contains "$shown" '"state": "canceled"'
assert_contains "$shown" '"prompt": "product 3 "'
assert_eq "1" "$(count wait canceled)" "one waiting job cancelled"
assert_eq "4" "$(count wait queued)" "the others still wait"
set +e
"${imgq[@]}" cancel "$third" 2>"$IMGQ_TMP/err"
rc=$?
set -e
assert_eq "1" "$rc" "cancelling an ended job again fails"
assert_contains "$(cat "$IMGQ_TMP/err")" "has already ended"
# A batch of every priority, listed in order: each job is found in its own list.
for ((i = 1; i <= 2500; i++)); do
    printf '{"id":"mx-%d","prompt":"mixed %d","model":"gpt-image-1-mini","priority":"%s"}\n' \
        "$i" "$i" "$(case $((i % 3)) in 0) echo high ;; 1) echo normal ;; *) echo low ;; esac)"
done >"$IMGQ_TMP/mixed.jsonl"
"${imgq[@]}" submit --batch mixed "$IMGQ_TMP/mixed.jsonl" >/dev/null
listed=$("${imgq[@]}" batch results mixed)
assert_eq "2500" "$(grep -c '"state":"queued"' <<<"$listed")" "every job of a mixed batch is listed"
assert_eq "2500" "$(grep -o '"client_id":"mx-[0-9]*"' <<<"$listed" | sort -u | wc -l | tr -d ' ')" \
    "each job once"
assert_contains "$("${imgq[@]}" job show "$(tail -1 <<<"$listed" | grep -o '"id":"j[0-9a-z]*"' | cut -d'"' -f4)")" \
    '"prompt": "mixed 2500"'
"${imgq[@]}" cancel --batch mixed >/dev/null
# The same lines again: the same ids, nothing new.
assert_contains "$("${imgq[@]}" submit --batch wait "$IMGQ_TMP/wait.jsonl" 2>&1)" \
    "0 jobs enqueued, 5 already present"
# A job stored before ids were derived from idempotency keys is still found by its key.
redis-cli -p "$REDIS_PORT" hset 'imgq:{default}:idem' "$(printf '\037')old-1" jold >/dev/null
printf '{"id":"old-1","prompt":"old","model":"gpt-image-1-mini","quality":"low"}\n' >"$IMGQ_TMP/old.jsonl"
assert_contains "$("${imgq[@]}" submit --batch wait "$IMGQ_TMP/old.jsonl" 2>&1)" \
    "0 jobs enqueued, 1 already present"
"$IMGQ_BIN/imgq-worker" --noop --exit-when-idle 2>/dev/null
assert_eq "4" "$(count wait done)" "the waiting jobs ran, but not the cancelled one"
assert_contains "$("${imgq[@]}" job show "$third")" '"state": "canceled"'

# --- Cancel a running job: its worker's late result is refused, but what its provider call
# cost is recorded (the money was spent).
printf '{"id":"slow","prompt":"a lamp [sim:latency:1500]","model":"gpt-image-1-mini","quality":"low"}\n' >"$IMGQ_TMP/slow.jsonl"
"${imgq[@]}" submit --batch slow "$IMGQ_TMP/slow.jsonl" >/dev/null
"$IMGQ_BIN/imgq-worker" --lease-ms 600 --exit-when-idle 2>"$IMGQ_TMP/w-slow.log" &
w=$!
track_pid $w
running() { [ "$(count slow running)" -eq 1 ]; }
wait_until 10 "the slow job to run" running
slow_id=$("${imgq[@]}" batch results slow | grep -o '"id":"j[0-9a-z]*"' | cut -d'"' -f4)
assert_contains "$("${imgq[@]}" cancel "$slow_id")" "1 job(s) cancelled"
wait_pid $w 30 || fail "the worker did not finish after the cancel"
r=$("${imgq[@]}" batch results slow)
assert_contains "$r" '"state":"canceled"'
cost=$(grep -o '"cost_micros":[0-9]*' <<<"$r" | cut -d: -f2)
[ "$cost" -gt 0 ] || fail "the paid call of a cancelled job was not recorded"
assert_contains "$("${imgq[@]}" batch status slow --json)" "\"cost_micros\":$cost"

# --- Dead letters: permanent failures land there with their reason; replay completes them.
{
    printf '{"id":"dl-1","prompt":"a [sim:fail-once:dl1]","model":"gpt-image-1-mini","quality":"low","max_attempts":1}\n'
    printf '{"id":"dl-2","prompt":"b [sim:fail-once:dl2]","model":"gpt-image-1-mini","quality":"low","max_attempts":1}\n'
    printf '{"id":"dl-3","prompt":"c [sim:moderation]","model":"gpt-image-1-mini","quality":"low"}\n'
} >"$IMGQ_TMP/dl.jsonl"
"${imgq[@]}" submit --batch dl "$IMGQ_TMP/dl.jsonl" >/dev/null
"$IMGQ_BIN/imgq-worker" --exit-when-idle 2>/dev/null
assert_eq "3" "$(count dl failed)" "three jobs failed for good"
"${imgq[@]}" dlq list --batch dl --json >"$IMGQ_TMP/dead"
assert_eq "3" "$(wc -l <"$IMGQ_TMP/dead")" "three dead letters"
assert_contains "$(cat "$IMGQ_TMP/dead")" '"class":"content_policy"'
assert_contains "$(cat "$IMGQ_TMP/dead")" '"class":"server"'
ids=$(grep -v content_policy "$IMGQ_TMP/dead" | grep -o '"id":"j[0-9a-z]*"' | cut -d'"' -f4)
assert_contains "$("${imgq[@]}" dlq retry $ids)" "2 job(s) back in the queue"
assert_contains "$("${imgq[@]}" batch status dl --json)" '"finished":false'
"$IMGQ_BIN/imgq-worker" --exit-when-idle 2>/dev/null
assert_eq "2" "$(count dl done)" "replayed jobs completed"
assert_eq "1" "$(count dl failed)" "the content-policy job stays failed"
assert_contains "$("${imgq[@]}" dlq purge --batch dl)" "1 job(s) purged"
assert_eq "0" "$("${imgq[@]}" dlq list --json | wc -l)" "dead letters purged"

# --- batch.completed exactly once with 4 workers finishing the last jobs together.
gen race 400 >"$IMGQ_TMP/race.jsonl"
"${imgq[@]}" submit --batch race "$IMGQ_TMP/race.jsonl" >/dev/null
pids=()
for _ in 1 2 3 4; do
    "$IMGQ_BIN/imgq-worker" --noop --concurrency 8 --exit-when-idle 2>/dev/null &
    pids+=($!)
    track_pid $!
done
for p in "${pids[@]}"; do wait_pid "$p" 30 || fail "a racing worker did not finish"; done
assert_eq "400" "$(count race done)" "race batch done"
completed=$(events_of | grep -A2 '^batch.completed$' | grep -A1 '^batch$' | grep -c '^race$')
assert_eq "1" "$completed" "batch.completed emitted exactly once"

# --- events: readable and filterable.
"${imgq[@]}" events --batch dl --json >"$IMGQ_TMP/ev"
assert_contains "$(cat "$IMGQ_TMP/ev")" '"type":"job.requeued"'
assert_not_contains "$(cat "$IMGQ_TMP/ev")" '"batch":"race"'
echo "PASS queue_control"
