#!/usr/bin/env bash
# kiln's tokenizer beside native tiktoken (Rust core, Python bindings), the
# yardstick of issue 16 item 3, where `import tiktoken` works: the GPU
# machine's Python has tiktoken 0.14. One thread, one encode call per
# document, r50k_base and cl100k_base, on the multilingual corpus
# (tests/tokenizer/bench-multilingual.sh; the pack carries every 8th of its
# documents and the two rank files). tiktoken writes the expected ids there
# first, and kiln's ids must equal them for every document. Called by
# tests/gpu/run with the build dir; exits 77 without Python tiktoken.
set -euo pipefail
build=$1
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
if ! python3 -c 'import tiktoken' 2>/dev/null; then
    echo "tiktoken: SKIPPED: python3 cannot import tiktoken here"
    exit 77
fi
cache=$build/../tokenizer # a pack's (tests/gpu/pack.sh)
[ -d "$cache" ] || cache=$root/.cache/tokenizer
[ -s "$cache/bench-corpus.txt" ] || { echo "tiktoken: FAIL: no corpus in $cache"; exit 1; }
work=$(mktemp -d) # the expected ids are written next to a copy, never into the pack
trap 'rm -rf "$work"' EXIT
cp "$cache"/*.tiktoken "$cache/bench-corpus.txt" "$work/"
KILN_SOURCE_DIR=$root KILN_BINARY_DIR=$build KILN_TOKENIZER_CACHE=$work \
    bash "$root/tests/tokenizer/bench-multilingual.sh" "${KILN_TIKTOKEN_SECONDS:-2}" "${KILN_TIKTOKEN_ROUNDS:-3}" |
    tee "$work/out.txt"
grep -q 'r50k: kiln / native tiktoken (Python)' "$work/out.txt" &&
    grep -q 'cl100k: kiln / native tiktoken (Python)' "$work/out.txt" ||
    { echo "tiktoken: FAIL: no ratio printed"; exit 1; }
echo "tiktoken: $(grep 'kiln / native tiktoken (Python)' "$work/out.txt" | sed 's/ = / /' | paste -sd';')"
