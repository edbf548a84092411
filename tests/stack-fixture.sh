#!/usr/bin/env bash
# CTest fixture for integration tests: `up` starts the native stack unless it
# already runs (then it is reused and left running); `down` stops it only if
# this test run started it.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir=${KILN_STACK_DIR:-$root/.stack}
marker=$dir/.started-by-tests

case ${1:-} in
up)
    if "$root/deploy/stack" status >/dev/null 2>&1; then
        echo "stack-fixture: reusing the running stack"
    else
        "$root/deploy/stack" up >/dev/null
        mkdir -p "$dir" && touch "$marker"
        echo "stack-fixture: started the stack"
    fi
    ;;
down)
    if [ -f "$marker" ] && [ -z "${KILN_KEEP_STACK:-}" ]; then
        rm -f "$marker"
        "$root/deploy/stack" down
    else
        echo "stack-fixture: leaving the stack running"
    fi
    ;;
*) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
