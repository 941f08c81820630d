#!/usr/bin/env bash
# A provider call that was answered is always charged, never at $0 (issue 13, items 1 and 2),
# end to end (real redis-server, s3rver, imgq-sim, one worker):
#   - a 2xx whose usage is present but unusable ({}, string, negative, fractional, INT64_MAX,
#     beyond 64 bits, or 0 output tokens; in the OpenAI, Gemini, Seedream, DashScope and
#     Replicate shapes) is billed at the catalog's ceiling: one ledger entry with reason
#     'ceiling' and exactly the amount `imgq quote` gives, the job done with its image and
#     saying why (usage_unusable), and exactly one provider call (nothing paid again);
#   - a usable usage the catalog cannot price (2^50 tokens at $10,000/M: beyond 64 bits of
#     micro-dollars) is billed at the ceiling too, instead of failing unbilled and retrying;
#   - a good usage is still billed from its usage.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/env.sh"
imgq_env_setup

# A catalog where gpt-image-1.5's image output costs $10,000 per 1M tokens: 2^50 tokens of it do
# not fit in 64 bits of micro-dollars, its ceiling does.  The CLI, the sim and the worker read it.
python3 - "$IMGQ_SOURCE_DIR/deploy/catalog.json" "$IMGQ_TMP/catalog.json" <<'PYEOF'
import json, sys
c = json.load(open(sys.argv[1]))
c["models"]["gpt-image-1.5"]["prices"]["image_out"] = 10**10
json.dump(c, open(sys.argv[2], "w"), indent=1)
PYEOF
export IMGQ_CATALOG=$IMGQ_TMP/catalog.json

start_redis
start_s3 imgq-usage-unusable
start_sim --latency-ms 20 --seed 13
SIM="http://127.0.0.1:$SIM_PORT"

PFX='imgq:{default}:'
imgq=("$IMGQ_BIN/imgq")

# Job lines: id, model, the spoilt usage, and what usage_unusable must say.
mini='"model":"gpt-image-1-mini","quality":"low","size":"1024x1024"'
jobs=(
    "o-empty|{\"id\":\"o-empty\",\"prompt\":\"a tote bag [sim:bad-usage:empty]\",$mini}|usage.input_tokens: missing"
    "o-string|{\"id\":\"o-string\",\"prompt\":\"a desk lamp [sim:bad-usage:string]\",$mini}|usage.input_tokens: \\\"[0-9]+\\\" is not a count"
    "o-negative|{\"id\":\"o-negative\",\"prompt\":\"a chair [sim:bad-usage:negative]\",$mini}|usage.input_tokens: -[0-9]+ is not a count"
    "o-fractional|{\"id\":\"o-fractional\",\"prompt\":\"a vase [sim:bad-usage:fractional]\",$mini}|usage.input_tokens: [0-9]+\\.5 is not a count"
    "o-huge|{\"id\":\"o-huge\",\"prompt\":\"a rug [sim:bad-usage:huge]\",$mini}|usage.input_tokens: 9223372036854775807 is beyond the largest count imgq prices"
    "o-overflow|{\"id\":\"o-overflow\",\"prompt\":\"a mug [sim:bad-usage:overflow]\",$mini}|the answer has a number too large for a 64-bit integer"
    "o-zero|{\"id\":\"o-zero\",\"prompt\":\"a clock [sim:bad-usage:zero]\",$mini}|usage.output_tokens: 0 for 1 image\\(s\\) returned"
    "g-fractional|{\"id\":\"g-fractional\",\"prompt\":\"a kettle [sim:bad-usage:fractional]\",\"model\":\"gemini-2.5-flash-image\",\"size\":\"1024x1024\"}|usageMetadata.promptTokenCount: [0-9]+\\.5 is not a count"
    "s-string|{\"id\":\"s-string\",\"prompt\":\"a scarf [sim:bad-usage:string]\",\"model\":\"seedream-4-0\",\"size\":\"1024x1024\"}|usage.generated_images: \\\"1\\\" is not a count"
    "d-negative|{\"id\":\"d-negative\",\"prompt\":\"a lamp [sim:bad-usage:negative]\",\"model\":\"qwen-image-2.0\",\"size\":\"1024x1024\",\"n\":2}|usage.image_count: -2 is not a count"
    "r-huge|{\"id\":\"r-huge\",\"prompt\":\"a desk [sim:bad-usage:huge]\",\"model\":\"flux-schnell\",\"size\":\"1024x1024\"}|metrics.image_count: 9223372036854775807 is beyond"
    "p-max|{\"id\":\"p-max\",\"prompt\":\"a stool [sim:bad-usage:max]\",\"model\":\"gpt-image-1.5\",\"quality\":\"low\",\"size\":\"1024x1024\"}|usage cannot be priced with the catalog"
)
good="{\"id\":\"good\",\"prompt\":\"a ceramic bowl\",$mini}"

: >"$IMGQ_TMP/jobs.jsonl"
for j in "${jobs[@]}"; do
    IFS='|' read -r _ line _ <<<"$j"
    printf '%s\n' "$line" >>"$IMGQ_TMP/jobs.jsonl"
