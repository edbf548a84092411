#!/usr/bin/env bash
# it-pg-disk-full.sh: PostgreSQL's own disks fill up under the registry
# (issue 14, hostile neighbours). A PostgreSQL cluster of its own (initdb as
# user postgres, 1 MiB WAL segments, on a free port; the stack's database is
# not touched) keeps its data directory on a 64 MiB tmpfs and its WAL
# (pg_wal) on a 32 MiB one, both mounted by the test (root or CAP_SYS_ADMIN;
# without it the test is skipped, saying so); a kiln-registry runs against
# it. Then:
#   1. versions are registered, all acknowledged (201);
#   2. the data disk is filled to the last byte (a filler file) and versions
#      are registered until one is refused: PostgreSQL fails the table's
#      extension with disk_full and stays up; the registry answers 507
#      insufficient_storage with a message and Retry-After, for an
#      artifact upload (a large object) too, stays up and ready, and reads
#      answer;
#   3. the data disk gets its space back and the WAL disk is filled instead;
#      an artifact upload (a large object: megabytes of WAL) makes
#      PostgreSQL PANIC ("could not write to file pg_wal/..."), and its
#      crash recovery cannot write the WAL either, so it stops (PostgreSQL
#      15); the registry answers 503 unavailable (Retry-After) for reads and
#      writes, /readyz 503 saying why, and keeps running;
#   4. space returns (the filler removed, PostgreSQL started again: a
#      supervisor's job): the same registry process reconnects, writes and
#      the upload succeed, the download verifies, and every version
#      acknowledged before is there with its tag: nothing acknowledged lost.
# About 20-30 s on the shared 2-core VM.
source "$(dirname "${BASH_SOURCE[0]}")/../registry/lib.sh"
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -x "$pgbin/initdb" ] || { echo "SKIPPED: no PostgreSQL server binaries (/usr/lib/postgresql/*/bin)"; exit 77; }
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PGP=${KILN_PG_DISKFULL_PORT:-$(free_port)}
PW=pw-$$-$RANDOM$RANDOM
FS=$TMP/pgfs     # the data disk
DATA=$FS/data    # PostgreSQL's data directory on it
WFS=$TMP/walfs   # the WAL disk
RUN=$TMP/pgrun   # its socket and log, on neither
PG_CONNINFO="host=127.0.0.1 port=$PGP dbname=postgres user=postgres password=$PW connect_timeout=3"
MOUNTS=()
pgctl() { as_pg "$pgbin/pg_ctl" -D "$DATA" -l "$RUN/pg.log" "$@"; }
pg_alive() { [ -f "$DATA/postmaster.pid" ] && as_pg "$pgbin/pg_ctl" -D "$DATA" status >/dev/null 2>&1; }
free_kib() { df -k --output=avail "$1" | tail -n 1 | tr -d ' '; }
teardown() {
    [ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null && wait "$REG_PID" 2>/dev/null
    REG_PID=
    rm -f "$FS/filler" "$WFS/filler"
    pg_alive && pgctl -m immediate -w -t 10 stop >/dev/null 2>&1
    local m
    for m in "${MOUNTS[@]}"; do umount "$m" 2>/dev/null || log "could not unmount $m"; done
    if [ -n "${KEEP_TMP:-}" ]; then log "files kept in $TMP"; fi
    cleanup
}
trap teardown EXIT
mkdir -p "$FS" "$WFS" "$RUN"
for m in "$FS:64m" "$WFS:32m"; do
    if ! mount -t tmpfs -o "size=${m#*:}" tmpfs "${m%:*}" 2>/dev/null; then
        echo "SKIPPED: cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): no small disk to fill"
        exit 77
    fi
    MOUNTS+=("${m%:*}")
done
if [ "$(id -u)" -eq 0 ]; then
    chmod o+x "$TMP" # mktemp's 0700: user postgres must reach its directories
    chown postgres: "$FS" "$WFS" "$RUN"
fi
printf '%s\n' "$PW" >"$TMP/pw" && chmod 644 "$TMP/pw"
as_pg "$pgbin/initdb" -D "$DATA" --waldir="$WFS/wal" -U postgres --pwfile="$TMP/pw" \
    --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C --wal-segsize=1 --no-sync \
    >"$TMP/initdb.log" 2>&1 || { cat "$TMP/initdb.log" >&2; log "FAIL: initdb"; exit 1; }
rm -f "$TMP/pw"
cat >>"$DATA/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PGP
unix_socket_directories = '$RUN'
max_connections = 40
shared_buffers = 16MB
fsync = on
min_wal_size = 2MB
# no checkpoint during the test: one would free old WAL segments, so whether
# an upload finds the WAL disk full would depend on when it ran
max_wal_size = 1GB
checkpoint_timeout = 1h
CONF
pgctl -w -t 30 start >/dev/null || { cat "$RUN/pg.log" >&2; log "FAIL: the test's PostgreSQL did not start"; exit 1; }
log "PostgreSQL $(basename "$(dirname "$pgbin")") on :$PGP: data on a 64 MiB tmpfs ($(free_kib "$FS") KiB free), WAL on a 32 MiB one ($(free_kib "$WFS") KiB free)"
start_registry KILN_REGISTRY_POOL_SIZE=4
A=$(auth "$ADMIN")

ACKED=() # versions the registry acknowledged (201); each has the tag n
STATUS=
register() { # sets STATUS; a 201's version joins ACKED
    local got
    got=$(req POST /v1/models/full/versions -H "$A" -D "$TMP/headers" -d "{\"tags\":{\"n\":\"$1\"}}")
    STATUS=${got%% *}
    if [ "$STATUS" = 201 ]; then ACKED+=("$(json .version)"); fi
}
retry_after() { tr -d '\r' <"$TMP/headers" | awk -F': ' 'tolower($1) == "retry-after" { print $2; f = 1 } END { exit !f }'; }
pg_log() { # PostgreSQL's log lines that say what happened, counted
    grep -E 'PANIC|FATAL|ERROR|LOG: +(terminating|all server|startup process|database system is shut|aborting)' "$RUN/pg.log" |
        sed -E 's/^[0-9: .-]+UTC \[[0-9]+\] //' | sort | uniq -c | sort -rn | head -n 8 |
        sed -E 's/^ +//' | tr '\n' ';'
}
expect "create model" 201 POST /v1/models -H "$A" -d '{"name":"full"}'
for i in 1 2 3 4 5; do
    register "$i"
    [ "$STATUS" = 201 ] || fail "version $i before the disk filled: $STATUS"
done
expect "alias" 200 PUT /v1/models/full/aliases/production -H "$A" -d '{"version":1}'

# --- 2. the data disk full ---
dd if=/dev/zero of="$FS/filler" bs=64k status=none 2>/dev/null || true
log "data disk filled: $(free_kib "$FS") KiB free"
STATUS=201 n=0
while [ "$STATUS" = 201 ] && [ "$n" -lt 1000 ]; do
    n=$((n + 1))
    register "data-full-$n"
done
log "refused after $((n - 1)) more acknowledged (free space in the tables' pages): $STATUS $(tr -d '\n' <"$TMP/body")"
if [ "$STATUS" = 507 ] && [ "$(json .error.code)" = insufficient_storage ] && retry_after >/dev/null; then
    ok "refused 507 insufficient_storage, Retry-After $(retry_after): $(json .error.message)"
else
    fail "a write on a full data disk answered $STATUS: $(tr -d '\n' <"$TMP/body")"
fi
grep -q "the database's disk is full" "$TMP/registry.log" && ok "the registry's log says why" ||
    fail "nothing in the registry's log about the full disk"
pg_alive && ok "PostgreSQL stays up" || fail "PostgreSQL stopped on a full data disk"
head -c $((1024 * 1024)) /dev/urandom >"$TMP/small.bin"
got=$(req PUT /v1/models/full/versions/2/artifact -H "$A" \
    -H "X-Kiln-Sha256: $(sha256sum "$TMP/small.bin" | cut -d' ' -f1)" --data-binary @"$TMP/small.bin")
[ "${got%% *}" = 507 ] && [ "$(json .error.code)" = insufficient_storage ] &&
    ok "an upload refused 507 insufficient_storage: $(json .error.message)" ||
    fail "an upload on a full data disk answered $got"
[ "$(sql "SELECT count(*) FROM artifacts")" = 0 ] && ok "no artifact stored" || fail "an artifact row after a refused upload"
expect "a read" 200 GET /v1/models/full/versions/1
expect "the alias" 200 GET /v1/models/full/aliases/production
expect "/readyz (reads are served)" 200 GET /readyz
log "PostgreSQL's log: $(pg_log)"

# --- 3. the WAL disk full ---
rm -f "$FS/filler"
dd if=/dev/zero of="$WFS/filler" bs=64k status=none 2>/dev/null || true
log "data disk back ($(free_kib "$FS") KiB free), WAL disk filled: $(free_kib "$WFS") KiB free"
head -c $((8 * 1024 * 1024)) /dev/urandom >"$TMP/a.bin" # more WAL than the WAL disk holds
sha=$(sha256sum "$TMP/a.bin" | cut -d' ' -f1)
got=$(req PUT /v1/models/full/versions/1/artifact -H "$A" -H "X-Kiln-Sha256: $sha" --data-binary @"$TMP/a.bin")
log "an upload with the WAL disk full: $got"
case "${got%% *}" in
503 | 507) ok "refused ${got%% *} $(json .error.code): $(json .error.message)" ;;
*) fail "an upload with the WAL disk full answered ${got%% *}" ;;
esac
for _ in $(seq 1 50); do pg_alive || break; sleep 0.2; done # its crash recovery fails too
# PostgreSQL 15 PANICs, and its crash recovery cannot write the WAL either
pg_alive && fail "PostgreSQL still runs with its WAL disk full: $(pg_log)" || ok "PostgreSQL stopped: $(pg_log)"
register wal-full
[ "$STATUS" = 503 ] && [ "$(json .error.code)" = unavailable ] && retry_after >/dev/null &&
    ok "a write: 503 unavailable, Retry-After $(retry_after)" ||
    fail "a write with the WAL disk full answered $STATUS $(tr -d '\n' <"$TMP/body")"
