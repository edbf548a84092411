#!/usr/bin/env bash
# make-seeds.sh: rewrites the generated part of the seed corpus in
# tests/fuzz/corpus/ with fuzz_make_seeds (make_seeds.c, built in a fuzz
# build tree): PNGs of every colour type (libspng's encoder), JPEGs
# (TurboJPEG), binary PGM/PPM, shards, safetensors files, a trained rank file
# and IDX files, all written by the libraries kiln uses. The hand-written
# seeds (multipart, jsonl, http, textclean, bpe_encode) are edited directly.
# Deterministic; the output is committed.
#
# Usage: tests/fuzz/make-seeds.sh FUZZ_BUILD_DIR   (e.g. build/fuzz)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
build=${1:?usage: make-seeds.sh FUZZ_BUILD_DIR}
cmake --build "$build" --target fuzz_make_seeds >/dev/null
c=$here/corpus
mkdir -p "$c"/{image,media,idx,shard,safetensors,bpe}
"$build/tests/fuzz/fuzz_make_seeds" "$c"
echo "make-seeds: wrote $(find "$c" -type f | wc -l) files under $c"
