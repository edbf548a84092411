#!/usr/bin/env bash
# it-registry-restart.sh: the registry survives a PostgreSQL restart. It
# runs against a private, throw-away PostgreSQL cluster (so the shared stack
# is never restarted under other tests): while the database is down, calls
# get 503 with Retry-After and /readyz says not ready; once it is back, the
# registry reconnects by itself and everything acknowledged before is there.
source "$(dirname "${BASH_SOURCE[0]}")/../registry/lib.sh"
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -x "$pgbin/initdb" ] || { log "FAIL: no PostgreSQL server binaries"; exit 1; }
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
pgdir=$(mktemp -d)
[ "$(id -u)" -ne 0 ] || chown postgres: "$pgdir"
pgport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
pg_stop() { as_pg "$pgbin/pg_ctl" -D "$pgdir/data" -m fast -w -t 30 stop >/dev/null 2>&1 || true; }
pg_start() {
    as_pg "$pgbin/pg_ctl" -D "$pgdir/data" -l "$pgdir/server.log" -w -t 30 \
        -o "-p $pgport -k $pgdir -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
}
trap 'cleanup; pg_stop; rm -rf "$pgdir"' EXIT
as_pg "$pgbin/initdb" -D "$pgdir/data" -U postgres --auth=trust >"$pgdir/initdb.log" 2>&1 ||
    { cat "$pgdir/initdb.log" >&2; exit 1; }
pg_start
REG_DB="host=127.0.0.1 port=$pgport dbname=postgres user=postgres connect_timeout=2"
PG_CONNINFO=$REG_DB
start_registry
A=$(auth "$ADMIN")

expect "model" 201 POST /v1/models -H "$A" -d '{"name":"durable"}'
expect "v1" 201 POST /v1/models/durable/versions -H "$A" -d '{}'
expect "v2" 201 POST /v1/models/durable/versions -H "$A" -d '{}'
expect "promote v2" 200 PUT /v1/models/durable/aliases/production -H "$A" -d '{"version":2}'

pg_stop
log "PostgreSQL stopped"
expect "readyz while down" 503 GET /readyz
expect "read while down" 503 GET /v1/models/durable/aliases/production
curl -sS -D - -o /dev/null "$URL/v1/models" | grep -qi '^retry-after' || fail "Retry-After while down"
expect "write while down" 503 POST /v1/models/durable/versions -H "$A" -d '{}'
set +e
"$KILNCTL" deploy durable >/dev/null 2>&1; rc=$?
set -e
[ $rc = 5 ] && ok "kilnctl exit 5 while down" || fail "kilnctl exit $rc while down"
expect "healthz while down" 200 GET /healthz

pg_start
log "PostgreSQL started again"
expect "readyz after restart" 200 GET /readyz
expect "read after restart" 200 GET /v1/models/durable/aliases/production
[ "$(json .version)" = 2 ] || fail "production still 2"
expect "write after restart" 201 POST /v1/models/durable/versions -H "$A" -d '{}'
[ "$(json .version)" = 3 ] && ok "acknowledged versions kept; the next is 3" || fail "next version $(json .version)"
bad=0
for i in $(seq 1 20); do
    got=$(req GET /v1/models)
    [ "${got%% *}" = 200 ] || { bad=$((bad + 1)); log "request $i after restart: $got"; }
done
[ $bad = 0 ] && ok "20 of 20 requests after restart answered 200" || fail "$bad of 20 requests after restart failed"
finish
