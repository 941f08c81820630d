#!/usr/bin/env bash
# imgq route --explain --json under valgrind: no invalid reads (the candidates once pointed into
# the job's JSON after it was freed: "quality":"\u0003", "size":"chosen"), one JSON object with
# the schema of README "Routing" ({"chosen", "candidates": [{model, verdict, quality, size,
# cost_micros, expected_micros, success_rate, reason}]}, the same keys on every candidate), the
# request's quality and size on every priced candidate, and the same bytes on every run.
# Without Redis the router has no success rates; with Redis it uses the queue's.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/env.sh"
imgq_env_setup
start_redis
IMGQ="$IMGQ_BIN/imgq"
rcli() { redis-cli -p "$REDIS_PORT" "$@"; }
if grep -q __asan_init "$IMGQ"; then
    # A sanitizer build (-DIMGQ_SANITIZE=ON) cannot run under valgrind: ASan checks it instead.
    vg() { ASAN_OPTIONS="exitcode=99:${ASAN_OPTIONS:-}" "$IMGQ" route --explain --json "$@"; }
else
    command -v valgrind >/dev/null || fail "valgrind is not installed"
    vg() { valgrind -q --error-exitcode=99 "$IMGQ" route --explain --json "$@"; }
fi

# check FILE.json QUALITY SIZE: the schema, and the request's quality and size where priced.
check() {
    python3 - "$@" <<'PY' || fail "route --explain --json: bad output in $1"
import json, sys
path, quality, size = sys.argv[1], sys.argv[2], sys.argv[3]
o = json.load(open(path))
assert isinstance(o, dict) and set(o) == {"chosen", "candidates"}, o
keys = {"model", "verdict", "quality", "size", "cost_micros", "expected_micros",
        "success_rate", "reason"}
cands = o["candidates"]
assert len(cands) > 5, cands
chosen = [c for c in cands if c["verdict"] == "chosen"]
assert len(chosen) <= 1
assert o["chosen"] == (chosen[0]["model"] if chosen else None), o["chosen"]
for c in cands:
    assert set(c) == keys, c
    assert isinstance(c["model"], str) and c["model"], c
    assert c["verdict"] in ("chosen", "eligible", "excluded"), c
    assert isinstance(c["reason"], str) and c["reason"], c
    assert isinstance(c["success_rate"], (int, float)) and 0 <= c["success_rate"] <= 1, c
    for k in ("cost_micros", "expected_micros"):
        assert c[k] is None or (type(c[k]) is int and c[k] >= 0), c
    for k in ("quality", "size"):
        assert c[k] is None or isinstance(c[k], str), c
    if c["verdict"] != "excluded":
        assert c["cost_micros"] is not None and c["expected_micros"] is not None, c
        assert c["size"] == size, (c, size)
    if c["cost_micros"] is None:
        assert c["quality"] is None and c["size"] is None and c["expected_micros"] is None, c
    else:
        assert c["size"] == size, (c, size)
        assert c["quality"] in (None, quality), (c, quality)
assert any(c["quality"] == quality for c in cands), "no candidate runs at the asked quality"
PY
}

cat >"$IMGQ_TMP/job.json" <<'EOF'
{"prompt": "a red fox in the snow, studio light", "model": "auto", "quality": "low", "size": "1024x1024"}
EOF
cat >"$IMGQ_TMP/none.json" <<'EOF'
{"prompt": "a poster", "model": "auto", "quality": "high", "size": "1024x1024", "max_cost_usd": "0.000001"}
EOF

note "without Redis: valgrind-clean, the schema, the same output twice"
for run in 1 2; do
    IMGQ_REDIS_URL="redis://127.0.0.1:1/0" vg "$IMGQ_TMP/job.json" >"$IMGQ_TMP/a$run.json" ||
        fail "route --explain --json (no Redis) exited $? (99: valgrind or ASan found errors)"
done
cat "$IMGQ_TMP/a1.json"
check "$IMGQ_TMP/a1.json" low 1024x1024
cmp -s "$IMGQ_TMP/a1.json" "$IMGQ_TMP/a2.json" || fail "two identical runs printed different output"
assert_eq "gpt-image-1-mini" "$(jq -r .chosen "$IMGQ_TMP/a1.json")" "the cheapest low-quality model"

note "with Redis: the queue's success rates; an unreliable model is priced but not expected"
rcli hset 'imgq:{default}:models' ok:gpt-image-1-mini 6 fail:gpt-image-1-mini 14 \
    ok:gpt-image-2 30 fail:gpt-image-2 10 >/dev/null
for run in 1 2; do
    vg "$IMGQ_TMP/job.json" >"$IMGQ_TMP/b$run.json" ||
        fail "route --explain --json (Redis) exited $? (99: valgrind or ASan found errors)"
done
check "$IMGQ_TMP/b1.json" low 1024x1024
cmp -s "$IMGQ_TMP/b1.json" "$IMGQ_TMP/b2.json" || fail "two identical runs printed different output"
mini=$(jq -c '.candidates[] | select(.model == "gpt-image-1-mini")' "$IMGQ_TMP/b1.json")
assert_eq "excluded 0.3 null low" "$(jq -r '"\(.verdict) \(.success_rate) \(.expected_micros) \(.quality)"' <<<"$mini")" "unreliable mini"
[ "$(jq -r .cost_micros <<<"$mini")" -gt 0 ] || fail "the unreliable model was not priced: $mini"
assert_eq "flux-schnell" "$(jq -r .chosen "$IMGQ_TMP/b1.json")" "the cheapest reliable model"
assert_eq "0.75" "$(jq -r '.candidates[] | select(.model == "gpt-image-2") | .success_rate' "$IMGQ_TMP/b1.json")"

note "no model can do it: exit 1, the candidates still listed, chosen null"
set +e
vg - <"$IMGQ_TMP/none.json" >"$IMGQ_TMP/c.json" 2>"$IMGQ_TMP/c.err"
rc=$?
set -e
assert_eq 1 "$rc" "exit status when nothing is eligible (99: valgrind found errors)"
assert_contains "$(cat "$IMGQ_TMP/c.err")" "no model can do this job"
check "$IMGQ_TMP/c.json" high 1024x1024
assert_eq "null" "$(jq -r .chosen "$IMGQ_TMP/c.json")"
assert_eq "0" "$(jq '[.candidates[] | select(.verdict != "excluded")] | length' "$IMGQ_TMP/c.json")"
echo "PASS route_explain"
