#!/usr/bin/env bash
# run.sh: kiln's CPU backend against PyTorch, one thread each, in one call.
# Runs tests/bench/bench_nn_cpu.c and bench_nn_pytorch.py (the same models,
# batches and AdamW steps) one after the other on this machine and prints
# both outputs and the kiln / PyTorch ratio per case. Not a test: it prints
# figures. PyTorch comes from Debian (python3-torch), installed on first use.
#   SECONDS_PER_CASE=3 tests/bench/nn/run.sh
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
build=${KILN_BUILD_DIR:-$root/build}
secs=${SECONDS_PER_CASE:-3}
py=/usr/bin/python3 # Debian's interpreter: python3-torch is installed for it

if ! "$py" -c 'import torch' 2>/dev/null; then
    echo "nn bench: installing Debian's python3-torch" >&2
    sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get install -y -qq --no-install-recommends python3-torch >/dev/null
fi
cmake --build "$build" --target bench_nn_cpu >/dev/null

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "== $(lscpu | sed -n 's/^Model name: *//p'), $(date -u +%F)"
"$build/tests/bench/bench_nn_cpu" --seconds "$secs" | tee "$tmp/kiln.txt"
"$py" "$root/tests/bench/nn/bench_nn_pytorch.py" --seconds "$secs" | tee "$tmp/torch.txt"

echo "== kiln / PyTorch (per CPU-second of one thread)"
paste <(sed -nE 's/^(mlp|cnn|gpt) .*B=([0-9]+) .* ([0-9]+) (images|tokens)\/s.*/\1 B=\2 \3 \4/p' "$tmp/kiln.txt") \
      <(sed -nE 's/^(mlp|cnn|gpt) .*B=([0-9]+) .* ([0-9]+) (images|tokens)\/s.*/\3/p' "$tmp/torch.txt") |
    awk '{ printf "%-4s %-6s kiln %9d %s/s  PyTorch %9d %s/s  ratio %.2f\n", $1, $2, $3, $4, $5, $4, $3 / $5 }'
