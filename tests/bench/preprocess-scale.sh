#!/usr/bin/env bash
# preprocess-scale.sh: kiln-preprocess beside its raw bounds, in one run
# (issue 16 items 2, 4, 5; figures in docs/performance.md):
#  1. the raw bounds, one thread: the tokenizer alone on the fortunes
#     (bench_bpe, kiln's own encoder) and 28x28 PNG decode alone (bench_image's
#     one synthetic PNG; and test_preprocess_bench's decode of the very PNGs
#     the service gets, Fashion-MNIST's first 20,000: the fair bound);
#  2. the service, 1, 2 and 3 instances in one group (6 raw partitions):
#     fortunes -> LM shards (r50k, near dedup) and 20,000 28x28 images ->
#     image shards, wall time from start to every input offset committed,
#     and the near-duplicate pairs both kept with more instances;
#  3. the dedup index's RSS after 1M documents, no bound and the default
#     window.
# Needs the stack (deploy/stack up; KILN_KAFKA_BROKERS) and the rank files
# (tests/tokenizer/cache.sh). On a 2-core machine the third instance cannot
# add throughput: three processes share two cores (say so with the figure).
# The comparison is in CPU seconds (the service's user + system time, every
# thread, from wait4; the bounds' thread CPU time): on a shared machine the
# wall clock mostly measures the neighbours. The text input is the fortunes
# KILN_BENCH_PP_TEXT_COPIES times (default 4 here; copies after the first
# have their words shuffled, so they are new texts with the same words), so
# that the steady state, not the instance's fixed start-up cost, is compared;
# the ratios are printed with and without that fixed cost.
#   KILN_BUILD_DIR=build tests/bench/preprocess-scale.sh [instances (1,2,3)]
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
build=${KILN_BUILD_DIR:-$src/build}
inst=${1:-1,2,3}
export KILN_BENCH_PP_TEXT_COPIES=${KILN_BENCH_PP_TEXT_COPIES:-4}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
echo "== preprocess-scale $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== raw bound: tokenizer alone (kiln's BPE, one thread; the npm line needs node)"
(cd "$src" && nice "$build/tests/bench/bench_bpe" 2 "$src" 2>&1 | grep -v '^ *$' | head -20) |
    tee -a "$out" || true
echo "== raw bound: image decode alone (28x28 PNG: the decode column)"
nice "$build/tests/bench/bench_image" 2 2>&1 | grep -E -A1 'bench_image|28x28' | tee -a "$out" || true
echo "== kiln-preprocess, instances $inst (start-up included), fortunes x $KILN_BENCH_PP_TEXT_COPIES"
KILN_BENCH_PP_INSTANCES=$inst nice "$build/tests/test_preprocess_bench" 2>&1 |
    grep -E 'preprocess (text|images|fixed)|CPU of|FAIL|SKIP' | tee -a "$out" || true
echo "== each stage beside its raw bound, per CPU-second (goal: 50 % of the bound per instance)"
python3 - "$out" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
def num(pat):
    m = re.search(pat, t)
    return float(m.group(1)) if m else None
tok = num(r'r50k_base\s+kiln.*?([0-9.]+) MB per CPU-second')
dec = num(r'28x28.*\n.*decode alone ([0-9.]+)')
fixed = num(r'stopped after 3 s: ([0-9.]+) CPU s')
for m in re.finditer(r'preprocess text, (\d+) instance\(s\): \d+ records, ([0-9.]+) MB.*\n\s+CPU of the instance\(s\): ([0-9.]+) s', t):
    n, mb, cpu = int(m.group(1)), float(m.group(2)), float(m.group(3))
    steady = cpu - n * fixed if fixed is not None else cpu
    if tok:
        print('text, %d instance(s): %.2f MB per CPU-second = %.1f %% of the tokenizer alone '
              '(%.1f MB per CPU-second); without the fixed cost (%d x %.2f CPU s): %.1f %%' %
              (n, mb / cpu, 100 * mb / cpu / tok, tok, n, fixed or 0, 100 * mb / steady / tok))
same = num(r'decode alone of the same \d+ [a-zA-Z-]+ images: ([0-9.]+) per CPU-second')
for m in re.finditer(r'preprocess images, (\d+) instance.*\n\s+CPU of the instance\(s\): ([0-9.]+) s: (\d+) images per CPU-second', t):
    n, cpu, rate = int(m.group(1)), float(m.group(2)), float(m.group(3))
    if dec:
        print('images, %d instance(s): %.0f per CPU-second = %.1f %% of PNG decode alone (%.0f per '
              'CPU-second, bench_image\'s one synthetic PNG), start-up included' %
              (n, rate, 100 * rate / dec, dec))
    if same:
        print('images, %d instance(s): %.0f per CPU-second = %.1f %% of PNG decode alone of the '
              'same images (%.0f per CPU-second), start-up included' %
              (n, rate, 100 * rate / same, same))
PY
echo "== dedup memory after 1M documents"
for w in 0 500000; do
    out=$(nice "$build/tests/bench/bench_dedup_memory" --docs 1000000 --window $w)
    { sed -n '1,2p' <<<"$out"; tail -2 <<<"$out"; } | sed 's/^/  /'
done
