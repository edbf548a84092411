#!/usr/bin/env bash
# GPU throughput, kiln beside PyTorch in the same call: the MLP and CNN at
# B=64 and 256 and the small GPT, kiln's CUDA backend (fp32) and PyTorch
# eager on the same GPU (tests/bench/nn/bench_nn_pytorch.py --device cuda);
# then GPT-2 124M: PyTorch bf16 (tests/bench/nn/gpt2_pytorch.py) and kiln fp32.
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
# kiln's side of GPT-2 124M (fp32, B=8: its activations are not recomputed
# and the attention matrices are stored, ~4.5 GB per sequence)
rc=0
"$build/tests/bench/bench_nn_cpu" --backend cuda --only gpt2 --gpt2-batch "${KILN_GPT2_BATCH:-8}" \
    --seconds 10 || rc=$?
echo "bench: figures above (kiln cuda, then PyTorch eager and GPT-2 124M, then kiln GPT-2 124M)"
exit $rc
