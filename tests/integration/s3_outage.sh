#!/usr/bin/env bash
# An S3 outage never makes a job pay again (issue 13, item 4).  Real redis-server, imgq-sim and
# s3rver; s3rver is killed mid-batch and kept down longer than the old in-attempt PUT retries
# lasted (5 rounds, 15 s of waits), then started again on the same port and directory.
#   1. no spool directory: the paid bytes wait in memory, only the PUT is retried, and the
#      jobs' leases stay renewed while they wait (3 s leases against a 22 s outage);
#   2. a spool directory and a 1-byte memory cap: the bytes spill to files while S3 is down,
#      and the files are gone once it took them;
#   3. the worker killed (-9) while its paid bytes wait in the spool directory: a new worker on
#      that directory stores them before claiming, and the jobs complete from S3 at $0;
#   4. storing gives up (--store-timeout-ms) while S3 is down: the attempt fails as 'storage'
#      with its charge, and the next attempt stores the spooled bytes without calling the
#      provider (billed "spool"), also for a job with "dedup": false;
#   5. a damaged spool file is refused, logged and set aside.
# Every case: each job ends done, the simulator generated one image per job (no image was
# generated twice), the ledger has one provider-call entry per generation, and the objects are
# in S3 (listed with the AWS CLI).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/env.sh"
imgq_env_setup
start_redis
bucket=imgq-outage
start_s3 "$bucket"
s3_dir="$IMGQ_TMP/s3-$S3_PORT"
start_sim --latency-ms 600
command -v aws >/dev/null || fail "the AWS CLI is not installed"

