#!/usr/bin/env bash
# pack.sh: builds here (Release, CUDA on) everything tests/gpu/run needs and
# packs it for a GPU machine that has nvcc, CMake and PyTorch but none of
# our Debian libraries and no network: the GPU binaries, the shared
# libraries ldd lists that such a machine lacks, and the files the tests
# read at run time, as one tar.xz in a git-ignored folder small enough to
# carry there (at most 64 MiB travel, the working tree included).
#
# On the GPU machine: tests/gpu/run --prebuilt .gpu-pack (tests/gpu/prebuilt.sh
# unpacks it). Each binary is reached through a small wrapper that sets
# LD_LIBRARY_PATH for that process alone, so PyTorch in the same run never
# sees our copies of OpenBLAS or libgfortran.
#
# Usage: tests/gpu/pack.sh [--build-dir DIR] [--out DIR]
#        (defaults: build-gpu-pack and .gpu-pack in the source tree)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=$root/build-gpu-pack
out=$root/.gpu-pack
while [ $# -gt 0 ]; do
    case $1 in
    --build-dir) build=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "usage: $0 [--build-dir DIR] [--out DIR]" >&2; exit 2 ;;
    esac
done

# What tests/gpu/run and its step scripts start, relative to the build dir.
bins=(tests/gpu/cuda_smoke tests/gpu/test_cuda_parity tests/test_nn_gpt_fixture
      tests/bench/bench_nn_cpu tests/bench/bench_generate_kv preprocess/kiln-preprocess
      trainer/kiln-trainer evaluator/kiln-evaluator tests/bpe_tool)
targets=(cuda_smoke test_cuda_parity test_nn_gpt_fixture bench_nn_cpu bench_generate_kv
         kiln-preprocess kiln-trainer kiln-evaluator bpe_tool)
# The Fashion-MNIST IDX files (Debian's dataset-fashion-mnist, ~31 MB gzip):
# 30-files-cnn.sh makes its shards from them there (kiln-preprocess export
# --from-idx), so the pack carries no shards.
fmnist=/usr/share/datasets/fashion-mnist
# Read at run time through KILN_SOURCE_DIR (compiled in) or from the tree.
data=(tests/nn/gpt_fixture_model.safetensors tests/nn/gpt_fixture_expected.safetensors
      tests/bench/nn/bench_nn_pytorch.py tests/bench/nn/gpt2_pytorch.py)
# Present on any Linux machine with a CUDA driver, and newer there: never
# packed (an older libstdc++ first on the path would break PyTorch).
system_re='^(linux-vdso|ld-linux|libc|libm|libdl|libpthread|librt|libstdc\+\+|libgcc_s|libcuda)\.'
# The tokenizer benchmark's data (35-tiktoken.sh): the two rank files and
# every 8th document of the multilingual corpus (~2 MB, the mix of scripts
# kept), made here by tests/tokenizer/cache.sh and bench-corpus.js if needed.
tokcache=$root/.cache/tokenizer
limit=$((56 * 1024 * 1024)) # leaves the working tree (~4.3 MB) room under the 64 MiB

export PATH=/usr/local/cuda/bin:$PATH
echo "pack: configuring $build (Release, KILN_CUDA=ON)"
mkdir -p "$build"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DKILN_CUDA=ON >"$build/pack.configure.log" 2>&1 ||
    { cat "$build/pack.configure.log"; exit 1; }
if ! grep -q 'building the CUDA backend' "$build/pack.configure.log"; then
    echo "pack: no CUDA compiler here (nvcc): nothing to pack" >&2
    grep 'kiln:' "$build/pack.configure.log" >&2 || true
    exit 1
fi
echo "pack: building ${targets[*]}"
cmake --build "$build" -j"$(nproc)" --target "${targets[@]}" >"$build/pack.build.log" 2>&1 ||
    { tail -50 "$build/pack.build.log"; exit 1; }

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
pk=$stage/kiln-gpu
mkdir -p "$pk/lib" "$pk/src"
declare -A libs=()
for b in "${bins[@]}"; do
    mkdir -p "$pk/.real/$(dirname "$b")" "$pk/build/$(dirname "$b")"
    cp "$build/$b" "$pk/.real/$b"
    # the wrapper: from build/<b> up to the pack's root
    up=$(dirname "build/$b" | sed 's#[^/][^/]*#..#g')
    cat >"$pk/build/$b" <<EOF
