#!/usr/bin/env bash
# it-trainer-pipeline.sh: the real pipeline into the trainer: kiln-ingest
# imports Fashion-MNIST, kiln-preprocess turns it into shards (transactional,
# augmented, with recipe-sha256 headers), kiln-trainer trains the deploy
# config's mlp-fmnist for 400 steps and checkpoints to a private registry.
# Checks: exit 0, one complete version whose lineage counts 400 x 64 examples
# from offset 0, names the preprocess recipe hash, and skipped nothing.
# Skips (exit 77, CTest: SKIPPED; says so) when the Fashion-MNIST package
# files are absent: a run that trained nothing is never a pass.
set -euo pipefail
: "${KILN_SOURCE_DIR:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
: "${KILN_BINARY_DIR:=$KILN_SOURCE_DIR/build}"
B=$KILN_BINARY_DIR
PG=${KILN_PG_CONNINFO:-host=127.0.0.1 port=15432 dbname=kiln user=kiln password=kiln}
TMP=$(mktemp -d)
P=t_trnpipe_$$_$RANDOM
SCHEMA=$P
ADMIN=admin-$P
PIDS=()
log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
    psql "$PG" -XAtq -c "SET client_min_messages = warning; DROP SCHEMA IF EXISTS $SCHEMA CASCADE" >/dev/null 2>&1 || true
    [ -n "${KEEP_TMP:-}" ] || rm -rf "$TMP"
}
trap cleanup EXIT

if [ ! -r /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
    log "SKIPPED: /usr/share/datasets/fashion-mnist not installed (apt-get install -y dataset-fashion-mnist)"
    exit 77
fi
for bin in registry/kiln-registry preprocess/kiln-preprocess ingest/kiln-ingest trainer/kiln-trainer; do
    [ -x "$B/$bin" ] || { log "FAIL: $B/$bin not built"; exit 1; }
done

export KILN_KAFKA_TOPIC_PREFIX=$P KILN_KAFKA_BROKERS=${KILN_KAFKA_BROKERS:-127.0.0.1:19092}
export KILN_PREPROCESS_PORT=0 KILN_PREPROCESS_GROUP=pp-$P KILN_PREPROCESS_INSTANCE=$P
export KILN_PREPROCESS_DATASETS=fashion-mnist KILN_INGEST_PORT=0
CONFIG=$KILN_SOURCE_DIR/deploy/kiln.ini

KILN_REGISTRY_DB="$PG" KILN_REGISTRY_SCHEMA=$SCHEMA KILN_REGISTRY_PORT=0 \
    KILN_REGISTRY_ADMIN_TOKEN=$ADMIN "$B/registry/kiln-registry" >"$TMP/registry.log" 2>&1 &
PIDS+=($!)
"$B/preprocess/kiln-preprocess" --config "$CONFIG" >"$TMP/preprocess.log" 2>&1 &
PIDS+=($!)
port=
for _ in $(seq 1 100); do
    port=$(grep -o '"port":[0-9]*' "$TMP/registry.log" 2>/dev/null | head -n 1 | cut -d: -f2 || true)
    [ -n "$port" ] && break
    sleep 0.1
done
[ -n "$port" ] || { cat "$TMP/registry.log" >&2; log "FAIL: registry did not start"; exit 1; }
export KILN_REGISTRY_URL=http://127.0.0.1:$port KILN_REGISTRY_TOKEN=$ADMIN

"$B/ingest/kiln-ingest" --config "$CONFIG" import fashion-mnist >"$TMP/ingest.log" 2>&1 ||
    { tail -n 20 "$TMP/ingest.log" >&2; log "FAIL: ingest"; exit 1; }
log "ingested; training mlp-fmnist for 400 steps from preprocess's shards"
rc=0
KILN_MODEL_MLP_FMNIST_TARGET_STEPS=400 KILN_TRAINER_WORK_DIR=$TMP OPENBLAS_NUM_THREADS=1 \
    timeout 300 "$B/trainer/kiln-trainer" --config "$CONFIG" --model mlp-fmnist --port 0 \
    --idle-exit 60 >"$TMP/trainer.log" 2>&1 || rc=$?
if [ "$rc" -ne 0 ]; then
    tail -n 30 "$TMP/trainer.log" >&2
    log "FAIL: kiln-trainer exited $rc"
    exit 1
fi
v=$(curl -sS -H "Authorization: Bearer $ADMIN" "$KILN_REGISTRY_URL/v1/models/mlp-fmnist/versions?sort=-version&limit=10")
echo "$v" | jq -c '.versions[0] | {version, artifact, lineage: (.lineage | {examples_total, step, preprocess, partitions})}' >&2
fails=0
check() { if echo "$v" | jq -e "$1" >/dev/null; then log "ok: $2"; else log "FAIL: $2"; fails=$((fails + 1)); fi; }
check '.versions | length == 1' "one version"
check '.versions[0].artifact.sha256 | length == 64' "with an artifact"
check '.versions[0].lineage.step == 400 and .versions[0].lineage.examples_total == 25600' "400 steps x 64 examples"
check '[.versions[0].lineage.partitions[] | .start.offset == 0 and .start.pos == 0] | all' "ranges start at offset 0"
check '([.versions[0].lineage.partitions[].examples] | add) == 25600' "partition ranges add up"
check '.versions[0].lineage.preprocess.recipe_sha256 | test("^[0-9a-f]{64}$")' "recipe hash from the shards"
check '.versions[0].lineage.skipped_shards == [] and ([.versions[0].lineage.partitions[].skipped_examples] | add) == 0' "nothing skipped"
[ "$fails" -eq 0 ] || { tail -n 20 "$TMP/trainer.log" >&2; exit 1; }
log "all checks passed"
