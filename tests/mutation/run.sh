#!/usr/bin/env bash
# tests/mutation/run.sh: does the suite notice a bug? Each mutant below is one
# deliberate bug, one changed line. The script copies the working tree to a
# temporary folder, builds it once (no CUDA), runs every mutant's tests on
# the unchanged copy (they must pass, or a "kill" would mean nothing), then
# for each mutant: applies it, checks the line really changed, rebuilds only
# the targets the mutant's tests need, runs those tests (the fewest that
# should catch it), and restores the file. A mutant is KILLED when its tests
# fail, SURVIVED when they pass. Prints a Markdown table; exits 1 when a
# mutant survived or the unchanged copy fails.
#
# Integration tests need the native stack: export the KILN_* variables of
# your stack (tests/CMakeLists.txt's fixture reuses a running one).
# Usage: tests/mutation/run.sh [name...]   (default: every mutant)
# KILN_MUTATION_DIR keeps the copy and its build there (reused when present).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

# name @ file @ line pattern (grep -F, must match exactly one line) | sed
# expression applied to that line @ build targets @ ctest regex @ the bug
MUTANTS=(
"dedup-threshold@lib/text/dedup.c@o->threshold = 0.8;@s/0\.8/0.9/@test_dedup@^test_dedup\$@near-duplicate threshold 0.8 -> 0.9"
"causal-mask@lib/nn/model_tfm.c@t->causal = 1;@s/= 1;/= 0;/@test_nn_models test_nn_gpt_fixture@^test_nn_(models|gpt_fixture)\$@GPT attention sees future tokens"
"adamw-bias-correction@lib/nn/optim.c@if (c->kind == KN_OPT_ADAM || c->kind == KN_OPT_ADAMW) {@s/ || c->kind == KN_OPT_ADAMW//@test_nn_optim@^test_nn_optim\$@AdamW without bias correction"
"shard-crc@lib/stream/shard.c@if (pcrc != get32(h + 40))@s/if (pcrc/if (0 \&\& pcrc/@test_shard@^test_shard\$@shard payload CRC32C not checked"
"exactly-once-offset@trainer/batcher.c@pt->next_offset = b->msg->offset + 1;@s/offset + 1;/offset;/@kiln-trainer kiln-registry test_trainer_exactly_once@^test_trainer_exactly_once\$@trainer resumes at the last consumed shard, not the next"
"split-hash@preprocess/dataset.c@return h % 10000 < cut ? PP_EVAL : PP_TRAIN;@s/h % 10000/(h >> 1) % 10000/@kiln-preprocess test_preprocess@^test_preprocess\$@train/eval split by another hash"
"sliding-window@lib/nn/model.c@kn_batch b = {.B = 1, .T = T, .tokens = out + n - T};@s/out + n - T/out/@test_nn_models@^test_nn_models\$@generation past block_size reads the first tokens, not the last"
"regclient-retry@lib/net/regclient.c@retry_ok && attempt < 2@s/attempt < 2/attempt < 0/@test_regclient@^test_regclient\$@registry client never retries"
"ingest-429@ingest/urls.c@retry = status == 429 || status >= 500;@s/status == 429 || //@kiln-ingest test_ingest_sources@^test_ingest_sources\$@ingest does not retry a URL answering 429"
"skipped-shards@trainer/batcher.c@json_array_append_new(b->skipped,@s/(b->skipped,/(json_array(),/@kiln-trainer test_trainer_exactly_once@^test_trainer_exactly_once\$@a skipped shard is not listed in the lineage"
"event-republish@trainer/resume.c@if (!pub || strcmp(pub, \"published\") != 0) {@s/if (!pub || /if (!pub \&\& 0 \&\& /@kiln-trainer test_trainer_exactly_once@^test_trainer_exactly_once\$@a restart does not re-publish an unconfirmed checkpoint event"
"idempotency-key@trainer/checkpoint.c@snprintf(out, 80, \"trainer-%.48s\", hex);@s/\"trainer-%.48s\", hex/\"trainer-%d-%.40s\", (int)getpid(), hex/@kiln-trainer test_trainer_exactly_once@^test_trainer_exactly_once\$@the checkpoint key differs per process (a redone checkpoint makes a new version)"
"alias-cas@evaluator/flow.c@rc = kn_regclient_set_alias(ctx->reg, model, ctx->alias, version, prod, d.reason,@s/version, prod,/version, -1,/@kiln-evaluator kiln-registry kilnctl test_evaluator@^test_evaluator\$@the evaluator moves production without compare-and-set"
"evalset-generation@evaluator/evalset_tool.c@int generation = have_old ? old.generation + 1 : 1;@s/old.generation + 1/old.generation/@kiln-evaluator kiln-evalset kiln-registry kilnctl test_evaluator@^test_evaluator\$@an operator's re-freeze keeps the old generation number"
)

