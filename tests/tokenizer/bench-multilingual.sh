#!/usr/bin/env bash
# bench-multilingual.sh: kiln's tokenizer beside native tiktoken on the
# multilingual benchmark corpus (bench-corpus.js), one thread, one encode call
# per document, for r50k_base and cl100k_base. The engines take turns for
# several rounds (a shared machine's load drifts), and every figure is MB/s
# per CPU-second of the encoding thread (MB = 1e6 bytes); the summary gives
# each engine's range and median and kiln / native of the medians and of the
# per-round pairs.
#   kiln           bpe_tool bench (tiktoken's encode_ordinary semantics)
#   kiln special   bpe_tool bench --special (special tokens allowed)
#   node-native    bench-node-native.js: npm tiktoken-node 0.0.7, tiktoken's
#                  Rust core (tiktoken-rs 0.5.8) as a prebuilt native library;
#                  its `encode` allows special tokens, so it is set against
#                  "kiln special" -- the yardstick wherever node runs
#   native         bench-native.py: Python tiktoken, where `import tiktoken`
#                  works (e.g. the GPU machine), against plain kiln
#   WASM           bench-ref.js: npm tiktoken (WASM), a secondary line
#   before         $KILN_BPE_TOOL_BEFORE, when set: an older build's bpe_tool
#                  (with --special), to set today's kiln / native beside an
#                  older one measured elsewhere against another yardstick
# Each engine's ids are checked against the expected-ids files in round 1
# (every document identical, or the script fails).
# Where neither node nor an expected-ids file is at hand but Python tiktoken
# is (the GPU machine: tests/gpu/35-tiktoken.sh), the expected ids are
# written by tiktoken itself first, so kiln's ids are checked against it.
# Usage: bench-multilingual.sh [seconds-per-measure (default 5)] [rounds (default 5)]
# Needs: $KILN_BINARY_DIR/tests/bpe_tool, the rank files and (or node to build
# them) the corpus and expected ids under .cache/tokenizer
# ($KILN_TOKENIZER_CACHE); bpe-parity.sh writes the rank files. Copy
# .cache/tokenizer along to a machine without node.
set -euo pipefail

