#!/usr/bin/env bash
# Redis restarted mid-batch (AOF on), then the worker's connections killed by the server: the
# worker reconnects with backoff, re-sends outcomes Redis did not take, and the batch
# completes with every job done exactly once.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/env.sh"
imgq_env_setup
start_redis --appendonly yes --appendfsync always
start_s3 imgq-restart
start_sim --latency-ms 300 --latency-jitter-ms 300

jobs=150
for i in $(seq 1 "$jobs"); do
    printf '{"id":"r-%d","prompt":"enamel camping mug %d on white","model":"gpt-image-1-mini","quality":"low"}\n' "$i" "$i"
done >"$IMGQ_TMP/jobs.jsonl"
"$IMGQ_BIN/imgq" submit --batch restart "$IMGQ_TMP/jobs.jsonl" >/dev/null

"$IMGQ_BIN/imgq-worker" --concurrency 20 --lease-ms 5000 --retry-base-ms 100 --exit-when-idle \
    --log-level info >"$IMGQ_TMP/worker.log" 2>&1 &
worker=$!
track_pid $worker
done_count() { "$IMGQ_BIN/imgq" batch status restart --json | grep -o '"done":[0-9]*' | cut -d: -f2; }
some_done() { [ "$(done_count)" -ge 30 ]; }
wait_until 60 "30 jobs done" some_done

# Restart Redis on the same port and data directory while jobs are in flight.
redis-cli -p "$REDIS_PORT" shutdown >/dev/null 2>&1 || true
wait_pid "$REDIS_PID" 10 || fail "redis did not shut down"
sleep 1 # outcomes due meanwhile must wait and be re-sent
redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$IMGQ_TMP/redis-$REDIS_PORT" \
    --appendonly yes --appendfsync always --save '' --daemonize no --logfile '' \
    >"$IMGQ_TMP/redis-restarted.log" 2>&1 &
track_pid $!
redis_up() { redis-cli -p "$REDIS_PORT" ping | grep -q PONG; }
wait_until 20 "redis back" redis_up

# And a dropped connection (the server kills the worker's clients) while jobs are in flight.
more_done() { [ "$(done_count)" -ge 90 ]; }
wait_until 60 "90 jobs done" more_done
redis-cli -p "$REDIS_PORT" client kill type normal >/dev/null
redis-cli -p "$REDIS_PORT" client kill type pubsub >/dev/null

wait_pid "$worker" 120 || fail "the worker did not finish the batch after the restart"
assert_contains "$(cat "$IMGQ_TMP/worker.log")" "connection lost; reconnecting"
reconnects=$(grep -c 'redis: connected to' "$IMGQ_TMP/worker.log")
[ "$reconnects" -ge 3 ] || fail "expected a connect and two reconnects, saw $reconnects connects"
status=$("$IMGQ_BIN/imgq" batch status restart --json)
assert_contains "$status" "\"done\":$jobs"
assert_contains "$status" '"failed":0'
# A completion whose reply was lost in the restart is re-sent and then refused by the lease
# check, so the log can show fewer completions than jobs, never more.
completions=$(grep -c 'job: j[0-9a-z]* done' "$IMGQ_TMP/worker.log")
[ "$completions" -le "$jobs" ] || fail "$completions completions for $jobs jobs"
echo "PASS redis_restart"
