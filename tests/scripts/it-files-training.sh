#!/usr/bin/env bash
# it-files-training.sh: training from files, no stack needed (issue 13 item
# 5). The real pipeline makes Fashion-MNIST shards (ingest -> preprocess,
# one partition); kiln-trainer trains mlp-fmnist for 300 steps from Kafka
# into a private registry; `kiln-preprocess export` copies the train range it
# read and the eval shards to files; kiln-trainer --from-dir trains the same
# config and seed from the files with no Kafka and no registry configured;
# `kiln-evaluator score` scores the file checkpoint on the exported eval
# shards. Checks: the export's manifest matches its files; the file-trained
# checkpoints are byte-identical (SHA-256) to the registry's versions; the
# file lineage has the registry lineage's ranges plus the files; the score is
# plausible; a tampered shard file is refused.
# Skips (exit 77) when the Fashion-MNIST package files are absent.
set -euo pipefail
: "${KILN_SOURCE_DIR:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
: "${KILN_BINARY_DIR:=$KILN_SOURCE_DIR/build}"
B=$KILN_BINARY_DIR
PG=${KILN_PG_CONNINFO:-host=127.0.0.1 port=15432 dbname=kiln user=kiln password=kiln}
TMP=$(mktemp -d)
P=t_files_$$_$RANDOM
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
for bin in registry/kiln-registry preprocess/kiln-preprocess ingest/kiln-ingest trainer/kiln-trainer evaluator/kiln-evaluator; do
    [ -x "$B/$bin" ] || { log "FAIL: $B/$bin not built"; exit 1; }
done

export KILN_KAFKA_TOPIC_PREFIX=$P KILN_KAFKA_BROKERS=${KILN_KAFKA_BROKERS:-127.0.0.1:19092}
export KILN_PREPROCESS_PORT=0 KILN_PREPROCESS_GROUP=pp-$P KILN_PREPROCESS_INSTANCE=$P
export KILN_PREPROCESS_DATASETS=fashion-mnist KILN_INGEST_PORT=0 KILN_PREPROCESS_OUTPUT_PARTITIONS=1
export OPENBLAS_NUM_THREADS=1
CONFIG=$KILN_SOURCE_DIR/deploy/kiln.ini
STEPS=300
# Both runs: the same config, stream mode (no epochs window); checkpoints
# every 100 steps only (no timed ones), and no partial batch for a stream
# that is merely slow.
TRAIN_ENV=(KILN_MODEL_MLP_FMNIST_TARGET_STEPS=$STEPS KILN_MODEL_MLP_FMNIST_CHECKPOINT_STEPS=100
    KILN_MODEL_MLP_FMNIST_CHECKPOINT_SECONDS=0 KILN_TRAINER_FLUSH_SECONDS=3600
    KILN_MODEL_MLP_FMNIST_EPOCHS=0
    KILN_TRAINER_WORK_DIR=$TMP)

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
REG=http://127.0.0.1:$port

"$B/ingest/kiln-ingest" --config "$CONFIG" import fashion-mnist >"$TMP/ingest.log" 2>&1 ||
    { tail -n 20 "$TMP/ingest.log" >&2; log "FAIL: ingest"; exit 1; }
log "ingested; training mlp-fmnist for $STEPS steps from Kafka"
rc=0
env "${TRAIN_ENV[@]}" KILN_REGISTRY_URL=$REG KILN_REGISTRY_TOKEN=$ADMIN \
    timeout 300 "$B/trainer/kiln-trainer" --config "$CONFIG" --model mlp-fmnist --port 0 \
    --idle-exit 120 >"$TMP/trainer-kafka.log" 2>&1 || rc=$?
[ "$rc" -eq 0 ] || { tail -n 30 "$TMP/trainer-kafka.log" >&2; log "FAIL: kiln-trainer (Kafka) exited $rc"; exit 1; }
curl -sS -H "Authorization: Bearer $ADMIN" "$REG/v1/models/mlp-fmnist/versions?sort=version&limit=100" >"$TMP/versions.json"
end=$(jq '.versions[-1].lineage.partitions[0].end | .offset + (if .pos > 0 then 1 else 0 end)' "$TMP/versions.json")
log "registry: $(jq '.versions | length' "$TMP/versions.json") versions; train range [0, $end)"

# The trainer needs only the first shards: preprocess may still be making
# the rest, the eval split among them (a CI run exported before it had: "holds
# no eval shards"). Export once it has caught up with everything ingested.
lag=
for _ in $(seq 1 240); do
    lag=$("$B/preprocess/kiln-preprocess" lag --config "$CONFIG" 2>>"$TMP/lag.log" | jq -r '.lag // empty' || true)
    [ "$lag" = 0 ] && break
    kill -0 "${PIDS[1]}" 2>/dev/null || { tail -n 20 "$TMP/preprocess.log" >&2; log "FAIL: preprocess died"; exit 1; }
    sleep 0.5
done
[ "$lag" = 0 ] || { tail -n 5 "$TMP/lag.log" >&2; log "FAIL: preprocess has not caught up after 120 s: ${lag:-?} raw record(s) to go"; exit 1; }
log "exporting the train range and the eval shards"
"$B/preprocess/kiln-preprocess" export --config "$CONFIG" --dataset fashion-mnist \
    --out "$TMP/export" --range "train:0:0-$end" 2>"$TMP/export.log" ||
    { cat "$TMP/export.log" >&2; log "FAIL: export"; exit 1; }
tail -n 1 "$TMP/export.log" >&2

