#!/usr/bin/env bash
# config-doc: docs/configuration.md's key tables are exactly what the
# binaries print with --help-config (generated from lib/service/keys.c), so
# the page cannot drift from the keys the services accept.
#   tests/scripts/config-doc.sh           check (exit 1 with the diff)
#   tests/scripts/config-doc.sh --write   regenerate the page's tables
set -euo pipefail
src=${KILN_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
bin=${KILN_BINARY_DIR:-$src/build}
reg=$bin/registry/kiln-registry
[ -x "$reg" ] || { echo "config-doc: $reg not built: skipped"; exit 77; }
doc=$src/docs/configuration.md
begin='<!-- generated: kiln-registry --help-config'
end='<!-- end generated -->'
grep -qF "$begin" "$doc" && grep -qF "$end" "$doc" || { echo "config-doc: markers missing in $doc"; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$reg" --help-config >"$tmp/keys.md"
# The page with the generated part replaced by the binary's output.
awk -v b="$begin" -v e="$end" -v f="$tmp/keys.md" '
    index($0, b) == 1 { print; while ((getline l < f) > 0) print l; skip = 1; next }
    index($0, e) == 1 { skip = 0 }
    !skip { print }' "$doc" >"$tmp/new.md"
if [ "${1:-}" = --write ]; then
    cp "$tmp/new.md" "$doc"
    echo "config-doc: $doc regenerated"
    exit 0
fi
# The other binaries print the same tables.
for b in ingest/kiln-ingest preprocess/kiln-preprocess trainer/kiln-trainer evaluator/kiln-evaluator serve/kiln-serve; do
    [ -x "$bin/$b" ] || continue
    "$bin/$b" --help-config | cmp -s - "$tmp/keys.md" || { echo "config-doc: $b --help-config differs"; exit 1; }
done
if ! diff -u "$doc" "$tmp/new.md"; then
    echo "config-doc: docs/configuration.md is not what --help-config prints: run tests/scripts/config-doc.sh --write"
    exit 1
fi
echo "config-doc: ok"
