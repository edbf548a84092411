#!/usr/bin/env bash
# The CUDA backend's correctness: op and model parity with the CPU backend
# (poisoned outputs, fresh random inputs, determinism, checkpoints continued
# across backends), then the PyTorch GPT fixture (tests/nn) on the GPU and
# test_nn_batchnorm with backend auto (= CUDA on a GPU machine). Called by
# tests/gpu/run with the build dir.
set -euo pipefail
build=$1
# KILN_CUDA_VERBOSE: one line per GEMM shape saying whether cuBLASLt ran it
# with its epilogue or the cuBLAS + kernel path did (and cuBLASLt's status)
KILN_CUDA_VERBOSE=1 "$build/tests/gpu/test_cuda_parity"
KILN_TEST_BACKEND=cuda "$build/tests/test_nn_gpt_fixture"
# batchnorm against its numpy fixture, and a checkpoint written on the CPU
# continued on the backend auto picks: CUDA here (the log line says so)
bn=$("$build/tests/test_nn_batchnorm" 2>&1)
echo "$bn"
grep -q "continuing on backend cuda" <<<"$bn"
echo "parity: every op and model matches the CPU backend; the GPT fixture matches PyTorch on the GPU"
