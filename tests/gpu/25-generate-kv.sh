#!/usr/bin/env bash
# Generation's KV cache on the CUDA backend (lib/nn/cuda/kvcache.cu): tokens/s
# for 256 new tokens with the cache and without it, and their ratio (the
# issue's goal: >= 5x), on the two shapes of tests/bench/bench_generate_kv.c;
# it fails when the cached tokens differ from the no-cache path's (greedy).
# Its parity with the CPU is in test_cuda_parity (gen_parity). Called by
# tests/gpu/run with the build dir.
set -euo pipefail
build=$1
BACKEND=cuda REPS=${KILN_KV_REPS:-3} "$build/tests/bench/bench_generate_kv"