SRC=${KILN_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
BIN=${KILN_BINARY_DIR:-$SRC/build}
TOK=$SRC/tests/tokenizer
CACHE=${KILN_TOKENIZER_CACHE:-$SRC/.cache/tokenizer}
SECONDS_PER=${1:-5}
ROUNDS=${2:-5}
CORPUS=$CACHE/bench-corpus.txt

have_node=0
if command -v node >/dev/null && [ -d "$TOK/node_modules/tiktoken" ]; then have_node=1; fi
have_node_native=0
if [ $have_node = 1 ] && [ -d "$TOK/node_modules/tiktoken-node" ]; then have_node_native=1; fi
have_native=0
if python3 -c 'import tiktoken' 2>/dev/null; then have_native=1; fi
if [ ! -s "$CORPUS" ]; then
    [ $have_node = 1 ] || { echo "FAIL: no $CORPUS and no node to build it" >&2; exit 1; }
    node "$TOK/bench-corpus.js" "$CORPUS" "$SRC"
fi
echo "corpus: $CORPUS, $(stat -c %s "$CORPUS") bytes, sha256 $(sha256sum "$CORPUS" | cut -c1-16)...;" \
     "$SECONDS_PER s per measure, $ROUNDS rounds, $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"

# stats <label> <figures...>: "label: min-max (median m)"; sets MEDIAN.
stats() {
    local label=$1
    shift
    MEDIAN=$(printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
        print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }')
    printf '%s\n' "$@" | sort -g | awk -v l="$label" -v m="$MEDIAN" '
        NR == 1 { lo = $1 } { hi = $1 } END { printf "  %-32s %6.2f-%6.2f MB/s of CPU, median %.2f\n", l, lo, hi, m }'
}

# ratios <kiln figures> -- <native figures>: kiln / native per round, range.
ratios() {
    local k=() n=() side=k x
    for x in "$@"; do
        if [ "$x" = -- ]; then side=n; continue; fi
        if [ $side = k ]; then k+=("$x"); else n+=("$x"); fi
    done
    for i in "${!k[@]}"; do echo "${k[$i]} ${n[$i]}"; done |
        awk '{ r = $1 / $2; if (NR == 1 || r < lo) lo = r; if (NR == 1 || r > hi) hi = r }
             END { printf "%.2f-%.2f", lo, hi }'
}

for enc in r50k cl100k; do
    exp=$CACHE/bench-expected-$enc.txt
    exps=$CACHE/bench-expected-special-$enc.txt
    ranks=$CACHE/${enc}_base.tiktoken
    if [ $have_node = 1 ]; then
        [ -s "$exp" ] || node "$TOK/reference.js" expect-corpus "${enc}_base" "$exp" "$CORPUS"
        [ -s "$exps" ] || node "$TOK/reference.js" expect-corpus "${enc}_base" "$exps" "$CORPUS" --special
    elif [ ! -s "$exp" ] && [ $have_native = 1 ]; then
        python3 "$TOK/bench-native.py" --write-ids "$exp" "$enc" "$ranks" "$CORPUS"
    fi
    [ -s "$exp" ] || { echo "FAIL: no $exp" >&2; exit 1; }
    K=() KS=() NN=() PY=() W=() KB=()
    for ((r = 1; r <= ROUNDS; r++)); do
        e1=$exp e2=$exps py_exp=("$exp") node_exp=$exps
        if [ $r -gt 1 ]; then e1= e2= py_exp=() node_exp=-; fi
        # bpe_tool: "...; W MB/s wall, C MB/s of CPU time (...)"
        line=$("$BIN/tests/bpe_tool" bench "$ranks" "$enc" "$CORPUS" "$SECONDS_PER" $e1)
        [ $r = 1 ] && echo "$line"
        case $line in *DIFFER*) exit 1 ;; esac
        K+=("$(echo "$line" | sed -E 's/.* ([0-9.]+) MB\/s of CPU time \(.*/\1/')")
        if [ $have_node_native = 1 ]; then
            [ -s "$exps" ] || { echo "FAIL: no $exps" >&2; exit 1; }
            line=$("$BIN/tests/bpe_tool" bench "$ranks" "$enc" "$CORPUS" "$SECONDS_PER" $e2 --special)
            [ $r = 1 ] && echo "$line"
            case $line in *DIFFER*) exit 1 ;; esac
            KS+=("$(echo "$line" | sed -E 's/.* ([0-9.]+) MB\/s of CPU time \(.*/\1/')")
            line=$(node "$TOK/bench-node-native.js" "$enc" "$CORPUS" "$SECONDS_PER" "$node_exp")
            [ $r = 1 ] && echo "$line (ids identical to the reference)"
            NN+=("$(echo "$line" | awk '{ print $3 }')")
        fi
        if [ -n "${KILN_BPE_TOOL_BEFORE:-}" ] && [ $have_node_native = 1 ]; then
            line=$("$KILN_BPE_TOOL_BEFORE" bench "$ranks" "$enc" "$CORPUS" "$SECONDS_PER" $e2 --special)
            [ $r = 1 ] && echo "before: $line"
            case $line in *DIFFER*) exit 1 ;; esac
            KB+=("$(echo "$line" | sed -E 's/.* ([0-9.]+) MB\/s of CPU time \(.*/\1/')")
        fi
        if [ $have_native = 1 ]; then
            line=$(python3 "$TOK/bench-native.py" "$enc" "$ranks" "$CORPUS" "$SECONDS_PER" \
                "${py_exp[@]}")
            [ $r = 1 ] && echo "$line${py_exp:+ (ids identical to the reference)}"
            PY+=("$(echo "$line" | awk '{ print $3 }')")
        fi
        if [ $have_node = 1 ]; then
            line=$(node "$TOK/bench-ref.js" "${enc}_base" "$SECONDS_PER" --corpus "$CORPUS")
            W+=("$(echo "$line" | awk '{ print $7 }')")
        fi
    done
    echo "$enc: $ROUNDS rounds, MB/s per CPU-second of the encoding thread"
    stats kiln "${K[@]}"
    km=$MEDIAN
    if [ $have_node_native = 1 ]; then
        stats "kiln, special tokens allowed" "${KS[@]}"
        ksm=$MEDIAN
        stats "native tiktoken (tiktoken-node)" "${NN[@]}"
        awk -v k="$ksm" -v n="$MEDIAN" -v e="$enc" -v r="$(ratios "${KS[@]}" -- "${NN[@]}")" \
            'BEGIN { printf "%s: kiln / native tiktoken (tiktoken-node 0.0.7, Rust core) = %.2f (medians), %s (rounds)\n", e, k / n, r }'
        if [ ${#KB[@]} -gt 0 ]; then
            nm=$MEDIAN
            stats "before, special tokens allowed" "${KB[@]}"
            awk -v k="$MEDIAN" -v n="$nm" -v e="$enc" -v r="$(ratios "${KB[@]}" -- "${NN[@]}")" \
                'BEGIN { printf "%s: before / native tiktoken (tiktoken-node) = %.2f (medians), %s (rounds)\n", e, k / n, r }'
        fi
    else
        echo "$enc: npm tiktoken-node not installed in $TOK/node_modules (npm ci there)"
    fi
    if [ $have_native = 1 ]; then
        stats "native tiktoken (Python)" "${PY[@]}"
        awk -v k="$km" -v n="$MEDIAN" -v e="$enc" -v r="$(ratios "${K[@]}" -- "${PY[@]}")" \
            'BEGIN { printf "%s: kiln / native tiktoken (Python) = %.2f (medians), %s (rounds)\n", e, k / n, r }'
    else
        echo "$enc: Python tiktoken not importable here (python3 -c 'import tiktoken')"
    fi
    if [ $have_node = 1 ]; then
        stats "(secondary) npm tiktoken WASM" "${W[@]}"
        awk -v k="$km" -v n="$MEDIAN" -v e="$enc" \
            'BEGIN { printf "%s: (secondary) kiln / npm tiktoken WASM = %.2f (medians)\n", e, k / n }'
    fi
done
