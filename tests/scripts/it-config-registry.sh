#!/usr/bin/env bash
# it-config-registry.sh: a configuration with a mistake creates nothing in
# the registry (the issue: mistyped keys created empty registry models).
# With the real broker and the training topic in place, a trainer started
# with a mistyped model key, a model whose dataset has no section, or a
# typo in its spec JSON exits 1 naming it, and the registry has no model;
# then the same config without the mistake does create the model, so the
# setup would have shown a creation.
source "$(dirname "${BASH_SOURCE[0]}")/../registry/lib.sh"
trainer=$KILN_BINARY_DIR/trainer/kiln-trainer
[ -x "$trainer" ] || { log "SKIP: $trainer not built"; exit 77; }
pp=$KILN_BINARY_DIR/preprocess/kiln-preprocess
eval "$("$KILN_SOURCE_DIR/deploy/stack" env)"
start_registry
export KILN_REGISTRY_TOKEN=$ADMIN
base="[kafka]
topic_prefix = cfgreg$$
[registry]
url = $URL
[preprocess]
port = 0
group = cfgreg$$-pp
instance = cfgreg$$
[dataset.notes]
kind = image
labels = a, b
[model.gpt]
dataset = notes
spec = {\"type\":\"mlp\",\"sizes\":[784,2]}"
printf '%s\n' "$base" >"$TMP/good.ini"
"$trainer" --config "$TMP/good.ini" --model gpt --check-config >/dev/null || fail "the base config is refused"
# The training topic: preprocess creates it at start.
"$pp" --config "$TMP/good.ini" 2>"$TMP/pp.log" &
pp_pid=$!
for _ in $(seq 1 240); do grep -q 'dataset(s), group' "$TMP/pp.log" && break; sleep 0.25; done
kill "$pp_pid"; wait "$pp_pid" || true
grep -q 'dataset(s), group' "$TMP/pp.log" || fail "preprocess did not start (and create the topics) within 60 s: $(tail -c 400 "$TMP/pp.log")"
try() { # NAME WORD CONFIG-TEXT: the trainer exits 1 naming WORD
    printf '%s\n' "$3" >"$TMP/$1.ini"
    local rc=0
    timeout 20 "$trainer" --config "$TMP/$1.ini" --model gpt --port 0 >/dev/null 2>"$TMP/$1.err" || rc=$?
    [ "$rc" = 1 ] || { fail "$1: exit $rc: $(tail -c 400 "$TMP/$1.err")"; return; }
    grep -qF -- "$2" "$TMP/$1.err" || fail "$1: stderr lacks '$2': $(tail -c 400 "$TMP/$1.err")"
}
try key "did you mean 'batch'" "$base
batch_size = 8"
try dataset "no [dataset.note] section" "$(sed 's/^dataset = notes$/dataset = note/' <<<"$base")"
try spec 'did you mean \"activation\"' "$(sed 's/"sizes":\[784,2\]/"sizes":[784,2],"activaton":"relu"/' <<<"$base")"
models=$("$KILNCTL" --json models | jq '.models | length')
[ "$models" = 0 ] || fail "the registry has $models model(s) after refused starts: $("$KILNCTL" models)"
# Without the mistake, the same start creates the model.
timeout 30 "$trainer" --config "$TMP/good.ini" --model gpt --port 0 --idle-exit 2 >/dev/null 2>"$TMP/good.err" ||
    fail "the trainer with the base config failed: $(tail -c 400 "$TMP/good.err")"
"$KILNCTL" --json models | jq -e '.models[] | select(.name == "gpt")' >/dev/null ||
    fail "the base config created no model: the check above proves nothing"
[ "$FAILS" = 0 ] || exit 1
log "it-config-registry: ok"
