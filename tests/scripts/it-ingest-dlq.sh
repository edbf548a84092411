#!/usr/bin/env bash
# it-ingest-dlq.sh: the dead-letter queue is readable and replayable against
# the real broker. A record ingested with a dataset that has no section is
# refused by kiln-preprocess (unknown_dataset), a Latin-1 file by kiln-ingest
# (bad_utf8); `kiln-ingest dlq` lists both with origin, reason, detail and
# preview, filters by --dataset/--reason/--since; preprocess logs the first
# refusal of a reason and counts the rest; after the section is added,
# --replay re-submits the preprocess refusal, and a second --replay does
# nothing. Exactly once is checked end to end: the added section is an image
# dataset, so preprocess refuses each replayed text record again as
# kind_mismatch; after two replays the DLQ holds one kind_mismatch per record,
# and `kiln-preprocess lag` is 0 though the replay's transaction markers lie
# past the committed offsets.
set -euo pipefail
src=${KILN_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
bin=${KILN_BINARY_DIR:-$src/build}
ingest=$bin/ingest/kiln-ingest pp=$bin/preprocess/kiln-preprocess
[ -x "$ingest" ] && [ -x "$pp" ] || { echo "it-ingest-dlq: binaries not built: skipped"; exit 77; }
id=dlq$$
tmp=$(mktemp -d)
pp_pid=
cleanup() {
    [ -n "$pp_pid" ] && kill "$pp_pid" 2>/dev/null && wait "$pp_pid" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
cd "$tmp"
cat >k.ini <<INI
[kafka]
topic_prefix = kiln-$id
[preprocess]
port = 0
flush_ms = 300
group = kiln-$id-pp
instance = $id
[dataset.digits]
kind = image
labels = 0, 1
INI
mkdir in
printf 'A fortune for a dataset that has no section.\n' >in/a.txt
printf 'Another one for it.\n' >in/b.txt
printf 'caf\xe9 au lait\n' >latin.txt
"$ingest" --config k.ini --dataset fortunes-d files in 2>ingest.log
"$ingest" --config k.ini --dataset digits files latin.txt 2>>ingest.log
grep -qF 'dataset fortunes-d has no [dataset.fortunes-d] section in the configuration (there are: digits)' ingest.log ||
    fail "ingest did not warn about the dataset without a section: $(grep warn ingest.log)"

# run_pp UNTIL-WORD: preprocess until it has consumed every raw record
# (`kiln-preprocess lag` 0: the records spread over the raw topic's
# partitions, each refusal committed with its offsets) and `dlq --json`
# shows UNTIL-WORD (60 s at most).
run_pp() {
    "$pp" --config k.ini 2>>pp.log &
    pp_pid=$!
    local i lag
    for i in $(seq 1 120); do
        lag=$("$pp" lag --config k.ini 2>/dev/null | jq -r '.lag // empty' || true)
        [ "$lag" = 0 ] && "$ingest" --config k.ini dlq --json 2>/dev/null | grep -q "\"$1\"" && break
        sleep 0.5
    done
    [ "$lag" = 0 ] || fail "preprocess has not consumed the raw records in 60 s (lag ${lag:-?})"
    kill "$pp_pid" 2>/dev/null || fail "preprocess died: $(tail -3 pp.log)"
    wait "$pp_pid" || true
    pp_pid=
}
run_pp unknown_dataset

# Preprocess said so in its log: the first refusal of a reason at once, the
# second within the minute only counted (logged when the minute is over).
[ "$(grep -c 'refused a record as unknown_dataset: dataset fortunes-d' pp.log)" = 1 ] ||
    fail "preprocess log: $(grep -c 'refused a record as unknown_dataset' pp.log) immediate lines, want 1"
grep -qF 'kiln-ingest dlq --reason unknown_dataset' pp.log || fail "preprocess log does not name the dlq command"

"$ingest" --config k.ini dlq >list.txt 2>dlq.err || fail "dlq exited $?: $(cat dlq.err)"
for w in "unknown_dataset  dataset fortunes-d  (kiln-preprocess" "origin:  $tmp/in/a.txt" \
    'preview: "A fortune for a dataset that has no section.\n"' \
    "bad_utf8  dataset digits  (kiln-ingest" "ingest.utf8_policy = repair" 'preview: "caf\xe9 au lait\n"' \
    "3 refused record(s) in kiln-$id.dlq: " "2 refused by kiln-preprocess can be replayed"; do
    grep -qF -- "$w" list.txt || fail "listing lacks '$w'"
done
n() { "$ingest" --config k.ini dlq --json "$@" 2>/dev/null | grep -c '"reason"' || true; }
[ "$(n --reason bad_utf8)" = 1 ] || fail "--reason bad_utf8: $(n --reason bad_utf8) records"
[ "$(n --dataset fortunes-d)" = 2 ] || fail "--dataset fortunes-d: $(n --dataset fortunes-d) records"
[ "$(n --since 1h)" = 3 ] || fail "--since 1h: $(n --since 1h) records"
[ "$(n --since 2099-01-01)" = 0 ] || fail "--since 2099-01-01: $(n --since 2099-01-01) records"
"$ingest" --config k.ini dlq --since yesterday >/dev/null 2>&1 && fail "--since yesterday accepted"

# The fix: the dataset gets its section. Then replay, twice.
printf '[dataset.fortunes-d]\nkind = image\nlabels = a\n' >>k.ini
"$ingest" --config k.ini dlq --replay >replay1.txt 2>&1 || fail "replay: $(cat replay1.txt)"
grep -qF "replayed 2 record(s); 1 not replayable" replay1.txt || fail "replay 1: $(cat replay1.txt)"
"$ingest" --config k.ini dlq --replay >replay2.txt 2>&1 || fail "replay 2: $(cat replay2.txt)"
grep -qF "replayed 0 record(s)" replay2.txt || fail "replay 2: $(cat replay2.txt)"
"$ingest" --config k.ini dlq --dataset fortunes-d | grep -qF "[replayed]" || fail "not marked [replayed]"

# What reached the raw topic: preprocess refuses it once more (a text record
# for an image dataset), exactly once.
run_pp kind_mismatch
# --replay wrote the raw topic in a transaction: a commit marker follows each
# partition's replayed record, so the committed offsets stay one below the
# end offsets; `lag` counts the records preprocess would still read (0)
"$pp" lag --config k.ini >lag.json 2>&1 || fail "kiln-preprocess lag: $(cat lag.json)"
jq -e '.lag == 0 and ([.partitions[] | select(.end > .committed)] | length) > 0 and all(.partitions[]; .exact)' \
    lag.json >/dev/null || fail "lag after the replay, want 0 with markers past the committed offsets: $(cat lag.json)"
[ "$(n --reason kind_mismatch)" = 2 ] || fail "kind_mismatch records: $(n --reason kind_mismatch), want 2 (each replayed record reached the raw topic once)"

[ "$fails" = 0 ] || { echo "it-ingest-dlq: $fails failure(s)"; exit 1; }
echo "it-ingest-dlq: ok"
