#!/usr/bin/env bash
# it-stack-anywhere: the native stack starts from a checkout under a 0700
# directory (as root: user postgres cannot enter it, so the database files
# must go where it can, and `up` says where). A copy of deploy/ under a fresh
# 0700 "home" brings up its own stack on free ports, answers a SQL query as
# the kiln role, reports status, and `down` stops exactly what it started.
set -euo pipefail
src=${KILN_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
home=$(mktemp -d /tmp/kiln-home.XXXXXX)
chmod 700 "$home"
mkdir -p "$home/kiln"
cp -r "$src/deploy" "$home/kiln/"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
export KILN_STACK_DIR=$home/kiln/.stack KILN_CACHE=$src/.cache
export KILN_KAFKA_PORT=$(free_port) KILN_KAFKA_CONTROLLER_PORT=$(free_port) KILN_PG_PORT=$(free_port)
unset KILN_PG_DIR
pgloc=
cleanup() {
    "$home/kiln/deploy/stack" down >/dev/null 2>&1 || true
    [ -n "$pgloc" ] && [[ $pgloc == /var/lib/kiln/* ]] && rm -rf "$pgloc"
    rm -rf "$home"
}
trap cleanup EXIT
fail() { echo "it-stack-anywhere: FAIL: $*" >&2; exit 1; }

out=$("$home/kiln/deploy/stack" up 2>&1) || { echo "$out"; fail "deploy/stack up from a 0700 home"; }
echo "$out"
pgloc=$(cat "$KILN_STACK_DIR/pg.location" 2>/dev/null || echo "$KILN_STACK_DIR/pg")
if [ "$(id -u)" -eq 0 ]; then
    [[ $pgloc == /var/lib/kiln/stack-* ]] || fail "as root the database files should have moved out of the 0700 home, pg.location says '$pgloc'"
    grep -q "PostgreSQL's files go to $pgloc" <<<"$out" || fail "up did not say where the database files are"
fi
[ -f "$pgloc/data/PG_VERSION" ] || fail "no cluster in $pgloc/data"
"$home/kiln/deploy/stack" status || fail "status after up"
got=$(PGPASSWORD=kiln psql -X -A -t -h 127.0.0.1 -p "$KILN_PG_PORT" -U kiln -d kiln -c 'select 40 + 2') ||
    fail "the kiln role cannot query its database"
[ "$got" = 42 ] || fail "query answered '$got'"
# a second up is a no-op and a restart finds the same files through pg.location
"$home/kiln/deploy/stack" up >/dev/null 2>&1 || fail "second up"
"$home/kiln/deploy/stack" down >/dev/null 2>&1 || fail "down"
if "$home/kiln/deploy/stack" status >/dev/null 2>&1; then fail "status says up after down"; fi
"$home/kiln/deploy/stack" up >/dev/null 2>&1 || fail "up again after down"
got=$(PGPASSWORD=kiln psql -X -A -t -h 127.0.0.1 -p "$KILN_PG_PORT" -U kiln -d kiln -c 'select 1') || fail "query after restart"
"$home/kiln/deploy/stack" down >/dev/null 2>&1 || fail "final down"
pgrep -f "postgres -D $pgloc/data" >/dev/null && fail "postgres still running after down"
echo "it-stack-anywhere: the stack runs from a 0700 home; PostgreSQL's files in $pgloc"
