#!/usr/bin/env bash
# compute-sanitizer over the parity test (every op and model of the CUDA
# backend in every precision, cuBLAS and cuBLASLt included; --quick: without
# the 50-step training runs and the second pass of the precision checks,
# which launch no kernel the rest does not): memcheck (out-of-bounds and misaligned
# accesses), initcheck (reads of device memory never written), racecheck
# (shared-memory hazards) and synccheck (barrier misuse). The four run side
# by side (the test is small; the tools are CPU-bound) under a time limit, so
# the whole of tests/gpu/run stays within its budget; it runs last. Each
# tool also runs the fused-attention checks alone on the register-resident
# flash kernels (KILN_CUDA_FLASH=mma test_cuda_parity --attention --quick:
# "TOOL-mma" in the summary), whose shared-memory staging and ldmatrix
# reads the main run (WMMA kernels) does not reach. Called by
# tests/gpu/run with the build dir; exits 77 where compute-sanitizer is not
# installed.
set -uo pipefail
build=$1
limit=${KILN_SANITIZE_SECONDS:-200}
# within what tests/gpu/run leaves this step (KILN_STEP_SECONDS), less 10 s
# to collect the four tools' summaries
if [ -n "${KILN_STEP_SECONDS:-}" ] && [ $((KILN_STEP_SECONDS - 10)) -lt "$limit" ]; then
    limit=$((KILN_STEP_SECONDS - 10))
fi
cs=$(command -v compute-sanitizer || true)
[ -z "$cs" ] && [ -x /usr/local/cuda/bin/compute-sanitizer ] && cs=/usr/local/cuda/bin/compute-sanitizer
if [ -z "$cs" ]; then
    echo "sanitize: SKIPPED: no compute-sanitizer on this machine"
    exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
tools=(memcheck initcheck racecheck synccheck)
runs=()
declare -A pid=()
for t in "${tools[@]}"; do
    # --target-processes all: the pack's binaries are wrapper scripts
    timeout "$limit" "$cs" --tool "$t" --error-exitcode 86 --target-processes all \
        "$build/tests/gpu/test_cuda_parity" --quick >"$tmp/$t.log" 2>&1 &
    pid[$t]=$!
    KILN_CUDA_FLASH=mma timeout "$limit" "$cs" --tool "$t" --error-exitcode 86 \
        --target-processes all "$build/tests/gpu/test_cuda_parity" --attention --quick \
        >"$tmp/$t-mma.log" 2>&1 &
    pid[$t-mma]=$!
    runs+=("$t" "$t-mma")
done
fail=0 skipped=0
summary=()
for t in "${runs[@]}"; do
    wait "${pid[$t]}"
    rc=$?
    errs=$(grep -m 1 'ERROR SUMMARY' "$tmp/$t.log" | sed 's/^=* *//')
    parity=$(grep -m 1 '^test_cuda_parity: [0-9]' "$tmp/$t.log")
    # 1 with a clean summary: parity failures, which 10-parity reports
    if [ $rc = 1 ] && [[ $errs == *" 0 errors"* ]]; then rc=0; fi
    case $rc in
    0) summary+=("$t: ok (${errs:-no summary}; ${parity:-?})") ;;
    77) summary+=("$t: skipped ($(grep -m 1 SKIPPED "$tmp/$t.log"))"); skipped=$((skipped + 1)) ;;
    124) summary+=("$t: FAIL: did not finish within ${limit}s"); fail=1 ;;
    86)
        summary+=("$t: FAIL: ${errs:-errors}")
        fail=1
        echo "== $t: first reports"
        grep -m 40 '^=========' "$tmp/$t.log"
        ;;
    *)
        summary+=("$t: FAIL: exit $rc (${parity:-parity did not finish})")
        fail=1
        echo "== $t: last lines"
        tail -n 20 "$tmp/$t.log"
        ;;
    esac
done
printf 'sanitize: %s\n' "${summary[@]}"
if [ $fail = 0 ] && [ $skipped -gt 0 ]; then
    echo "sanitize: SKIPPED: test_cuda_parity found no CUDA backend"
    exit 77
fi
if [ $fail = 0 ]; then
    echo "sanitize: memcheck, initcheck, racecheck and synccheck clean over test_cuda_parity (and its attention checks on the mma flash kernels)"
fi
exit $fail
