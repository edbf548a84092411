#!/usr/bin/env bash
# End to end, from an empty namespace of the native stack (its own topic
# prefix, registry schema, ports and state folder), through the real services
# and the main job's own script (deploy/pipeline.sh --follow):
#   1. Fashion-MNIST → CNN: a production version with test accuracy >= 0.88 on
#      all 10,000 t10k images;
#   2. fortunes → GPT: a production version whose eval loss is below the
#      unigram baseline;
#   3. both answer through `kilnctl deploy`;
#   4. continuous retraining: new fortunes arrive through the inbox folder →
#      the GPT's next version has lineage starting exactly at the previous
#      version's end offsets → it is evaluated and promoted or rejected with a
#      recorded reason; production moved at most once per promoted version;
#   5. the production CNN checkpoint, read by an independent Python reader
#      (tests/nn/score_checkpoint.py), scores the registry's accuracy.
set -euo pipefail
src=${KILN_SOURCE_DIR:?} bin=${KILN_BINARY_DIR:?}
kilnctl=$bin/registry/kilnctl

id=e2e$$
base=$((20000 + ($$ % 400) * 20))
tmp=$(mktemp -d /tmp/kiln-e2e.XXXXXX)
eval "$("$src/deploy/stack" env)"
export KILN_KAFKA_BROKERS KILN_PG_CONNINFO
export KILN_BUILD_DIR=$bin KILN_PIPELINE_DIR=$tmp
export KILN_KAFKA_TOPIC_PREFIX=kiln-$id KILN_REGISTRY_SCHEMA=kiln_$id
export KILN_REGISTRY_PORT=$base KILN_INGEST_PORT=$((base + 1)) KILN_PREPROCESS_PORT=$((base + 2))
export KILN_TRAINER_PORT=$((base + 3)) KILN_EVALUATOR_PORT=$((base + 4)) KILN_SERVE_PORT=$((base + 5))
export KILN_PREPROCESS_INSTANCE=$id KILN_PREPROCESS_GROUP=kiln-$id.preprocess
export KILN_REGISTRY_URL=http://127.0.0.1:$base
export KILN_TRAINER_WORK_DIR=$tmp
# this run's own fortunes vocabulary (registered in its own registry schema)
export KILN_DATASET_FORTUNES_TOKENIZER=$tmp/tokenizer/fortunes.tiktoken

fail() { echo "FAIL: $*"; tail -n 30 "$tmp/pipeline.log" 2>/dev/null; exit 1; }

cleanup() {
    "$src/deploy/pipeline.sh" --stop >/dev/null 2>&1 || true
    [ -n "${pipeline_pid:-}" ] && kill "$pipeline_pid" 2>/dev/null || true
    # The test's registry schema and its artifacts' large objects.
    psql "$KILN_PG_CONNINFO" -qAt -c "SELECT lo_unlink(lo_oid) FROM kiln_$id.artifacts" >/dev/null 2>&1 || true
    psql "$KILN_PG_CONNINFO" -qAt -c "DROP SCHEMA IF EXISTS kiln_$id CASCADE" >/dev/null 2>&1 || true
    rm -rf "$tmp"
}
trap cleanup EXIT

"$src/deploy/pipeline.sh" --follow --timeout 25 >"$tmp/pipeline.log" 2>&1 &
pipeline_pid=$!
t0=$SECONDS
until grep -q "every model has a production version" "$tmp/pipeline.log"; do
    kill -0 "$pipeline_pid" 2>/dev/null || fail "the main job exited before both promotions"
    ((SECONDS - t0 < 1500)) || fail "no production versions after 25 minutes"
    sleep 5
done
echo "both models promoted after $((SECONDS - t0)) s"
export KILN_REGISTRY_TOKEN=$(cat "$tmp/registry-admin-token")

# 1. CNN: test accuracy on the whole t10k split.
cnn=$("$kilnctl" --json deploy cnn-fmnist) || fail "kilnctl deploy cnn-fmnist"
acc=$(jq -r '.metrics.accuracy' <<<"$cnn")
n=$(jq -r '.metrics.eval_examples' <<<"$cnn")
echo "cnn-fmnist production v$(jq -r .version <<<"$cnn"): accuracy $acc on $n examples"
[ "$n" = "10000" ] || fail "the CNN was scored on $n examples, not the 10,000 of t10k"
awk -v a="$acc" 'BEGIN { exit !(a >= 0.88) }' || fail "CNN accuracy $acc < 0.88"

# 2. GPT: below the unigram baseline.
gpt=$("$kilnctl" --json deploy gpt-fortunes) || fail "kilnctl deploy gpt-fortunes"
loss=$(jq -r '.metrics.loss' <<<"$gpt")
uni=$(jq -r '.metrics.unigram_loss' <<<"$gpt")
v0=$(jq -r '.version' <<<"$gpt")
echo "gpt-fortunes production v$v0: eval loss $loss, unigram baseline $uni"
awk -v a="$loss" -v b="$uni" 'BEGIN { exit !(a < b) }' || fail "GPT loss $loss is not below the unigram baseline $uni"

