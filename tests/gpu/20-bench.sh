#!/usr/bin/env bash
# GPU throughput, kiln beside PyTorch in the same call: the MLP and CNN at
# B=64 and 256 and the small GPT, kiln's CUDA backend and PyTorch eager on
# the same GPU (tests/bench/nn/bench_nn_pytorch.py --device cuda), both fp32:
# kiln uses cuBLAS's default math (no TF32), and the PyTorch side turns off
# TF32, which its cuDNN convolutions use by default; then GPT-2 124M: PyTorch
# bf16 autocast (tests/bench/nn/gpt2_pytorch.py) against kiln fp32, a bar and
# not a like-for-like ratio. A failed PyTorch reference fails this step.
# Called by tests/gpu/run with the build dir.
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

echo "bench: kiln side: CUDA backend, fp32 (cuBLAS default math, no TF32)"
"$build/tests/bench/bench_nn_cpu" --backend cuda --seconds 3
ref=0
if python3 -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
    python3 "$root/tests/bench/nn/bench_nn_pytorch.py" --device cuda --seconds 3 || ref=$?
    # GPT-2 124M, bf16, torch.compile + flash attention + fused AdamW: the bar
    # kiln's CUDA backend is measured against (kiln has no bf16 path yet)
    peak_mem torch-gpt2 python3 "$root/tests/bench/nn/gpt2_pytorch.py" || ref=$?
    [ $ref -eq 0 ] || echo "bench: FAIL: a PyTorch reference run failed (exit $ref); its figures above are missing"
else
    echo "bench: no PyTorch with CUDA here: kiln's figures only"
fi
# kiln's side of GPT-2 124M (fp32, B=8: its activations are not recomputed
# and the attention matrices are stored, ~4.5 GB per sequence)
rc=0
peak_mem kiln-gpt2 "$build/tests/bench/bench_nn_cpu" --backend cuda --only gpt2 \
    --gpt2-batch "${KILN_GPT2_BATCH:-8}" --seconds 10 || rc=$?
echo "bench: figures above (kiln cuda fp32, then PyTorch eager fp32 and GPT-2 124M bf16, then kiln GPT-2 124M fp32)"
[ $rc -ne 0 ] && exit $rc
exit $ref
