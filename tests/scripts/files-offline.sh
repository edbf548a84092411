#!/usr/bin/env bash
# files-offline.sh: training from files with no stack at all (issue 13 item
# 5): `kiln-preprocess export --from-idx` makes the Fashion-MNIST shards from
# Debian's IDX files, kiln-trainer --from-dir trains a small MLP for 2 passes
# (no Kafka, no registry: their addresses point at a closed port), twice,
# and once more with one train shard file altered. Checks: the export's
# manifest (60k train / 10k eval examples, sizes and SHA-256); one version
# per pass, each lineage covering the whole range once (pass 1 and 2, the
# parent chain, the files listed); the two runs byte-identical; pass 2 draws
# another in-shard order (pass_seed); the altered file is skipped, so the
# lineage counts 512 examples fewer and lists it in skipped_shards; kiln-evaluator
# score gives accuracy > 0.80 and the eval set's 10k examples; the same
# files labelled as two partitions are both covered, interleaved.
# Skips (exit 77) when the Fashion-MNIST package files are absent.
. "$(dirname "${BASH_SOURCE[0]}")/../lib/files_fixture.sh"
export KILN_MODEL_MLP_FMNIST_SPEC='{"type":"mlp","sizes":[784,64,10]}' KILN_MODEL_MLP_FMNIST_BATCH=256
export KILN_MODEL_MLP_FMNIST_CHECKPOINT_STEPS=0 KILN_MODEL_MLP_FMNIST_CHECKPOINT_SECONDS=0
export KILN_MODEL_MLP_FMNIST_EPOCHS=0 # stream mode over the files (--passes), not window mode
files_export "$TMP/shards"
train() { # out-dir
    "$B/trainer/kiln-trainer" --config "$CONFIG" --model mlp-fmnist --from-dir "$TMP/shards" \
        --out-dir "$1" --passes 2 >"$1.log" 2>&1 || { tail -n 20 "$1.log" >&2; log "FAIL: kiln-trainer ($1)"; exit 1; }
}
train "$TMP/a"
train "$TMP/b"
fails=0
ok() { log "ok: $1"; }
bad() { log "FAIL: $1"; fails=$((fails + 1)); }
M=$TMP/shards/manifest.json
jq -e '.splits.train.partitions[0].examples == 60000 and .splits.eval.partitions[0].examples == 10000 and .splits.train.partitions[0].start == 0 and .splits.train.partitions[0].end == ([.files[] | select(.split == "train")] | length) and (.recipe_sha256 | test("^[0-9a-f]{64}$"))' "$M" >/dev/null &&
    ok "export: 60k train / 10k eval examples, offsets = shard numbers, recipe hash" || bad "export manifest"
n=0
while read -r path bytes sha; do
    [ "$(stat -c %s "$TMP/shards/$path")" = "$bytes" ] && [ "$(sha256sum "$TMP/shards/$path" | cut -d' ' -f1)" = "$sha" ] || n=$((n + 1))
done < <(jq -r '.files[] | "\(.path) \(.bytes) \(.sha256)"' "$M")
[ $n -eq 0 ] && ok "manifest sizes and SHA-256 match the files" || bad "$n file(s) differ from the manifest"
ntrain=$(jq '[.files[] | select(.split == "train")] | length' "$M")
for v in 1 2; do
    L=$TMP/a/mlp-fmnist-v$v.lineage.json
    jq -e --argjson v "$v" --argjson n "$ntrain" '.version == $v and .source.kind == "files" and .source.pass == $v and .source.passes == 2
        and .examples == 60000 and .partitions[0].start == {"offset":0,"pos":0} and .partitions[0].end == {"offset":$n,"pos":0}
        and .partitions[0].shards == $n and (.source.files | length) == $n and .step == ($v * 235) and .examples_total == ($v * 60000)
        and (if $v == 1 then .parent == null else .parent == {"model":"mlp-fmnist","version":1,"relation":"resume"} end)
        and .skipped_shards == []' "$L" >/dev/null && ok "v$v: pass $v covers the whole range once (60000 examples, $ntrain files)" || bad "v$v lineage: $(jq -c '{version, examples, step, partitions, parent, source: (.source | del(.files))}' "$L")"
    cmp -s "$TMP/a/mlp-fmnist-v$v.safetensors" "$TMP/b/mlp-fmnist-v$v.safetensors" && ok "v$v: two runs give the same bytes" || bad "v$v: two runs differ"
    [ "$(sha256sum "$TMP/a/mlp-fmnist-v$v.safetensors" | cut -d' ' -f1)" = "$(jq -r .artifact.sha256 "$L")" ] && ok "v$v: lineage artifact.sha256 is the file's" || bad "v$v: artifact.sha256"
done
[ "$(jq .source.pass_seed "$TMP/a/mlp-fmnist-v1.lineage.json")" != "$(jq .source.pass_seed "$TMP/a/mlp-fmnist-v2.lineage.json")" ] && ok "pass 2 has its own seed" || bad "pass seeds equal"
"$B/evaluator/kiln-evaluator" score --checkpoint "$TMP/a/mlp-fmnist-v2.safetensors" --eval-dir "$TMP/shards" --backend cpu >"$TMP/score.json" 2>"$TMP/score.log" ||
    { cat "$TMP/score.log" >&2; bad "kiln-evaluator score"; }
