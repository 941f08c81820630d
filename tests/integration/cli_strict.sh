#!/usr/bin/env bash
# Strict command lines (README "Command line conventions"): every subcommand of imgq (the
# table in src/cli/main.c, and the subcommands of each) and every program prints its own usage
# on stdout for --help and exits 0; an unknown flag is exit 2 with the flag named on stderr;
# --version names the version and the libraries; a job, batch, budget or webhook message that
# does not exist is exit 3; submit --json prints one JSON document whether it succeeds or not;
# and a reader that goes away (imgq ... | head -1) ends imgq at once, quietly, with 0.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/env.sh"
imgq_env_setup
start_redis
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
imgq() { "$IMGQ_BIN/imgq" "$@"; }

# run STATUS-VAR OUT ERR COMMAND... - run without stopping the test on failure.
run() {
    local out=$1 err=$2
    shift 2
    set +e
    "$@" >"$out" 2>"$err"
    rc=$?
    set -e
}

# ---- every subcommand: --help and --bogus --------------------------------------------------
mapfile -t top < <(sed -n '/cmds\[\] = {/,/};/p' "$src/src/cli/main.c" | grep -o '{"[a-z]*"' |
    tr -d '{"')
[ "${#top[@]}" -ge 21 ] || fail "could not read the command table of src/cli/main.c (${top[*]})"
# Commands made of subcommands, and theirs.
declare -A subs=(
    [batch]="status results watch" [job]="show" [dlq]="list retry purge"
    [budget]="set show list delete" [webhook]="sign verify"
    [webhooks]="list show replay enable disabled")
words=()
for c in "${top[@]}"; do
    words+=("$c")
    for s in ${subs[$c]:-}; do words+=("$c $s"); done
done
note "checking ${#words[@]} commands: ${words[*]}"
for w in "${words[@]}"; do
    read -ra cmd <<<"$w"
    run "$IMGQ_TMP/out" "$IMGQ_TMP/err" imgq "${cmd[@]}" --help
    [ "$rc" -eq 0 ] || fail "imgq $w --help: exit $rc, not 0: $(cat "$IMGQ_TMP/err")"
    assert_contains "$(cat "$IMGQ_TMP/out")" "usage: imgq $cmd" "imgq $w --help: usage on stdout"
    assert_contains "$(cat "$IMGQ_TMP/out")" "imgq $w" "imgq $w --help: its own usage"
    assert_eq "" "$(cat "$IMGQ_TMP/err")" "imgq $w --help: nothing on stderr"
    run "$IMGQ_TMP/out" "$IMGQ_TMP/err" imgq "${cmd[@]}" --bogus
    [ "$rc" -eq 2 ] || fail "imgq $w --bogus: exit $rc, not 2: $(cat "$IMGQ_TMP/out" "$IMGQ_TMP/err")"
    assert_contains "$(cat "$IMGQ_TMP/err")" "'--bogus'" "imgq $w --bogus: the flag is named"
    assert_eq "" "$(cat "$IMGQ_TMP/out")" "imgq $w --bogus: nothing on stdout"
done

# ---- the programs: --help, --bogus, --version -----------------------------------------------
version=$(sed -n 's/^project(imgq VERSION \([0-9.]*\).*/\1/p' "$src/CMakeLists.txt")
[ -n "$version" ] || fail "no project version in CMakeLists.txt"
for p in imgq imgq-worker imgq-sim; do
    run "$IMGQ_TMP/out" "$IMGQ_TMP/err" "$IMGQ_BIN/$p" --help
    [ "$rc" -eq 0 ] || fail "$p --help: exit $rc"
    assert_contains "$(cat "$IMGQ_TMP/out")" "usage: $p" "$p --help: usage on stdout"
    run "$IMGQ_TMP/out" "$IMGQ_TMP/err" "$IMGQ_BIN/$p" --bogus
    [ "$rc" -eq 2 ] || fail "$p --bogus: exit $rc, not 2"
    assert_contains "$(cat "$IMGQ_TMP/err")" "'--bogus'" "$p --bogus: the flag is named"
    run "$IMGQ_TMP/out" "$IMGQ_TMP/err" "$IMGQ_BIN/$p" --version
    [ "$rc" -eq 0 ] || fail "$p --version: exit $rc: $(cat "$IMGQ_TMP/err")"
    out=$(cat "$IMGQ_TMP/out")
    assert_contains "$out" "$p $version" "$p --version: the project version"
    for dep in hiredis libuv libcurl jansson libwebp libspng zlib libjpeg OpenSSL; do
        grep -Eq "^ *$dep +.*[0-9]+\.[0-9]+" "$IMGQ_TMP/out" ||
            fail "$p --version does not name $dep and its version: $out"
    done
done
run "$IMGQ_TMP/out" "$IMGQ_TMP/err" "$IMGQ_BIN/imgq-worker" stray
[ "$rc" -eq 2 ] || fail "imgq-worker stray: exit $rc, not 2"
assert_contains "$(cat "$IMGQ_TMP/err")" "'stray'" "imgq-worker: the extra argument is named"

# ---- flags a command does not have, and extra arguments --------------------------------------
assert_status 2 imgq batch results X --state canceled
assert_contains "$(imgq batch results X --state canceled 2>&1 || true)" "'--state'"
assert_status 2 imgq batch status A B
assert_status 2 imgq job show
assert_status 2 imgq stats extra
assert_status 2 imgq events --batch
assert_status 2 imgq dlq list --limit many
assert_status 2 imgq cancel --batch B --batch C

