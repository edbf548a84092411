#!/usr/bin/env bash
# openloop.sh: the registry's alias lookup (GET /v1/models/bench/aliases/production)
# under a constant arrival rate, latency from each request's intended send
# time (bench_registry_openloop.c: no coordinated omission). Prints one JSON
# line per rate and a table. Not a test: figures. Exit 1 when any request
# failed at any rate. Needs the native stack and a built kiln-registry and
# tests/bench/bench_registry_openloop (KILN_BINARY_DIR, default build/).
#   RATES="1000 2000" SECONDS_PER_RATE=30 WORKERS=64 tests/bench/registry/openloop.sh
# Beside a pipeline, with promotions racing (issue 14's "beside the running
# pipeline", "100 promotions racing during the load change nothing but the
# alias"):
#   BESIDE=pipeline PROMOTIONS=100 tests/bench/registry/openloop.sh
# BESIDE=pipeline runs tests/chaos/run --faults none on this stack for the
# whole measurement (two feeders through kiln-ingest, kiln-preprocess, a
# trainer, the evaluator and their own registry: the fed pipeline without
# the fault driver), starts the load once the trainer has trained, and at
# the end prints the pipeline's own invariant lines. PROMOTIONS=N: during
# each rate, N moves of production racing from 8 threads
# (race_promotions.py): the versions' other fields and the event log are
# compared before and after. The load average is printed with each rate.
source "$(dirname "${BASH_SOURCE[0]}")/../../registry/lib.sh"
RATES=${RATES:-1000 2000}
SECONDS_PER_RATE=${SECONDS_PER_RATE:-30}
WORKERS=${WORKERS:-64}
GEN=$KILN_BINARY_DIR/tests/bench/bench_registry_openloop
[ -x "$GEN" ] || { log "FAIL: $GEN not built"; exit 1; }

PIPE_PID=
if [ "${BESIDE:-}" = pipeline ]; then
    nr=$(wc -w <<<"$RATES")
    # the pipeline feeds for the warm-up plus every rate, then settles
    minutes=$(((nr * (SECONDS_PER_RATE + 10) + 59) / 60 + 1))
    "$KILN_SOURCE_DIR/tests/chaos/run" --minutes "$minutes" --faults none >"$TMP/pipeline.log" 2>&1 &
    PIPE_PID=$!
    trap '[ -n "$PIPE_PID" ] && kill "$PIPE_PID" 2>/dev/null && wait "$PIPE_PID"; cleanup' EXIT
    for _ in $(seq 1 900); do
        grep -q 'trainer trained' "$TMP/pipeline.log" && break
        kill -0 "$PIPE_PID" 2>/dev/null || { cat "$TMP/pipeline.log" >&2; log "FAIL: the pipeline stopped"; exit 1; }
        sleep 0.2
    done
    grep -q 'trainer trained' "$TMP/pipeline.log" || { log "FAIL: the pipeline's trainer did not train"; exit 1; }
    log "beside the pipeline: $(grep -m1 'services up' "$TMP/pipeline.log" | sed 's/.*chaos: //')"
fi
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
race=$(dirname "${BASH_SOURCE[0]}")/race_promotions.py
for r in $RATES; do
    load0=$(cut -d' ' -f1 /proc/loadavg)
    rp=
    if [ -n "${PROMOTIONS:-}" ]; then
        python3 "$race" "$URL" "$ADMIN" bench "$PROMOTIONS" 8 2 >"$TMP/race.$r" 2>&1 &
        rp=$!
    fi
    line=$("$GEN" "$URL/v1/models/bench/aliases/production" "$r" "$SECONDS_PER_RATE" "$WORKERS") || rc=1
    if [ -n "$rp" ]; then
        wait "$rp" || rc=1
        race_json=$(tail -n 1 "$TMP/race.$r")
        jq -e . <<<"$race_json" >/dev/null 2>&1 || { log "race: $(cat "$TMP/race.$r")"; race_json='{"held":false}'; rc=1; }
    else
        race_json=null
    fi
    jq -c --argjson race "$race_json" --arg l0 "$load0" --arg l1 "$(cut -d' ' -f1 /proc/loadavg)" \
        '. + {load_before: ($l0 | tonumber), load_after: ($l1 | tonumber), race: $race}' <<<"$line" |
        tee -a "$TMP/results"
done
echo
echo "| rate (req/s) | achieved | requests | errors | p50 ms | p99 ms | p99.9 ms | max ms | generator lag p99 ms | load avg | promotions racing |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
jq -r '"| \(.rate) | \(.achieved) | \(.sent) | \(.errors) | \(.p50_ms) | \(.p99_ms) | \(.p999_ms) | \(.max_ms) | \(.send_lag_p99_ms) | \(.load_before)-\(.load_after) | \(if .race == null then "-" else "\(.race.answered // 0) of \(.race.promotions // "?") answered, \(.race.moved // "?") moved, \((.race.new_events // {}) | to_entries | map("\(.value) \(.key)") | join(" + ")), other changes \((.race.changed // ["?"]) | length), production v\(.race.alias) = last event: \(if .race.held then "held" else "FAILED" end)" end) |"' "$TMP/results"
echo "($(nproc) cores, loopback, $WORKERS workers, ${SECONDS_PER_RATE} s per rate, registry pool ${POOL:-16}${BESIDE:+, beside the pipeline})"
if [ -n "$PIPE_PID" ]; then
    log "waiting for the pipeline to finish and check its invariants"
    wait "$PIPE_PID" || rc=1
    PIPE_PID=
    grep -E 'feed stopped|invariant|all invariants|FAILED' "$TMP/pipeline.log"
fi
exit $rc
