#!/usr/bin/env bash
# stack-skip-clean.sh: the tests that stop or pause the stack's own broker
# (they read $KILN_STACK_DIR/kafka.pid) skip when that stack has no broker,
# and a skip starts nothing and writes nothing there. it-broker-late.sh's
# exit trap used to run `deploy/stack up` whenever the pid file was missing,
# skip included, which created the stack dir and wrote kafka.pid into it
# (how /nonexistent/kafka.pid appeared on a machine). Each script runs with
# KILN_STACK_DIR naming a directory that does not exist: exit 77, and the
# directory still does not exist. About a second; no stack needed.
set -euo pipefail
: "${KILN_SOURCE_DIR:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
: "${KILN_BINARY_DIR:=$KILN_SOURCE_DIR/build}"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fails=0
for t in tests/scripts/it-broker-late.sh tests/scripts/it-restart-deadline.sh \
    tests/scripts/it-ingest-paused-broker.sh tests/scripts/it-preprocess-paused-broker.sh; do
    none=$TMP/$(basename "$t")/none
    rc=0
    # a closed PostgreSQL port: a cleanup that reaches for the database fails fast
    KILN_STACK_DIR=$none KILN_PG_CONNINFO="host=127.0.0.1 port=9 dbname=x user=x connect_timeout=1" \
        KILN_SOURCE_DIR=$KILN_SOURCE_DIR KILN_BINARY_DIR=$KILN_BINARY_DIR \
        timeout 60 bash "$KILN_SOURCE_DIR/$t" >"$TMP/out" 2>&1 || rc=$?
    if [ "$rc" -ne 77 ]; then
        echo "FAIL: $t with no broker in KILN_STACK_DIR exited $rc, not 77: $(tail -n 3 "$TMP/out")"
        fails=$((fails + 1))
    elif [ -e "$none" ]; then
        echo "FAIL: $t skipped but created $none: $(find "$none" | head -n 5 | tr '\n' ' ')"
        fails=$((fails + 1))
    else
        echo "ok: $t skips (77) and leaves KILN_STACK_DIR untouched"
    fi
done
[ "$fails" -eq 0 ] || exit 1
echo "PASS: no skip starts a stack or writes into its dir"
