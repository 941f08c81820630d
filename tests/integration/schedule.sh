#!/usr/bin/env bash
# Schedules for overnight runs, with the queue's clock moved instead of waiting for hours:
# --not-before holds a batch back, --window dispatches only inside a daily window (in a time
# zone), --deadline ends what has not started as expired.  A running worker wakes on its own
# when a window opens or a scheduled time comes (no polling: it sleeps until the next due time).
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

"$IMGQ_BIN/imgq-worker" --noop --lease-ms 1000 --log-level info >"$IMGQ_TMP/worker.log" 2>&1 &
worker=$!
track_pid $worker

# --- not-before: held back until the queue's clock passes it.
gen nb 10 >"$IMGQ_TMP/nb.jsonl"
"${imgq[@]}" submit --batch nb --not-before +2h "$IMGQ_TMP/nb.jsonl" >/dev/null
assert_eq "10" "$(count nb scheduled)" "jobs wait as scheduled"
sleep 1
assert_eq "0" "$(count nb done)" "nothing runs before its time"
assert_contains "$("${imgq[@]}" clock --advance 7300)" "offset +7300000 ms"
wait_until 10 "scheduled jobs to run once their time comes" has nb done 10
"${imgq[@]}" clock --reset >/dev/null

# Scheduled jobs can be cancelled before their time.
gen sc 3 >"$IMGQ_TMP/sc.jsonl"
"${imgq[@]}" submit --batch sc --not-before +3h "$IMGQ_TMP/sc.jsonl" >/dev/null
assert_contains "$("${imgq[@]}" cancel --batch sc)" "3 job(s) cancelled"
assert_eq "0" "$(count sc scheduled)" "no scheduled job left"
assert_contains "$("${imgq[@]}" batch status sc --json)" '"finished":true'

# --- window: a daily window two hours from now (UTC), then the clock moved into it.
h=$(date -u +%H)
m=$(date -u +%M)
open=$(((10#$h + 2) % 24))
close=$(((10#$h + 3) % 24))
window=$(printf '%02d:00-%02d:00' "$open" "$close")
gen win 10 >"$IMGQ_TMP/win.jsonl"
"${imgq[@]}" submit --batch win --window "$window" --tz UTC "$IMGQ_TMP/win.jsonl" >/dev/null
sleep 1
assert_eq "0" "$(count win done)" "nothing runs outside the window $window"
assert_contains "$("${imgq[@]}" events --batch win)" "batch.window_closed"
# Into the window: two hours minus the minutes past the hour, plus five minutes.
"${imgq[@]}" clock --offset-ms $(((120 - 10#$m + 5) * 60000)) >/dev/null
wait_until 10 "the window to open and the batch to run" has win done 10
assert_contains "$("${imgq[@]}" events --batch win)" "batch.window_opened"
"${imgq[@]}" clock --reset >/dev/null

# A window in a named zone is planned with that zone's rules.
gen berlin 3 >"$IMGQ_TMP/berlin.jsonl"
"${imgq[@]}" submit --batch berlin --window 01:00-06:00 --tz Europe/Berlin --dry-run \
    "$IMGQ_TMP/berlin.jsonl" 2>&1 | grep -q "3 jobs valid" || fail "Berlin window refused"
set +e
"${imgq[@]}" submit --batch x --window 01:00-06:00 --tz Mars/Olympus "$IMGQ_TMP/berlin.jsonl" 2>"$IMGQ_TMP/err"
rc=$?
"${imgq[@]}" submit --batch x --window 25:00-06:00 "$IMGQ_TMP/berlin.jsonl" 2>>"$IMGQ_TMP/err"
rc2=$?
"${imgq[@]}" submit --batch x --deadline tomorrow "$IMGQ_TMP/berlin.jsonl" 2>>"$IMGQ_TMP/err"
rc3=$?
set -e
assert_eq "2 2 2" "$rc $rc2 $rc3" "bad schedules are usage errors"
assert_contains "$(cat "$IMGQ_TMP/err")" "--tz 'Mars/Olympus' is not a time zone"
assert_contains "$(cat "$IMGQ_TMP/err")" "window '25:00-06:00'"
assert_contains "$(cat "$IMGQ_TMP/err")" "'tomorrow': expected"

# --- deadline: a batch outside its window until after its deadline ends as expired.
gen late 8 >"$IMGQ_TMP/late.jsonl"
"${imgq[@]}" submit --batch late --window "$window" --tz UTC --deadline +1h \
    "$IMGQ_TMP/late.jsonl" >/dev/null
sleep 1
assert_eq "8" "$(count late queued)" "waiting for the window"
"${imgq[@]}" clock --advance 3700 >/dev/null # past the deadline, before the window
wait_until 10 "the deadline to expire the batch" has late expired 8
assert_contains "$("${imgq[@]}" batch status late --json)" '"finished":true'
assert_eq "0" "$(count late done)" "nothing ran after the deadline"
assert_contains "$("${imgq[@]}" events --batch late)" "batch.expired"
# --- retention: ended jobs, their idempotency keys and finished batches go after it.
"${imgq[@]}" clock --reset >/dev/null
assert_contains "$("${imgq[@]}" retention --set 1h)" "kept 1.0 hours"
job=$("${imgq[@]}" batch results nb | head -1 | grep -o '"id":"j[0-9a-z]*"' | cut -d'"' -f4)
assert_eq "1" "$(redis-cli -p "$REDIS_PORT" exists "imgq:{default}:j:$job")" "job kept for now"
# The nb jobs ended with the clock 2h ahead: 4h ahead is past their end plus the retention.
"${imgq[@]}" clock --advance 14400 >/dev/null
gone() { [ "$(redis-cli -p "$REDIS_PORT" exists "imgq:{default}:j:$job")" = 0 ]; }
wait_until 10 "the reaper to delete ended jobs past the retention" gone
batch_gone() { ! "${imgq[@]}" batch status nb >/dev/null 2>&1; }
wait_until 10 "the finished batch to be deleted" batch_gone
# The idempotency keys went with the jobs: the same file enqueues again.
"${imgq[@]}" submit --batch nb "$IMGQ_TMP/nb.jsonl" 2>&1 >/dev/null | grep -q "10 jobs enqueued" ||
    fail "idempotency keys outlived their jobs"
echo "PASS schedule"
