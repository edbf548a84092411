#!/usr/bin/env bash
# config-strict: the real binaries refuse a configuration with mistakes at
# start (exit 1, before Kafka or the registry: the brokers here answer
# nobody, so a service that went on would hang), naming file:line, the key
# and "did you mean"; and every binary accepts the shipped deploy/kiln.ini
# (--check-config), so a key one service adds is known to all.
set -euo pipefail
src=${KILN_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
bin=${KILN_BINARY_DIR:-$src/build}
for b in registry/kiln-registry ingest/kiln-ingest preprocess/kiln-preprocess \
    trainer/kiln-trainer evaluator/kiln-evaluator serve/kiln-serve; do
    [ -x "$bin/$b" ] || { echo "config-strict: $bin/$b not built: skipped"; exit 77; }
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for v in $(env | grep -o '^KILN_[A-Z0-9_]*' | grep -v '^KILN_SOURCE_DIR$\|^KILN_BINARY_DIR$'); do
    unset "$v" # the caller's stack settings must not hide the file's mistakes
done
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

# The shipped configuration passes every binary's check.
for b in registry/kiln-registry ingest/kiln-ingest preprocess/kiln-preprocess \
    evaluator/kiln-evaluator serve/kiln-serve; do
    out=$("$bin/$b" --config "$src/deploy/kiln.ini" --check-config 2>&1) ||
        fail "$b refuses deploy/kiln.ini: $out"
done
for m in $(awk -F'[].[]' '/^\[model\./ { print substr($0, 8, length($0) - 8) }' "$src/deploy/kiln.ini"); do
    out=$("$bin/trainer/kiln-trainer" --config "$src/deploy/kiln.ini" --model "$m" --check-config 2>&1) ||
        fail "kiln-trainer --model $m refuses deploy/kiln.ini: $out"
done

base='[kafka]
brokers = 127.0.0.1:9
[registry]
url = http://127.0.0.1:9
[dataset.fortunes]
kind = lm
tokenizer = /nonexistent.tiktoken
[model.gpt]
dataset = fortunes
spec = {"type":"gpt","n_layer":1,"n_head":1,"n_embd":8,"block_size":8,"vocab_size":16}'
# base is 10 lines: a mistake appended on two lines is on line 12.

# expect NAME BINARY [ARGS] -- MISTAKE-LINES -- WORDS...: the binary exits 1
# within 10 s with every WORD in its stderr.
expect() {
    local name=$1 ini=$tmp/$1.ini; shift
    local cmd=()
    while [ "$1" != -- ]; do cmd+=("$1"); shift; done
    shift
    printf '%s\n%s\n' "$base" "$1" >"$ini"
    shift 2
    local rc=0
    timeout 10 "${cmd[@]}" --config "$ini" >"$tmp/out" 2>"$tmp/err" </dev/null || rc=$?
    if [ "$rc" != 1 ]; then
        fail "$name: exit $rc, want 1: $(head -c 600 "$tmp/err")"
        return
    fi
    local w
    for w in "$@"; do
        grep -qF -- "$w" "$tmp/err" || fail "$name: stderr lacks '$w': $(head -c 800 "$tmp/err")"
    done
}

expect pp-singular "$bin/preprocess/kiln-preprocess" -- '[preprocess]
dataset = fortunes' -- "pp-singular.ini:12: unknown key 'dataset' in [preprocess]" "did you mean 'datasets'" "nothing was started"
expect pp-list "$bin/preprocess/kiln-preprocess" -- '[preprocess]
datasets = fortune-de' -- "pp-list.ini:12:" "no [dataset.fortune-de] section" "did you mean 'fortunes'"
expect pp-compression "$bin/preprocess/kiln-preprocess" -- '[preprocess]
compression = gzip' -- "preprocess.compression = gzip: expected zstd, lz4 or none"
expect trainer-batch "$bin/trainer/kiln-trainer" --model gpt -- '[model.gpt]
batch_size = 8' -- "trainer-batch.ini:12: unknown key 'batch_size' in [model.gpt]" "did you mean 'batch'"
expect trainer-dataset "$bin/trainer/kiln-trainer" --model gpt2 -- '[model.gpt2]
dataset = fortunes-d' -- "trainer-dataset.ini:12:" "no [dataset.fortunes-d] section" "did you mean 'fortunes'"
# A typo inside the model spec (JSON) stops the trainer before Kafka too.
printf '%s\n' "$base" | sed 's/"n_layer":1/"n_layers":1/' >"$tmp/trainer-spec.ini"
rc=0
timeout 10 "$bin/trainer/kiln-trainer" --config "$tmp/trainer-spec.ini" --model gpt --port 0 >/dev/null 2>"$tmp/err" || rc=$?
[ "$rc" = 1 ] && grep -qF 'unknown key \"n_layers\"; did you mean \"n_layer\"' "$tmp/err" ||
    fail "trainer-spec: exit $rc: $(head -c 600 "$tmp/err")"
expect evaluator-policy "$bin/evaluator/kiln-evaluator" -- '[policy.gpt]
max_los = 6' -- "evaluator-policy.ini:12:" "no metric 'los'" "did you mean 'max_loss'"
expect ingest-key "$bin/ingest/kiln-ingest" files /nonexistent -- '[ingest]
utf8policy = repair' -- "ingest-key.ini:12: unknown key 'utf8policy' in [ingest]" "did you mean 'utf8_policy'"
expect registry-section "$bin/registry/kiln-registry" -- '[registy]
port = 0' -- "registry-section.ini:12: [registy] is not a section" "did you mean [registry]"

# A value outside its range (keys.c's int_ranges): refused at start and by
# --check-config, naming the file, line, key and the range.
expect trainer-nice "$bin/trainer/kiln-trainer" --model gpt -- '[trainer]
nice = 20' -- "trainer-nice.ini:12: trainer.nice = 20: out of range" "0..19" "nothing was started"
expect trainer-nice-check "$bin/trainer/kiln-trainer" --model gpt --check-config -- '[trainer]
nice = -1' -- "trainer-nice-check.ini:12: trainer.nice = -1: out of range" "0..19"
expect pp-nice "$bin/preprocess/kiln-preprocess" -- '[preprocess]
nice = low' -- "pp-nice.ini:12: preprocess.nice = low: not a number" "0..19" "nothing was started"
expect pp-nice-check "$bin/preprocess/kiln-preprocess" --check-config -- '[preprocess]
nice = 25' -- "pp-nice-check.ini:12: preprocess.nice = 25: out of range" "0..19"
# ... and by the other services too: one kiln.ini configures them all.
expect registry-nice "$bin/registry/kiln-registry" --check-config -- '[preprocess]
nice = 1.5' -- "registry-nice.ini:12: preprocess.nice = 1.5: not a number" "0..19"

# --help of every service offers the check.
for b in registry/kiln-registry preprocess/kiln-preprocess evaluator/kiln-evaluator serve/kiln-serve; do
    "$bin/$b" --help | grep -q -- --check-config || fail "$b --help does not list --check-config"
done

# The tables know every key the code reads from the user-named sections (a
# key read but not in lib/service/keys.c would be refused in every file).
help=$("$bin/registry/kiln-registry" --help-config)
section_keys() { # the keys of one "### [section]" table of --help-config
    awk -v s="### $1" '$0 == s { on = 1; next } /^### / { on = 0 } on && /^\| `/ { gsub(/`/, "", $2); print $2 }' <<<"$help"
}
for k in $(grep -oE '\bg[sidb]\(&g, "[a-z_0-9]+"' "$src/lib/recipe/recipe.c" | sed 's/.*"\(.*\)"/\1/' | sort -u); do
    section_keys '[dataset.NAME]' | grep -qx "$k" || fail "lib/recipe/recipe.c reads [dataset.NAME] $k: not in lib/service/keys.c"
done
for k in $(grep -oE 'KEY\("[a-z_0-9]+"\)' "$src/trainer/settings.c" | sed 's/.*"\(.*\)".*/\1/' | sort -u); do
    section_keys '[model.NAME]' | grep -qx "$k" || fail "trainer/settings.c reads [model.NAME] $k: not in lib/service/keys.c"
done
[ "$(section_keys '[dataset.NAME]' | wc -l)" -gt 30 ] || fail "--help-config lists too few [dataset.NAME] keys"

# The main job reads the shipped config as it is: no KILN_DATASET_*/KILN_MODEL_*
# override of a key a copied config would then lack (the tokenizer path was one).
if grep -nE '^[^#]*export[^#]*KILN_(DATASET|MODEL|POLICY)_' "$src/deploy/pipeline.sh" "$src/deploy/run"; then
    fail "deploy/pipeline.sh or deploy/run overrides a [dataset|model|policy] key from the environment"
fi

[ "$fails" = 0 ] || { echo "config-strict: $fails failure(s)"; exit 1; }
echo "config-strict: ok"
