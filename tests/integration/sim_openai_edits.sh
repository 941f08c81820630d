#!/usr/bin/env bash
# sim_openai_edits.sh - imgq-sim's POST /v1/images/edits: multipart image[] (1-16) and mask as
# curl -F sends them, usage whose input image tokens count the references, and the refusals:
# too many images, a mask of the wrong size or not a PNG, a non-image part, no prompt, no
# image, models that cannot edit, moderation, malformed multipart; /sim/stats counts edits on
# their own.
#
# Self-contained: needs bash, curl, python3 (zlib + struct only, to write test images), od.
set -euo pipefail

SIM_TEST=openai-edits
source "$(dirname "${BASH_SOURCE[0]}")/../lib/sim_checks.sh"

# mkimg KIND OUT W H: a real PNG (png, or pnga with alpha) or a JPEG header with a SOF0 segment
# (jpeg: enough for the simulator, which reads only the magic bytes and the dimensions).
mkimg() {
    python3 - "$@" <<'PY'
import struct, sys, zlib
kind, out, w, h = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
def chunk(t, d):
    return struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d) & 0xffffffff)
if kind in ('png', 'pnga'):
    bpp, ct = (4, 6) if kind == 'pnga' else (3, 2)
    raw = b''.join(b'\0' + bytes((x * 7 + y) & 255 for x in range(w * bpp)) for y in range(h))
    data = (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, ct, 0, 0, 0))
            + chunk(b'IDAT', zlib.compress(raw)) + chunk(b'IEND', b''))
else:
    app0 = b'\xff\xe0' + struct.pack('>H', 16) + b'JFIF\0\x01\x01\0\0\x01\0\x01\0\0'
    sof0 = b'\xff\xc0' + struct.pack('>HBHHB', 11, 8, h, w, 1) + b'\x01\x11\x00'
    data = b'\xff\xd8' + app0 + sof0 + b'\xff\xd9'
open(out, 'wb').write(data)
PY
}

# edit PORT [curl -F args...]: POST a multipart edit; body in $TMP/body, headers in $TMP/head,
# status echoed.
edit() {
    local port=$1
    shift
    curl -sS -o "$TMP/body" -D "$TMP/head" -w '%{http_code}' \
        -H 'Authorization: Bearer sk-imgq-test' "$@" "http://127.0.0.1:$port/v1/images/edits"
}

json_int() { grep -o "\"$2\":[0-9]*" "$1" | sed -n 1p | cut -d: -f2; }
be32() { od -An -tu1 -j "$2" -N4 "$1" | awk '{print $1*16777216 + $2*65536 + $3*256 + $4}'; }
stats_field() { # stats_field ENDPOINT FIELD (from $TMP/stats)
    grep -o "\"$1\":{[^}]*}" "$TMP/stats" | grep -o "\"$2\":[0-9]*" | cut -d: -f2
}

mkimg png "$TMP/a.png" 64 48
mkimg png "$TMP/b.png" 40 40
mkimg pnga "$TMP/mask.png" 64 48
mkimg pnga "$TMP/mask_small.png" 32 32
mkimg jpeg "$TMP/c.jpg" 64 48
printf 'not an image at all\n' >"$TMP/notes.txt"

start_sim main --seed 7 --retry-after 4
P=$PORT_main

# ---- success: two references and a mask; usage counts the references ----
code=$(edit "$P" -F model=gpt-image-1 -F 'prompt=make it blue' -F n=2 -F size=1024x1024 \
    -F quality=high -F "image[]=@$TMP/a.png" -F "image[]=@$TMP/b.png" -F "mask=@$TMP/mask.png")
expect_eq "edit status" "$code" 200
cp "$TMP/body" "$TMP/edit2.json"
# "make it blue": 12 characters -> 3 text tokens; 2 references x ref_image_tokens 1025 (the
# catalog's gpt-image-1) = 2050 image tokens; high 1024x1024 = 4160 output tokens x n=2.
expect_has "edit usage details" "$TMP/edit2.json" '"input_tokens_details":{"text_tokens":3,"image_tokens":2050}'
expect_eq "edit input_tokens" "$(json_int "$TMP/edit2.json" input_tokens)" 2053
expect_eq "edit output_tokens" "$(json_int "$TMP/edit2.json" output_tokens)" 8320
expect_eq "edit total_tokens" "$(json_int "$TMP/edit2.json" total_tokens)" 10373
expect_eq "edit images" "$(grep -o '"b64_json"' "$TMP/edit2.json" | wc -l)" 2
expect_has "edit request id" "$TMP/head" "x-request-id: req_"
expect_has "edit rate-limit headers" "$TMP/head" "x-ratelimit-remaining-requests:"
grep -o '"b64_json":"[^"]*"' "$TMP/edit2.json" | sed -n 1p | cut -d'"' -f4 | base64 -d >"$TMP/out.png"
expect_eq "edit png signature" "$(od -An -tx1 -N8 "$TMP/out.png" | tr -d ' \n')" 89504e470d0a1a0a
expect_eq "edit png width" "$(be32 "$TMP/out.png" 16)" 1024
expect_eq "edit png height" "$(be32 "$TMP/out.png" 20)" 1024

