#!/usr/bin/env bash
# A worker Redis will not serve says so: without a password, or with a wrong one, it logs an
# ERROR at the default log level for each attempt (one per backoff step) and, with
# --exit-when-idle, exits with status 1 after about 30 s; pointed at a Redis Cluster node that
# answers MOVED, it logs an ERROR naming cluster mode as unsupported and exits with status 1.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/env.sh"
imgq_env_setup
start_redis
port=$REDIS_PORT
redis-cli -p "$port" config set requirepass 's3cret' >/dev/null
unset IMGQ_LOG_LEVEL

run_worker() { # NAME URL: a worker in the background, its pid in $wpid
    "$IMGQ_BIN/imgq-worker" --noop --exit-when-idle --redis "$2" >"$IMGQ_TMP/$1.log" 2>&1 &
    wpid=$!
    track_pid $wpid
}
run_worker nopass "redis://127.0.0.1:$port/0"
nopass=$wpid
run_worker wrong "redis://:wrong@127.0.0.1:$port/0"
wrong=$wpid
start=$SECONDS
set +e
wait_pid $nopass 90
rc1=$?
wait_pid $wrong 90
rc2=$?
set -e
took=$((SECONDS - start))
assert_eq "1 1" "$rc1 $rc2" "workers Redis refuses exit with status 1 (--exit-when-idle)"
[ "$took" -ge 25 ] || fail "gave up after ${took}s, before the documented 30 s"
[ "$took" -le 75 ] || fail "took ${took}s to give up"
assert_contains "$(cat "$IMGQ_TMP/nopass.log")" "ERROR"
assert_contains "$(cat "$IMGQ_TMP/nopass.log")" "NOAUTH"
assert_contains "$(cat "$IMGQ_TMP/wrong.log")" "WRONGPASS"
assert_contains "$(cat "$IMGQ_TMP/wrong.log")" "giving up after 30 s"
# One ERROR per backoff step (0.1, 0.2, 0.4 ... 5 s): a handful over 30 s, not a flood.
n=$(grep -c "ERROR.*refused this worker" "$IMGQ_TMP/wrong.log")
[ "$n" -ge 5 ] && [ "$n" -le 20 ] || fail "$n refusal ERRORs in 30 s: $(cat "$IMGQ_TMP/wrong.log")"

# The right password works (and the worker exits 0 on an empty queue).
"$IMGQ_BIN/imgq-worker" --noop --exit-when-idle --redis "redis://:s3cret@127.0.0.1:$port/0" \
    >"$IMGQ_TMP/right.log" 2>&1 &
right=$!
track_pid $right
set +e
wait_pid $right 60
rc=$?
set -e
assert_eq "0" "$rc" "the right password works: $(cat "$IMGQ_TMP/right.log")"

# --- a Redis Cluster node that does not hold the queue's slot answers MOVED.
start_redis --cluster-enabled yes --cluster-config-file nodes.conf
a=$REDIS_PORT
start_redis --cluster-enabled yes --cluster-config-file nodes.conf
b=$REDIS_PORT
redis-cli -p "$a" cluster meet 127.0.0.1 "$b" >/dev/null
redis-cli -p "$b" cluster addslotsrange 0 16383 >/dev/null
converged() { redis-cli -p "$a" cluster keyslot x >/dev/null && redis-cli -p "$a" cluster info | grep -q 'cluster_state:ok'; }
wait_until 60 "the two-node cluster to agree" converged
"$IMGQ_BIN/imgq-worker" --noop --exit-when-idle --redis "redis://127.0.0.1:$a/0" \
    >"$IMGQ_TMP/cluster.log" 2>&1 &
cw=$!
track_pid $cw
set +e
wait_pid $cw 60
rc=$?
set -e
assert_eq "1" "$rc" "a worker at a cluster node exits with status 1: $(cat "$IMGQ_TMP/cluster.log")"
assert_contains "$(cat "$IMGQ_TMP/cluster.log")" "ERROR"
assert_contains "$(cat "$IMGQ_TMP/cluster.log")" "MOVED"
assert_contains "$(cat "$IMGQ_TMP/cluster.log")" "cluster mode is not supported yet (issue 18)"
echo "redis_auth: ok"
