#!/usr/bin/env bash
# deps_lists.sh - the lists of Debian packages kept by hand name everything the build needs:
# README.md ("Building by hand"), deploy/compose/Dockerfile (its build stage and its runtime
# stage) and .ci/deps, compared with the pkg_check_modules() calls of CMakeLists.txt.
#
# A table below maps each pkg-config module to its Debian 12 packages (the -dev package that
# ships the .pc file, and the runtime package that ships the shared library).  A module the
# table does not know fails the test, as does a list that lacks a package; every problem is
# named, not only the first.  Where the packages are installed (dpkg), the table itself is
# checked: the .pc file belongs to the -dev package named, and every shared library the built
# imgq-worker and imgq link to directly belongs to a package of the Dockerfile's runtime stage.
# No network and no docker: the lists are checked, not a docker build.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/env.sh"
source "$IMGQ_ROOT/tests/lib/cmake_deps.sh"

# pkg-config module -> Debian 12 (bookworm) package with the .pc file and headers / package
# with the shared library.
declare -A DEV=([hiredis]=libhiredis-dev [libuv]=libuv1-dev [libcurl]=libcurl4-openssl-dev
    [jansson]=libjansson-dev [libwebp]=libwebp-dev [spng]=libspng-dev [zlib]=zlib1g-dev
    [libjpeg]=libjpeg62-turbo-dev [libcrypto]=libssl-dev [cmocka]=libcmocka-dev)
declare -A RUN=([hiredis]=libhiredis0.14 [libuv]=libuv1 [libcurl]=libcurl4
    [jansson]=libjansson4 [libwebp]=libwebp7 [spng]=libspng0 [zlib]=zlib1g
    [libjpeg]=libjpeg62-turbo [libcrypto]=libssl3)
# The compiler and libc headers, CMake, and find_package(PkgConfig REQUIRED).
TOOLS=(build-essential cmake pkg-config)
# Not libraries: the CA certificates (HTTPS to the providers and S3) and the time zone
# database (/usr/share/zoneinfo: --tz of windows, budgets and reports; src/schedule.c).
RUNTIME_EXTRA=(ca-certificates tzdata)
# What the integration tests run besides imgq (README's "for the tests also" list): servers,
# curl, python3 and jq to read JSON, cwebp/dwebp, the time zones of the schedule tests.
TEST_PKGS=(redis-server curl python3 jq webp tzdata)
# Libraries every Debian image has (the C library and the compiler's runtime).
BASE_PKGS=(libc6 libgcc-s1)

problems=()
problem() { problems+=("$*"); }
has() { # has WORD LIST...
    local w=$1 x
    shift
    for x in "$@"; do [[ $x == "$w" ]] && return 0; done
    return 1
}

