#!/usr/bin/env bash
# skip-gate.sh: reads the JUnit file of a CTest run (ctest --output-junit),
# prints every skipped test with the reason it gave, and fails (exit 1) when
# one is not allowed by tests/skip-allowed.txt. tests/run calls it after
# CTest, so .ci/run cannot go green while a suite quietly skips.
#
# Usage: tests/skip-gate.sh JUNIT_FILE [ALLOW_LIST]
set -euo pipefail
junit=$1
allow=${2:-$(dirname "${BASH_SOURCE[0]}")/skip-allowed.txt}

if [ ! -s "$junit" ]; then
    echo "skip gate: no test results in $junit: nothing ran, nothing to check"
    exit 0
fi

have_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU '; }
# podman runs containers here as tests/compose/run needs it (root, with the
# containers.conf of deploy/images unless CONTAINERS_CONF names another).
podman_runs() {
    [ "$(id -u)" -eq 0 ] && command -v podman >/dev/null 2>&1 && command -v podman-compose >/dev/null 2>&1 &&
        CONTAINERS_CONF=${CONTAINERS_CONF:-$(dirname "${BASH_SOURCE[0]}")/../deploy/images/containers.conf} \
            podman info >/dev/null 2>&1
}

# "name<TAB>reason" for every <testcase> with a <skipped> element; the reason
# is the first line of its output saying "SKIP:" or "SKIPPED:" (skip_because()
# and the scripts), else the last that mentions a skip. CTest writes one
# element per line, and the output inside <system-out> line by line.
skipped=$(awk '
    function unxml(s) {
        gsub(/&lt;/, "<", s); gsub(/&gt;/, ">", s); gsub(/&quot;/, "\"", s)
        gsub(/&apos;/, "\047", s); gsub(/&amp;/, "\\&", s); return s
    }
    /<testcase / {
        match($0, /name="[^"]*"/); name = unxml(substr($0, RSTART + 6, RLENGTH - 7))
        skip = 0; why = ""; first = ""
    }
    /<skipped/ { skip = 1; next }
    /SKIP(PED)?:/ && first == "" { first = $0 }
    /[Ss][Kk][Ii][Pp]/ { why = $0 }
    /<\/testcase>/ {
        if (first != "") why = first
        if (skip) {
            gsub(/^[ \t]+|[ \t]+$/, "", why); sub(/<system-out>/, "", why)
            printf "%s\t%s\n", name, unxml(why)
        }
        skip = 0
    }' "$junit")

if [ -z "$skipped" ]; then
    echo "skip gate: no test skipped"
    exit 0
fi

bad=0
n=0
echo "skip gate: skipped tests (allowed only as listed in $allow):"
while IFS=$'\t' read -r name why; do
    n=$((n + 1))
    cond=$(awk -v t="$name" '!/^[[:space:]]*(#|$)/ && $1 == t { print $2; exit }' "$allow")
    case $cond in
    no-gpu)
        if have_gpu; then verdict="NOT ALLOWED: allowed only without a GPU, and nvidia-smi finds one"; bad=1
        else verdict="allowed: no GPU on this machine"; fi ;;
    no-podman)
        if podman_runs; then verdict="NOT ALLOWED: allowed only where podman cannot run, and it runs here"; bad=1
        else verdict="allowed: podman cannot run containers on this machine"; fi ;;
    "") verdict="NOT ALLOWED: not on the allow-list"; bad=1 ;;
    *) verdict="NOT ALLOWED: unknown condition '$cond' in the allow-list"; bad=1 ;;
    esac
    printf '  %-28s %s\n      %s\n' "$name" "$verdict" "${why:-(no reason printed)}"
done <<<"$skipped"
if [ $bad -ne 0 ]; then
    echo "skip gate: FAIL: a test skipped that must run (of $n skipped); a skip is not a pass"
    exit 1
fi
echo "skip gate: $n skipped, all allowed"
