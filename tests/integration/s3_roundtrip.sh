#!/usr/bin/env bash
# s3_roundtrip.sh - imgq's S3 code against a real S3 server (s3rver on a free loopback port):
#   1. test_s3_live: async PUT/HEAD/GET through the libcurl multi client (small, odd-keyed and
#      multi-MiB objects, metadata, 404s), the blocking functions, bucket creation, presigned
#      GETs fetched by libcurl, an unreachable endpoint;
#   2. the CLI: `imgq presign` URLs used by a plain HTTP client (curl) to PUT, GET and HEAD an
#      object, an expired URL refused by the server, and the CLI's usage errors.
# s3rver checks that x-amz-content-sha256 is present and that presigned URLs have not expired,
# but not signatures: the signer itself is tested against AWS's published examples in
# test_s3 and test_http.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/env.sh"
imgq_env_setup

live="$IMGQ_BUILD_DIR/test_s3_live"
imgq="$IMGQ_BUILD_DIR/imgq"
[[ -x "$live" ]] || fail "$live not built (is cmocka installed?)"
[[ -x "$imgq" ]] || fail "$imgq not built"
command -v curl >/dev/null || fail "curl is not installed"

bucket=imgq-roundtrip
start_s3 "$bucket"
note "s3rver on $AWS_ENDPOINT_URL_S3, bucket $bucket"

note "library: async and blocking operations"
out=$(IMGQ_TEST_S3_ENDPOINT=$AWS_ENDPOINT_URL_S3 "$live" 2>&1) || {
    echo "$out" >&2
    fail "test_s3_live failed"
}
assert_not_contains "$out" "SKIPPED" "test_s3_live must run, not skip"

note "CLI: presigned PUT, GET, HEAD with a plain HTTP client"
key="cli/presigned object (1).txt"
printf 'hello from imgq presign\n' >"$IMGQ_TMP/object.txt"
put_url=$("$imgq" presign "s3://$bucket/$key" --expires 120 --method PUT)
assert_match "$put_url" "^$AWS_ENDPOINT_URL_S3/$bucket/cli/presigned%20object%20%281%29\.txt\?X-Amz-Algorithm=AWS4-HMAC-SHA256&"
status=$(curl -sS -o /dev/null -w '%{http_code}' -X PUT --data-binary @"$IMGQ_TMP/object.txt" "$put_url")
assert_eq 200 "$status" "presigned PUT"

get_url=$("$imgq" presign "s3://$bucket/$key" --expires 120)
curl -sS --fail -o "$IMGQ_TMP/fetched.txt" "$get_url" || fail "presigned GET failed"
cmp -s "$IMGQ_TMP/object.txt" "$IMGQ_TMP/fetched.txt" || fail "fetched object differs"

head_url=$("$imgq" presign "s3://$bucket/$key" --expires 60 --method head)
status=$(curl -sS -o /dev/null -w '%{http_code}' -I "$head_url")
assert_eq 200 "$status" "presigned HEAD"

note "CLI: an expired URL is refused"
old_url=$("$imgq" presign "s3://$bucket/$key" --expires 60 --at 20200101T000000Z)
assert_contains "$old_url" "X-Amz-Date=20200101T000000Z&X-Amz-Expires=60&"
body=$(curl -sS -w ' %{http_code}' "$old_url")
assert_contains "$body" "<Code>AccessDenied</Code>" "expired URL"
assert_contains "$body" " 403" "expired URL status"

note "CLI: the same inputs give the same URL"
a=$("$imgq" presign "s3://$bucket/k" --expires 5 --at 20240229T235959Z)
b=$("$imgq" presign "s3://$bucket/k" --expires=5 --at=20240229T235959Z --method GET)
assert_eq "$a" "$b" "presign is deterministic"

note "CLI: usage and configuration errors"
assert_status 2 "$imgq" presign "s3://$bucket/k"
assert_status 2 "$imgq" presign "s3://$bucket/k" --expires 0
assert_status 2 "$imgq" presign "s3://$bucket/k" --expires 604801
assert_status 2 "$imgq" presign "s3://$bucket/k" --expires 10s
assert_status 2 "$imgq" presign "s3://$bucket" --expires 10
assert_status 2 "$imgq" presign "http://$bucket/k" --expires 10
assert_status 2 "$imgq" presign "s3://$bucket/k" --expires 10 --at 20230229T000000Z
assert_status 2 "$imgq" presign "s3://$bucket/k" --expires 10 --method POST
assert_status 2 "$imgq" presign "s3://$bucket/k" --expires 10 --frobnicate
err=$("$imgq" presign "s3://$bucket/k" --expires 99x 2>&1 >/dev/null || true)
assert_contains "$err" "--expires '99x'" "the error names the bad argument"
err=$(env -u AWS_ACCESS_KEY_ID "$imgq" presign "s3://$bucket/k" --expires 10 2>&1 >/dev/null) &&
    fail "presign without credentials succeeded"
assert_contains "$err" "AWS_ACCESS_KEY_ID"
assert_status 1 env -u AWS_ACCESS_KEY_ID "$imgq" presign "s3://$bucket/k" --expires 10

note "ok"