want=("$@")
selected=()
for m in "${MUTANTS[@]}"; do
    name=${m%%@*}
    if [ ${#want[@]} -eq 0 ] || printf '%s\n' "${want[@]}" | grep -qxF "$name"; then
        selected+=("$m")
    fi
done
[ ${#selected[@]} -gt 0 ] || { echo "mutation: no mutant named ${want[*]}" >&2; exit 2; }

work=${KILN_MUTATION_DIR:-$(mktemp -d /tmp/kiln-mutation.XXXXXX)}
src=$work/src
build=$work/build
mkdir -p "$src"
log() { printf '[%s] mutation: %s\n' "$(date +%T)" "$*" >&2; }

# The working tree as it is (tracked and untracked-but-not-ignored files).
(cd "$root" && git ls-files -co --exclude-standard -z | tar --null -T - -cf -) | tar -xf - -C "$src"
# (re)configured every run: a kept copy may have gained test files
cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKILN_CUDA=OFF \
    >"$work/configure.log" 2>&1 || { cat "$work/configure.log" >&2; exit 1; }

build_targets() { # targets... ; 0 when built
    cmake --build "$build" -j"${KILN_MUTATION_JOBS:-2}" --target "$@" >"$work/build.log" 2>&1
}
run_tests() { # regex log ; the ctest status
    ctest --test-dir "$build" -R "$1" --output-on-failure --timeout 1500 >"$2" 2>&1
}

all_targets=()
all_regex=()
for m in "${selected[@]}"; do
    IFS='@' read -r name file pat expr targets regex what <<<"$m"
    read -ra t <<<"$targets"
    all_targets+=("${t[@]}")
    all_regex+=("${regex}")
done
regex_union=$(IFS='|'; echo "${all_regex[*]}")

log "work folder $work; building the unchanged copy"
t0=$(date +%s)
build_targets "${all_targets[@]}" || { tail -n 40 "$work/build.log" >&2; log "the unchanged copy does not build"; exit 1; }
log "built in $(($(date +%s) - t0)) s; running the unchanged tests ($regex_union)"
if ! run_tests "$regex_union" "$work/baseline.log"; then
    cat "$work/baseline.log" >&2
    log "the tests fail on the unchanged copy: no mutant can be judged"
    exit 1
fi
grep -q 'tests passed' "$work/baseline.log" || { cat "$work/baseline.log" >&2; exit 1; }
if grep -qE '\*\*\*Skipped|Not Run|did not run' "$work/baseline.log"; then
    cat "$work/baseline.log" >&2
    log "a test skipped on the unchanged copy: no mutant can be judged"
    exit 1
fi

rows=()
survived=0
for m in "${selected[@]}"; do
    IFS='@' read -r name file pat expr targets regex what <<<"$m"
    read -ra t <<<"$targets"
    f=$src/$file
    n=$(grep -cF -- "$pat" "$f" || true)
    if [ "$n" != 1 ]; then
        log "$name: the pattern matches $n lines of $file (want exactly 1)"
        rows+=("| $name | $what | \`$file\` | — | ERROR: pattern matches $n lines | — |")
        survived=$((survived + 1))
        continue
    fi
    line=$(grep -nF -- "$pat" "$f" | cut -d: -f1)
    cp "$f" "$work/orig"
    sed -i "${line}${expr}" "$f"
    if cmp -s "$f" "$work/orig"; then
        log "$name: the sed expression changed nothing"
        rows+=("| $name | $what | \`$file:$line\` | — | ERROR: no change | — |")
        survived=$((survived + 1))
        continue
    fi
    log "$name: $file:$line now reads: $(sed -n "${line}p" "$f" | sed 's/^ *//')"
    t0=$(date +%s)
    if ! build_targets "${t[@]}"; then
        verdict="ERROR"
        detail="the mutant does not build: a kill must come from a test"
        survived=$((survived + 1))
    elif run_tests "$regex" "$work/$name.log"; then
        verdict="SURVIVED"
        detail="all passed"
        survived=$((survived + 1))
    else
        verdict="KILLED"
        detail=$(grep -oE '[0-9]+ tests failed out of [0-9]+' "$work/$name.log" || echo "failed")
        # where it was caught: the first failing cmocka check (file:line) or
        # the first FAIL line of a shell test
        first=$(grep -m1 -E '\[   LINE   \]' "$work/$name.log" | grep -oE '[A-Za-z0-9_]+\.c:[0-9]+' ||
            grep -m1 -E 'FAIL: ' "$work/$name.log" | sed 's/.*FAIL: //; s/|/\\|/g' | cut -c1-60 || true)
        [ -z "$first" ] || detail="$detail; caught at $first"
    fi
    secs=$(($(date +%s) - t0))
    log "$name: $verdict in $secs s ($detail)"
    rows+=("| $name | $what | \`$file:$line\` | \`${regex//|/\\|}\` | $verdict | $detail ($secs s) |")
    cp "$work/orig" "$f"
    touch "$f"
done
build_targets "${all_targets[@]}" || true # leave the copy unmutated

echo
echo "| mutant | bug | line | tests run | verdict | detail (time incl. rebuild) |"
echo "|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
echo
if [ "$survived" -gt 0 ]; then
    log "$survived mutant(s) not killed"
    exit 1
fi
log "every mutant killed"
[ -n "${KILN_MUTATION_DIR:-}" ] || rm -rf "$work"
