#!/usr/bin/env bash
# it-serve.sh: kiln-serve against the real pipeline. kiln-ingest imports
# Fashion-MNIST, kiln-preprocess shards it, kiln-trainer trains the deploy
# config's mlp-fmnist for 400 steps with a checkpoint every 200 (two
# versions), kiln-evaluator scores both on the frozen t10k eval set (10,000
# images) and promotes them (test policy: min_accuracy 0.5). Then kiln-serve
# follows mlp-fmnist's production alias, and:
#   1. serving equals evaluation: the 10,000 t10k images, each sent as a PGM
#      body, give exactly the accuracy the evaluator recorded for the served
#      version;
#   1b. kilnctl predict FILE... answers with the served version; a
#       multipart body of 3 images gets 3 predictions;
#   2. hostile inputs (truncated PNG and PGM, a 100000x100000 PNG header,
#      bad JSON, wrong pixel count, oversized body, unknown model, wrong
#      endpoint) get 4xx, and the service stays up;
#   3. live swaps: a steady open-loop client (100 req/s) while the test moves
#      production between the two versions 20 times: 0 failed requests,
#      every answer from one of the two versions and from a version that was
#      production within 2 s of its request, each swap visible in
#      /v1/models within 2 s;
#   4. a version whose recipe is not in the configuration is not served:
#      /readyz says why, the previous version keeps answering.
# Skips (77) when Fashion-MNIST or python3 is absent.
set -euo pipefail
: "${KILN_SOURCE_DIR:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
: "${KILN_BINARY_DIR:=$KILN_SOURCE_DIR/build}"
B=$KILN_BINARY_DIR S=$KILN_SOURCE_DIR
PG=${KILN_PG_CONNINFO:-host=127.0.0.1 port=15432 dbname=kiln user=kiln password=kiln}
TMP=$(mktemp -d)
P=t_serve_$$_$RANDOM
ADMIN=admin-$P
FM=/usr/share/datasets/fashion-mnist
PIDS=()
log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
    psql "$PG" -XAtq -c "SELECT lo_unlink(lo_oid) FROM $P.artifacts" >/dev/null 2>&1 || true
    psql "$PG" -XAtq -c "SET client_min_messages = warning; DROP SCHEMA IF EXISTS $P CASCADE" >/dev/null 2>&1 || true
    [ -n "${KEEP_TMP:-}" ] || rm -rf "$TMP"
}
trap cleanup EXIT
fails=0
ok() { log "ok: $*"; }
bad() { log "FAIL: $*"; fails=$((fails + 1)); }

[ -r $FM/t10k-images-idx3-ubyte.gz ] || { log "SKIP: $FM not installed"; exit 77; }
command -v python3 >/dev/null || { log "SKIP: python3 (the test client) not installed"; exit 77; }
for bin in registry/kiln-registry preprocess/kiln-preprocess ingest/kiln-ingest \
    trainer/kiln-trainer evaluator/kiln-evaluator serve/kiln-serve; do
    [ -x "$B/$bin" ] || { log "SKIP: $B/$bin not built"; exit 77; }
done

