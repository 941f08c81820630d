#!/usr/bin/env bash
# config_strict.sh - config files are strict, and the environment beats them, for imgq and
# imgq-worker alike:
#   1. an unknown key (worker.concurency) is an error naming it and the nearest known key;
#   2. a secret in the file (s3.secret_access_key) is refused, pointing at the variable to use,
#      without echoing it;
#   3. an invalid IMGQ_LOG_LEVEL is an error naming the value and the allowed ones;
#   4. the file's s3.endpoint and s3.region lose to AWS_ENDPOINT_URL_S3 and AWS_REGION: with two
#      real s3rvers, the worker's image lands in the environment's one, none in the file's;
#   5. deploy/imgq.example.json is accepted.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/env.sh"
imgq_env_setup
start_redis
bucket="imgq-config-strict"
start_s3 "$bucket" # the file's S3: nothing may land here
FILE_S3=$AWS_ENDPOINT_URL_S3 FILE_S3_DIR="$IMGQ_TMP/s3-$S3_PORT"
start_s3 "$bucket" # the environment's
ENV_S3_DIR="$IMGQ_TMP/s3-$S3_PORT"
start_sim --latency-ms 10 --seed 3
imgq="$IMGQ_BIN/imgq" worker="$IMGQ_BIN/imgq-worker"

# refused WHAT EXPECTED-TEXT COMMAND...: exits 2 and says EXPECTED-TEXT on stderr
refused() {
    local what=$1 want=$2 rc=0 out
    shift 2
    out=$("$@" 2>&1 >/dev/null) || rc=$?
    assert_eq 2 "$rc" "$what: exit status (stderr: $out)"
    assert_contains "$out" "$want" "$what"
    assert_not_contains "$out" "hunter2" "$what: no secret echoed"
}

note "an unknown key, with the nearest known one"
typo="$IMGQ_TMP/typo.json"
printf '{"worker": {"concurency": 8}}\n' >"$typo"
msg="unknown key 'worker.concurency' in $typo (did you mean 'worker.concurrency'?)"
refused "imgq, typo" "$msg" "$imgq" --config "$typo" stats
refused "imgq, typo via IMGQ_CONFIG" "$msg" env IMGQ_CONFIG="$typo" "$imgq" stats
refused "imgq-worker, typo" "$msg" "$worker" --config "$typo" --exit-when-idle

note "a secret anywhere in the file"
secret="$IMGQ_TMP/secret.json"
printf '{"s3": {"bucket": "%s", "secret_access_key": "hunter2"}}\n' "$bucket" >"$secret"
msg="'secret_access_key' does not belong in a config file"
refused "imgq, secret" "$msg" "$imgq" --config "$secret" stats
refused "imgq, secret: the variable" "set AWS_SECRET_ACCESS_KEY" "$imgq" --config "$secret" stats
refused "imgq-worker, secret" "$msg" "$worker" --config "$secret" --exit-when-idle
printf '{"worker": {"concurrency": 2, "redis_password": "hunter2"}}\n' >"$secret"
refused "imgq-worker, nested secret" "(worker.redis_password" "$worker" --config "$secret" \
    --exit-when-idle

note "an invalid IMGQ_LOG_LEVEL"
msg="IMGQ_LOG_LEVEL 'loud': expected error, warn, info or debug"
refused "imgq, log level" "$msg" env IMGQ_LOG_LEVEL=loud "$imgq" stats
refused "imgq-worker, log level" "$msg" env IMGQ_LOG_LEVEL=loud "$worker" --exit-when-idle

note "the example config is accepted"
"$imgq" --config "$IMGQ_ROOT/deploy/imgq.example.json" presign "s3://$bucket/k" --expires 10 \
    >/dev/null || fail "deploy/imgq.example.json refused"

note "the environment's S3 endpoint beats the file's"
conf="$IMGQ_TMP/imgq.json"
printf '{"s3": {"endpoint": "%s", "region": "eu-west-3"}, "worker": {"concurrency": 2}}\n' \
    "$FILE_S3" >"$conf"
url=$("$imgq" --config "$conf" presign "s3://$bucket/k" --expires 10)
assert_contains "$url" "$AWS_ENDPOINT_URL_S3/$bucket/k?" "imgq presign: the environment's endpoint"
assert_contains "$url" "%2Fus-east-1%2Fs3%2F" "imgq presign: the environment's region"
printf '{"id":"paid","prompt":"a red bicycle","model":"gpt-image-1-mini","quality":"low"}\n' \
    >"$IMGQ_TMP/jobs.jsonl"
"$imgq" --config "$conf" submit --batch cfg "$IMGQ_TMP/jobs.jsonl" >/dev/null
"$worker" --config "$conf" --exit-when-idle --store-timeout-ms 20000 \
    >"$IMGQ_TMP/worker.log" 2>&1 &
pid=$!
track_pid "$pid"
rc=0
wait_pid "$pid" 120 || rc=$?
assert_eq 0 "$rc" "the worker's exit (log: $(tail -5 "$IMGQ_TMP/worker.log"))"
objects() { find "$1" -name '*._S3rver_object' -path "*/$bucket/*" | wc -l; }
assert_eq 0 "$(objects "$FILE_S3_DIR")" "objects in the file's S3"
[[ $(objects "$ENV_S3_DIR") -ge 1 ]] || fail "no object in the environment's S3 ($AWS_ENDPOINT_URL_S3)"
state=$("$imgq" batch results cfg | python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())["state"])')
assert_eq "done" "$state" "the job's state"
echo "PASS config_strict"
