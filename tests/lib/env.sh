# tests/lib/env.sh - what every integration test sources: a private temporary directory, real
# servers (redis-server, s3rver, imgq-sim) on free loopback ports, cleanup that always runs,
# and small assertions.
#
#   source "$(dirname "${BASH_SOURCE[0]}")/../lib/env.sh"
#   imgq_env_setup              # temp dir in $IMGQ_TMP, cleanup on exit or interruption
#   start_redis                 # exports IMGQ_REDIS_URL, REDIS_PORT (and REDIS_PID)
#   start_s3 my-bucket          # exports AWS_ENDPOINT_URL_S3, AWS_* keys, IMGQ_S3_BUCKET
#   start_sim --latency-ms 10   # exports OPENAI_*, GEMINI_* base URLs and keys (and SIM_PORT)
#   assert_eq "$expected" "$actual" "what was compared"
#
# Binaries come from $IMGQ_BUILD_DIR (ctest sets it; default: build/ under the repository).
# Every process a test starts through these helpers is stopped when the test ends, fails or is
# interrupted; if the test itself is killed outright (SIGKILL, e.g. a ctest timeout), a
# watchdog notices within a second and does the same.  Nothing listens beyond 127.0.0.1.

IMGQ_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
: "${IMGQ_BUILD_DIR:=$IMGQ_ROOT/build}"
export IMGQ_ROOT IMGQ_BUILD_DIR

IMGQ_TMP=
IMGQ_PIDS=()
IMGQ_WATCHDOG_PID=
# Port reservations shared by all tests on this machine (see free_port).
IMGQ_PORT_DIR="${TMPDIR:-/tmp}/imgq-test-ports"

# ---- failing and asserting ----------------------------------------------------------------

# fail MESSAGE... - report where the test failed and stop it (cleanup runs).
fail() {
    local where="${BASH_SOURCE[1]:-?}:${BASH_LINENO[0]:-?}"
    if [[ ${FUNCNAME[1]:-} == assert_* ]]; then
        where="${BASH_SOURCE[2]:-?}:${BASH_LINENO[1]:-?}"
    fi
    echo "FAIL ($where): $*" >&2
    exit 1
}

# note MESSAGE... - progress line on stderr, so test output stays readable.
note() {
    echo "== $*" >&2
}

# assert_eq EXPECTED ACTUAL [WHAT]
assert_eq() {
    [[ "$1" == "$2" ]] || fail "${3:-values differ}: expected '$1', got '$2'"
}

# assert_ne UNEXPECTED ACTUAL [WHAT]
assert_ne() {
    [[ "$1" != "$2" ]] || fail "${3:-values equal}: did not expect '$2'"
}

# assert_contains HAYSTACK NEEDLE [WHAT]
assert_contains() {
    [[ "$1" == *"$2"* ]] || fail "${3:-missing text}: '$2' not found in '$1'"
}

# assert_not_contains HAYSTACK NEEDLE [WHAT]
assert_not_contains() {
    [[ "$1" != *"$2"* ]] || fail "${3:-unexpected text}: '$2' found in '$1'"
}

# assert_match STRING EXTENDED-REGEX [WHAT]
assert_match() {
    [[ "$1" =~ $2 ]] || fail "${3:-no match}: '$1' does not match /$2/"
}

# assert_file_exists PATH [WHAT]
assert_file_exists() {
    [[ -e "$1" ]] || fail "${2:-file missing}: $1"
}

# assert_status EXPECTED-EXIT-STATUS COMMAND [ARGS...] - run COMMAND, compare its exit status.
# Its output is shown only when the status is not the expected one.
assert_status() {
    local want=$1 got=0 out
    shift
    out=$("$@" 2>&1) || got=$?
    if [[ "$got" != "$want" ]]; then
        printf '%s\n' "$out" >&2
        fail "exit status of '$*': expected $want, got $got"
    fi
}

# ---- setup and cleanup --------------------------------------------------------------------

# imgq_env_setup - make $IMGQ_TMP and arrange for cleanup whatever happens.
imgq_env_setup() {
    IMGQ_TMP=$(mktemp -d "${TMPDIR:-/tmp}/imgq-test.XXXXXX") || {
        echo "FAIL: cannot create a temporary directory" >&2
        exit 1
    }
    export IMGQ_TMP
    : >"$IMGQ_TMP/.pids"
    : >"$IMGQ_TMP/.ports"
    trap _imgq_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    trap 'exit 129' HUP
    # Everything is on loopback: keep proxies from the environment out of the way.
    export no_proxy="127.0.0.1,localhost${no_proxy:+,$no_proxy}"
    export NO_PROXY="$no_proxy"
    _imgq_start_watchdog
}

