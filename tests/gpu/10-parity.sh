#!/usr/bin/env bash
# The CUDA backend's correctness: op and model parity with the CPU backend
# (poisoned outputs, fresh random inputs, determinism, checkpoints continued
# across backends), its fused-attention checks once more on the mma flash
# kernels (KILN_CUDA_FLASH=mma), then the PyTorch GPT fixture (tests/nn) on
# the GPU and test_nn_batchnorm with backend auto (= CUDA on a GPU machine).
# Called by tests/gpu/run with the build dir.
set -euo pipefail
build=$1
# KILN_CUDA_VERBOSE: one line per GEMM shape saying whether cuBLASLt ran it
# with its epilogue or the cuBLAS + kernel path did (and cuBLASLt's status)
rc=0
KILN_CUDA_VERBOSE=1 "$build/tests/gpu/test_cuda_parity" || rc=$?
[ $rc = 77 ] && exit 77 # no CUDA backend: skipped (tests/gpu/run says so)
# the bf16 fused attention again on the register-resident flash kernels
# (KILN_CUDA_FLASH=mma, lib/nn/cuda/flash_mma.cuh; the run above used the
# default WMMA ones): the op checks up to GPT-2's T = 1024 and hs 64
# against fp32 and the CPU's emulation, the bf16 GPT against the CPU,
# determinism and 50-step tracking; a few seconds
mma=0
KILN_CUDA_FLASH=mma "$build/tests/gpu/test_cuda_parity" --attention || mma=$?
if [ $rc != 0 ] || [ $mma != 0 ]; then
    echo "parity: FAIL: test_cuda_parity exit $rc (WMMA flash kernels), $mma (--attention, KILN_CUDA_FLASH=mma)"
    exit 1
fi
KILN_TEST_BACKEND=cuda "$build/tests/test_nn_gpt_fixture"
# batchnorm against its numpy fixture, and a checkpoint written on the CPU
# continued on the backend auto picks: CUDA here (the log line says so)
bn=$("$build/tests/test_nn_batchnorm" 2>&1)
echo "$bn"
grep -q "continuing on backend cuda" <<<"$bn"
echo "parity: every op and model matches the CPU backend; the GPT fixture matches PyTorch on the GPU"
