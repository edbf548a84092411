#!/usr/bin/env bash
# openloop.sh: the registry's alias lookup (GET /v1/models/bench/aliases/production)
# under a constant arrival rate, latency from each request's intended send
# time (bench_registry_openloop.c: no coordinated omission). Prints one JSON
# line per rate and a table. Not a test: figures. Exit 1 when any request
# failed at any rate. Needs the native stack and a built kiln-registry and
# tests/bench/bench_registry_openloop (KILN_BINARY_DIR, default build/).
#   RATES="1000 2000" SECONDS_PER_RATE=30 WORKERS=64 tests/bench/registry/openloop.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../registry/lib.sh"
RATES=${RATES:-1000 2000}
SECONDS_PER_RATE=${SECONDS_PER_RATE:-30}
WORKERS=${WORKERS:-64}
GEN=$KILN_BINARY_DIR/tests/bench/bench_registry_openloop
[ -x "$GEN" ] || { log "FAIL: $GEN not built"; exit 1; }

start_registry KILN_REGISTRY_POOL_SIZE=${POOL:-16}
A=$(auth "$ADMIN")
req POST /v1/models -H "$A" -d '{"name":"bench","task":"bench"}' >/dev/null
for i in $(seq 1 20); do
    req POST /v1/models/bench/versions -H "$A" -d '{"lineage":{"step":'"$i"'}}' >/dev/null
    req POST /v1/models/bench/versions/$i/metrics -H "$A" \
        -d '{"metrics":[{"name":"accuracy","value":0.9'"$i"'},{"name":"loss","value":0.'"$i"'}]}' >/dev/null
done
req PUT /v1/models/bench/aliases/production -H "$A" -d '{"version":20}' >/dev/null
[ "$(req GET /v1/models/bench/aliases/production | cut -d' ' -f1)" = 200 ] || { log "setup failed"; exit 1; }

# a short warm-up (connections, the pool, PostgreSQL's plan cache)
"$GEN" "$URL/v1/models/bench/aliases/production" 500 2 "$WORKERS" >/dev/null || true
rc=0
: >"$TMP/results"
for r in $RATES; do
    "$GEN" "$URL/v1/models/bench/aliases/production" "$r" "$SECONDS_PER_RATE" "$WORKERS" | tee -a "$TMP/results" || rc=1
done
echo
echo "| rate (req/s) | achieved | requests | errors | p50 ms | p99 ms | p99.9 ms | max ms | generator lag p99 ms |"
echo "|---|---|---|---|---|---|---|---|---|"
jq -r '"| \(.rate) | \(.achieved) | \(.sent) | \(.errors) | \(.p50_ms) | \(.p99_ms) | \(.p999_ms) | \(.max_ms) | \(.send_lag_p99_ms) |"' "$TMP/results"
echo "($(nproc) cores, loopback, $WORKERS workers, ${SECONDS_PER_RATE} s per rate, registry pool ${POOL:-16})"
exit $rc
