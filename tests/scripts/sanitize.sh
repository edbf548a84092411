#!/usr/bin/env bash
# sanitize.sh: the unit tests again, in an AddressSanitizer + UBSan build of
# their own (-DKILN_SANITIZE=ON, Debug, no CUDA) under the build tree, so that
# a memory error, a leak or undefined behaviour in lib/ or a service's core
# fails the test command, not only a run someone remembers to do by hand.
# Left out of the inner run: bpe-parity (the npm reference, minutes under
# ASan; its C side is test_bpe), compose-config, fuzz-short (its own ASan build), this script,
# and the CUDA kernels' host tests (gpu_*_host: not built here, ~3 minutes of
# the suite's time under ASan; by hand, tests/gpu/CMakeLists.txt's end).
set -euo pipefail
src=${KILN_SOURCE_DIR:?run through ctest}
bin=${KILN_BINARY_DIR:?run through ctest}
if grep -q '^KILN_SANITIZE:BOOL=ON' "$bin/CMakeCache.txt" 2>/dev/null; then
    echo "sanitize: SKIPPED: this is the sanitizer build already"
    exit 77
fi
out=$bin/sanitize
t0=$(date +%s)
if ! cmake -S "$src" -B "$out" -DCMAKE_BUILD_TYPE=Debug -DKILN_SANITIZE=ON -DKILN_CUDA=OFF \
    >"$out.configure.log" 2>&1; then
    cat "$out.configure.log"
    exit 1
fi
if ! cmake --build "$out" -j"$(nproc)" >"$out.build.log" 2>&1; then
    grep -vE '^\[ *[0-9]+%\] (Building|Linking|Built)' "$out.build.log"
    echo "sanitize: the sanitizer build failed (log: $out.build.log)"
    exit 1
fi
echo "sanitize: built in $(($(date +%s) - t0)) s; unit tests under ASan + UBSan:"
export ASAN_OPTIONS=detect_leaks=1:strict_string_checks=1 UBSAN_OPTIONS=print_stacktrace=1
# a skip inside is not a pass either: the same gate as tests/run
rm -f "$out/ctest-results.xml"
ctest --test-dir "$out" -L unit -E '^(bpe-parity|compose-config|sanitize|fuzz-short|gpu_.*_host)$' --output-on-failure \
    -j"$(nproc)" --output-junit "$out/ctest-results.xml"
"$src/tests/skip-gate.sh" "$out/ctest-results.xml" "$src/tests/skip-allowed.txt"