# One reference: half the image tokens.  "image" without brackets is accepted too.
code=$(edit "$P" -F model=gpt-image-1 -F 'prompt=make it blue' -F quality=low -F "image=@$TMP/a.png")
expect_eq "one ref status" "$code" 200
expect_has "one ref usage" "$TMP/body" '"input_tokens_details":{"text_tokens":3,"image_tokens":1025}'
expect_eq "one ref output_tokens" "$(json_int "$TMP/body" output_tokens)" 272

# Sixteen references: the maximum, 16 x 1025 image tokens.
args=()
for _ in $(seq 1 16); do args+=(-F "image[]=@$TMP/b.png"); done
code=$(edit "$P" -F model=gpt-image-1-mini -F prompt=collage -F quality=low "${args[@]}")
expect_eq "16 images status" "$code" 200
expect_has "16 images usage" "$TMP/body" '"image_tokens":16400}'

# A JPEG first image with a mask of its size (dimensions read from the SOF segment).
code=$(edit "$P" -F model=gpt-image-1.5 -F prompt=x -F input_fidelity=high \
    -F "image[]=@$TMP/c.jpg;type=image/jpeg" -F "mask=@$TMP/mask.png")
expect_eq "jpeg + mask status" "$code" 200

# ---- refusals ----
args+=(-F "image[]=@$TMP/a.png")
expect_eq "17 images" "$(edit "$P" -F model=gpt-image-1 -F prompt=x "${args[@]}")" 400
expect_has "17 images param" "$TMP/body" '"param":"image"'
expect_has "17 images code" "$TMP/body" '"code":"array_above_max_length"'
expect_has "17 images type" "$TMP/body" '"type":"invalid_request_error"'

expect_eq "mask wrong size" "$(edit "$P" -F model=gpt-image-1 -F prompt=x -F "image[]=@$TMP/a.png" -F "mask=@$TMP/mask_small.png")" 400
expect_has "mask wrong size param" "$TMP/body" '"param":"mask"'
expect_has "mask wrong size message" "$TMP/body" "the mask (32x32) must have the same dimensions as the image (64x48)"
expect_eq "mask vs jpeg size" "$(edit "$P" -F model=gpt-image-1 -F prompt=x -F "image[]=@$TMP/c.jpg" -F "mask=@$TMP/mask_small.png")" 400
expect_has "mask vs jpeg size message" "$TMP/body" "(64x48)"
expect_eq "mask not png" "$(edit "$P" -F model=gpt-image-1 -F prompt=x -F "image[]=@$TMP/c.jpg" -F "mask=@$TMP/c.jpg")" 400
expect_has "mask not png param" "$TMP/body" '"param":"mask"'

expect_eq "non-image part" "$(edit "$P" -F model=gpt-image-1 -F prompt=x -F "image[]=@$TMP/a.png" -F "image[]=@$TMP/notes.txt")" 400
expect_has "non-image param" "$TMP/body" '"param":"image"'
expect_has "non-image names the file" "$TMP/body" "notes.txt' (image 1)"

