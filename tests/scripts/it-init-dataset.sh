#!/usr/bin/env bash
# it-init-dataset.sh: the short path for your own data, two commands after
# `deploy/stack up`: deploy/init-dataset writes the configuration (dataset,
# model, policy), trains the vocabulary and ingests a fortune file split at
# its "%" lines; deploy/pipeline.sh --config trains it until a version is
# promoted. The same for an image dataset from a folder per label; and
# the labelled kinds refuse anything but a folder per label.
# The three datasets (lm, text_class, image) run at once, each with its own
# topic prefix, registry schema, ports and state folder: a pipeline mostly
# waits (its trainer's idle exit, the evaluator's polls), so one after the
# other they left the cores idle most of the time (2026-12-01, private
# stack on the shared 2-core machine: 256 s one after the other, 67 s at
# once, the same 35 CPU s).
set -euo pipefail
src=${KILN_SOURCE_DIR:?} bin=${KILN_BINARY_DIR:?}
[ -r /usr/share/games/fortunes/wisdom ] || { echo "it-init-dataset: no fortunes package: skipped"; exit 77; }
command -v jq >/dev/null || { echo "it-init-dataset: no jq: skipped"; exit 77; }
base=$((21000 + ($$ % 400) * 20))
tmp=$(mktemp -d /tmp/kiln-init.XXXXXX)
eval "$("$src/deploy/stack" env)"
export KILN_KAFKA_BROKERS KILN_PG_CONNINFO
export KILN_BUILD_DIR=$bin
# part_env K: the K-th pipeline's own namespace (K = 0, 1, 2; six ports each)
part_env() {
    local id=init$$_$1 p=$((base + 6 * $1))
    export KILN_PIPELINE_DIR=$tmp/state$1 KILN_TRAINER_WORK_DIR=$tmp/work$1
    export KILN_KAFKA_TOPIC_PREFIX=kiln-$id KILN_REGISTRY_SCHEMA=kiln_$id
    export KILN_REGISTRY_PORT=$p KILN_INGEST_PORT=$((p + 1)) KILN_PREPROCESS_PORT=$((p + 2))
    export KILN_TRAINER_PORT=$((p + 3)) KILN_EVALUATOR_PORT=$((p + 4)) KILN_SERVE_PORT=$((p + 5))
    export KILN_PREPROCESS_INSTANCE=$id KILN_PREPROCESS_GROUP=kiln-$id.preprocess
    mkdir -p "$KILN_TRAINER_WORK_DIR"
}
cleanup() {
    local k
    for k in 0 1 2; do
        (
            part_env $k
            "$src/deploy/pipeline.sh" --stop >/dev/null 2>&1 || true
            psql "$KILN_PG_CONNINFO" -qAt -c "SELECT lo_unlink(lo_oid) FROM $KILN_REGISTRY_SCHEMA.artifacts" >/dev/null 2>&1 || true
            psql "$KILN_PG_CONNINFO" -qAt -c "DROP SCHEMA IF EXISTS $KILN_REGISTRY_SCHEMA CASCADE" >/dev/null 2>&1 || true
        )
    done
    [ -n "${KEEP_TMP:-}" ] || rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }

