#!/usr/bin/env bash
# Where a training step's GPU time goes, kernel by kernel (the breakdown
# issue 12 began with, now in every run): Nsight Compute (ncu, on the GPU
# machine) times every kernel of ONE step after the warm-up
# (bench_nn_cpu --profile-step opens a cudaProfilerStart/Stop range around
# it; ncu --profile-from-start off sees only that range), one metric,
# gpu__time_duration.sum, so one pass a kernel. Printed per case: the
# kernels by total time (calls, ms, share), the sum, and the step's kernel
# count. Cases, most wanted first (the last ones are cut when the budget
# runs out): GPT-2 124M bf16 at B=KILN_GPT2_BF16_BATCH (32); flash-mma, the
# same step's flash kernels alone (ncu --kernel-name) with
# KILN_CUDA_FLASH=mma, the register-resident ones, to set beside the WMMA
# ones of the gpt2 case; then the CNN in bf16 (its B=64 and B=256 steps
# together). ncu serialises kernels and
# adds its own time per kernel: the figures are kernel durations, not the
# step's wall time (launch gaps and host time are not in them).
# Last in the run: it only measures, so it takes what the budget leaves.
# Knobs: KILN_PROFILE_TOP (25 kernels a case), KILN_PROFILE_CASES
# ("gpt2 flash-mma cnn"). Called by tests/gpu/run with the build dir.
set -euo pipefail
build=$1
ncu=$(command -v ncu || true)
for d in /usr/local/cuda/bin /opt/nvidia/nsight-compute/*; do
    [ -z "$ncu" ] && [ -x "$d/ncu" ] && ncu=$d/ncu
done
if [ -z "$ncu" ]; then
    echo "profile: FAIL: no ncu (Nsight Compute) on PATH, in /usr/local/cuda/bin or /opt/nvidia"
    exit 1
fi
top=${KILN_PROFILE_TOP:-25}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
rc=0
for case in ${KILN_PROFILE_CASES:-gpt2 flash-mma cnn}; do
    envs=() only=() # the case's environment, ncu's kernel filter
    case $case in
    gpt2) args=(--only gpt2 --precision bf16 --gpt2-batch "${KILN_GPT2_BF16_BATCH:-32}") ;;
    flash-mma)
        args=(--only gpt2 --precision bf16 --gpt2-batch "${KILN_GPT2_BF16_BATCH:-32}")
        envs+=(KILN_CUDA_FLASH=mma) only=(--kernel-name regex:flash)
        ;;
    cnn) args=(--only cnn --precision bf16) ;;
    *) echo "profile: unknown case '$case' (gpt2, flash-mma, cnn)"; rc=1; continue ;;
    esac
    echo "profile: $case: ncu ${only[*]} over one step of ${envs[*]} bench_nn_cpu ${args[*]}"
    if ! env "${envs[@]}" "$ncu" --profile-from-start off --metrics gpu__time_duration.sum --csv \
        --page raw --print-units base --print-kernel-base function --launch-count 20000 "${only[@]}" \
        --log-file "$tmp/$case.csv" "$build/tests/bench/bench_nn_cpu" --backend cuda \
        "${args[@]}" --seconds 0 --profile-step >"$tmp/$case.out" 2>&1; then
        tail -n 15 "$tmp/$case.out" "$tmp/$case.csv" 2>/dev/null
        echo "profile: FAIL: ncu on $case"
        rc=1
        continue
    fi
    grep -E 'tokens/s|images/s' "$tmp/$case.out" | sed "s/^/profile: $case: (under ncu) /" || true
    python3 "$(dirname "${BASH_SOURCE[0]}")/profile_table.py" --top "$top" --label "$case" \
        "$tmp/$case.csv" || rc=1
done
exit $rc