expect "a read without the database" 503 GET /v1/models/full/versions/1
expect "/readyz without the database" 503 GET /readyz
grep -q "database unavailable" "$TMP/body" && ok "/readyz says why: $(json .reason | head -n 1)" ||
    fail "/readyz does not say why: $(tr -d '\n' <"$TMP/body")"
kill -0 "$REG_PID" 2>/dev/null && ok "the registry is still running" || fail "the registry died"

# --- 4. space returns ---
rm -f "$WFS/filler"
if ! pg_alive; then
    pgctl -w -t 30 start >/dev/null || { tail -n 20 "$RUN/pg.log" >&2; fail "PostgreSQL does not start once space returned"; }
fi
t0=$(date +%s.%N)
for _ in $(seq 1 100); do
    register after
    [ "$STATUS" = 201 ] && break
    sleep 0.2
done
[ "$STATUS" = 201 ] && ok "writes succeed again on the same registry process, $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s after PostgreSQL was back" ||
    fail "writes still refused after space returned: $STATUS $(tr -d '\n' <"$TMP/body")"
expect "/readyz" 200 GET /readyz
expect "the upload once space returned" 201 PUT /v1/models/full/versions/1/artifact -H "$A" \
    -H "X-Kiln-Sha256: $sha" --data-binary @"$TMP/a.bin"
curl -sS -o "$TMP/back.bin" "$URL/v1/models/full/versions/1/artifact"
[ "$(sha256sum "$TMP/back.bin" | cut -d' ' -f1)" = "$sha" ] && ok "its download has the uploaded SHA-256" ||
    fail "the download differs from the upload"

# nothing acknowledged lost: every acknowledged version is there with its tag
expect "list" 200 GET "/v1/models/full/versions?limit=500"
jq -r '.versions[] | select(.tags.n != null) | .version' "$TMP/body" | sort -n >"$TMP/have"
printf '%s\n' "${ACKED[@]}" | sort -n >"$TMP/acked"
lost=$(comm -23 "$TMP/acked" "$TMP/have" | wc -l)
[ "$lost" = 0 ] && ok "all ${#ACKED[@]} acknowledged versions are there, tagged ($(wc -l <"$TMP/have") listed)" ||
    fail "$lost acknowledged version(s) lost: $(comm -23 "$TMP/acked" "$TMP/have" | tr '\n' ' ')"
expect "the alias kept" 200 GET /v1/models/full/aliases/production
[ "$(json .version)" = 1 ] || fail "production moved: $(json .version)"
finish
