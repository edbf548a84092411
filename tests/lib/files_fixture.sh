# files_fixture.sh: sourced by the training-from-files tests
# (tests/scripts/files-*.sh): no stack (Kafka and the registry point at a
# closed port), a temp dir, and the Fashion-MNIST export they train from.
# Sets B (the build), TMP (removed at exit unless KEEP_TMP is set), CONFIG,
# IDX and log(); exits 77 when the dataset package is absent.
# files_export DIR: `kiln-preprocess export --from-idx` of the 60k train and
# 10k t10k images into DIR (fails the test when the export fails).
set -euo pipefail
: "${KILN_SOURCE_DIR:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
: "${KILN_BINARY_DIR:=$KILN_SOURCE_DIR/build}"
B=$KILN_BINARY_DIR
IDX=/usr/share/datasets/fashion-mnist
TMP=$(mktemp -d)
trap '[ -n "${KEEP_TMP:-}" ] || rm -rf "$TMP"' EXIT
log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
if [ ! -r $IDX/train-images-idx3-ubyte.gz ]; then
    log "SKIPPED: $IDX not installed (apt-get install -y dataset-fashion-mnist)"
    exit 77
fi
CONFIG=$KILN_SOURCE_DIR/deploy/kiln.ini
export OPENBLAS_NUM_THREADS=1 KILN_KAFKA_BROKERS=127.0.0.1:9 KILN_REGISTRY_URL=http://127.0.0.1:9
files_export() {
    "$B/preprocess/kiln-preprocess" export --from-idx $IDX --config "$CONFIG" --dataset fashion-mnist \
        --out "$1" 2>"$TMP/export.log" || { cat "$TMP/export.log" >&2; log "FAIL: export"; exit 1; }
}
