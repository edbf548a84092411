#!/usr/bin/env bash
# GPU throughput, kiln beside PyTorch in the same call: the MLP and CNN at
# B=64 and 256 and the small GPT, kiln's CUDA backend and PyTorch eager on
# the same GPU (tests/bench/nn/bench_nn_pytorch.py --device cuda), in each
# precision (KILN_BENCH_PRECISIONS, default "fp32 tf32 bf16") on both sides:
# fp32 = kiln on cuBLAS's default math (no TF32) and PyTorch with TF32 off
# (its cuDNN convolutions use TF32 by default); tf32 = TF32 tensor cores on
# both; bf16 = kiln's bf16 GEMMs with fp32 master weights and PyTorch's bf16
# autocast. Then GPT-2 124M: PyTorch bf16 autocast + torch.compile
# (tests/bench/nn/gpt2_pytorch.py, B=32) against kiln fp32 (B=KILN_GPT2_BATCH,
# 8: fp32 stores the T x T attention matrices, so B=32 does not fit) and
# kiln bf16 (B=KILN_GPT2_BF16_BATCH, 32: its fused attention stores none;
# KILN_CUDA_ATTENTION=gemm turns it off, then use 8; bf16 runs once more
# with KILN_CUDA_FLASH=mma, the register-resident kernels). KILN_BENCH_SECONDS
# (1.5) is each small case's time. kiln's MLP and CNN steps run as CUDA
# graphs (KILN_CUDA_GRAPH=0 turns that off), and once more op by op in
# fp32 to show the difference. A failed PyTorch reference fails this
# step. Called by tests/gpu/run with the build dir.
set -euo pipefail
build=$1
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

# peak_mem LABEL CMD...: runs CMD while nvidia-smi samples the GPU's used
# memory every 100 ms, then prints "peak-memory LABEL: N MiB", the most seen
# less what was in use before (so the CUDA context and cuBLAS's workspace
# count: an upper bound for kiln's own buffers). Returns CMD's status.
peak_mem() {
    local label=$1 base f spid rc=0
    shift
    base=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0)
    f=$(mktemp)
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 -lms 100 >"$f" 2>&1 &
    spid=$!
    "$@" || rc=$?
    kill "$spid" 2>/dev/null
    wait "$spid" 2>/dev/null || true
    awk -v b="$base" -v l="$label" '/^[0-9]+$/ { n++; if ($1 + 0 > m) m = $1 + 0 }
        END { if (n && b ~ /^[0-9]+$/)
                  printf "peak-memory %s: %d MiB (nvidia-smi: GPU used, less the %d MiB before)\n",
                      l, m - b, b
              else printf "peak-memory %s: - (nvidia-smi gave no samples)\n", l }' "$f"
    rm -f "$f"
    return $rc
}

torch=0
python3 -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null && torch=1
[ $torch = 1 ] || echo "bench: no PyTorch with CUDA here: kiln's figures only"
rc=0 ref=0
precs=${KILN_BENCH_PRECISIONS:-fp32 tf32 bf16}
secs=${KILN_BENCH_SECONDS:-1.5}
for prec in $precs; do
    echo "bench: kiln side: CUDA backend, precision $prec"
    # MLP/CNN steps run as one CUDA graph each (graph.cu; each row says
    # which mode ran): should that path fail, the step FAILs and the same
    # cases run again op by op so that the figures are there
    if ! "$build/tests/bench/bench_nn_cpu" --backend cuda --precision "$prec" --seconds "$secs"; then
        rc=1
        echo "bench: FAIL: bench_nn_cpu stopped (precision $prec); again with KILN_CUDA_GRAPH=0"
        KILN_CUDA_GRAPH=0 "$build/tests/bench/bench_nn_cpu" --backend cuda --precision "$prec" \
            --seconds "$secs" || rc=$?
    fi
