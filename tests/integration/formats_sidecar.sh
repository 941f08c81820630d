#!/usr/bin/env bash
# Storage formats and sidecars, through a real worker (imgq-sim, s3rver, redis-server):
#   - output_format webp (default), png and jpeg are stored as such: the bytes behind each
#     presigned link are a WebP, a PNG or a JPEG of the asked size, under .webp/.png/.jpg keys;
#   - next to every image, KEY.json says what made it (prompt, model, size, format, width,
#     height, bytes, usage, cost), and the sidecars' costs add up to the job's cost;
#   - a transparent background in jpeg is refused at submit.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/env.sh"
imgq_env_setup
start_redis
start_s3 imgq-formats
start_sim --latency-ms 10
imgq() { "$IMGQ_BIN/imgq" "$@"; }

cat >"$IMGQ_TMP/jobs.jsonl" <<'EOF'
{"id":"w","prompt":"a blue mug on oak","model":"gpt-image-1-mini","quality":"low","size":"1024x1024","n":2}
{"id":"p","prompt":"a linen tote","model":"gpt-image-1-mini","quality":"low","size":"1024x1536","output_format":"png"}
{"id":"j","prompt":"a wool rug","model":"gpt-image-1-mini","quality":"low","size":"1536x1024","output_format":"jpeg","output_compression":80}
EOF
imgq submit --batch fmt "$IMGQ_TMP/jobs.jsonl" >/dev/null
"$IMGQ_BIN/imgq-worker" --exit-when-idle --retry-base-ms 50 2>"$IMGQ_TMP/worker.log" || fail "the worker failed"
imgq results fmt --presign 600 --json >"$IMGQ_TMP/results.jsonl"
assert_eq 4 "$(wc -l <"$IMGQ_TMP/results.jsonl")" "four images"

imgq batch results fmt >"$IMGQ_TMP/jobs.out"
python3 - "$IMGQ_TMP" "$AWS_ENDPOINT_URL_S3" <<'PYEOF' || fail "stored formats or sidecars are wrong"
import json, struct, subprocess, sys, urllib.request
tmp = sys.argv[1]
jobs = {}
for line in open(tmp + "/jobs.out"):
    j = json.loads(line)
    jobs[j["client_id"]] = j
want = {"w": ("webp", ".webp", b"RIFF"), "p": ("png", ".png", b"\x89PNG"), "j": ("jpeg", ".jpg", b"\xff\xd8\xff")}
sidecar_cost = {}
for line in open(tmp + "/results.jsonl"):
    r = json.loads(line)
    cid = r["client_id"]
    fmt, ext, magic = want[cid]
    assert r["format"] == fmt, r
    assert r["key"].endswith(ext), r
    body = urllib.request.urlopen(r["url"]).read()
    assert body.startswith(magic), (cid, body[:8])
    assert len(body) == r["bytes"], (cid, len(body), r["bytes"])
    if fmt == "webp":
        assert body[8:12] == b"WEBP"
    if fmt == "jpeg":
        # the SOF0/SOF2 frame header holds the height and width
        i = 2
        while i < len(body):
            marker, seglen = body[i + 1], struct.unpack(">H", body[i + 2:i + 4])[0]
            if marker in (0xC0, 0xC1, 0xC2):
                h, w = struct.unpack(">HH", body[i + 5:i + 9])
                assert (w, h) == (1536, 1024), (w, h)
                break
            i += 2 + seglen
        else:
            raise AssertionError("no JPEG frame header")
    # The sidecar, presigned the same way.
    url = subprocess.check_output(["%s/imgq" % __import__("os").environ["IMGQ_BIN"], "presign",
                                   "s3://%s/%s.json" % (r["bucket"], r["key"]), "--expires", "600"],
                                  text=True).strip()
    sc = json.loads(urllib.request.urlopen(url).read())
    assert sc["key"] == r["key"], sc
    assert sc["model"] == "gpt-image-1-mini", sc
    assert sc["format"] == fmt, sc
    assert sc["bytes"] == r["bytes"] and sc["width"] == r["width"] and sc["height"] == r["height"], sc
    assert sc["prompt"] == jobs[cid].get("prompt", sc["prompt"]), sc
    assert "usage" in sc and "cost_micros" in sc and "created" in sc, sc
    sidecar_cost[cid] = sidecar_cost.get(cid, 0) + sc["cost_micros"]
for cid, j in jobs.items():
    assert sidecar_cost[cid] == j["cost_micros"], (cid, sidecar_cost[cid], j["cost_micros"])
print("formats and sidecars:", {k: v for k, v in sidecar_cost.items()})
PYEOF

printf '{"prompt":"x","model":"gpt-image-1.5","quality":"low","output_format":"jpeg","background":"transparent"}\n' >"$IMGQ_TMP/bad.jsonl"
out=$(imgq submit --batch bad "$IMGQ_TMP/bad.jsonl" 2>&1 || true)
assert_contains "$out" "'jpeg' has no transparency"
echo "PASS formats_sidecar"
