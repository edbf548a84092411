#!/usr/bin/env bash
# evaluator-score-args.sh: `kiln-evaluator score` checks its arguments before
# it picks a backend. A bad option value (--split, --backend, --batch) or a
# missing required option is a usage error (exit 2) that names the option,
# and a missing export or checkpoint is an error (exit 1) naming it; none of
# them prints the backend line ("backend auto: ..."). The control: with a
# readable (hand-made) export and a checkpoint file that is not a model, the
# backend is picked (its line appears) and loading the checkpoint fails.
set -euo pipefail
: "${KILN_SOURCE_DIR:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
: "${KILN_BINARY_DIR:=$KILN_SOURCE_DIR/build}"
EV=$KILN_BINARY_DIR/evaluator/kiln-evaluator
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
[ -x "$EV" ] || { log "FAIL: $EV not built"; exit 1; }

# a minimal export: one eval file (not a valid shard: scored as 0 examples)
mkdir -p "$TMP/x/eval"
printf 'not a shard' >"$TMP/x/eval/0-0.shard"
sha=$(sha256sum "$TMP/x/eval/0-0.shard" | cut -d' ' -f1)
cat >"$TMP/x/manifest.json" <<EOF
{"kind": "kiln.shards.export", "schema": 1,
 "splits": {"eval": {"topic": "t.eval", "partitions": [{"partition": 0, "start": 0, "end": 1}]}},
 "files": [{"path": "eval/0-0.shard", "split": "eval", "topic": "t.eval", "partition": 0,
            "offset": 0, "bytes": 11, "sha256": "$sha", "headers": {}}]}
EOF
printf 'not a model' >"$TMP/bad.safetensors"

fails=0
# expect RC NEEDLE ARGS...: exit status RC, NEEDLE in stderr, no backend line
expect() {
    local want=$1 needle=$2 rc=0
    shift 2
    "$EV" score "$@" >"$TMP/out" 2>"$TMP/err" || rc=$?
    if [ "$rc" -ne "$want" ]; then
        log "FAIL: score $* exited $rc, expected $want: $(head -c 300 "$TMP/err")"
        fails=$((fails + 1))
    elif ! grep -qF -- "$needle" "$TMP/err"; then
        log "FAIL: score $*: stderr does not say '$needle': $(head -c 300 "$TMP/err")"
        fails=$((fails + 1))
    elif grep -q 'backend auto' "$TMP/err"; then
        log "FAIL: score $*: the backend was picked before the arguments were checked"
        fails=$((fails + 1))
    else
        log "ok: score $* -> exit $rc, '$needle', no backend line"
    fi
}
C=(--checkpoint "$TMP/bad.safetensors" --eval-dir "$TMP/x")
expect 2 "--split foo: use eval or train" "${C[@]}" --split foo
expect 2 "--backend bogus: use auto, cpu or cuda" "${C[@]}" --backend bogus
expect 2 "--batch abc: use 1..65536" "${C[@]}" --batch abc
expect 2 "--batch 0: use 1..65536" "${C[@]}" --batch 0
expect 2 "are required" --checkpoint "$TMP/bad.safetensors"
expect 2 "unexpected argument extra" "${C[@]}" extra
expect 1 "$TMP/nowhere/manifest.json" --checkpoint "$TMP/bad.safetensors" --eval-dir "$TMP/nowhere"
expect 1 "--checkpoint $TMP/missing.safetensors" --checkpoint "$TMP/missing.safetensors" --eval-dir "$TMP/x"
# the control: valid arguments reach the backend pick, then the model load fails
rc=0
"$EV" score "${C[@]}" >"$TMP/out" 2>"$TMP/err" || rc=$?
if [ "$rc" -eq 1 ] && grep -q 'backend auto' "$TMP/err"; then
    log "ok: valid arguments pick the backend (its line is printed), then the bad checkpoint fails"
else
    log "FAIL: control: exit $rc, stderr: $(head -c 400 "$TMP/err")"
    fails=$((fails + 1))
fi
[ "$fails" -eq 0 ] || exit 1
log "all checks passed"
