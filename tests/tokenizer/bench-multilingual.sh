#!/usr/bin/env bash
# bench-multilingual.sh: kiln's tokenizer beside tiktoken on the multilingual
# benchmark corpus (bench-corpus.js), single thread, one encode call per
# document, for r50k_base and cl100k_base: kiln (bpe_tool bench), native
# tiktoken (bench-native.py, where Python has `tiktoken`, e.g. the GPU
# machine) and npm's WASM build (bench-ref.js, where node has it). Every
# engine's ids are checked against the expected-ids files first.
# Usage: bench-multilingual.sh [seconds-per-measure (default 5)]
# Needs: $KILN_BINARY_DIR/tests/bpe_tool, the rank files and (or node to build
# them) the corpus and expected ids under .cache/tokenizer; bpe-parity.sh
# writes all of them. Copy .cache/tokenizer along to a machine without node.
set -euo pipefail

SRC=${KILN_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
BIN=${KILN_BINARY_DIR:-$SRC/build}
TOK=$SRC/tests/tokenizer
CACHE=$SRC/.cache/tokenizer
SECONDS_PER=${1:-5}
CORPUS=$CACHE/bench-corpus.txt

have_node=0
if command -v node >/dev/null && [ -d "$TOK/node_modules/tiktoken" ]; then have_node=1; fi
if [ ! -s "$CORPUS" ]; then
    [ $have_node = 1 ] || { echo "FAIL: no $CORPUS and no node to build it" >&2; exit 1; }
    node "$TOK/bench-corpus.js" "$CORPUS" "$SRC"
fi
have_native=0
if python3 -c 'import tiktoken' 2>/dev/null; then have_native=1; fi

for enc in r50k cl100k; do
    exp=$CACHE/bench-expected-$enc.txt
    if [ ! -s "$exp" ] && [ $have_node = 1 ]; then
        node "$TOK/reference.js" expect-corpus "${enc}_base" "$exp" "$CORPUS"
    fi
    [ -s "$exp" ] || { echo "FAIL: no $exp" >&2; exit 1; }
    kiln=$("$BIN/tests/bpe_tool" bench "$CACHE/${enc}_base.tiktoken" "$enc" "$CORPUS" \
        "$SECONDS_PER" "$exp")
    echo "$kiln"
    k=$(echo "$kiln" | sed -E 's/.*ids; ([0-9.]+) MB\/s wall.*/\1/')
    if [ $have_native = 1 ]; then
        n=$(python3 "$TOK/bench-native.py" "$enc" "$CACHE/${enc}_base.tiktoken" "$CORPUS" \
            "$SECONDS_PER" "$exp")
        echo "$n"
        awk -v k="$k" -v n="$(echo "$n" | awk '{print $3}')" -v e="$enc" \
            'BEGIN { printf "%s: kiln %.2f MB/s, native tiktoken %.2f MB/s, kiln / native = %.2f\n", e, k, n, k / n }'
    else
        echo "$enc: native tiktoken not importable here (python3 -c 'import tiktoken')"
    fi
    if [ $have_node = 1 ]; then
        w=$(node "$TOK/bench-ref.js" "${enc}_base" "$SECONDS_PER" --corpus "$CORPUS")
        awk -v k="$k" -v w="$(echo "$w" | awk '{print $3}')" -v e="$enc" \
            'BEGIN { printf "%s: (secondary) npm tiktoken WASM %.2f MB/s, kiln / WASM = %.2f\n", e, w, k / w }'
    fi
done