log "training from the files: no Kafka, no registry"
rc=0
env -u KILN_KAFKA_BROKERS -u KILN_REGISTRY_URL "${TRAIN_ENV[@]}" KILN_KAFKA_BROKERS=127.0.0.1:9 \
    KILN_REGISTRY_URL=http://127.0.0.1:9 timeout 300 "$B/trainer/kiln-trainer" --config "$CONFIG" \
    --model mlp-fmnist --from-dir "$TMP/export" --out-dir "$TMP/out" >"$TMP/trainer-files.log" 2>&1 || rc=$?
[ "$rc" -eq 0 ] || { tail -n 30 "$TMP/trainer-files.log" >&2; log "FAIL: kiln-trainer --from-dir exited $rc"; exit 1; }

log "scoring the file checkpoint on the exported eval shards"
"$B/evaluator/kiln-evaluator" score --checkpoint "$TMP/out/mlp-fmnist-v3.safetensors" \
    --eval-dir "$TMP/export" --backend cpu >"$TMP/score.json" 2>"$TMP/score.log" ||
    { cat "$TMP/score.log" >&2; log "FAIL: kiln-evaluator score"; exit 1; }
jq -c '{metrics: .metrics | {accuracy, macro_f1, eval_examples}, eval_set}' "$TMP/score.json" >&2

fails=0
ok() { log "ok: $1"; }
bad() { log "FAIL: $1"; fails=$((fails + 1)); }
M=$TMP/export/manifest.json
# the manifest: every file present with its size and SHA-256; ranges as asked
mismatch=0
while read -r path bytes sha; do
    [ "$(stat -c %s "$TMP/export/$path")" = "$bytes" ] &&
        [ "$(sha256sum "$TMP/export/$path" | cut -d' ' -f1)" = "$sha" ] || mismatch=$((mismatch + 1))
done < <(jq -r '.files[] | "\(.path) \(.bytes) \(.sha256)"' "$M")
[ "$mismatch" -eq 0 ] && ok "manifest sizes and SHA-256 match the files" || bad "$mismatch file(s) differ from the manifest"
jq -e --argjson e "$end" '.splits.train.partitions == [{"partition":0,"start":0,"end":$e,"shards":.splits.train.partitions[0].shards,"examples":.splits.train.partitions[0].examples}] and ([.files[] | select(.split == "train")] | length) > 0 and ([.files[] | select(.split == "eval")] | length) > 0 and (.recipe_sha256 | test("^[0-9a-f]{64}$")) and ([.files[].headers["recipe-sha256"]] | unique | length) == 1' "$M" >/dev/null &&
    ok "manifest: train range [0,$end), eval shards, recipe hash and headers" || bad "manifest content"
# the same bytes: every version against the file of the same number
nv=$(jq '.versions | length' "$TMP/versions.json")
[ "$nv" -eq 3 ] && ok "3 registry versions (checkpoint every 100 of $STEPS steps)" || bad "$nv registry versions, expected 3"
for v in $(seq 1 "$nv"); do
    want=$(jq -r --argjson v "$v" '.versions[] | select(.version == $v) | .artifact.sha256' "$TMP/versions.json")
    f=$TMP/out/mlp-fmnist-v$v.safetensors
    have=$( [ -f "$f" ] && sha256sum "$f" | cut -d' ' -f1 || echo missing)
    [ "$have" = "$want" ] && ok "v$v: file checkpoint SHA-256 = registry artifact ($want)" ||
        bad "v$v: file checkpoint $have != registry artifact $want"
    lin=$TMP/out/mlp-fmnist-v$v.lineage.json
    jq -e --slurpfile r "$TMP/versions.json" --argjson v "$v" \
        '($r[0].versions[] | select(.version == $v) | .lineage) as $k |
         .partitions == $k.partitions and .step == $k.step and .examples_total == $k.examples_total
         and .parent == $k.parent and .spec == $k.spec and .preprocess == $k.preprocess
         and .source.kind == "files" and (.source.files | length) > 0
         and ([.source.files[].sha256 | test("^[0-9a-f]{64}$")] | all) and .artifact.sha256 == $r[0].versions[$v - 1].artifact.sha256' \
        "$lin" >/dev/null && ok "v$v: file lineage = registry lineage (ranges, step, parent) + files" ||
        bad "v$v: file lineage differs from the registry's"
done
jq -e '.metrics.accuracy > 0.75 and .metrics.macro_f1 > 0.7 and .metrics.eval_examples == .eval_set.examples and .eval_set.examples > 0' "$TMP/score.json" >/dev/null &&
    ok "score: accuracy $(jq .metrics.accuracy "$TMP/score.json") on $(jq .eval_set.examples "$TMP/score.json") eval examples" ||
    bad "score: $(jq -c .metrics "$TMP/score.json")"
# a shard file altered after the export is refused, not scored
first=$(jq -r '[.files[] | select(.split == "eval")][0].path' "$M")
printf 'X' | dd of="$TMP/export/$first" bs=1 seek=100 conv=notrunc status=none
if "$B/evaluator/kiln-evaluator" score --checkpoint "$TMP/out/mlp-fmnist-v3.safetensors" \
    --eval-dir "$TMP/export" --backend cpu >/dev/null 2>"$TMP/score2.log"; then
    bad "a tampered eval shard was scored"
elif grep -q "sha256" "$TMP/score2.log"; then ok "a tampered eval shard is refused ($(head -c 120 "$TMP/score2.log"))"
else bad "tampered shard: $(cat "$TMP/score2.log")"; fi
[ "$fails" -eq 0 ] || { tail -n 20 "$TMP/trainer-files.log" >&2; exit 1; }
log "all checks passed"
