#!/usr/bin/env bash
# it-kilnctl-hints.sh: kilnctl's "not found" says what exists: a misspelt
# model gets the close name and the list of models; a model without the
# alias asked for says it has none yet (or lists its aliases); a missing
# version names the versions there are. Exit code 2 stays.
source "$(dirname "${BASH_SOURCE[0]}")/../registry/lib.sh"
start_registry
export KILN_REGISTRY_TOKEN=$ADMIN
"$KILNCTL" create-model gpt-fortunes >/dev/null
"$KILNCTL" create-model cnn-fmnist >/dev/null

# check WORDS... -- KILNCTL-ARGS...: exit 2 and every word in stderr.
check() {
    local words=()
    while [ "$1" != -- ]; do words+=("$1"); shift; done
    shift
    local rc=0
    "$KILNCTL" "$@" >/dev/null 2>"$TMP/err" || rc=$?
    [ "$rc" = 2 ] || { fail "kilnctl $*: exit $rc, want 2: $(cat "$TMP/err")"; return; }
    local w
    for w in "${words[@]}"; do
        grep -qF -- "$w" "$TMP/err" || { fail "kilnctl $*: stderr lacks '$w': $(cat "$TMP/err")"; return; }
    done
    ok "kilnctl $*: $(cat "$TMP/err")"
}
check "did you mean 'gpt-fortunes'?" "(models: cnn-fmnist gpt-fortunes)" -- deploy gpt-fortune-de
check "did you mean 'cnn-fmnist'?" -- versions cnn-fmnst
check "(models: cnn-fmnist gpt-fortunes)" -- show nothing-like-it 1
check "model gpt-fortunes has no alias yet" -- deploy gpt-fortunes
check "model gpt-fortunes has no version yet" -- show gpt-fortunes 3
printf 'weights' >"$TMP/a.bin"
"$KILNCTL" register gpt-fortunes --file "$TMP/a.bin" >/dev/null
"$KILNCTL" promote gpt-fortunes 1 --reason test >/dev/null
check "model gpt-fortunes has the aliases: production=v1" -- deploy gpt-fortunes staging
check "model gpt-fortunes has versions 1..1" -- show gpt-fortunes 7
[ "$FAILS" = 0 ] || exit 1
log "it-kilnctl-hints: ok"