done
printf '%s\n' "$good" >>"$IMGQ_TMP/jobs.jsonl"

# The ceiling of one job's provider call, as `imgq quote` prices it (what the worker reserves).
ceiling_of() { # ceiling_of JOB-LINE
    printf '%s\n' "$1" >"$IMGQ_TMP/one.jsonl"
    "${imgq[@]}" quote "$IMGQ_TMP/one.jsonl" --json | python3 -c '
import json, sys
t = json.load(sys.stdin)["total"]
assert t["calls"] == 1, t
print(t["own_worst_micros"])'
}

"${imgq[@]}" submit --batch unusable "$IMGQ_TMP/jobs.jsonl" >/dev/null
"$IMGQ_BIN/imgq-worker" --concurrency 4 --poll-ms 100 --retry-base-ms 50 --retry-max-ms 200 \
    --breaker-threshold 1000 --exit-when-idle >"$IMGQ_TMP/worker.log" 2>&1 &
track_pid $!
wait_pid $! 120 || fail "the worker did not finish"

"${imgq[@]}" batch results unusable >"$IMGQ_TMP/results.jsonl"
ledger() { # the ledger as JSON lines of its fields
    redis-cli -p "$REDIS_PORT" --json xrange "${PFX}ledger" - + | python3 -c '
import json, sys
for _id, f in json.load(sys.stdin):
    print(json.dumps(dict(zip(f[0::2], f[1::2])) if isinstance(f, list) else f))'
}
ledger >"$IMGQ_TMP/ledger.jsonl"
check() { # check CLIENT-ID EXPECTED-REASON EXPECTED-COST [WHY-REGEX]
    python3 - "$IMGQ_TMP/results.jsonl" "$IMGQ_TMP/ledger.jsonl" "$@" <<'PYEOF' || fail "job $3"
import json, re, sys
results, ledger, cid, reason, cost = sys.argv[1:6]
why = sys.argv[6] if len(sys.argv) > 6 else None
r = [json.loads(l) for l in open(results) if json.loads(l).get("client_id") == cid]
assert len(r) == 1, "no single result for %s" % cid
r = r[0]
entries = ["%s:%s" % (e["reason"], e["cost"]) for e in map(json.loads, open(ledger))
           if e["job"] == r["id"]]
print("%-13s %s, billed %s, cost %s, ledger %s, usage_unusable %r" %
      (cid, r["state"], r.get("billed"), r["cost_micros"], entries, r.get("usage_unusable")))
assert r["state"] == "done", r
assert r["attempts"] == 1, r
assert r["billed"] == reason, r
assert r["cost_micros"] == int(cost), (r["cost_micros"], cost)
assert entries == ["%s:%s" % (reason, cost)], entries
assert len(r["images"]) >= 1, r
if why:
    assert re.search(why, r.get("usage_unusable", "")), (why, r.get("usage_unusable"))
else:
    assert "usage_unusable" not in r, r
PYEOF
}

note "unusable usages: billed at the ceiling, once, the job done and saying why"
for j in "${jobs[@]}"; do
    IFS='|' read -r id line why <<<"$j"
    ceil=$(ceiling_of "$line")
    [ "$ceil" -gt 0 ] || fail "a ceiling of 0 for $id"
    check "$id" ceiling "$ceil" "$why"
done

note "a good usage is billed from it"
r=$(grep '"client_id":"good"' "$IMGQ_TMP/results.jsonl")
cost=$(grep -o '"cost_micros":[0-9]*' <<<"$r" | cut -d: -f2)
[ "$cost" -gt 0 ] && [ "$cost" -lt "$(ceiling_of "$good")" ] || fail "good: cost $cost"
check good usage "$cost"

note "the job says why in its attempt log too"
jid=$(grep '"client_id":"o-empty"' "$IMGQ_TMP/results.jsonl" | grep -o '"id":"j[0-9a-z]*"' | cut -d'"' -f4)
assert_contains "$("${imgq[@]}" job show "$jid")" 'usage.input_tokens: missing'

note "exactly one provider call per job"
python3 - "$(curl -s "$SIM/sim/stats")" <<'PYEOF' || fail "provider calls"
import json, sys
r = json.loads(sys.argv[1])["requests"]
got = {"openai": r["generations"]["total"], "gemini": r["gemini"]["total"],
       "seedream": r["seedream"]["total"], "dashscope": r["dashscope"]["submits"],
       "replicate": r["replicate"]["submits"]}
print("provider calls: %r" % got)
assert got == {"openai": 9, "gemini": 1, "seedream": 1, "dashscope": 1, "replicate": 1}, got
PYEOF

note "the ledger adds up to the spent counter"
total=$(python3 -c 'import json,sys; print(sum(int(json.loads(l)["cost"]) for l in open(sys.argv[1])))' "$IMGQ_TMP/ledger.jsonl")
assert_eq "$total" "$(redis-cli -p "$REDIS_PORT" hget "${PFX}spent" total)" "ledger total = spent"
assert_eq "13" "$(wc -l <"$IMGQ_TMP/ledger.jsonl")" "one ledger entry per job"
echo "PASS usage_unusable"