#!/bin/sh
# kiln GPU pack (tests/gpu/pack.sh): the real binary with the packed libraries
pack=\$(cd "\$(dirname "\$0")/$up" && pwd)
LD_LIBRARY_PATH="\$pack/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "\$pack/.real/$b" "\$@"
EOF
    chmod +x "$pk/build/$b"
    while read -r name arrow path _; do
        [ "$arrow" = "=>" ] || continue
        if [ "$path" = "not" ]; then
            echo "pack: $b: $name not found here" >&2
            exit 1
        fi
        [[ $name =~ $system_re ]] && continue
        libs[$name]=$path
    done < <(ldd "$build/$b")
done
for name in "${!libs[@]}"; do
    cp -L "${libs[$name]}" "$pk/lib/$name"
done
for f in "${data[@]}"; do
    mkdir -p "$pk/src/$(dirname "$f")"
    cp "$root/$f" "$pk/src/$f"
done
if [ -r "$fmnist/train-images-idx3-ubyte.gz" ]; then
    mkdir -p "$pk/datasets/fashion-mnist"
    cp "$fmnist"/*-idx[13]-ubyte.gz "$pk/datasets/fashion-mnist/"
else
    echo "pack: $fmnist not installed here: 30-files-cnn.sh will need KILN_FMNIST_DIR there" >&2
fi
if [ ! -s "$tokcache/r50k_base.tiktoken" ] || [ ! -s "$tokcache/cl100k_base.tiktoken" ]; then
    bash "$root/tests/tokenizer/cache.sh" >/dev/null ||
        { echo "pack: no rank files in $tokcache and tests/tokenizer/cache.sh could not make them (node, npm?)" >&2; exit 1; }
fi
if [ ! -s "$tokcache/bench-corpus.txt" ]; then
    command -v node >/dev/null ||
        { echo "pack: no $tokcache/bench-corpus.txt and no node to build it (tests/tokenizer/bench-corpus.js)" >&2; exit 1; }
    node "$root/tests/tokenizer/bench-corpus.js" "$tokcache/bench-corpus.txt" "$root" >/dev/null
fi
mkdir -p "$pk/tokenizer"
cp "$tokcache/r50k_base.tiktoken" "$tokcache/cl100k_base.tiktoken" "$pk/tokenizer/"
python3 -c 'import sys
docs = open(sys.argv[1], "rb").read().split(b"\0")
open(sys.argv[2], "wb").write(b"\0".join(docs[::8]))' "$tokcache/bench-corpus.txt" "$pk/tokenizer/bench-corpus.txt"
# The source path compiled into the binaries (KILN_SOURCE_DIR): prebuilt.sh
# makes it point at src/ on the GPU machine when it does not exist there.
grep -qa "$root/tests/nn/gpt_fixture_model.safetensors" "$build/tests/test_nn_gpt_fixture" ||
    { echo "pack: test_nn_gpt_fixture was not built with KILN_SOURCE_DIR=$root" >&2; exit 1; }
printf '%s\n' "$root" >"$pk/SOURCE_DIR"
{
    echo "kiln GPU pack, built $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname)"
    echo "commit $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)$(
        git -C "$root" diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
    echo "nvcc $(nvcc --version | sed -n 's/.*release \([0-9.]*\).*/\1/p'), $(ldd --version | head -n 1)"
    echo "source dir $root"
    echo "binaries: ${bins[*]}"
    echo "libraries: ${!libs[*]}"
} >"$pk/MANIFEST"

mkdir -p "$out"
rm -f "$out/kiln-gpu.tar.gz" "$out/kiln-gpu.tar.xz"
# xz: OpenBLAS, the libraries and the binaries shrink a quarter more than
# with gzip (45 vs 58 MB in all on 2026-12-01: the IDX files are gzip
# already); prebuilt.sh unpacks it with tar, or Python's tarfile where
# the machine has no xz
echo "pack: compressing (xz, a minute or more)"
tar cf - -C "$stage" kiln-gpu | xz -6 -T0 >"$out/kiln-gpu.tar.xz"
size=$(stat -c %s "$out/kiln-gpu.tar.xz")
cat "$pk/MANIFEST"
awk -v f="$out/kiln-gpu.tar.xz" -v s="$size" 'BEGIN { printf "pack: %s (%.1f MiB)\n", f, s / 1048576 }'
if [ "$size" -gt "$limit" ]; then
    echo "pack: larger than $((limit / 1048576)) MiB: it would not travel with the tree" >&2
    exit 1
fi
echo "pack: next, on the GPU machine: tests/gpu/run --prebuilt ${out#"$root"/}"
