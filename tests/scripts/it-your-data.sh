#!/usr/bin/env bash
# it-your-data.sh: runs the commands of docs/your-data.md literally, so the
# walkthrough cannot drift from the binaries: every ```sh block of the page,
# in order, in a fresh folder (build/ linked to the build tree). Changed
# only so that it cannot collide with a running stack: the ports 8080, 8082,
# 8084 (free ones), the topic prefix `mine` (a unique one), the registry's
# schema (KILN_REGISTRY_SCHEMA, its own, dropped afterwards), and deploy/
# is the checkout's. Then checks what the page says the user sees.
set -euo pipefail
src=${KILN_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
bin=${KILN_BINARY_DIR:-$src/build}
doc=$src/docs/your-data.md
for b in registry/kiln-registry registry/kilnctl ingest/kiln-ingest preprocess/kiln-preprocess \
    trainer/kiln-trainer evaluator/kiln-evaluator; do
    [ -x "$bin/$b" ] || { echo "it-your-data: $bin/$b not built: skipped"; exit 77; }
done
[ -r /usr/share/games/fortunes/wisdom ] || { echo "it-your-data: no fortunes package: skipped"; exit 77; }
command -v jq >/dev/null || { echo "it-your-data: no jq: skipped"; exit 77; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
id=yd$$
tmp=$(mktemp -d)
export KILN_REGISTRY_SCHEMA=kiln_$id
cleanup() {
    local f
    for f in "$tmp"/my/*.pid; do [ -e "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
    sleep 1
    if [ -n "${KILN_PG_CONNINFO:-}" ]; then
        psql "$KILN_PG_CONNINFO" -XAtq -c "DO \$\$ BEGIN IF to_regclass('$KILN_REGISTRY_SCHEMA.artifacts') IS NOT NULL THEN PERFORM lo_unlink(lo) FROM $KILN_REGISTRY_SCHEMA.artifacts; END IF; END \$\$; DROP SCHEMA IF EXISTS $KILN_REGISTRY_SCHEMA CASCADE" >/dev/null 2>&1 || true
    fi
    [ -n "${KEEP_TMP:-}" ] || rm -rf "$tmp"
}
trap cleanup EXIT
eval "$("$src/deploy/stack" env)"
export KILN_PG_CONNINFO

# The page's commands: the ```sh blocks, in order.
awk '/^```sh$/ { on = 1; next } /^```/ { on = 0 } on' "$doc" >"$tmp/page.sh"
[ "$(wc -l <"$tmp/page.sh")" -gt 20 ] || { echo "FAIL: too few commands extracted from $doc"; exit 1; }
p1=$(free_port) p2=$(free_port) p3=$(free_port)
sed -e "s/8080/$p1/g; s/8082/$p2/g; s/8084/$p3/g" \
    -e "s/^topic_prefix = mine$/topic_prefix = $id/" \
    -e "s#\(^\|[ (]\)deploy/stack#\1$src/deploy/stack#g" "$tmp/page.sh" >"$tmp/run.sh"
ln -s "$bin" "$tmp/build"
cd "$tmp"
rc=0
timeout 600 bash -euo pipefail run.sh >out.txt 2>err.txt || rc=$?
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
[ "$rc" = 0 ] || fail "the page's commands exited $rc: $(tail -n 20 err.txt)"
for w in "kiln-registry: configuration my.ini accepted" "0 refused record(s) in $id.dlq" \
    "gpt-quotes production -> version 1" "promoted"; do
    grep -qF -- "$w" out.txt || fail "the output lacks '$w'"
done
grep -q '"registered":"quotes-bpe","version":1' out.txt || fail "the tokenizer was not registered"
n=$(wc -l <my/quotes.jsonl)
[ "$n" -gt 1000 ] || fail "my/quotes.jsonl has $n lines"
grep -q '"delivered":'"$n"',"refused":0' my/ingest.log || fail "ingest: $(tail -n 2 my/ingest.log)"
# The typo the page shows is refused with the message the page shows.
sed 's/^batch = 8$/batch_size = 8/' my.ini >typo.ini
"$bin/registry/kiln-registry" --config typo.ini --check-config 2>typo.err && fail "typo.ini accepted"
shown=$(sed -n 2p typo.err | sed 's/^typo.ini:/my.ini:/')
grep -qxF -- "$shown" "$doc" || fail "the page does not show the refusal as it is: $shown"
if [ "$fails" != 0 ]; then
    echo "--- stdout"; cat out.txt; echo "--- stderr"; tail -n 30 err.txt
    for f in my/*.log; do echo "--- $f"; tail -n 5 "$f"; done
    exit 1
fi
echo "it-your-data: ok ($(wc -l <run.sh) lines of the page run)"
