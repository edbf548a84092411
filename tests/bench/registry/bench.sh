#!/usr/bin/env bash
# bench.sh: "what do I deploy" throughput. GET /v1/models/{name}/aliases/production
# under wrk on loopback, beside pgbench running the same SELECT the handler
# runs against the same database; prints requests/s, p50/p99 and the ratio.
# Not a test: it prints figures, and fails (exit 1, no figures) when any
# answer under load was not 2xx or a request got no answer: those are not
# throughput. Needs the native stack (deploy/stack up) and a built
# kiln-registry (KILN_BINARY_DIR, default build/).
#   DURATION=10 CONNECTIONS=16 THREADS=2 tests/bench/registry/bench.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../registry/lib.sh"
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-16}
THREADS=${THREADS:-2}
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
command -v wrk >/dev/null || { log "wrk is not installed"; exit 1; }

start_registry KILN_REGISTRY_POOL_SIZE=$CONNECTIONS
A=$(auth "$ADMIN")
req POST /v1/models -H "$A" -d '{"name":"bench","task":"bench"}' >/dev/null
for i in $(seq 1 20); do
    req POST /v1/models/bench/versions -H "$A" -d '{"lineage":{"step":'"$i"'}}' >/dev/null
    req POST /v1/models/bench/versions/$i/metrics -H "$A" \
        -d '{"metrics":[{"name":"accuracy","value":0.9'"$i"'},{"name":"loss","value":0.'"$i"'}]}' >/dev/null
done
head -c 4096 /dev/urandom >"$TMP/a.bin"
req PUT /v1/models/bench/versions/20/artifact -H "$A" -H "X-Kiln-Sha256: $(sha256sum "$TMP/a.bin" | cut -d' ' -f1)" \
    --data-binary @"$TMP/a.bin" >/dev/null
req PUT /v1/models/bench/aliases/production -H "$A" -d '{"version":20}' >/dev/null
[ "$(req GET /v1/models/bench/aliases/production | cut -d' ' -f1)" = 200 ] || { log "setup failed"; exit 1; }

echo "== registry: GET /v1/models/bench/aliases/production (wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s)"
wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "$URL/v1/models/bench/aliases/production" >"$TMP/wrk.txt"
cat "$TMP/wrk.txt"
rps=$(awk '/Requests\/sec/ {print $2}' "$TMP/wrk.txt")
p50=$(awk '$1 == "50%" {print $2}' "$TMP/wrk.txt")
p99=$(awk '$1 == "99%" {print $2}' "$TMP/wrk.txt")
non2xx=$(awk '/Non-2xx/ {print $NF}' "$TMP/wrk.txt")
sockerr=$(sed -n 's/^ *Socket errors: *//p' "$TMP/wrk.txt")
if [ -n "$non2xx" ] || [ -n "$sockerr" ] || [ -z "$rps" ]; then
    log "FAIL: under load the registry answered ${non2xx:-0} requests with a non-2xx status${sockerr:+ and wrk saw socket errors ($sockerr)}: requests/s would count failures"
    exit 1
fi

# The handler's query, with the same values, as a pgbench script.
cat >"$TMP/alias.sql" <<'SQL'
SELECT version_doc(v, m.name) || jsonb_build_object('alias', a.alias, 'alias_updated_at', a.updated_at, 'alias_updated_by', a.updated_by, 'download_url', CASE WHEN v.artifact_sha256 IS NULL THEN NULL ELSE '/v1/models/' || m.name || '/versions/' || v.version || '/artifact' END) AS doc FROM models m JOIN aliases a ON a.model_id = m.id JOIN versions v ON v.model_id = a.model_id AND v.version = a.version WHERE m.name = 'bench' AND a.alias = 'production';
SQL
echo "== pgbench: the same SELECT (-c$CONNECTIONS -j$THREADS -T$DURATION, prepared)"
(cd "$TMP" && PGOPTIONS="-c search_path=$SCHEMA" "$pgbin/pgbench" -n -M prepared -c "$CONNECTIONS" -j "$THREADS" \
    -T "$DURATION" -f alias.sql -l --log-prefix=pgb "$PG_CONNINFO" >"$TMP/pgbench.txt" 2>&1) || { cat "$TMP/pgbench.txt"; exit 1; }
grep -E 'tps|latency average|number of transactions actually' "$TMP/pgbench.txt"
tps=$(awk '/^tps/ {print $3}' "$TMP/pgbench.txt")
# per-transaction log: field 3 is the latency in microseconds
cat "$TMP"/pgb.* | awk '{print $3}' | sort -n >"$TMP/lat.txt"
n=$(wc -l <"$TMP/lat.txt")
pg50=$(awk -v n="$n" 'NR == int(n * 0.50) + 1 {printf "%.3fms", $1 / 1000}' "$TMP/lat.txt")
pg99=$(awk -v n="$n" 'NR == int(n * 0.99) + 1 {printf "%.3fms", $1 / 1000}' "$TMP/lat.txt")

echo
echo "== summary (loopback, $(nproc) cores, $CONNECTIONS connections)"
printf '%-34s %12s %10s %10s\n' "" "per second" "p50" "p99"
printf '%-34s %12s %10s %10s\n' "registry HTTP (wrk)" "$rps" "$p50" "$p99"
printf '%-34s %12s %10s %10s\n' "PostgreSQL same SELECT (pgbench)" "$tps" "$pg50" "$pg99"
printf 'ratio registry / pgbench: %s\n' "$(echo "scale=3; $rps / $tps" | bc)"