PFX='imgq:{default}:'
rcli() { redis-cli -p "$REDIS_PORT" --raw "$@"; }
imgq() { "$IMGQ_BIN/imgq" "$@"; }
jget() { python3 -c "import json,sys; d=json.load(sys.stdin); print(d$1)"; }
calls() { curl -s "http://127.0.0.1:$SIM_PORT/sim/stats" | jget '["requests"]["generations"]["total"]'; }
# Ledger entries of provider calls (a dedup hit's entry records a saving, not a call).
ledger_calls() {
    rcli XRANGE "${PFX}ledger" - + | awk 'p { if ($0 != "dedup") n++; p = 0 } $0 == "reason" { p = 1 } END { print n + 0 }'
}
# Images stored so far, as s3rver keeps them on disk (cheap to poll; the AWS CLI checks at the end).
stored() { find "$s3_dir" -name '*._S3rver_object' ! -name '*.json._S3rver_object' 2>/dev/null | wc -l; }
spooled() { find "$1" -name '*.spool' 2>/dev/null | wc -l; }
at_least() { (($("$1" "${@:3}") >= $2)); } # at_least FUNCTION N ARGS... - FUNCTION ARGS prints >= N
s3_up() { curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$S3_PORT/$bucket"; }

stop_s3() {
    kill_pid 9 "$S3_PID"
    ! s3_up || fail "s3rver still answers after kill -9"
}
restart_s3() {
    s3rver --address 127.0.0.1 --port "$S3_PORT" --directory "$s3_dir" \
        --configure-bucket "$bucket" --silent </dev/null >>"$s3_dir.log" 2>&1 &
    S3_PID=$!
    track_pid "$S3_PID"
    wait_until 30 "s3rver back on port $S3_PORT" s3_up
}

# jobs N TAG - N distinct one-image jobs (distinct prompts: no dedup between them).
jobs() {
    local i
    for ((i = 0; i < $1; i++)); do
        printf '{"prompt":"%s lamp number %d on white","model":"gpt-image-1-mini","quality":"low"}\n' "$2" "$i"
    done
}

# check BATCH JOBS CALLS_BEFORE - every job done, one generation each, one ledger entry per
# generation, and every result's object (and sidecar) in S3 by the AWS CLI.
check() {
    local batch=$1 n=$2 before=$3 keys
    assert_eq "$n" "$(imgq batch status "$batch" --json | jget '["counts"]["done"]')" "$batch: jobs done"
    assert_eq $((before + n)) "$(calls)" "$batch: provider calls (one image per job, none twice)"
    assert_eq "$(calls)" "$(ledger_calls)" "$batch: ledger entries of provider calls = provider calls"
    keys=$(aws --endpoint-url "$AWS_ENDPOINT_URL_S3" s3api list-objects-v2 --bucket "$bucket" \
        --query 'Contents[].Key' --output text | tr '\t' '\n')
    imgq batch results "$batch" | grep -o '"key":"[^"]*"' | cut -d'"' -f4 >"$IMGQ_TMP/$batch.keys"
    assert_eq "$n" "$(wc -l <"$IMGQ_TMP/$batch.keys")" "$batch: result keys"
    while read -r k; do
        grep -qxF "$k" <<<"$keys" || fail "$batch: $k is not in S3"
        grep -qxF "${k%.*}.json" <<<"$keys" || grep -qxF "$k.json" <<<"$keys" ||
            fail "$batch: the sidecar of $k is not in S3"
    done <"$IMGQ_TMP/$batch.keys"
}

worker() { # worker LOG ARGS... - a worker in the background; its pid in $wpid
    local log=$1
    shift
    "$IMGQ_BIN/imgq-worker" --lease-ms 3000 --retry-base-ms 200 --retry-max-ms 1000 \
        --log-level info "$@" 2>"$IMGQ_TMP/$log.log" &
    wpid=$!
    track_pid "$wpid"
}
finish() { # finish LOG - wait for the worker (--exit-when-idle) to exit cleanly
    local rc=0
    wait_pid "$wpid" 240 || rc=$?
    _imgq_untrack "$wpid"
    [[ $rc == 0 ]] || fail "worker $1 exited with $rc"
}

note "0. the spool's flags refuse what they cannot use"
out=$("$IMGQ_BIN/imgq-worker" --spool-max-bytes 10X 2>&1) && fail "a bad size was accepted"
assert_contains "$out" "--spool-max-bytes '10X': expected a size in bytes"
: >"$IMGQ_TMP/not-a-dir"
out=$("$IMGQ_BIN/imgq-worker" --spool-dir "$IMGQ_TMP/not-a-dir/spool" 2>&1) && fail "a spool directory under a file was accepted"
assert_contains "$out" "spool directory $IMGQ_TMP/not-a-dir/spool: cannot create it"
out=$(IMGQ_SPOOL_MEMORY_BYTES=lots "$IMGQ_BIN/imgq-worker" 2>&1) && fail "a bad IMGQ_SPOOL_MEMORY_BYTES was accepted"
assert_contains "$out" "IMGQ_SPOOL_MEMORY_BYTES 'lots'"

note "1. S3 down for 22 s mid-batch, no spool directory"
jobs 24 brass >"$IMGQ_TMP/a.jsonl"
imgq submit --batch a "$IMGQ_TMP/a.jsonl" >/dev/null
before=$(calls)
worker a --concurrency 4 --exit-when-idle
wait_until 60 "the first images stored" at_least stored 4
stop_s3
t0=$SECONDS
wait_until 60 "a PUT failing" grep -q "storing failed" "$IMGQ_TMP/a.log"
while ((SECONDS - t0 < 22)); do
    kill -0 "$wpid" 2>/dev/null || fail "the worker died during the outage"
    sleep 0.5
done
restart_s3
finish a
check a 24 "$before"
log=$(cat "$IMGQ_TMP/a.log")
assert_contains "$log" "the images are paid for: trying the PUT again"
assert_contains "$log" "no image was generated again"
assert_not_contains "$log" "lease lost" "leases of storing jobs are renewed"
assert_eq 0 "$(rcli XRANGE "${PFX}events" - + | grep -c '^job.stalled$' || true)" "no lease expired"

note "2. a spool directory with a 1-byte memory cap: the bytes spill to files while S3 is down"
spool="$IMGQ_TMP/spool"
jobs 6 copper >"$IMGQ_TMP/b.jsonl"
imgq submit --batch b "$IMGQ_TMP/b.jsonl" >/dev/null
before=$(calls)
stop_s3
worker b --concurrency 3 --exit-when-idle --spool-dir "$spool" --spool-memory-bytes 1
# Three jobs paid for, each image and sidecar in a file; the rest wait (claims pause).
wait_until 60 "paid bytes in the spool directory" at_least spooled 6 "$spool"
assert_contains "$(cat "$IMGQ_TMP/b.log")" "kept only in the spool directory"
restart_s3
finish b
check b 6 "$before"
assert_eq 0 "$(spooled "$spool")" "spool files removed once stored"
assert_eq 0 "$(find "$spool" -name '.tmp.*' | wc -l)" "no temporary files left"

note "3. the worker killed with paid bytes in the spool: a new one stores them before claiming"
jobs 3 silver >"$IMGQ_TMP/c.jsonl"
imgq submit --batch c "$IMGQ_TMP/c.jsonl" >/dev/null
before=$(calls)
stop_s3
worker c1 --concurrency 3 --spool-dir "$spool"
wait_until 60 "paid bytes in the spool directory" at_least spooled 6 "$spool"
kill_pid 9 "$wpid"
assert_eq $((before + 3)) "$(calls)" "three images generated before the kill"
restart_s3
worker c2 --concurrency 3 --exit-when-idle --spool-dir "$spool"
finish c2
check c 3 "$before"
assert_eq 0 "$(spooled "$spool")" "spool files removed once stored"
log=$(cat "$IMGQ_TMP/c2.log")
assert_contains "$log" "recovery: 6 of 6 object(s)"
assert_eq 3 "$(imgq batch results c | grep -c '"billed":"dedup"')" "completed from S3 at \$0"
[[ "$(imgq batch status c --json | jget '["cost_micros"]')" -gt 0 ]] ||
    fail "batch c's cost lost the charge of the killed worker's calls"

note "4. storing gives up (--store-timeout-ms): the next attempt stores from the spool, unpaid"
# One of them opts out of dedup: that skips reusing other jobs' images, not its own paid ones.
jobs 1 iron >"$IMGQ_TMP/e.jsonl"
printf '{"prompt":"iron lamp number 1 on white","model":"gpt-image-1-mini","quality":"low","dedup":false}\n' >>"$IMGQ_TMP/e.jsonl"
imgq submit --batch e --max-attempts 20 "$IMGQ_TMP/e.jsonl" >/dev/null
before=$(calls)
stop_s3
worker e --concurrency 2 --exit-when-idle --spool-dir "$IMGQ_TMP/spool-e" --store-timeout-ms 1500
# Both jobs gave up once and started again from the spool (not one of them still at its first).
from_spool() { grep "paid for by an earlier attempt are in the spool" "$IMGQ_TMP/e.log" | awk '{print $4}' | sort -u | wc -l; }
wait_until 60 "both jobs' next attempts storing from the spool" at_least from_spool 2
restart_s3
finish e
check e 2 "$before"
log=$(cat "$IMGQ_TMP/e.log")
assert_contains "$log" "gave up: --store-timeout-ms passed; the charge stands; 2 object(s) stay in the spool"
assert_eq 2 "$(imgq batch results e | grep -c '"billed":"spool"')" "both stored from the spool"
[[ "$(imgq batch status e --json | jget '["cost_micros"]')" -gt 0 ]] ||
    fail "batch e's cost lost the charge of its first attempts"
assert_eq 0 "$(spooled "$IMGQ_TMP/spool-e")" "spool files removed once stored"

note "5. a damaged spool file is refused with a clear log line"
mkdir -p "$IMGQ_TMP/bad"
printf 'imgq-spool 1\nkey images/x.png\ntype image/png\nlength 99\nsha256 %064d\n\nshort' 0 \
    >"$IMGQ_TMP/bad/$(printf 'images/x.png' | sha256sum | cut -c1-64).spool"
worker d --exit-when-idle --spool-dir "$IMGQ_TMP/bad"
finish d
assert_contains "$(cat "$IMGQ_TMP/d.log")" "is damaged and refused: it is shorter than its length says"
assert_eq 1 "$(find "$IMGQ_TMP/bad" -name '*.spool.damaged' | wc -l)" "set aside as .damaged"
echo "PASS s3_outage"
