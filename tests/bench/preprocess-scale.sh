#!/usr/bin/env bash
# preprocess-scale.sh: kiln-preprocess beside its raw bounds, in one run
# (issue 16 items 2, 4, 5; figures in docs/performance.md):
#  1. the raw bounds, one thread: the tokenizer alone on the fortunes
#     (bench_bpe, kiln's own encoder) and 28x28 PNG decode alone (bench_image);
#  2. the service, 1, 2 and 3 instances in one group (6 raw partitions):
#     fortunes -> LM shards (r50k, near dedup) and 20,000 28x28 images ->
#     image shards, wall time from start to every input offset committed,
#     and the near-duplicate pairs both kept with more instances;
#  3. the dedup index's RSS after 1M documents, no bound and the default
#     window.
# Needs the stack (deploy/stack up; KILN_KAFKA_BROKERS) and the rank files
# (tests/tokenizer/cache.sh). On a 2-core machine the third instance cannot
# add throughput: three processes share two cores (say so with the figure).
#   KILN_BUILD_DIR=build tests/bench/preprocess-scale.sh [instances (1,2,3)]
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
build=${KILN_BUILD_DIR:-$src/build}
inst=${1:-1,2,3}
echo "== preprocess-scale $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== raw bound: tokenizer alone (kiln's BPE, one thread; the npm line needs node)"
(cd "$src" && nice "$build/tests/bench/bench_bpe" 2 "$src" 2>&1 | grep -v '^ *$' | head -20) || true
echo "== raw bound: image decode alone (28x28 PNG: the decode column)"
nice "$build/tests/bench/bench_image" 2 2>&1 | grep -E -A1 'bench_image|28x28' || true
echo "== kiln-preprocess, instances $inst (start-up included)"
KILN_BENCH_PP_INSTANCES=$inst nice "$build/tests/test_preprocess_bench" 2>&1 |
    grep -E 'preprocess (text|images|fixed)|CPU of|FAIL|SKIP' || true
echo "== dedup memory after 1M documents"
for w in 0 500000; do
    out=$(nice "$build/tests/bench/bench_dedup_memory" --docs 1000000 --window $w)
    { sed -n '1,2p' <<<"$out"; tail -2 <<<"$out"; } | sed 's/^/  /'
done