expect_eq "no prompt" "$(edit "$P" -F model=gpt-image-1 -F "image[]=@$TMP/a.png")" 400
expect_has "no prompt param" "$TMP/body" '"param":"prompt"'
expect_has "no prompt code" "$TMP/body" '"code":"missing_required_parameter"'
expect_eq "no image" "$(edit "$P" -F model=gpt-image-1 -F prompt=x)" 400
expect_has "no image param" "$TMP/body" '"param":"image"'
expect_eq "image as text" "$(edit "$P" -F model=gpt-image-1 -F prompt=x -F 'image[]=a.png')" 400
expect_has "image as text code" "$TMP/body" '"code":"invalid_type"'
expect_eq "dall-e-3 cannot edit" "$(edit "$P" -F model=dall-e-3 -F prompt=x -F "image[]=@$TMP/a.png")" 400
expect_has "dall-e-3 param" "$TMP/body" '"param":"model"'
expect_eq "no moderation field" "$(edit "$P" -F model=gpt-image-1 -F prompt=x -F moderation=low -F "image[]=@$TMP/a.png")" 400
expect_has "moderation unknown" "$TMP/body" '"code":"unknown_parameter"'
expect_eq "fidelity on mini" "$(edit "$P" -F model=gpt-image-1-mini -F prompt=x -F input_fidelity=high -F "image[]=@$TMP/a.png")" 400
expect_has "fidelity param" "$TMP/body" '"param":"input_fidelity"'
expect_eq "n too big" "$(edit "$P" -F model=gpt-image-1 -F prompt=x -F n=11 -F "image[]=@$TMP/a.png")" 400
expect_has "n too big code" "$TMP/body" '"code":"integer_above_max_value"'
expect_eq "bad size" "$(edit "$P" -F model=gpt-image-1 -F prompt=x -F size=1254x836 -F "image[]=@$TMP/a.png")" 400
expect_has "bad size param" "$TMP/body" '"param":"size"'
expect_eq "json body" "$(edit "$P" -H 'Content-Type: application/json' --data-binary '{"model":"gpt-image-1","prompt":"x"}')" 400
expect_has "json body code" "$TMP/body" '"code":"invalid_content_type"'
# Multipart without its closing boundary (a truncated upload).
printf -- '--XyZ\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nhello\r\n' >"$TMP/trunc"
expect_eq "truncated multipart" "$(edit "$P" -H 'Content-Type: multipart/form-data; boundary=XyZ' --data-binary "@$TMP/trunc")" 400
expect_has "truncated multipart code" "$TMP/body" '"code":"invalid_multipart"'

# ---- moderation, injected failures, auth, method ----
expect_eq "moderation" "$(edit "$P" -F model=gpt-image-1 -F 'prompt=x [sim:moderation]' -F "image[]=@$TMP/a.png")" 400
expect_has "moderation code" "$TMP/body" '"code":"moderation_blocked"'
expect_has "moderation type" "$TMP/body" '"type":"image_generation_user_error"'
expect_eq "429" "$(edit "$P" -F model=gpt-image-1 -F 'prompt=x [sim:429]' -F "image[]=@$TMP/a.png")" 429
expect_has "429 retry-after" "$TMP/head" "retry-after: 4"
expect_eq "500" "$(edit "$P" -F model=gpt-image-1 -F 'prompt=x [sim:500]' -F "image[]=@$TMP/a.png")" 500
code=$(curl -sS -o "$TMP/body" -w '%{http_code}' -F model=gpt-image-1 -F prompt=x \
    -F "image[]=@$TMP/a.png" "http://127.0.0.1:$P/v1/images/edits")
expect_eq "no key" "$code" 401
expect_eq "wrong method" "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$P/v1/images/edits")" 405

# ---- /sim/stats: edits counted apart from generations ----
curl -sS "http://127.0.0.1:$P/sim/stats" >"$TMP/stats"
# ok: 2 refs, 1 ref, 16 images, jpeg + mask = 4; invalid: the 15 refusals above + the 405.
expect_eq "stats edits ok" "$(stats_field edits ok)" 4
expect_eq "stats edits invalid" "$(stats_field edits invalid_request)" 16
expect_eq "stats edits moderation" "$(stats_field edits moderation)" 1
expect_eq "stats edits rate_limited" "$(stats_field edits rate_limited)" 1
expect_eq "stats edits server_error" "$(stats_field edits server_error)" 1
expect_eq "stats edits unauthorized" "$(stats_field edits unauthorized)" 1
expect_eq "stats edits total" "$(stats_field edits total)" 24
expect_eq "stats generations untouched" "$(stats_field generations total)" 0
expect_eq "stats images" "$(json_int "$TMP/stats" images)" 5

kill -TERM "$PID_main"
status=0
wait "$PID_main" || status=$?
expect_eq "exit status after SIGTERM" "$status" 0
expect_not "no sanitizer report" "$TMP/main.err" "Sanitizer"

echo "sim_openai_edits: $CHECKS checks, $FAILS failed"
[[ $FAILS -eq 0 ]]
