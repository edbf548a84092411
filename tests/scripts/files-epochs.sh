#!/usr/bin/env bash
# files-epochs.sh: epochs over exported shard files, no stack (kiln-trainer
# --from-dir with epochs >= 1 reads the export as the stream's window,
# window.c trains the epochs). `kiln-preprocess export --from-idx` makes the
# Fashion-MNIST shards; a small MLP trains epochs = 2 from them. Checks: one
# version per epoch, lineage mode "epochs"; in each version's epoch every
# train file of the manifest is read once, whole (one segment [p, offset,
# 0, examples]), 60000 examples; the two epochs have different seeds and
# shard orders; source.files lists every train file; window = last:20
# trains the export's last 20 shards; --passes 3 overrides epochs (3
# versions) and its epoch 1 reads them in the same order as a 1-pass run;
# augment (a small cnn) is drawn per epoch over files as over Kafka.
# Skips (exit 77) when the Fashion-MNIST package files are absent.
. "$(dirname "${BASH_SOURCE[0]}")/../lib/files_fixture.sh"
export KILN_MODEL_MLP_FMNIST_SPEC='{"type":"mlp","sizes":[784,8,10]}' KILN_MODEL_MLP_FMNIST_BATCH=256
export KILN_MODEL_MLP_FMNIST_CHECKPOINT_STEPS=0 KILN_MODEL_MLP_FMNIST_CHECKPOINT_SECONDS=0
export KILN_MODEL_MLP_FMNIST_EPOCHS=2 KILN_MODEL_MLP_FMNIST_WINDOW=all
files_export "$TMP/shards"
train() { # out-dir [args...]
    local out=$1
    shift
    "$B/trainer/kiln-trainer" --config "$CONFIG" --model mlp-fmnist --from-dir "$TMP/shards" \
        --out-dir "$out" "$@" >"$out.log" 2>&1 || { tail -n 20 "$out.log" >&2; log "FAIL: kiln-trainer ($out)"; exit 1; }
}
train "$TMP/a"
fails=0
ok() { log "ok: $1"; }
bad() { log "FAIL: $1"; fails=$((fails + 1)); }
M=$TMP/shards/manifest.json
# the train files as [partition, offset, examples], sorted
jq -c '[.files[] | select(.split == "train") | [.partition, .offset, .examples]] | sort' "$M" >"$TMP/train.json"
ntrain=$(jq length "$TMP/train.json")
total=$(jq 'map(.[2]) | add' "$TMP/train.json")
[ "$total" -eq 60000 ] && ok "export: $ntrain train files, 60000 examples" || bad "export holds $total train examples"
[ ! -e "$TMP/a/mlp-fmnist-v3.safetensors" ] && ok "two versions for two epochs" || bad "more than two versions"
for v in 1 2; do
    L=$TMP/a/mlp-fmnist-v$v.lineage.json
    [ -f "$L" ] || { bad "v$v: no lineage file"; continue; }
    # every train file exactly once, whole, in epoch v; nothing else
    jq -e --argjson v "$v" --slurpfile t "$TMP/train.json" '.mode == "epochs" and .cycle.passes == 2
        and (.epochs | length) == 1 and .epochs[0].epoch == $v and .epochs[0].examples == 60000
        and .examples == 60000 and .skipped_shards == []
        and ([.epochs[0].shards[] | [.[0], .[1], .[3]]] | sort) == $t[0]
        and ([.epochs[0].shards[] | .[2]] | unique) == [0]
        and (.source.kind == "files") and ([.source.files[] | [.partition, .offset]] | sort) == ($t[0] | map(.[0:2]))' \
        "$L" >/dev/null && ok "v$v: epoch $v reads each of the $ntrain train files once, whole (60000 examples)" ||
        bad "v$v lineage: $(jq -c '{mode, examples, cycle: (.cycle | del(.ranges)), epochs: [.epochs[]? | del(.shards)], nshards: [.epochs[]?.shards | length]}' "$L")"
    [ "$(sha256sum "$TMP/a/mlp-fmnist-v$v.safetensors" | cut -d' ' -f1)" = "$(jq -r .artifact.sha256 "$L")" ] &&
        ok "v$v: lineage artifact.sha256 is the file's" || bad "v$v: artifact.sha256"
done
order() { jq -c '[.epochs[0].shards[] | [.[0], .[1]]]' "$1"; }
L1=$TMP/a/mlp-fmnist-v1.lineage.json L2=$TMP/a/mlp-fmnist-v2.lineage.json
[ "$(jq .epochs[0].seed "$L1")" != "$(jq .epochs[0].seed "$L2")" ] && [ "$(order "$L1")" != "$(order "$L2")" ] &&
    ok "epoch 2 has its own seed and shard order" || bad "epochs 1 and 2: same seed or shard order"
