#!/usr/bin/env bash
# imgq webhook sign / verify: the Standard Webhooks headers a receiver gets, checked three ways:
#   - the spec's published vector (msg_p5jXN8AQM9LWM0D4loKWxJek, 1614265330, {"test": 2432232314}
#     under whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw -> v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=);
#   - sign -> verify round trips through the CLI (binary bodies, rotation with two secrets,
#     tampering, timestamp tolerance, malformed headers, bad secrets);
#   - an independent implementation (python3's hmac + hashlib + base64) computing the same
#     signature, and the CLI verifying what python signed.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/env.sh"
imgq_env_setup
IMGQ="$IMGQ_BIN/imgq"
T="$IMGQ_TMP"

S1=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
S2=$(python3 -c 'import base64,os; print("whsec_" + base64.b64encode(os.urandom(32)).decode())')
VEC_ID=msg_p5jXN8AQM9LWM0D4loKWxJek
VEC_TS=1614265330
VEC_SIG='v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE='
printf '{"test": 2432232314}' >"$T/vec.json"

# header NAME FILE: the value of one header line printed by "imgq webhook sign".
header() {
    sed -n "s/^$1: //p" "$2"
}

# python_sign SECRET ID TS FILE: the v1 signature computed by python's standard library.
python_sign() {
    python3 - "$@" <<'EOF'
import base64, hashlib, hmac, sys
secret, msg_id, ts, path = sys.argv[1:5]
assert secret.startswith("whsec_")
key = base64.b64decode(secret[len("whsec_"):], validate=True)
body = open(path, "rb").read()
mac = hmac.new(key, msg_id.encode() + b"." + ts.encode() + b"." + body, hashlib.sha256).digest()
print("v1," + base64.b64encode(mac).decode())
EOF
}

# ---- the published vector ------------------------------------------------------------------
note "published vector: sign"
"$IMGQ" webhook sign --secret "$S1" --id "$VEC_ID" --timestamp "$VEC_TS" <"$T/vec.json" >"$T/h"
assert_eq "$VEC_ID" "$(header webhook-id "$T/h")" "webhook-id"
assert_eq "$VEC_TS" "$(header webhook-timestamp "$T/h")" "webhook-timestamp"
assert_eq "$VEC_SIG" "$(header webhook-signature "$T/h")" "signature of the published vector"
assert_eq 3 "$(wc -l <"$T/h")" "exactly three header lines"
assert_eq "$VEC_SIG" "$(python_sign "$S1" "$VEC_ID" "$VEC_TS" "$T/vec.json")" \
    "python's signature of the published vector"

note "published vector: verify"
out=$("$IMGQ" webhook verify --secret "$S1" --id "$VEC_ID" --timestamp "$VEC_TS" \
    --signature "$VEC_SIG" --now "$VEC_TS" <"$T/vec.json")
assert_eq valid "$out"
# It is years old: refused at the current time with the default tolerance.
assert_status 1 "$IMGQ" webhook verify --secret "$S1" --id "$VEC_ID" --timestamp "$VEC_TS" \
    --signature "$VEC_SIG" <"$T/vec.json"
out=$("$IMGQ" webhook verify --secret "$S1" --id "$VEC_ID" --timestamp "$VEC_TS" \
    --signature "$VEC_SIG" <"$T/vec.json" 2>&1) && fail "an old delivery verified"
assert_contains "$out" "timestamp too old"

# ---- round trips ---------------------------------------------------------------------------
note "round trip: random binary body, generated id, current time"
head -c 100000 /dev/urandom >"$T/bin"
"$IMGQ" webhook sign --secret "$S1" <"$T/bin" >"$T/h"
id=$(header webhook-id "$T/h")
ts=$(header webhook-timestamp "$T/h")
sig=$(header webhook-signature "$T/h")
assert_match "$id" '^msg_[A-Za-z0-9_-]{24}$' "generated id"
now=$(date +%s)
(( ts >= now - 5 && ts <= now + 5 )) || fail "timestamp $ts is not now ($now)"
out=$("$IMGQ" webhook verify --secret "$S1" --id "$id" --timestamp "$ts" --signature "$sig" <"$T/bin")
assert_eq valid "$out"
assert_eq "$sig" "$(python_sign "$S1" "$id" "$ts" "$T/bin")" "python agrees on a binary body"

note "round trip: empty body"
: >"$T/empty"
"$IMGQ" webhook sign --secret "$S2" --id msg_empty --timestamp 1700000000 <"$T/empty" >"$T/h"
sig=$(header webhook-signature "$T/h")
assert_eq "$sig" "$(python_sign "$S2" msg_empty 1700000000 "$T/empty")" "python, empty body"
out=$("$IMGQ" webhook verify --secret "$S2" --id msg_empty --timestamp 1700000000 \
    --signature "$sig" --now 1700000000 <"$T/empty")
assert_eq valid "$out"

note "rotation: two secrets sign, a receiver with either verifies"
printf '{"type":"job.succeeded","job":"j-1"}' >"$T/ev.json"
"$IMGQ" webhook sign --secret "$S1" --secret "$S2" --id msg_rot --timestamp 1700000000 \
    <"$T/ev.json" >"$T/h"
