#!/usr/bin/env bash
# skip-honest.sh: a skip must reach CTest as SKIPPED (exit 77), never as a
# pass. cmocka returns 0 for a skip()ped test, so every C test that calls
# skip() or skip_because() must include tests/unit/skip.h and return
# skip_run_group_tests(); and no test script may announce a skip and then
# exit 0. Reads the sources only (a second, fast).
set -euo pipefail
src=${KILN_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
cd "$src"
bad=0
while IFS= read -r f; do
    grep -qE '\<(skip|skip_because)\(' "$f" || continue
    if ! grep -qE '#include "(\.\./unit/)?skip\.h"' "$f"; then
        echo "FAIL: $f calls skip() without tests/unit/skip.h: cmocka would count the skip as a pass"
        bad=1
    fi
    if grep -qE '\<cmocka_run_group_tests(_name)?\(' "$f" || ! grep -q 'skip_run_group_tests(' "$f"; then
        echo "FAIL: $f calls skip() but does not return skip_run_group_tests(): a skip would exit 0"
        bad=1
    fi
done < <(find tests -name '*.c' -o -name '*.cu' | grep -v '/node_modules/' | sort)
# a script line that says SKIP followed within three lines by `exit 0`
while IFS= read -r f; do
    if awk '/SKIP/ { at = NR } /exit 0/ && at && NR - at <= 3 { bad = 1; print FILENAME ":" NR } END { exit !bad }' "$f"; then
        echo "FAIL: $f says SKIP and exits 0: a skip must exit 77"
        bad=1
    fi
done < <(find tests -name '*.sh' ! -name skip-honest.sh | grep -v '/node_modules/' | sort)
[ $bad -eq 0 ] && echo "PASS: every skip in tests/ exits 77"
exit $bad