# 0. A language model from fortune files split at their "%" lines.
lm() {
    mkdir -p "$tmp/corpus/a" "$tmp/corpus/b"
    cp /usr/share/games/fortunes/wisdom /usr/share/games/fortunes/science "$tmp/corpus/"
    # A labelled kind without a folder per label is refused with the reason.
    out=$("$src/deploy/init-dataset" x --kind image --config "$tmp/x.ini" "$tmp/corpus/wisdom" 2>&1) &&
        fail "image dataset from a file accepted"
    grep -qF "takes one folder holding a sub-folder per label" <<<"$out" || fail "image refusal: $out"
    [ ! -e "$tmp/x.ini" ] || fail "a refused init-dataset wrote its configuration"

    "$src/deploy/init-dataset" quotes --kind lm --config "$tmp/my.ini" --separator % --vocab 1024 \
        "$tmp/corpus/wisdom" "$tmp/corpus/science" >"$tmp/init.out" 2>&1 || fail "init-dataset: $(cat "$tmp/init.out")"
    cat "$tmp/init.out"
    grep -qE "record\(s\) ingested, 0 refused" "$tmp/init.out" || fail "init-dataset output"
    n=$(grep -o '[0-9]* record(s) ingested' "$tmp/init.out" | cut -d' ' -f1)
    [ "$n" -gt 1000 ] || fail "$n records: the fortune files were not split at their % lines"
    "$src/deploy/init-dataset" quotes --kind lm --config "$tmp/my.ini" "$tmp/corpus" >/dev/null 2>&1 &&
        fail "init-dataset overwrote an existing configuration"

    timeout 600 "$src/deploy/pipeline.sh" --config "$tmp/my.ini" --timeout 8 >"$tmp/pipeline.log" 2>&1 ||
        { tail -n 30 "$tmp/pipeline.log"; for f in "$KILN_PIPELINE_DIR"/run/*.log; do echo "--- $f"; tail -n 5 "$f"; done; fail "pipeline.sh --config my.ini failed"; }
    grep -q "every model has a production version" "$tmp/pipeline.log" || fail "no production version: $(tail "$tmp/pipeline.log")"
    grep -q "gpt-quotes production -> version" "$tmp/pipeline.log" || fail "no deploy line: $(tail "$tmp/pipeline.log")"
    grep -q "importing" "$tmp/pipeline.log" && fail "the main job imported its Debian datasets into a configuration without them"
    return 0
}

# 1. Text classification from a folder per label: the fortune categories.
text_class() {
    mkdir -p "$tmp/topics/wisdom" "$tmp/topics/science"
    cp /usr/share/games/fortunes/wisdom "$tmp/topics/wisdom/"
    cp /usr/share/games/fortunes/science "$tmp/topics/science/"
    "$src/deploy/init-dataset" topics --kind text_class --config "$tmp/cls.ini" --separator % --vocab 1024 \
        "$tmp/topics" >"$tmp/init-cls.out" 2>&1 || fail "init-dataset text_class: $(cat "$tmp/init-cls.out")"
    grep -qx "labels = science, wisdom" "$tmp/cls.ini" || fail "labels: $(grep labels "$tmp/cls.ini")"
    timeout 600 "$src/deploy/pipeline.sh" --config "$tmp/cls.ini" --timeout 8 >"$tmp/pipeline-cls.log" 2>&1 ||
        { tail -n 30 "$tmp/pipeline-cls.log"; fail "pipeline.sh --config cls.ini failed"; }
    grep -q "txtcls-topics production -> version" "$tmp/pipeline-cls.log" || fail "no txtcls-topics deploy line: $(tail "$tmp/pipeline-cls.log")"
    grep -o "metrics: .*" "$tmp/pipeline-cls.log" | tail -n 1
}

# 2. An image dataset from a folder per label, end to end: 28x28 grey images
# (PGM), dark ones and light ones, trained by the same two commands.
image() {
    python3 - "$tmp/images" <<'PY'
import os, random, sys
random.seed(7)
for label, lo, hi in (("dark", 0, 90), ("light", 165, 255)):
    d = os.path.join(sys.argv[1], label)
    os.makedirs(d)
    for i in range(150):
        px = bytes(random.randint(lo, hi) for _ in range(28 * 28))
        with open(os.path.join(d, "%03d.pgm" % i), "wb") as f:
            f.write(b"P5\n28 28\n255\n" + px)
PY
    "$src/deploy/init-dataset" shapes --kind image --config "$tmp/img.ini" "$tmp/images" >"$tmp/init-img.out" 2>&1 ||
        fail "init-dataset image: $(cat "$tmp/init-img.out")"
    cat "$tmp/init-img.out"
    grep -qF "300 record(s) ingested, 0 refused" "$tmp/init-img.out" || fail "image ingest: $(cat "$tmp/init-img.out")"
    grep -qx "labels = dark, light" "$tmp/img.ini" || fail "labels: $(grep labels "$tmp/img.ini")"
    timeout 600 "$src/deploy/pipeline.sh" --config "$tmp/img.ini" --timeout 8 >"$tmp/pipeline-img.log" 2>&1 ||
        { tail -n 30 "$tmp/pipeline-img.log"; fail "pipeline.sh --config img.ini failed"; }
    grep -q "cnn-shapes production -> version" "$tmp/pipeline-img.log" || fail "no cnn-shapes deploy line: $(tail "$tmp/pipeline-img.log")"
    grep -o "metrics: .*" "$tmp/pipeline-img.log" | tail -n 1
}

pids=()
k=0
for part in lm text_class image; do
    (part_env $k; $part) >"$tmp/$part.out" 2>&1 &
    pids+=($!)
    k=$((k + 1))
done
failed=0
k=0
for part in lm text_class image; do
    rc=0
    wait "${pids[$k]}" || rc=$?
    echo "--- $part (exit $rc)"
    cat "$tmp/$part.out"
    [ $rc -eq 0 ] || failed=1
    k=$((k + 1))
done
((failed == 0)) || fail "see the part(s) above"
echo "it-init-dataset: ok"