# The deploy config, with a test policy for mlp-fmnist (both versions pass).
awk '/^\[policy.mlp-fmnist\]/ { print; print "min_accuracy = 0.50"; skip = 1; next }
     /^\[/ { skip = 0 } !skip { print }' "$S/deploy/kiln.ini" >"$TMP/kiln.ini"
CONFIG=$TMP/kiln.ini
export KILN_KAFKA_TOPIC_PREFIX=$P KILN_KAFKA_BROKERS=${KILN_KAFKA_BROKERS:-127.0.0.1:19092}
export KILN_PREPROCESS_PORT=0 KILN_PREPROCESS_GROUP=pp-$P KILN_PREPROCESS_INSTANCE=$P
export KILN_PREPROCESS_DATASETS=fashion-mnist KILN_INGEST_PORT=0
export OPENBLAS_NUM_THREADS=1

port_of() { # log file -> the port of its "listening" line
    local p=
    for _ in $(seq 1 300); do
        p=$(grep -o '"port":[0-9]*' "$1" 2>/dev/null | head -n 1 | cut -d: -f2 || true)
        [ -n "$p" ] && { echo "$p"; return 0; }
        sleep 0.1
    done
    return 1
}

KILN_REGISTRY_DB="$PG" KILN_REGISTRY_SCHEMA=$P KILN_REGISTRY_PORT=0 \
    KILN_REGISTRY_ADMIN_TOKEN=$ADMIN "$B/registry/kiln-registry" >"$TMP/registry.log" 2>&1 &
PIDS+=($!)
"$B/preprocess/kiln-preprocess" --config "$CONFIG" >"$TMP/preprocess.log" 2>&1 &
PIDS+=($!)
rport=$(port_of "$TMP/registry.log") || { cat "$TMP/registry.log" >&2; log "FAIL: registry did not start"; exit 1; }
export KILN_REGISTRY_URL=http://127.0.0.1:$rport KILN_REGISTRY_TOKEN=$ADMIN
REG=$KILN_REGISTRY_URL
AUTH=(-H "Authorization: Bearer $ADMIN")

"$B/ingest/kiln-ingest" --config "$CONFIG" import fashion-mnist >"$TMP/ingest.log" 2>&1 ||
    { tail -n 20 "$TMP/ingest.log" >&2; log "FAIL: ingest"; exit 1; }
KILN_EVALUATOR_PORT=0 KILN_EVALUATOR_MIN_EVAL_EXAMPLES=10000 KILN_EVALUATOR_GROUP=ev-$P \
    KILN_EVALUATOR_WORK_DIR=$TMP "$B/evaluator/kiln-evaluator" --config "$CONFIG" \
    >"$TMP/evaluator.log" 2>&1 &
PIDS+=($!)
log "ingested; training mlp-fmnist for 400 steps (versions at 200 and 400)"
KILN_MODEL_MLP_FMNIST_TARGET_STEPS=400 KILN_MODEL_MLP_FMNIST_CHECKPOINT_STEPS=200 \
    KILN_TRAINER_WORK_DIR=$TMP timeout 600 "$B/trainer/kiln-trainer" --config "$CONFIG" \
    --model mlp-fmnist --port 0 --idle-exit 60 >"$TMP/trainer.log" 2>&1 ||
    { tail -n 30 "$TMP/trainer.log" >&2; log "FAIL: kiln-trainer"; exit 1; }

# Both versions decided by the evaluator.
for _ in $(seq 1 300); do
    n=$(curl -sS "${AUTH[@]}" "$REG/v1/models/mlp-fmnist/versions?status=promoted" | jq '.versions | length')
    [ "$n" -ge 2 ] && break
    sleep 1
done
[ "$n" -ge 2 ] || { tail -n 30 "$TMP/evaluator.log" >&2; log "FAIL: the evaluator did not promote both versions"; exit 1; }
prod=$(curl -sS "${AUTH[@]}" "$REG/v1/models/mlp-fmnist/aliases/production")
pv=$(jq -r .version <<<"$prod")
log "production is v$pv: $(jq -c '.metrics | {accuracy, eval_examples}' <<<"$prod")"

# --- kiln-serve ---
KILN_SERVE_MODELS=mlp-fmnist KILN_SERVE_PORT=0 KILN_SERVE_POLL_S=0.5 KILN_SERVE_WORK_DIR=$TMP \
    KILN_SERVE_MAX_BODY=1m "$B/serve/kiln-serve" --config "$CONFIG" >"$TMP/serve.log" 2>&1 &
SERVE_PID=$!
PIDS+=($SERVE_PID)
sport=$(port_of "$TMP/serve.log") || { cat "$TMP/serve.log" >&2; log "FAIL: kiln-serve did not start"; exit 1; }
SV=http://127.0.0.1:$sport
for _ in $(seq 1 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$SV/readyz")" = 200 ] && break
    sleep 0.2
done
[ "$(curl -s -o /dev/null -w '%{http_code}' "$SV/readyz")" = 200 ] && ok "ready" ||
    { curl -s "$SV/readyz" >&2; cat "$TMP/serve.log" >&2; bad "kiln-serve not ready"; exit 1; }
models=$(curl -sS "$SV/v1/models")
[ "$(jq '.models[0].version' <<<"$models")" = "$pv" ] && ok "serves production v$pv" || bad "serves $(jq -c .models <<<"$models"), not v$pv"

# 1. serving equals evaluation
res=$(python3 "$S/tests/scripts/serve_client.py" eval "$SV" mlp-fmnist \
    $FM/t10k-images-idx3-ubyte.gz $FM/t10k-labels-idx1-ubyte.gz)
log "served: $res"
acc=$(jq -r .metrics.accuracy <<<"$prod")
n_eval=$(jq -r .metrics.eval_examples <<<"$prod")
correct=$(jq -r .correct <<<"$res")
[ "$n_eval" = 10000 ] && ok "the evaluator scored 10000 examples" || bad "the evaluator scored $n_eval examples"
[ "$(jq -r .failed <<<"$res")" = 0 ] && ok "10000 answers" || bad "failed requests: $res"
[ "$(jq -r ".versions[\"$pv\"]" <<<"$res")" = 10000 ] && ok "all from v$pv" || bad "versions: $res"
if awk -v a="$acc" -v c="$correct" 'BEGIN { d = a * 10000 - c; exit !(d < 1e-6 && d > -1e-6) }'; then
    ok "serving accuracy $correct/10000 equals the evaluator's $acc"
else
    bad "serving accuracy $correct/10000 differs from the evaluator's $acc"
fi

# kilnctl predict: the first t10k image (an ankle boot, label 9) by file
python3 -c 'import gzip,sys; d=gzip.open(sys.argv[1]).read(); sys.stdout.buffer.write(b"P5\n28 28\n255\n" + d[16:16+784])' \
    $FM/t10k-images-idx3-ubyte.gz >"$TMP/boot.pgm"
out=$("$B/registry/kilnctl" --serve "$SV" --json predict mlp-fmnist "$TMP/boot.pgm" "$TMP/boot.pgm" --top-k 2 | jq -s -c '[.[] | {version, top: .predictions[0][0].label}]') ||
    bad "kilnctl predict"
[ "$(jq -r 'length' <<<"$out")" = 2 ] && [ "$(jq -r ".[0].version" <<<"$out")" = "$pv" ] &&
    ok "kilnctl predict: $out" || bad "kilnctl predict: $out"
# multipart: several images in one request, one prediction each, in order
c=$(curl -s -o "$TMP/mp.json" -w '%{http_code}' -F "a=@$TMP/boot.pgm" -F "b=@$TMP/boot.pgm" -F "c=@$TMP/boot.pgm" "$SV/v1/models/mlp-fmnist/predict?top_k=1")
[ "$c" = 200 ] && [ "$(jq '.predictions | length' "$TMP/mp.json")" = 3 ] &&
    [ "$(jq -r '[.predictions[][0].label] | unique | join(",")' "$TMP/mp.json")" = "$(jq -r '.[0].top' <<<"$out")" ] &&
    ok "multipart: 3 images, 3 predictions" || bad "multipart: $c $(cat "$TMP/mp.json")"
"$B/registry/kilnctl" --serve "$SV" predict nope "$TMP/boot.pgm" 2>/dev/null && bad "kilnctl predict of an unknown model succeeded" || ok "kilnctl predict of an unknown model fails"

# 2. hostile inputs
code() { curl -s -o "$TMP/body" -w '%{http_code}' "$@"; }
expect4() { # name, curl args...
    local name=$1 c
    shift
    c=$(code "$@")
    if [[ $c == 4?? ]]; then ok "$name: $c $(head -c 160 "$TMP/body")"; else bad "$name: HTTP $c $(head -c 200 "$TMP/body")"; fi
}
head -c 5000 /dev/urandom >"$TMP/noise"
for k in png-huge png-truncated pgm-truncated; do
    python3 "$S/tests/scripts/serve_client.py" bytes $k "$TMP/$k"
    expect4 "$k" -H 'Content-Type: image/png' --data-binary @"$TMP/$k" "$SV/v1/models/mlp-fmnist/predict"
done
expect4 "multipart with a bad part" -F "a=@$TMP/boot.pgm" -F "b=@$TMP/noise" "$SV/v1/models/mlp-fmnist/predict"
expect4 "multipart without parts" -H 'Content-Type: multipart/form-data; boundary=xyz' --data-binary 'nothing here' "$SV/v1/models/mlp-fmnist/predict"
expect4 "random bytes" --data-binary @"$TMP/noise" "$SV/v1/models/mlp-fmnist/predict"
expect4 "empty body" -X POST "$SV/v1/models/mlp-fmnist/predict"
expect4 "bad JSON" -H 'Content-Type: application/json' --data-binary '{"pixels": [1,2' "$SV/v1/models/mlp-fmnist/predict"
expect4 "wrong pixel count" -H 'Content-Type: application/json' --data-binary '{"pixels":[1,2,3],"width":28,"height":28}' "$SV/v1/models/mlp-fmnist/predict"
expect4 "pixel out of range" -H 'Content-Type: application/json' --data-binary '{"pixels":[[1,2],[3,999]]}' "$SV/v1/models/mlp-fmnist/predict"
head -c 2000000 /dev/zero | tr '\0' '7' >"$TMP/big"
expect4 "oversized body" -H 'Content-Type: application/json' --data-binary @"$TMP/big" "$SV/v1/models/mlp-fmnist/predict"
expect4 "unknown model" --data-binary @"$TMP/noise" "$SV/v1/models/nope/predict"
expect4 "generate on a classifier" -H 'Content-Type: application/json' --data-binary '{"prompt":"hi"}' "$SV/v1/models/mlp-fmnist/generate"
c=$(code -H 'Content-Type: application/json' --data-binary '{"pixels":[[0,255],[255,0]]}' "$SV/v1/models/mlp-fmnist/predict")
[ "$c" = 200 ] && ok "JSON pixels (2x2, resized by the recipe): 200" || bad "JSON pixels: $c $(cat "$TMP/body")"
kill -0 $SERVE_PID && [ "$(code "$SV/healthz")" = 200 ] && ok "still up after hostile inputs" || bad "kiln-serve died"

# 3. live swaps under a steady client
vers=$(curl -sS "${AUTH[@]}" "$REG/v1/models/mlp-fmnist/versions?status=promoted" | jq -r '[.versions[].version] | sort | .[]')
va=$(head -n 1 <<<"$vers") vb=$(sed -n 2p <<<"$vers")
python3 "$S/tests/scripts/serve_client.py" load "$SV" mlp-fmnist $FM/t10k-images-idx3-ubyte.gz 100 70 "$TMP/load.txt" &
LOAD=$!
sleep 2
: >"$TMP/moves.txt"
cur=$pv maxlag=0
for i in $(seq 1 20); do
    to=$([ "$cur" = "$va" ] && echo "$vb" || echo "$va")
    t=$(date +%s.%N)
    curl -sS -f "${AUTH[@]}" -X PUT -H 'Content-Type: application/json' \
        -d "{\"version\":$to,\"expected_version\":$cur,\"reason\":\"it-serve swap $i\"}" \
        "$REG/v1/models/mlp-fmnist/aliases/production" >/dev/null || bad "alias move $i"
    echo "$t $to" >>"$TMP/moves.txt"
    seen=
    for _ in $(seq 1 100); do
        [ "$(curl -s "$SV/v1/models/mlp-fmnist" | jq -r .version)" = "$to" ] && { seen=$(date +%s.%N); break; }
        sleep 0.02
    done
    [ -n "$seen" ] || bad "swap $i to v$to not visible within 2 s"
    lag=$(awk -v a="$t" -v b="${seen:-$t}" 'BEGIN { printf "%.3f", b - a }')
    maxlag=$(awk -v a="$lag" -v b="$maxlag" 'BEGIN { print (a > b ? a : b) }')
    cur=$to
    sleep 1.5
done
ok "20 moves, the slowest visible after ${maxlag} s"
wait $LOAD
python3 - "$TMP/load.txt" "$TMP/moves.txt" "$pv" "$va" "$vb" <<'EOF' || fails=$((fails + 1))
import json, sys
load, moves = sys.argv[1], sys.argv[2]
pv, va, vb = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
mv = [(float(t), int(v)) for t, v in (l.split() for l in open(moves) if l.strip())]
rows = [l.split() for l in open(load) if l.strip()]
failed = [r for r in rows if r[2] != "200"]
def production_between(t0, t1):
    """Every version production named at some moment in [t0, t1]."""
    cur, seen = pv, set()
    for t, to in mv:
        if t <= t0:
            cur = to
    seen.add(cur)
    seen.update(to for t, to in mv if t0 < t <= t1)
    return seen
odd = [r for r in rows if r[2] == "200" and int(r[3]) not in (va, vb)]
# the swap lag (poll_s + load) is allowed: 2 s before the request's start
stale = [r for r in rows if r[2] == "200"
         and int(r[3]) not in production_between(float(r[0]) - 2.0, float(r[1]))]
print(json.dumps({"requests": len(rows), "failed": len(failed), "foreign_versions": len(odd),
                  "stale_over_2s": len(stale), "first_failed": failed[:3]}))
sys.exit(1 if failed or odd or stale or len(rows) < 6000 else 0)
EOF
curl -s "$SV/metrics" | grep -E '^kiln_serve_swaps_total' | tee -a "$TMP/metrics" >&2
swaps=$(curl -s "$SV/metrics" | awk '/^kiln_serve_swaps_total/ { print $2 }')
[ "${swaps%.*}" -ge 20 ] && ok "$swaps swaps counted" || bad "swaps counted: $swaps"

# 4. a version trained with another recipe is not served
rec=$(curl -sS "${AUTH[@]}" "$REG/v1/models/mlp-fmnist/versions/$va" | jq -c '.lineage | .preprocess.recipe_sha256 = "0000000000000000000000000000000000000000000000000000000000000000"')
art=$(curl -sS "${AUTH[@]}" "$REG/v1/models/mlp-fmnist/versions/$va/artifact" -o "$TMP/a.safetensors" -w '%{http_code}')
nv=$(curl -sS "${AUTH[@]}" -X POST -H 'Content-Type: application/json' -d "{\"lineage\":$rec}" "$REG/v1/models/mlp-fmnist/versions" | jq -r .version)
sha=$(sha256sum "$TMP/a.safetensors" | cut -d' ' -f1)
curl -sS -f "${AUTH[@]}" -X PUT -H "Content-Type: application/octet-stream" -H "X-Kiln-Sha256: $sha" \
    --data-binary @"$TMP/a.safetensors" "$REG/v1/models/mlp-fmnist/versions/$nv/artifact" >/dev/null ||
    bad "uploading the artifact of v$nv"
curl -sS -f "${AUTH[@]}" -X PUT -H 'Content-Type: application/json' \
    -d "{\"version\":$nv,\"reason\":\"it-serve: a foreign recipe\"}" \
    "$REG/v1/models/mlp-fmnist/aliases/production" >/dev/null || bad "moving production to v$nv"
for _ in $(seq 1 50); do
    [ "$(code "$SV/readyz")" = 503 ] && break
    sleep 0.1
done
if [ "$(code "$SV/readyz")" = 503 ] && grep -q "recipe" "$TMP/body"; then ok "v$nv not served: $(cat "$TMP/body")"; else bad "readyz after v$nv: $(cat "$TMP/body")"; fi
c=$(code --data-binary @<(python3 -c 'import sys; sys.stdout.buffer.write(b"P5\n28 28\n255\n" + bytes(784))') "$SV/v1/models/mlp-fmnist/predict")
v=$(jq -r .version "$TMP/body" 2>/dev/null || true)
[ "$c" = 200 ] && [ "$v" = "$cur" ] && ok "v$cur still answers" || bad "after the refused version: $c $(cat "$TMP/body")"

kill -TERM $SERVE_PID
wait $SERVE_PID && ok "SIGTERM: exit 0" || bad "kiln-serve exit code on SIGTERM"
[ "$fails" -eq 0 ] || { tail -n 40 "$TMP/serve.log" >&2; log "$fails check(s) failed"; exit 1; }
log "all checks passed"
