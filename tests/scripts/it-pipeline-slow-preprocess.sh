#!/usr/bin/env bash
# it-pipeline-slow-preprocess.sh: deploy/pipeline.sh starts the trainers only
# once preprocess has caught up with the records already in the raw topics.
# A configuration written by deploy/init-dataset has its records ingested
# before the pipeline starts (the pipeline imports nothing itself); a slow
# preprocess (a loaded machine, emulated here by stopping it for 10 s before
# it has consumed them) must not let the trainer's idle exit (3 s here) fire
# before the first shard. Before 2026-12-01 pipeline.sh waited only for this
# run's own imports (none) and then a fixed 5 s: the trainer ended with no
# data, no version was made and the pipeline ran into its --timeout.
set -euo pipefail
src=${KILN_SOURCE_DIR:?} bin=${KILN_BINARY_DIR:?}
[ -r /usr/share/games/fortunes/wisdom ] || { echo "it-pipeline-slow-preprocess: no fortunes package: skipped"; exit 77; }
command -v jq >/dev/null || { echo "it-pipeline-slow-preprocess: no jq: skipped"; exit 77; }
tmp=$(mktemp -d /tmp/kiln-slowpp.XXXXXX)
eval "$("$src/deploy/stack" env)"
export KILN_KAFKA_BROKERS KILN_PG_CONNINFO KILN_BUILD_DIR=$bin
# this test's own namespace: topics, schema, ports, state
id=slowpp$$ p=$((22000 + ($$ % 300) * 10))
export KILN_PIPELINE_DIR=$tmp/state KILN_TRAINER_WORK_DIR=$tmp/work
export KILN_KAFKA_TOPIC_PREFIX=kiln-$id KILN_REGISTRY_SCHEMA=kiln_$id
export KILN_REGISTRY_PORT=$p KILN_INGEST_PORT=$((p + 1)) KILN_PREPROCESS_PORT=$((p + 2))
export KILN_TRAINER_PORT=$((p + 3)) KILN_EVALUATOR_PORT=$((p + 4)) KILN_SERVE_PORT=$((p + 5))
export KILN_PREPROCESS_INSTANCE=$id KILN_PREPROCESS_GROUP=kiln-$id.preprocess
export KILN_PIPELINE_IDLE_EXIT_SECONDS=3
mkdir -p "$KILN_TRAINER_WORK_DIR"
pipe=
cleanup() {
    [ -z "$pipe" ] || kill "$pipe" 2>/dev/null || true
    pid=$(cat "$KILN_PIPELINE_DIR/run/preprocess.pid" 2>/dev/null || true)
    [ -z "$pid" ] || kill -CONT "$pid" 2>/dev/null || true
    "$src/deploy/pipeline.sh" --stop >/dev/null 2>&1 || true
    psql "$KILN_PG_CONNINFO" -qAt -c "SELECT lo_unlink(lo_oid) FROM $KILN_REGISTRY_SCHEMA.artifacts" >/dev/null 2>&1 || true
    psql "$KILN_PG_CONNINFO" -qAt -c "DROP SCHEMA IF EXISTS $KILN_REGISTRY_SCHEMA CASCADE" >/dev/null 2>&1 || true
    [ -n "${KEEP_TMP:-}" ] || rm -rf "$tmp"
}
trap cleanup EXIT
fail() {
    echo "FAIL: $*"
    tail -n 20 "$tmp/pipeline.log" 2>/dev/null || true
    for f in "$KILN_PIPELINE_DIR"/run/{preprocess,trainer-*}.log; do [ -e "$f" ] && { echo "--- $f"; tail -n 5 "$f"; }; done
    exit 1
}

# 300 fortunes, ingested by init-dataset before the pipeline starts
awk '/^%$/ { if (++n == 300) exit } { print }' /usr/share/games/fortunes/wisdom >"$tmp/quotes"
"$src/deploy/init-dataset" quotes --kind lm --config "$tmp/q.ini" --separator % --vocab 512 \
    "$tmp/quotes" >"$tmp/init.out" 2>&1 || fail "init-dataset: $(cat "$tmp/init.out")"

# kiln-preprocess lag: the group has consumed nothing yet
lag=$("$bin/preprocess/kiln-preprocess" lag --config "$tmp/q.ini" | jq .lag)
[ "$lag" -ge 300 ] || fail "kiln-preprocess lag before preprocess ran: $lag, want the 300 records"

"$src/deploy/pipeline.sh" --config "$tmp/q.ini" --timeout 3 >"$tmp/pipeline.log" 2>&1 &
pipe=$!
# The slow preprocess: stopped once the pipeline has seen its /healthz (it
# goes on to start the evaluator) and before it has consumed the records,
# but for 0.3 s once the pipeline waits for it (that loop may read its
# /metrics), then for 10 s more: more than a trainer needs to start and
# reach its idle exit.
for _ in $(seq 1 6000); do [ -s "$KILN_PIPELINE_DIR/run/evaluator.sup" ] && break; sleep 0.02; done
[ -s "$KILN_PIPELINE_DIR/run/evaluator.sup" ] || fail "the pipeline did not start the evaluator within 120 s"
pid=$(cat "$KILN_PIPELINE_DIR/run/preprocess.pid" 2>/dev/null) || fail "preprocess did not start"
kill -STOP "$pid" || fail "preprocess exited"
for _ in $(seq 1 1200); do grep -q "waiting for preprocess" "$tmp/pipeline.log" && break; sleep 0.1; done
grep -q "waiting for preprocess" "$tmp/pipeline.log" || { kill -CONT "$pid"; fail "the pipeline did not wait for preprocess within 120 s"; }
kill -CONT "$pid" || fail "preprocess exited"
sleep 0.3
kill -STOP "$pid" || fail "preprocess exited"
sleep 10
kill -CONT "$pid" || fail "preprocess exited"
# A trainer that started too early ends at its idle exit having trained on
# nothing (and the pipeline would wait for a version until its --timeout).
while kill -0 "$pipe" 2>/dev/null; do
    grep -qs '"stopped at step 0 ' "$KILN_PIPELINE_DIR"/run/trainer-*.log &&
        fail "the trainer started before preprocess caught up: it ended with no data"
    sleep 0.5
done
rc=0
wait "$pipe" || rc=$?
pipe=
[ $rc -eq 0 ] || fail "pipeline.sh exited $rc"
grep -q "quotes production -> version" "$tmp/pipeline.log" || fail "no production version"
grep -q "waiting for preprocess" "$tmp/pipeline.log" || fail "no progress line while preprocess catches up"
lag=$("$bin/preprocess/kiln-preprocess" lag --config "$tmp/q.ini" | jq .lag)
[ "$lag" -eq 0 ] || fail "kiln-preprocess lag after the pipeline: $lag"
echo "it-pipeline-slow-preprocess: ok"
