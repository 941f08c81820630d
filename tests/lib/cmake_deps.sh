# shellcheck shell=bash
# tests/lib/cmake_deps.sh - the pkg-config modules CMakeLists.txt asks for, read from the file
# itself so that lists kept elsewhere (README, Dockerfile, .ci/deps, tests/bench/webp.sh's link
# line) can be checked against it or built from it.  Source it; it defines one function.

# cmake_pkg_modules CMAKELISTS [all|required] - one line per pkg_check_modules() module:
# "VAR MODULE REQUIRED|OPTIONAL", the version constraint dropped (libcurl>=7.75 -> libcurl).
# "required" (the default) prints only the modules of REQUIRED calls.  Calls may span lines.
cmake_pkg_modules() {
    local file=$1 which=${2:-required}
    awk -v which="$which" '
        { sub(/#.*/, "") }
        !incall && /pkg_check_modules[ \t]*\(/ { incall = 1; call = "" }
        incall { call = call " " $0; if (index($0, ")")) { emit(call); incall = 0 } }
        function emit(c,    n, f, i, var, req, mod) {
            sub(/.*pkg_check_modules[ \t]*\(/, "", c); sub(/\).*/, "", c)
            n = split(c, f, /[ \t]+/)
            var = ""; req = "OPTIONAL"
            for (i = 1; i <= n; i++) {
                if (f[i] == "") continue
                if (var == "") { var = f[i]; continue }
                if (f[i] == "REQUIRED") { req = "REQUIRED"; continue }
                if (f[i] ~ /^(QUIET|NO_CMAKE_PATH|NO_CMAKE_ENVIRONMENT_PATH|IMPORTED_TARGET|GLOBAL)$/) continue
                mod = f[i]; sub(/[<>=].*/, "", mod)
                mods[++nm] = var " " mod
            }
            if (which == "all" || req == "REQUIRED")
                for (i = 1; i <= nm; i++) print mods[i] " " req
            delete mods; nm = 0
        }' "$file"
}