jq -e '.parent == {"model":"mlp-fmnist","version":1,"relation":"resume"} and .step == 2 * 235' "$L2" >/dev/null &&
    ok "v2's parent is v1; 235 steps per epoch" || bad "v2: $(jq -c '{parent, step}' "$L2")"
# window = last:20 over the files: the export's end is the high watermark
KILN_MODEL_MLP_FMNIST_WINDOW=last:20 train "$TMP/c" --passes 1
jq -e --argjson n "$ntrain" --slurpfile t "$TMP/train.json" '.cycle.ranges == [{"partition":0,"start":($n - 20),"end":$n}]
    and (.epochs[0].shards | length) == 20 and .examples == ($t[0][-20:] | map(.[2]) | add)' \
    "$TMP/c/mlp-fmnist-v1.lineage.json" >/dev/null && ok "window = last:20 trains the export's last 20 shards" ||
    bad "last:20: $(jq -c '{ranges: .cycle.ranges, examples}' "$TMP/c/mlp-fmnist-v1.lineage.json" 2>&1)"
# --passes N is the epoch count in epochs mode (over the last 20 shards:
# shorter), and epoch 1's order is a function of (seed, cycle, epoch) and
# the window only: run c's, which trained the same window once
KILN_MODEL_MLP_FMNIST_WINDOW=last:20 train "$TMP/b" --passes 3
[ -f "$TMP/b/mlp-fmnist-v3.lineage.json" ] && [ ! -e "$TMP/b/mlp-fmnist-v4.lineage.json" ] &&
    jq -e '.cycle.passes == 3 and .epochs[0].epoch == 3 and (.epochs[0].shards | length) == 20' "$TMP/b/mlp-fmnist-v3.lineage.json" >/dev/null &&
    ok "--passes 3: three epochs, three versions" || bad "--passes 3: $(ls "$TMP/b")"
[ "$(order "$TMP/b/mlp-fmnist-v1.lineage.json")" = "$(order "$TMP/c/mlp-fmnist-v1.lineage.json")" ] &&
    ok "epoch 1's shard order is the same in both runs over the window" || bad "epoch 1 orders differ between runs"
# augment over files (a small cnn, the last 2 shards, 2 epochs): in the
# lineage, drawn from the epoch seeds (two runs give the same bytes), and
# applied (without it the bytes differ)
cnn() { # out-dir augment
    KILN_MODEL_CNN_FMNIST_SPEC='{"type":"cnn","input":[1,28,28],"convs":[{"out":4,"k":3,"pad":1}],"pool":"max","fc":[16],"classes":10}' \
        KILN_MODEL_CNN_FMNIST_EPOCHS=2 KILN_MODEL_CNN_FMNIST_WINDOW=last:2 KILN_MODEL_CNN_FMNIST_AUGMENT=$2 \
        KILN_MODEL_CNN_FMNIST_CHECKPOINT_STEPS=0 KILN_MODEL_CNN_FMNIST_CHECKPOINT_SECONDS=0 \
        "$B/trainer/kiln-trainer" --config "$CONFIG" --model cnn-fmnist --from-dir "$TMP/shards" \
        --out-dir "$1" >"$1.log" 2>&1 || { tail -n 20 "$1.log" >&2; log "FAIL: kiln-trainer ($1)"; exit 1; }
}
cnn "$TMP/g1" hflip,crop:1
cnn "$TMP/g2" hflip,crop:1
cnn "$TMP/g0" none
jq -e '.augment == {"hflip":true,"crop":1} and .epochs[0].epoch == 2 and .cycle.passes == 2' \
    "$TMP/g1/cnn-fmnist-v2.lineage.json" >/dev/null && cmp -s "$TMP/g1/cnn-fmnist-v2.safetensors" "$TMP/g2/cnn-fmnist-v2.safetensors" &&
    ! cmp -s "$TMP/g1/cnn-fmnist-v1.safetensors" "$TMP/g0/cnn-fmnist-v1.safetensors" &&
    ok "augment over files: in the lineage, the same bytes twice, different bytes without it" ||
    bad "augment: $(jq -c '{augment, passes: .cycle.passes}' "$TMP/g1/cnn-fmnist-v2.lineage.json" 2>&1)"
[ "$fails" -eq 0 ] || exit 1
log "all checks passed"
