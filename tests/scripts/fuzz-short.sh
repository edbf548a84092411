#!/usr/bin/env bash
# fuzz-short.sh: every libFuzzer target of tests/fuzz for a few seconds each
# (KILN_FUZZ_SECONDS, default 8), over its seeds and saved regressions, in a
# clang build of its own under the build tree (build/fuzz), so that a crash,
# leak or UBSan report in a parser of outside bytes fails the test command.
# Without clang it fails: deploy/install-deps.sh installs it.
set -euo pipefail
src=${KILN_SOURCE_DIR:?run through ctest}
bin=${KILN_BINARY_DIR:?run through ctest}
if grep -qE '^KILN_(SANITIZE|FUZZ):BOOL=ON' "$bin/CMakeCache.txt" 2>/dev/null; then
    echo "fuzz-short: SKIPPED: this is a sanitizer or fuzz build; the main build runs it"
    exit 77
fi
exec "$src/tests/fuzz/run.sh" --short --build "$bin/fuzz" "${KILN_FUZZ_SECONDS:-8}"