# 3. Human output of deploy names the version and digest.
"$kilnctl" deploy gpt-fortunes | grep -q "$v0" || fail "kilnctl deploy does not show version $v0"

# 4. Continuous retraining: new texts through the inbox (ingest --follow).
latest=$("$kilnctl" --json versions gpt-fortunes --sort -version --limit 1 | jq -r '.versions[0].version')
prev_end=$("$kilnctl" --json show gpt-fortunes "$latest" | jq -c '[.lineage.partitions[] | {p: .partition, o: .end.offset, pos: .end.pos}] | sort_by(.p)')
echo "latest gpt version before new data: v$latest, end offsets $prev_end"
mkdir -p "$tmp/inbox"
words=(bird mouse cheese worm river mountain teacher kettle lantern harbor)
for i in $(seq 1 400); do
    printf 'Fresh fortune %d: the %s that waits by the %s finds the %s %d times before dawn.\n' \
        "$i" "${words[i % 10]}" "${words[(i / 10) % 10]}" "${words[(i / 100 + 3) % 10]}" "$((i * 7))" \
        >"$tmp/inbox/new-$i.txt"
done
t1=$SECONDS
next=""
while :; do
    next=$("$kilnctl" --json versions gpt-fortunes --sort -version --limit 1 | jq -r '.versions[0].version')
    if [ "$next" != "$latest" ]; then
        st=$("$kilnctl" --json show gpt-fortunes "$next" | jq -r .status)
        [ "$st" = "promoted" ] || [ "$st" = "rejected" ] && break
    fi
    ((SECONDS - t1 < 600)) || fail "no new evaluated GPT version within 10 minutes of new data (latest v$next)"
    sleep 5
done
echo "new version v$next after $((SECONDS - t1)) s (freshness: new record to evaluated version)"
ver=$("$kilnctl" --json show gpt-fortunes "$next")
start=$(jq -c '[.lineage.partitions[] | {p: .partition, o: .start.offset, pos: .start.pos}] | sort_by(.p)' <<<"$ver")
[ "$start" = "$prev_end" ] || fail "v$next starts at $start, not at the previous end $prev_end"
st=$(jq -r .status <<<"$ver")
events=$("$kilnctl" --json events gpt-fortunes)
reason=$(jq -r --argjson v "$next" '[.events[] | select(.version == $v and (.kind == "version.promoted" or .kind == "version.rejected"))][0].reason // ""' <<<"$events")
echo "v$next: $st: $reason"
[ -n "$reason" ] || fail "v$next is $st with no recorded reason in the event log"

# Production moved at most once per promoted version (no rollback here).
moves=$(jq '[.events[] | select(.kind == "version.promoted" or .kind == "alias.moved") | select(.data.alias == "production")] | length' <<<"$events")
promoted=$("$kilnctl" --json versions gpt-fortunes --status promoted | jq '.versions | length')
echo "production moves: $moves for $promoted promoted version(s)"
[ "$moves" -le "$promoted" ] || fail "production moved $moves times for $promoted promoted versions"
# 5. An independent reader: the production CNN's checkpoint, downloaded and
# opened by tests/nn/score_checkpoint.py (its own safetensors parser and a
# NumPy forward pass, no kiln code), scored on the t10k images read from the
# IDX files: the accuracy must be the registry's (near ties excepted, where
# float32 and float64 may pick different classes).
cnn_v=$(jq -r .version <<<"$cnn")
"$kilnctl" download cnn-fmnist "$cnn_v" -o "$tmp/cnn.safetensors" >/dev/null || fail "kilnctl download cnn-fmnist $cnn_v"
py=
for p in python3 /usr/bin/python3; do
    "$p" -c 'import numpy' 2>/dev/null && { py=$p; break; }
done
[ -n "$py" ] || fail "no python3 with numpy (deploy/install-deps.sh installs python3-numpy)"
mean=$(sed -n '/^\[dataset.fashion-mnist\]/,/^\[/s/^mean *= *//p' "$src/deploy/kiln.ini")
std=$(sed -n '/^\[dataset.fashion-mnist\]/,/^\[/s/^std *= *//p' "$src/deploy/kiln.ini")
fm=/usr/share/datasets/fashion-mnist
ind=$("$py" "$src/tests/nn/score_checkpoint.py" "$tmp/cnn.safetensors" "$fm/t10k-images-idx3-ubyte.gz" \
    "$fm/t10k-labels-idx1-ubyte.gz" --mean "$mean" --std "$std") || fail "the independent reader refused the checkpoint"
echo "independent reader: $ind"
awk -v a="$acc" -v c="$(jq -r .correct <<<"$ind")" -v t="$(jq -r .near_ties <<<"$ind")" \
    'BEGIN { d = a * 10000 - c; if (d < 0) d = -d; exit !(d <= t + 0.001) }' ||
    fail "independent accuracy $(jq -r .accuracy <<<"$ind") differs from the registry's $acc"

echo "e2e: 1 passed, 0 failed"