jq -e '.metrics.accuracy > 0.80 and .metrics.eval_examples == 10000 and .eval_set.examples == 10000 and .eval_set.shards == 20' "$TMP/score.json" >/dev/null &&
    ok "score: accuracy $(jq .metrics.accuracy "$TMP/score.json") on the 10k test images" || bad "score: $(jq -c '.metrics | {accuracy, eval_examples}' "$TMP/score.json")"
# two partitions: the same files re-labelled (train file i -> partition i % 2,
# offset i / 2); one pass covers both ranges, partitions interleaved
mkdir -p "$TMP/two" && ln -s "$TMP/shards/train" "$TMP/two/train" && ln -s "$TMP/shards/eval" "$TMP/two/eval"
jq '(.files | map(select(.split == "train")) | to_entries | map(.value + {partition: (.key % 2), offset: (.key / 2 | floor)})) as $t
    | .files = ($t + (.files | map(select(.split != "train"))))
    | .splits.train.partitions = [{partition: 0, start: 0, end: ((($t | length) + 1) / 2 | floor)},
                                  {partition: 1, start: 0, end: (($t | length) / 2 | floor)}]' "$M" >"$TMP/two/manifest.json"
KILN_MODEL_MLP_FMNIST_SPEC='{"type":"mlp","sizes":[784,16,10]}' "$B/trainer/kiln-trainer" --config "$CONFIG" --model mlp-fmnist \
    --from-dir "$TMP/two" --out-dir "$TMP/d" >"$TMP/d.log" 2>&1 || bad "kiln-trainer over two partitions exited $?"
h=$((ntrain / 2))
jq -e --argjson h "$h" '(.partitions | length) == 2 and .partitions[0].end.offset == $h and .partitions[1].end.offset == $h
    and .partitions[0].shards + .partitions[1].shards == 2 * $h and .partitions[0].examples + .partitions[1].examples == 60000
    and .examples == 60000 and .skipped_shards == [] and .partitions[0].start == {"offset":0,"pos":0} and .partitions[1].start == {"offset":0,"pos":0}' \
    "$TMP/d/mlp-fmnist-v1.lineage.json" >/dev/null && ok "two partitions: both ranges covered, $h shards each" ||
    bad "two partitions: $(jq -c '.partitions' "$TMP/d/mlp-fmnist-v1.lineage.json" 2>&1)"
# interleaved: 50 steps x 256 = 12800 examples = 25 shards, 13 + 12
KILN_MODEL_MLP_FMNIST_TARGET_STEPS=50 KILN_MODEL_MLP_FMNIST_SPEC='{"type":"mlp","sizes":[784,16,10]}' \
    "$B/trainer/kiln-trainer" --config "$CONFIG" --model mlp-fmnist --from-dir "$TMP/two" \
    --out-dir "$TMP/e" >"$TMP/e.log" 2>&1 || bad "kiln-trainer over two partitions (50 steps) exited $?"
jq -e '[.partitions[].end] == [{"offset":13,"pos":0},{"offset":12,"pos":0}] and .examples == 12800' \
    "$TMP/e/mlp-fmnist-v1.lineage.json" >/dev/null && ok "two partitions are read interleaved (25 shards: 13 of p0, 12 of p1)" ||
    bad "interleave: $(jq -c '[.partitions[].end]' "$TMP/e/mlp-fmnist-v1.lineage.json" 2>&1)"
# one train shard altered after the export: skipped (with an error), counted
f=$(jq -r '[.files[] | select(.split == "train")][3].path' "$M")
printf 'X' | dd of="$TMP/shards/$f" bs=1 seek=200 conv=notrunc status=none
KILN_MODEL_MLP_FMNIST_SPEC='{"type":"mlp","sizes":[784,16,10]}' "$B/trainer/kiln-trainer" --config "$CONFIG" --model mlp-fmnist \
    --from-dir "$TMP/shards" --out-dir "$TMP/c" >"$TMP/c.log" 2>&1 || bad "kiln-trainer with an altered file exited $?"
off=$(jq -r '[.files[] | select(.split == "train")][3].offset' "$M")
jq -e --argjson o "$off" '.examples == 59488 and (.skipped_shards | length) == 1 and .skipped_shards[0].offset == $o and (.skipped_shards[0].reason | test("sha256"))' "$TMP/c/mlp-fmnist-v1.lineage.json" >/dev/null &&
    grep -q 'sha256' "$TMP/c.log" && ok "an altered file is skipped with an error and listed in skipped_shards: 59488 examples" ||
    bad "altered file: $(jq -c '{examples}' "$TMP/c/mlp-fmnist-v1.lineage.json" 2>&1)"
[ "$fails" -eq 0 ] || exit 1
log "all checks passed"