done
# What the graph saves: the MLP and CNN in fp32 op by op (KILN_CUDA_GRAPH=0),
# the rows prefixed so that ratios.sh keeps the graph rows above
for case in mlp cnn; do
    KILN_CUDA_GRAPH=0 "$build/tests/bench/bench_nn_cpu" --backend cuda --only "$case" \
        --seconds "$secs" | sed 's/^/op by op (KILN_CUDA_GRAPH=0): /' || rc=1
done
# the CNN once more on the implicit-GEMM convolutions (lib/nn/cuda/conv.cu;
# the rows above are the default path, im2col): rows "cnn-implicit", each
# compared with PyTorch's cnn; about 4 s a precision
for prec in $precs; do
    echo "bench: kiln side: CUDA backend, precision $prec, KILN_CUDA_CONV=implicit"
    KILN_CUDA_CONV=implicit "$build/tests/bench/bench_nn_cpu" --backend cuda --only cnn \
        --precision "$prec" --seconds "$secs" || rc=$?
done
if [ $torch = 1 ]; then # one process for every precision: PyTorch starts once
    python3 "$root/tests/bench/nn/bench_nn_pytorch.py" --device cuda \
        --precision "$(tr ' ' ',' <<<"$precs")" --seconds "$secs" || ref=$?
fi
if [ $torch = 1 ]; then
    # GPT-2 124M, bf16, torch.compile + flash attention + fused AdamW: the bar
    peak_mem torch-gpt2 python3 "$root/tests/bench/nn/gpt2_pytorch.py" || ref=$?
fi
[ $ref -eq 0 ] || echo "bench: FAIL: a PyTorch reference run failed (exit $ref); its figures above are missing"
# kiln's side of GPT-2 124M, fp32 then bf16 (fp32 at B=8: the attention
# matrices are stored, 2 x 12 x 1024^2 floats a layer a sequence; bf16 at
# B=32 with the fused attention, 12.0 GiB allocated counted on the CPU,
# docs/performance.md "Memory, counted and cut"). bench_nn_cpu's "memory gpt2" line is kiln's own
# count (kn_backend_mem), the figure beside PyTorch's max_memory_allocated
# in ratios.sh; peak_mem's nvidia-smi figure adds the CUDA context.
for prec in fp32 bf16; do
    batch=${KILN_GPT2_BATCH:-8}
    [ "$prec" = bf16 ] && batch=${KILN_GPT2_BF16_BATCH:-32}
    echo "bench: kiln side: CUDA backend, precision $prec, GPT-2 124M, B=$batch"
    peak_mem "kiln-gpt2-$prec" "$build/tests/bench/bench_nn_cpu" --backend cuda --only gpt2 \
        --precision "$prec" --gpt2-batch "$batch" --seconds 6 || rc=$?
done
# what storing the saved activations in bf16 costs in speed (12.0 GiB
# counted at B=32 with it, 16.2 without; model_tfm.c): the same bf16 run
# with them in fp32, rows prefixed so that ratios.sh keeps the rows above
KILN_CUDA_SAVED=fp32 "$build/tests/bench/bench_nn_cpu" --backend cuda --only gpt2 --precision bf16 \
    --gpt2-batch "${KILN_GPT2_BF16_BATCH:-32}" --seconds 3 |
    sed 's/^/saved activations fp32 (KILN_CUDA_SAVED=fp32): /' || rc=1
# the bf16 run once more on the register-resident flash kernels
# (KILN_CUDA_FLASH=mma, flash_mma.cuh: scores in registers, no shared-memory
# round trip) against the default WMMA ones above, rows prefixed as above
KILN_CUDA_FLASH=mma "$build/tests/bench/bench_nn_cpu" --backend cuda --only gpt2 --precision bf16 \
    --gpt2-batch "${KILN_GPT2_BF16_BATCH:-32}" --seconds 3 |
    sed 's/^/flash kernels mma (KILN_CUDA_FLASH=mma): /' || rc=1
echo "bench: figures above (kiln cuda and PyTorch eager per precision, PyTorch GPT-2 124M bf16, kiln GPT-2 124M fp32 and bf16, bf16 with fp32 saved activations and with the mma flash kernels)"
[ $rc -ne 0 ] && exit $rc
exit $ref
