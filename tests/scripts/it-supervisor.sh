#!/usr/bin/env bash
# it-supervisor.sh: deploy/supervise, which runs every service of
# deploy/pipeline.sh (issue 14: "the native pipeline has no supervisor").
#  1. kiln-registry under the supervisor, kill -9: it comes back on its port
#     (a new pid), the restart is logged with "signal 9", counted (1);
#  2. SIGTERM to the supervisor stops the service and nothing restarts it;
#  3. a service that keeps crashing (its configuration file is missing) is given up
#     after --max-crashes crashes within --window: exit 1, an ERROR line,
#     NAME.gaveup with the reason, the restarts counted;
#  4. a service that exits 0 (a trainer at the end of its pass) is done.
# Needs the stack's PostgreSQL (integration).
set -euo pipefail
: "${KILN_SOURCE_DIR:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
: "${KILN_BINARY_DIR:=$KILN_SOURCE_DIR/build}"
B=$KILN_BINARY_DIR
SUP=$KILN_SOURCE_DIR/deploy/supervise
PG=${KILN_PG_CONNINFO:-host=127.0.0.1 port=15432 dbname=kiln user=kiln password=kiln}
TMP=$(mktemp -d)
SCHEMA=t_sup_$$_$RANDOM
SUPS=()
log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
cleanup() {
    for p in "${SUPS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${SUPS[@]}"; do wait "$p" 2>/dev/null || true; done
    psql "$PG" -XAtq -c "SET client_min_messages = warning; DROP SCHEMA IF EXISTS $SCHEMA CASCADE" >/dev/null 2>&1 || true
    [ -n "${KEEP_TMP:-}" ] || rm -rf "$TMP"
}
trap cleanup EXIT
[ -x "$B/registry/kiln-registry" ] || { log "FAIL: $B/registry/kiln-registry not built"; exit 1; }
fails=0
ok() { log "ok: $*"; }
bad() { log "FAIL: $*"; fails=$((fails + 1)); }
healthy() { curl -fsS -o /dev/null "http://127.0.0.1:$1/healthz" 2>/dev/null; }
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

# --- 1. kill -9: restarted, logged, counted ---
KILN_REGISTRY_DB="$PG" KILN_REGISTRY_SCHEMA=$SCHEMA KILN_REGISTRY_PORT=$port \
    "$SUP" --name registry --dir "$TMP" -- "$B/registry/kiln-registry" 2>"$TMP/sup.err" &
S=$!
SUPS+=($S)
for _ in $(seq 1 100); do healthy "$port" && break; sleep 0.1; done
healthy "$port" || { cat "$TMP/registry.log" >&2; log "FAIL: registry did not start"; exit 1; }
pid1=$(cat "$TMP/registry.pid")
kill -9 "$pid1"
t0=$SECONDS
for _ in $(seq 1 150); do
    pid2=$(cat "$TMP/registry.pid")
    [ "$pid2" != "$pid1" ] && healthy "$port" && break
    sleep 0.1
done
if [ "$pid2" != "$pid1" ] && healthy "$port"; then
    ok "registry back on :$port after kill -9 ($((SECONDS - t0)) s, pid $pid1 -> $pid2)"
else
    bad "registry not back within 15 s of kill -9"
fi
[ "$(cat "$TMP/registry.restarts")" = 1 ] && ok "one restart counted" || bad "restarts: $(cat "$TMP/registry.restarts")"
grep -q "registry: killed by signal 9 (SIGKILL)" "$TMP/supervisor.log" &&
    grep -q "killed by signal 9" "$TMP/registry.log" && grep -q "killed by signal 9" "$TMP/sup.err" &&
    ok "restart logged with the exit status (supervisor.log, registry.log, stderr)" ||
    bad "restart not logged: $(cat "$TMP/supervisor.log")"

# --- 2. SIGTERM to the supervisor: the service stops, nothing restarts ---
kill -TERM "$S"
rc=0
wait "$S" || rc=$?
if [ "$rc" = 0 ] && ! kill -0 "$pid2" 2>/dev/null && ! healthy "$port"; then
    ok "SIGTERM: supervisor exit 0, service stopped, not restarted"
else
    bad "SIGTERM: supervisor exit $rc, service $(kill -0 "$pid2" 2>/dev/null && echo alive || echo gone)"
fi

# --- 3. crash loop: given up loudly ---
t0=$SECONDS
rc=0
timeout 60 "$SUP" --name broken --dir "$TMP" --max-crashes 3 --window 60 -- \
    "$B/registry/kiln-registry" --config "$TMP/missing.ini" 2>"$TMP/broken.err" || rc=$?
if [ "$rc" = 1 ] && [ -s "$TMP/broken.gaveup" ] && grep -q "ERROR: crashed 3 times within 60 s" "$TMP/broken.err"; then
    ok "crash loop given up after 3 crashes in $((SECONDS - t0)) s: $(cat "$TMP/broken.gaveup")"
else
    bad "crash loop: exit $rc, gaveup '$(cat "$TMP/broken.gaveup" 2>/dev/null)'"
    cat "$TMP/broken.err" >&2
fi
[ "$(cat "$TMP/broken.restarts")" = 2 ] && ok "2 restarts counted before giving up" ||
    bad "restarts before giving up: $(cat "$TMP/broken.restarts")"

# --- 4. exit 0: done, not restarted ---
rc=0
timeout 20 "$SUP" --name once --dir "$TMP" -- true 2>/dev/null || rc=$?
[ "$rc" = 0 ] && [ "$(cat "$TMP/once.restarts")" = 0 ] && ok "exit 0: done, no restart" ||
    bad "exit 0: supervisor exit $rc, restarts $(cat "$TMP/once.restarts")"

[ "$fails" -eq 0 ] || exit 1
log "all checks passed"