# Is PID still a child of this shell?  A PID that exited may have been reused by another
# test's process (pid_max is 32768 here), which must never be signalled.
_imgq_ours() {
    local ppid
    ppid=$(awk '{print $4}' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ "$ppid" == "$$" ]]
}

# Kill what we started (politely, then not), release ports, remove the directory.
_imgq_stop_all() {
    local pid i live=()
    for pid in "$@"; do
        _imgq_ours "$pid" && live+=("$pid")
    done
    set -- "${live[@]}"
    for pid in "$@"; do
        kill -TERM "$pid" 2>/dev/null
    done
    for pid in "$@"; do
        for ((i = 0; i < 50; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null
    done
}

_imgq_release_ports() {
    local port
    [[ -f "$IMGQ_TMP/.ports" ]] || return 0
    while read -r port; do
        [[ -n "$port" ]] && rm -rf "${IMGQ_PORT_DIR:?}/$port"
    done <"$IMGQ_TMP/.ports"
}

_imgq_cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM HUP
    [[ -n "$IMGQ_WATCHDOG_PID" ]] && kill -TERM "$IMGQ_WATCHDOG_PID" 2>/dev/null
    if ((${#IMGQ_PIDS[@]})); then
        _imgq_stop_all "${IMGQ_PIDS[@]}"
        wait "${IMGQ_PIDS[@]}" 2>/dev/null
    fi
    if [[ -n "$IMGQ_TMP" && -d "$IMGQ_TMP" ]]; then
        if ((rc != 0)); then
            _imgq_show_logs
        fi
        _imgq_release_ports
        rm -rf "$IMGQ_TMP"
    fi
    exit "$rc"
}

# On failure, the tail of each server log helps more than the bare failure.
_imgq_show_logs() {
    local log
    for log in "$IMGQ_TMP"/*.log; do
        [[ -s "$log" ]] || continue
        echo "--- last lines of ${log##*/}:" >&2
        tail -n 20 "$log" >&2
    done
}

# A background guard for the case where this shell is killed without running its traps
# (SIGKILL; ctest's timeout kills a test's whole process tree).  It detaches from the tree
# (double fork: its parent is init, not this shell) so that it survives such a kill.
_imgq_start_watchdog() {
    local parent=$$ tmp=$IMGQ_TMP port_dir=$IMGQ_PORT_DIR
    (
        (
            trap '' INT HUP
            trap 'exit 0' TERM
            echo "$BASHPID" >"$tmp/.watchdog"
            while kill -0 "$parent" 2>/dev/null; do
                sleep 1 &
                wait $! # a wait, unlike a foreground sleep, lets TERM in at once
            done
            while read -r pid; do
                [[ -n "$pid" ]] && kill -KILL "$pid" 2>/dev/null
            done <"$tmp/.pids"
            while read -r port; do
                [[ -n "$port" ]] && rm -rf "$port_dir/$port"
            done <"$tmp/.ports"
            rm -rf "$tmp"
        ) </dev/null >/dev/null 2>&1 &
    )
    local i
    for ((i = 0; i < 50; i++)); do
        [[ -s "$tmp/.watchdog" ]] && break
        sleep 0.1
    done
    IMGQ_WATCHDOG_PID=$(cat "$tmp/.watchdog" 2>/dev/null)
}

_imgq_track() {
    IMGQ_PIDS+=("$1")
    echo "$1" >>"$IMGQ_TMP/.pids"
}

# Forget a process that is known to be gone, so that cleanup never signals a recycled PID.
_imgq_untrack() {
    local pid keep=()
    for pid in "${IMGQ_PIDS[@]}"; do
        [[ "$pid" != "$1" ]] && keep+=("$pid")
    done
    IMGQ_PIDS=("${keep[@]}")
    printf '%s\n' "${keep[@]}" >"$IMGQ_TMP/.pids"
}

_imgq_require_setup() {
    [[ -n "$IMGQ_TMP" ]] || fail "call imgq_env_setup before ${FUNCNAME[1]}"
}

# ---- ports --------------------------------------------------------------------------------

# free_port - print a TCP port that nothing on 127.0.0.1 listens on and that no other test
# running on this machine holds.  Ports come from outside the kernel's ephemeral range (so an
# outgoing connection cannot take them meanwhile) and are reserved with an atomic mkdir under
# $IMGQ_PORT_DIR until the test ends; reservations of dead tests are taken over.
free_port() {
    _imgq_require_setup
    local lo=20000 hi=32000 eph_lo eph_hi port owner tries
    if read -r eph_lo eph_hi </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null; then
        if ((eph_lo - 1 - 10000 >= 2000)); then
            lo=10000 hi=$((eph_lo - 1))
        elif ((65535 - eph_hi - 1 >= 2000)); then
            lo=$((eph_hi + 1)) hi=65535
        fi
    fi
    mkdir -p "$IMGQ_PORT_DIR" 2>/dev/null
    for ((tries = 0; tries < 500; tries++)); do
        port=$((lo + (RANDOM * 32768 + RANDOM) % (hi - lo + 1)))
        if ! mkdir "$IMGQ_PORT_DIR/$port" 2>/dev/null; then
            owner=$(cat "$IMGQ_PORT_DIR/$port/owner" 2>/dev/null)
            [[ -n "$owner" ]] && kill -0 "$owner" 2>/dev/null && continue
            # The owner is gone: take the reservation over (mkdir again to stay atomic).
            rm -rf "${IMGQ_PORT_DIR:?}/$port"
            mkdir "$IMGQ_PORT_DIR/$port" 2>/dev/null || continue
        fi
        echo "$$" >"$IMGQ_PORT_DIR/$port/owner"
        echo "$port" >>"$IMGQ_TMP/.ports"
        if _imgq_port_listening "$port"; then
            continue # someone outside our tests uses it; keep it reserved, pick another
        fi
        echo "$port"
        return 0
    done
    fail "no free TCP port found on 127.0.0.1"
}

_imgq_port_listening() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# ---- waiting for servers ------------------------------------------------------------------

# _imgq_wait_ready PID SECONDS COMMAND... - poll COMMAND until it succeeds; fail early if PID
# has exited.
_imgq_wait_ready() {
    local pid=$1 secs=$2 i
    shift 2
    for ((i = 0; i < secs * 10; i++)); do
        "$@" 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# _imgq_http_status PORT PATH - status code of GET PATH on 127.0.0.1:PORT, without curl.
_imgq_http_status() {
    (
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1:%s\r\nConnection: close\r\n\r\n' "$2" "$1" >&3
        read -r -t 5 _ status _ <&3 || exit 1
        echo "$status"
    )
}

_imgq_http_ok() {
    [[ "$(_imgq_http_status "$1" "$2")" == 200 ]]
}

_imgq_redis_ping() {
    (
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        printf 'PING\r\n' >&3
        read -r -t 2 reply <&3 || exit 1
        [[ "$reply" == +PONG* ]]
    )
}

# _imgq_launch NAME READY-CHECK... -- COMMAND... - start a server, set $port and $pid (the
# caller's locals).  @PORT@ in the check and the command becomes the chosen port, @DIR@ in the
# command a fresh directory; the output goes to $IMGQ_TMP/NAME-PORT.log.  Tried up to three
# times on fresh ports, in case a port was taken between its choice and the bind.
_imgq_launch() {
    local name=$1 dir attempt
    shift
    local -a check=() cmd=()
    while [[ $# -gt 0 && "$1" != -- ]]; do
        check+=("$1")
        shift
    done
    shift
    for ((attempt = 0; attempt < 3; attempt++)); do
        port=$(free_port) || exit 1
        dir="$IMGQ_TMP/$name-$port"
        mkdir -p "$dir"
        cmd=("${@//@PORT@/$port}")
        cmd=("${cmd[@]//@DIR@/$dir}")
        "${cmd[@]}" </dev/null >"$dir.log" 2>&1 &
        pid=$!
        _imgq_track "$pid"
        if _imgq_wait_ready "$pid" 30 "${check[@]//@PORT@/$port}"; then
            return 0
        fi
        _imgq_stop_all "$pid"
        wait "$pid" 2>/dev/null
        _imgq_untrack "$pid"
        echo "--- $name did not come up on port $port:" >&2
        tail -n 20 "$dir.log" >&2
    done
    fail "$name did not start (command: ${cmd[*]})"
}

# ---- servers ------------------------------------------------------------------------------

# start_redis [REDIS-SERVER-ARGS...] - a real redis-server on 127.0.0.1, data in the temp dir,
# no persistence unless the arguments ask for it (e.g. --appendonly yes).
start_redis() {
    _imgq_require_setup
    command -v redis-server >/dev/null || fail "redis-server is not installed"
    local port pid
    _imgq_launch redis _imgq_redis_ping @PORT@ -- \
        redis-server --bind 127.0.0.1 --port @PORT@ --dir @DIR@ --save '' --appendonly no \
        --daemonize no --protected-mode yes --logfile '' "$@"
    export REDIS_PORT=$port REDIS_PID=$pid
    export IMGQ_REDIS_URL="redis://127.0.0.1:$port/0"
}

# start_s3 BUCKET - s3rver on 127.0.0.1 with BUCKET created, data in the temp dir, and the
# environment the AWS SDKs (and imgq) read pointed at it.
start_s3() {
    _imgq_require_setup
    local bucket=${1:?start_s3 needs a bucket name} port pid
    command -v s3rver >/dev/null || fail "s3rver is not installed (npm install -g s3rver)"
    _imgq_launch s3 _imgq_http_ok @PORT@ "/$bucket" -- \
        s3rver --address 127.0.0.1 --port @PORT@ --directory @DIR@ \
        --configure-bucket "$bucket" --silent
    export S3_PORT=$port S3_PID=$pid
    export AWS_ENDPOINT_URL_S3="http://127.0.0.1:$port"
    export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
    export AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER
    export IMGQ_S3_BUCKET=$bucket
    # Settings from the developer's own environment must not leak into the test.
    unset AWS_SESSION_TOKEN AWS_IGNORE_CONFIGURED_ENDPOINT_URLS IMGQ_S3_ADDRESSING_STYLE
}

# start_sim [IMGQ-SIM-ARGS...] - the provider simulator on 127.0.0.1.
start_sim() {
    _imgq_require_setup
    local sim="$IMGQ_BUILD_DIR/imgq-sim" port pid
    [[ -x "$sim" ]] || fail "$sim not found: build first, or set IMGQ_BUILD_DIR"
    _imgq_launch sim _imgq_http_ok @PORT@ /healthz -- \
        "$sim" --host 127.0.0.1 --port @PORT@ "$@"
    export SIM_PORT=$port SIM_PID=$pid
    export OPENAI_BASE_URL="http://127.0.0.1:$port/v1"
    export OPENAI_API_KEY=sk-test
    export GEMINI_BASE_URL="http://127.0.0.1:$port/v1beta"
    export GEMINI_API_KEY=gemini-test
    export ARK_BASE_URL="http://127.0.0.1:$port/api/v3"
    export ARK_API_KEY=ark-test
    export DASHSCOPE_BASE_URL="http://127.0.0.1:$port" DASHSCOPE_API_KEY=sk-dash-test
    export REPLICATE_BASE_URL="http://127.0.0.1:$port/v1" REPLICATE_API_TOKEN=r8-test
    export FAL_BASE_URL="http://127.0.0.1:$port/fal" FAL_KEY=fal-test
    export BFL_BASE_URL="http://127.0.0.1:$port/bfl/v1" BFL_API_KEY=bfl-test
}

# ---- processes of the test's own ----------------------------------------------------------

IMGQ_BIN=$IMGQ_BUILD_DIR
export IMGQ_BIN

# track_pid PID - stop PID with everything else when the test ends.
track_pid() {
    _imgq_track "$1"
}

# kill_pid SIGNAL PID - signal a process of the test's, reap it and forget it.
kill_pid() {
    kill "-$1" "$2" 2>/dev/null || true
    wait "$2" 2>/dev/null || true
    _imgq_untrack "$2"
}

# wait_until SECONDS WHAT COMMAND... - poll COMMAND every 0.2 s until it succeeds; fail the
# test, naming WHAT, if it has not within SECONDS.
wait_until() {
    local secs=$1 what=$2 i
    shift 2
    for ((i = 0; i < secs * 5; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    fail "timed out after ${secs}s waiting for: $what"
}

# wait_pid PID SECONDS - wait for a background child to exit; returns its exit status, or 124
# if it is still running after SECONDS (it is then left to the cleanup).
wait_pid() {
    local pid=$1 secs=$2 i
    for ((i = 0; i < secs * 10; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            local rc=0
            wait "$pid" || rc=$?
            _imgq_untrack "$pid"
            return "$rc"
        fi
        sleep 0.1
    done
    return 124
}

# mkpng OUT W H [rgba]: a real PNG (zlib + struct only).
mkpng() {
    python3 - "$@" <<'PY'
import struct, sys, zlib
out, w, h = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rgba = len(sys.argv) > 4
bpp, ct = (4, 6) if rgba else (3, 2)
def chunk(t, d):
    return struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d) & 0xffffffff)
raw = b''.join(b'\0' + bytes((x * 7 + y) & 255 for x in range(w * bpp)) for y in range(h))
open(out, 'wb').write(b'\x89PNG\r\n\x1a\n'
                      + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, ct, 0, 0, 0))
                      + chunk(b'IDAT', zlib.compress(raw)) + chunk(b'IEND', b''))
PY
}
# upload FILE KEY - PUT FILE into s3rver's bucket $BUCKET under KEY, SigV4-signed by curl.
upload() {
    local code
    code=$(curl -sS -o "$IMGQ_TMP/put.out" -w '%{http_code}' -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" \
        --aws-sigv4 "aws:amz:us-east-1:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
        -T "$1" "$AWS_ENDPOINT_URL_S3/$BUCKET/$2")
    [[ "$code" == 200 ]] || fail "upload of $2: HTTP $code: $(cat "$IMGQ_TMP/put.out")"
}