sig=$(header webhook-signature "$T/h")
read -r sig_a sig_b <<<"$sig"
assert_eq "$(python_sign "$S1" msg_rot 1700000000 "$T/ev.json")" "$sig_a" "first entry: secret 1"
assert_eq "$(python_sign "$S2" msg_rot 1700000000 "$T/ev.json")" "$sig_b" "second entry: secret 2"
for s in "$S1" "$S2"; do
    out=$("$IMGQ" webhook verify --secret "$s" --id msg_rot --timestamp 1700000000 \
        --signature "$sig" --now 1700000100 <"$T/ev.json")
    assert_eq valid "$out" "receiver holding one of the two secrets"
done
# Secrets from the environment, space-separated.
out=$(IMGQ_WEBHOOK_SECRET="$S2 $S1" "$IMGQ" webhook verify --id msg_rot --timestamp 1700000000 \
    --signature "$sig_b" --now 1700000000 <"$T/ev.json")
assert_eq valid "$out" "secrets from IMGQ_WEBHOOK_SECRET"
other=whsec_$(printf 'another-secret-of-24-bytes' | base64)
out=$("$IMGQ" webhook verify --secret "$other" --id msg_rot --timestamp 1700000000 \
    --signature "$sig" --now 1700000000 <"$T/ev.json" 2>&1) && fail "a foreign secret verified"
assert_contains "$out" "no matching signature"

# ---- python signs, the CLI verifies ----------------------------------------------------------
note "python signs, imgq verifies"
py_sig=$(python_sign "$S2" msg_py 1700000123 "$T/ev.json")
out=$("$IMGQ" webhook verify --secret "$S2" --id msg_py --timestamp 1700000123 \
    --signature "v1a,AAAA $py_sig" --now 1700000000 <"$T/ev.json")
assert_eq valid "$out" "python's signature, next to a v1a entry"

# ---- refusals --------------------------------------------------------------------------------
# expect_invalid REASON VERIFY-ARGS... < body: exit 1 and REASON on stderr.
expect_invalid() {
    local reason=$1 out st=0
    shift
    out=$("$IMGQ" webhook verify "$@" 2>&1) || st=$?
    assert_eq 1 "$st" "exit status for '$reason'"
    assert_contains "$out" "$reason"
}
note "tampering, tolerance, malformed headers"
good=(--secret "$S1" --id msg_rot --timestamp 1700000000 --signature "$sig_a")
printf '{"type":"job.succeeded","job":"j-2"}' >"$T/ev2.json"
expect_invalid "no matching signature" "${good[@]}" --now 1700000000 <"$T/ev2.json"
expect_invalid "no matching signature" --secret "$S1" --id msg_roT --timestamp 1700000000 \
    --signature "$sig_a" --now 1700000000 <"$T/ev.json"
expect_invalid "no matching signature" --secret "$S1" --id msg_rot --timestamp 1700000001 \
    --signature "$sig_a" --now 1700000000 <"$T/ev.json"
expect_invalid "timestamp too old" "${good[@]}" --now 1700000301 <"$T/ev.json"
expect_invalid "timestamp too new" "${good[@]}" --now 1699999699 <"$T/ev.json"
out=$("$IMGQ" webhook verify "${good[@]}" --now 1700000301 --tolerance 600 <"$T/ev.json")
assert_eq valid "$out" "--tolerance widens the window"
expect_invalid "timestamp too old" "${good[@]}" --now 1700000011 --tolerance 10 <"$T/ev.json"
expect_invalid "malformed header" --secret "$S1" --id msg_rot --timestamp 1.7e9 \
    --signature "$sig_a" --now 1700000000 <"$T/ev.json"
expect_invalid "malformed header" --secret "$S1" --id msg_rot --timestamp 1700000000 \
    --signature "${sig_a#v1,}" --now 1700000000 <"$T/ev.json"
expect_invalid "malformed header" --secret "$S1" --id msg.rot --timestamp 1700000000 \
    --signature "$sig_a" --now 1700000000 <"$T/ev.json"

note "usage errors exit 2"
assert_status 2 "$IMGQ" webhook sign --secret not-a-secret </dev/null
assert_status 2 "$IMGQ" webhook sign --secret 'whsec_%%%' </dev/null
assert_status 2 "$IMGQ" webhook sign --secret "$S1" --timestamp yesterday </dev/null
assert_status 2 "$IMGQ" webhook sign --secret "$S1" --id 'a.b' </dev/null
assert_status 2 env -u IMGQ_WEBHOOK_SECRET "$IMGQ" webhook sign </dev/null
assert_status 2 "$IMGQ" webhook verify --secret "$S1" --id x --timestamp 1 </dev/null
assert_status 2 "$IMGQ" webhook verify "${good[@]}" --tolerance 0 </dev/null
assert_status 2 "$IMGQ" webhook frobnicate
out=$("$IMGQ" webhook sign --secret whsec_ </dev/null 2>&1) || true
assert_contains "$out" "secret key is empty"

note "webhook_cli: all good"
