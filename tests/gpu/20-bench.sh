#!/usr/bin/env bash
# GPU throughput, kiln beside PyTorch in the same call: the MLP and CNN at
# B=64 and 256 and the small GPT, kiln's CUDA backend (fp32) and PyTorch
# eager on the same GPU (tests/bench/nn/bench_nn_pytorch.py --device cuda).
# Called by tests/gpu/run with the build dir.
set -euo pipefail
build=$1
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
"$build/tests/bench/bench_nn_cpu" --backend cuda --seconds 3
if python3 -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
    python3 "$root/tests/bench/nn/bench_nn_pytorch.py" --device cuda --seconds 3
    # GPT-2 124M, bf16, torch.compile + flash attention + fused AdamW: the bar
    # kiln's CUDA backend is measured against (kiln has no bf16 path yet)
    python3 "$root/tests/bench/nn/gpt2_pytorch.py" || true
else
    echo "bench: no PyTorch with CUDA here: kiln's figures only"
fi
echo "bench: figures above (kiln cuda, then PyTorch eager)"