# ---- not found: exit 3 ------------------------------------------------------------------------
for c in "job show nosuch" "batch status nosuch" "batch results nosuch" "batch watch nosuch" \
    "cancel nosuch" "cancel --batch nosuch" "results nosuch" "budget show team:nosuch" \
    "budget delete team:nosuch" "webhooks show nosuch" "webhooks replay nosuch" \
    "pause --batch nosuch" "select nosuch" "select nosuch 0"; do
    read -ra cmd <<<"$c"
    run "$IMGQ_TMP/out" "$IMGQ_TMP/err" imgq "${cmd[@]}"
    [ "$rc" -eq 3 ] || fail "imgq $c: exit $rc, not 3 (not found): $(cat "$IMGQ_TMP/err")"
done

# ---- submit --json: one document, on failure too ----------------------------------------------
cat >"$IMGQ_TMP/bad.jsonl" <<'EOF'
{"id":"ok-1","prompt":"a red mug","model":"gpt-image-1.5","quality":"low"}
{"id":"bad-model","prompt":"a lamp","model":"gpt-image-9"}

{"id":"no-prompt","model":"gpt-image-1-mini"}
EOF
run "$IMGQ_TMP/out" "$IMGQ_TMP/err" imgq submit --json --batch j1 "$IMGQ_TMP/bad.jsonl"
[ "$rc" -eq 1 ] || fail "submit --json of a bad file: exit $rc, not 1"
python3 - "$IMGQ_TMP/out" <<'EOF' || fail "submit --json failure document: $(cat "$IMGQ_TMP/out")"
import json, sys
doc = json.load(open(sys.argv[1]))
assert doc["ok"] is False, doc
errs = doc["errors"]
assert [(e["line"], e["field"]) for e in errs] == [(2, "model"), (4, "prompt")], errs
assert all(isinstance(e["reason"], str) and e["reason"] for e in errs), errs
assert "gpt-image-9" in errs[0]["reason"], errs
EOF
run "$IMGQ_TMP/out" "$IMGQ_TMP/err" imgq submit --json --priority urgent "$IMGQ_TMP/bad.jsonl"
[ "$rc" -eq 2 ] || fail "submit --json --priority urgent: exit $rc, not 2"
python3 - "$IMGQ_TMP/out" <<'EOF' || fail "submit --json flag error document: $(cat "$IMGQ_TMP/out")"
import json, sys
doc = json.load(open(sys.argv[1]))
assert doc["ok"] is False and doc["errors"][0]["line"] is None, doc
assert doc["errors"][0]["field"] == "--priority" and "urgent" in doc["errors"][0]["reason"], doc
EOF
run "$IMGQ_TMP/out" "$IMGQ_TMP/err" imgq submit --json "$IMGQ_TMP/missing.jsonl"
[ "$rc" -eq 1 ] || fail "submit --json of a missing file: exit $rc, not 1"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["ok"] is False and d["errors"][0]["line"] is None and "missing.jsonl" in d["errors"][0]["reason"], d' \
    "$IMGQ_TMP/out" || fail "submit --json, missing file: $(cat "$IMGQ_TMP/out")"
grep '"ok-' "$IMGQ_TMP/bad.jsonl" >"$IMGQ_TMP/good.jsonl"
imgq submit --json --batch j2 "$IMGQ_TMP/good.jsonl" >"$IMGQ_TMP/out"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d=={"ok":True,"batch":"j2","created":1,"existing":0}, d' \
    "$IMGQ_TMP/out" || fail "submit --json success document: $(cat "$IMGQ_TMP/out")"
imgq submit --json --dry-run "$IMGQ_TMP/good.jsonl" >"$IMGQ_TMP/out"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d=={"ok":True,"valid":1,"enqueued":0}, d' \
    "$IMGQ_TMP/out" || fail "submit --json --dry-run document: $(cat "$IMGQ_TMP/out")"

# ---- a closed pipe: quiet, status 0 -------------------------------------------------------------
python3 -c '
for i in range(3000):
    print("{\"id\":\"p-%d\",\"prompt\":\"a mug number %d\",\"model\":\"gpt-image-1-mini\",\"quality\":\"low\"}" % (i, i))
' >"$IMGQ_TMP/big.jsonl"
imgq submit --batch big "$IMGQ_TMP/big.jsonl" >/dev/null 2>&1
# A flag batch results does not have filters nothing: it is refused, not ignored.
run "$IMGQ_TMP/out" "$IMGQ_TMP/err" imgq batch results big --state canceled
[ "$rc" -eq 2 ] || fail "batch results big --state canceled: exit $rc, not 2 ($(wc -l <"$IMGQ_TMP/out") lines)"
assert_eq 0 "$(wc -c <"$IMGQ_TMP/out")" "batch results big --state canceled: nothing listed"
# Each prints far more than a pipe holds (64 KiB), so it is still writing when head exits.
for c in "results big --all" "batch results big" "batch results big --table"; do
    read -ra cmd <<<"$c"
    set +e
    imgq "${cmd[@]}" 2>"$IMGQ_TMP/err" | head -1 >"$IMGQ_TMP/out"
    status=("${PIPESTATUS[@]}")
    set -e
    [ -s "$IMGQ_TMP/out" ] || fail "imgq $c | head -1: no line"
    assert_eq "" "$(cat "$IMGQ_TMP/err")" "imgq $c | head -1: nothing on stderr"
    assert_eq 0 "${status[0]}" "imgq $c | head -1: exit status"
done
note "cli_strict: all checks passed"
