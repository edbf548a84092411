# tests/registry/lib.sh: helpers for the registry's shell tests (sourced).
# Each test runs its own kiln-registry on a free port against its own
# PostgreSQL schema (kiln_test_registry_<pid>) of the native stack's database,
# dropped at exit, so tests never see each other's rows.
set -euo pipefail

: "${KILN_SOURCE_DIR:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
: "${KILN_BINARY_DIR:=$KILN_SOURCE_DIR/build}"
REGISTRY_BIN=$KILN_BINARY_DIR/registry/kiln-registry
KILNCTL=$KILN_BINARY_DIR/registry/kilnctl
PG_CONNINFO=${KILN_PG_CONNINFO:-host=127.0.0.1 port=15432 dbname=kiln user=kiln password=kiln}
SCHEMA=kiln_test_registry_$$
ADMIN=admin-secret-$$-$RANDOM
TMP=$(mktemp -d)
REG_PID=
URL=
FAILS=0

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
fail() { log "FAIL: $*"; FAILS=$((FAILS + 1)); }
ok() { log "ok: $*"; }

# psql against the test schema; prints unaligned tuples.
sql() { psql "$PG_CONNINFO options=-csearch_path=$SCHEMA" -XAtq -v ON_ERROR_STOP=1 -c "$1"; }

cleanup() {
    [ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null && wait "$REG_PID" 2>/dev/null || true
    # Large objects live outside the schema: unlink ours before dropping it.
    psql "$PG_CONNINFO" -XAtq -c "DO \$\$ BEGIN
        IF to_regclass('$SCHEMA.artifacts') IS NOT NULL THEN
            PERFORM lo_unlink(lo) FROM $SCHEMA.artifacts;
        END IF; END \$\$; DROP SCHEMA IF EXISTS $SCHEMA CASCADE" >/dev/null 2>&1 || true
    [ -n "${KEEP_TMP:-}" ] || rm -rf "$TMP"
}
trap cleanup EXIT

# start_registry [extra env assignments...]: starts it, sets URL and REG_PID.
start_registry() {
    [ -x "$REGISTRY_BIN" ] || { log "SKIP: $REGISTRY_BIN not built"; exit 1; }
    psql "$PG_CONNINFO" -XAtq -c "SELECT 1" >/dev/null 2>&1 ||
        { log "FAIL: PostgreSQL of the native stack does not answer ($PG_CONNINFO)"; exit 1; }
    # empty the log here, not in the background child: a restart would
    # otherwise read the previous registry's port before the child truncates
    : >"$TMP/registry.log"
    env KILN_REGISTRY_DB="${REG_DB:-$PG_CONNINFO}" KILN_REGISTRY_SCHEMA=$SCHEMA \
        KILN_REGISTRY_PORT=0 KILN_REGISTRY_ADMIN_TOKEN=$ADMIN "$@" \
        "$REGISTRY_BIN" >>"$TMP/registry.log" 2>&1 &
    REG_PID=$!
    local port=
    for _ in $(seq 1 300); do # 30 s: its schema set-up on a loaded machine
        port=$(grep -o '"port":[0-9]*' "$TMP/registry.log" 2>/dev/null | head -n 1 | cut -d: -f2 || true)
        [ -n "$port" ] && break
        kill -0 "$REG_PID" 2>/dev/null || { cat "$TMP/registry.log" >&2; log "FAIL: registry exited"; exit 1; }
        sleep 0.1
    done
    [ -n "$port" ] || { cat "$TMP/registry.log" >&2; log "FAIL: registry did not start"; exit 1; }
    URL=http://127.0.0.1:$port
    export KILN_REGISTRY_URL=$URL
}

# req METHOD PATH [curl args...]: prints "STATUS BODY" (body on one line).
req() {
    local method=$1 path=$2
    shift 2
    curl -sS -o "$TMP/body" -w '%{http_code}' -X "$method" "$@" "$URL$path" >"$TMP/code" || echo 000 >"$TMP/code"
    printf '%s %s\n' "$(cat "$TMP/code")" "$(tr -d '\n' <"$TMP/body")"
}

# expect NAME WANT_STATUS METHOD PATH [curl args...]: checks the status; the
# body is left in $TMP/body.
expect() {
    local name=$1 want=$2
    shift 2
    local got
    got=$(req "$@")
    if [ "${got%% *}" = "$want" ]; then ok "$name ($want)"; else fail "$name: want $want, got $got"; fi
}

auth() { printf 'Authorization: Bearer %s' "$1"; }
json() { jq -r "$1" <"$TMP/body"; }

finish() {
    if kill -0 "$REG_PID" 2>/dev/null; then :; else fail "the registry died"; cat "$TMP/registry.log" >&2; fi
    if [ "$FAILS" -ne 0 ]; then
        log "$FAILS check(s) failed; registry log tail:"
        tail -n 30 "$TMP/registry.log" >&2
        exit 1
    fi
    log "all checks passed"
}