# ---- the lists ------------------------------------------------------------------------------
# README.md: the first `...` span after "Debian 12 packages:" (build), after "for the tests
# also" (tests) and after "the runtime packages are enough:", in the "Building by hand" section.
readme_section=$(awk '/^## Building by hand/ { on = 1; next } on && /^## / { exit } on' "$IMGQ_ROOT/README.md" | tr '\n' ' ')
[[ -n $readme_section ]] || fail "README.md has no '## Building by hand' section"
span_after() { # span_after TEXT MARKER: the first backquoted span after MARKER
    local rest=${1#*"$2"}
    [[ $rest != "$1" ]] || return 0
    rest=${rest#*\`}
    printf '%s\n' "${rest%%\`*}"
}
read -ra README_BUILD <<<"$(span_after "$readme_section" "Debian 12 packages:")"
read -ra README_TEST <<<"$(span_after "$readme_section" "for the tests also")"
read -ra README_RUN <<<"$(span_after "$readme_section" "the runtime packages are enough:")"
((${#README_BUILD[@]})) || fail "README.md 'Building by hand': no \`package list\` after 'Debian 12 packages:'"
((${#README_TEST[@]})) || fail "README.md 'Building by hand': no \`package list\` after 'for the tests also'"

# deploy/compose/Dockerfile: "STAGE PACKAGE" for every `apt-get install` of every stage (1 is
# the first FROM); continuation lines joined.
dockerfile=$IMGQ_ROOT/deploy/compose/Dockerfile
docker_pkgs() {
    awk '
        /\\$/ { line = line substr($0, 1, length($0) - 1) " "; next }
        { line = line $0; logical(line); line = "" }
        function logical(l,    nseg, seg, i, n, t, j, on) {
            if (l ~ /^[ \t]*FROM[ \t]/) { stage++; return }
            nseg = split(l, seg, /&&|;|\|\|/)
            for (i = 1; i <= nseg; i++) {
                if (seg[i] !~ /apt-get[ \t]+install/) continue
                n = split(seg[i], t, /[ \t]+/); on = 0
                for (j = 1; j <= n; j++) {
                    if (on && t[j] != "" && t[j] !~ /^-/) print stage, t[j]
                    if (t[j] == "install") on = 1
                }
            }
        }' "$dockerfile"
}
mapfile -t DOCKER_BUILD < <(docker_pkgs | awk '$1 == 1 { print $2 }')
mapfile -t DOCKER_RUN < <(docker_pkgs | awk -v last="$(grep -c '^FROM[[:space:]]' "$dockerfile")" '$1 == last { print $2 }')
((${#DOCKER_BUILD[@]})) || fail "$dockerfile: no apt-get install in the build stage"
((${#DOCKER_RUN[@]})) || fail "$dockerfile: no apt-get install in the runtime stage"

# .ci/deps: the words of its packages=( ... ) and packages+=( ... ) arrays.
mapfile -t CI < <(awk '
    /^[ \t]*(command -v [^|]*\|\|[ \t]*)?packages\+?=\(/ { on = 1; sub(/.*packages\+?=\(/, "") }
    on { l = $0; if (sub(/\).*/, "", l)) on = 2; gsub(/[ \t]+/, "\n", l); printf "%s\n", l; if (on == 2) on = 0 }
' "$IMGQ_ROOT/.ci/deps" | grep -v '^$')
((${#CI[@]})) || fail ".ci/deps: no packages=( ... ) list"

# ---- what CMakeLists.txt requires -----------------------------------------------------------
mapfile -t MODS < <(cmake_pkg_modules "$IMGQ_ROOT/CMakeLists.txt" all)
((${#MODS[@]})) || fail "CMakeLists.txt: no pkg_check_modules() found"
note "CMakeLists.txt: ${#MODS[@]} pkg-config modules; README build list ${#README_BUILD[@]}, test list ${#README_TEST[@]}, Dockerfile build ${#DOCKER_BUILD[@]} / runtime ${#DOCKER_RUN[@]}, .ci/deps ${#CI[@]} packages"

need() { # need PACKAGE WHY LISTNAME LIST...
    local p=$1 why=$2 name=$3
    shift 3
    has "$p" "$@" || problem "$name lacks $p ($why)"
}
for p in "${TOOLS[@]}"; do
    need "$p" "build tool" "README.md 'Building by hand'" "${README_BUILD[@]}"
    need "$p" "build tool" "Dockerfile build stage" "${DOCKER_BUILD[@]}"
    need "$p" "build tool" ".ci/deps" "${CI[@]}"
done
for line in "${MODS[@]}"; do
    read -r var mod req <<<"$line"
    dev=${DEV[$mod]:-}
    if [[ -z $dev ]]; then
        problem "CMakeLists.txt requires pkg-config module '$mod' ($var): tests/integration/deps_lists.sh does not know its Debian packages (add it to DEV and RUN there, and to the lists)"
        continue
    fi
    why="pkg-config module $mod"
    need "$dev" "$why" "README.md 'Building by hand'" "${README_BUILD[@]}"
    need "$dev" "$why" ".ci/deps" "${CI[@]}"
    if [[ $req == REQUIRED ]]; then
        need "$dev" "$why" "Dockerfile build stage" "${DOCKER_BUILD[@]}"
        if [[ -z ${RUN[$mod]:-} ]]; then
            problem "tests/integration/deps_lists.sh: no runtime package for module '$mod' in RUN"
        else
            need "${RUN[$mod]}" "shared library of $mod" "Dockerfile runtime stage" "${DOCKER_RUN[@]}"
        fi
    fi
    # -dev packages are build-time only.
    has "$dev" "${DOCKER_RUN[@]}" && problem "Dockerfile runtime stage installs the build-time package $dev (want ${RUN[$mod]:-its runtime package})"
done
for p in "${RUNTIME_EXTRA[@]}"; do
    need "$p" "not a library, but needed at run time" "Dockerfile runtime stage" "${DOCKER_RUN[@]}"
done
# README's runtime list is the Dockerfile's runtime stage.
for p in "${DOCKER_RUN[@]}"; do
    need "$p" "the Dockerfile's runtime stage installs it" "README.md 'Building by hand' runtime list" "${README_RUN[@]}"
done
for p in "${README_RUN[@]}"; do
    need "$p" "README.md's runtime list names it" "Dockerfile runtime stage" "${DOCKER_RUN[@]}"
done
for p in "${TEST_PKGS[@]}"; do
    need "$p" "used by the tests" "README.md 'Building by hand' test list" "${README_TEST[@]}"
done
for p in "${README_BUILD[@]}" "${README_TEST[@]}"; do
    need "$p" "named by README.md" ".ci/deps" "${CI[@]}"
done

# ---- the table against this machine's packages ----------------------------------------------
if command -v dpkg >/dev/null && command -v pkg-config >/dev/null; then
    # owner PATH: the package that installed PATH (tries the /usr-merged twin too).
    owner() {
        local p=$1 o
        for q in "$p" "${p#/usr}" "/usr$p"; do
            o=$(dpkg -S "$q" 2>/dev/null | head -n 1) && [[ -n $o ]] && { echo "${o%%:*}"; return 0; }
        done
        return 1
    }
    for line in "${MODS[@]}"; do
        read -r var mod req <<<"$line"
        [[ -n ${DEV[$mod]:-} ]] || continue
        dir=$(pkg-config --variable=pcfiledir "$mod" 2>/dev/null) || continue
        o=$(owner "$dir/$mod.pc") || continue
        [[ $o == "${DEV[$mod]}" ]] || problem "deps_lists.sh table: $dir/$mod.pc belongs to $o, the table says ${DEV[$mod]}"
    done
    # The direct shared-library dependencies of the built programs (a sanitizer build adds its
    # runtimes, which the image does not have: skipped).
    for prog in imgq-worker imgq; do
        bin=$IMGQ_BUILD_DIR/$prog
        [[ -x $bin ]] || { note "no $bin: its libraries are not checked"; continue; }
        ldd_out=$(ldd "$bin")
        if grep -q 'libasan\|libubsan' <<<"$ldd_out"; then
            note "$bin is a sanitizer build: its libraries are not checked"
            continue
        fi
        while read -r soname; do
            path=$(awk -v s="$soname" '$1 == s && $3 ~ /^\// { print $3; exit }' <<<"$ldd_out")
            [[ -n $path ]] || { problem "$prog needs $soname, which ldd does not resolve"; continue; }
            o=$(owner "$path") || o=$(owner "$(dirname "$path")/$(basename "$(readlink -f "$path")")") || {
                note "$path ($soname) belongs to no Debian package: not checked"
                continue
            }
            o=${o%%,*}
            has "$o" "${BASE_PKGS[@]}" && continue
            need "$o" "$prog links $soname" "Dockerfile runtime stage" "${DOCKER_RUN[@]}"
        done < <(objdump -p "$bin" | awk '$1 == "NEEDED" { print $2 }')
    done
fi

if ((${#problems[@]})); then
    printf 'MISSING: %s\n' "${problems[@]}" >&2
    fail "${#problems[@]} problem(s) in the dependency lists (above)"
fi
echo "deps_lists: README.md, deploy/compose/Dockerfile and .ci/deps name every package CMakeLists.txt needs"
