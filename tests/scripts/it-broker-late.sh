#!/usr/bin/env bash
# it-broker-late.sh: the broker unreachable at start (issue 14, hostile
# neighbours). With the stack's own broker stopped (SIGTERM, from
# $KILN_STACK_DIR/kafka.pid), kiln-preprocess, kiln-evaluator and
# kiln-trainer are started: each keeps running, answers /readyz 503 with
# "waiting for Kafka: ..." and logs it once. Then the real broker is started
# again (deploy/stack up): every one of them proceeds by itself, same
# process: preprocess consumes records fed after it, the trainer trains, the
# evaluator is ready. The broker this test stopped is brought back whatever
# happens (trap); a run that skips (77: no broker pid file in
# $KILN_STACK_DIR) starts nothing and writes nothing outside its temp dir.
set -euo pipefail
: "${KILN_SOURCE_DIR:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
: "${KILN_BINARY_DIR:=$KILN_SOURCE_DIR/build}"
B=$KILN_BINARY_DIR
STACK=${KILN_STACK_DIR:-$KILN_SOURCE_DIR/.stack}
PG=${KILN_PG_CONNINFO:-host=127.0.0.1 port=15432 dbname=kiln user=kiln password=kiln}
TMP=$(mktemp -d)
P=t_late_$$_$RANDOM
SCHEMA=$P
ADMIN=admin-$P
PIDS=()
STOPPED= # set once this test stopped the stack's broker: only then does cleanup start it
log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
broker_up() { "$KILN_SOURCE_DIR/deploy/stack" up >>"$TMP/stack.log" 2>&1; }
cleanup() {
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
    # `deploy/stack up` creates the stack dir and writes its pid files: only
    # for the broker this test stopped (a skip must not start a stack, nor
    # write into a KILN_STACK_DIR that had none)
    if [ -n "$STOPPED" ]; then
        [ -r "$STACK/kafka.pid" ] && kill -0 "$(cat "$STACK/kafka.pid")" 2>/dev/null || broker_up || true
    fi
    psql "$PG" -XAtq -c "SET client_min_messages = warning; DROP SCHEMA IF EXISTS $SCHEMA CASCADE" >/dev/null 2>&1 || true
    [ -n "${KEEP_TMP:-}" ] || rm -rf "$TMP"
}
trap cleanup EXIT

[ -r "$STACK/kafka.pid" ] || { log "SKIPPED: no $STACK/kafka.pid (this test stops the stack's own broker)"; exit 77; }
KAFKA_PID=$(cat "$STACK/kafka.pid")
kill -0 "$KAFKA_PID" 2>/dev/null || { log "SKIPPED: broker pid $KAFKA_PID not running"; exit 77; }
for bin in registry/kiln-registry preprocess/kiln-preprocess ingest/kiln-ingest trainer/kiln-trainer evaluator/kiln-evaluator; do
    [ -x "$B/$bin" ] || { log "FAIL: $B/$bin not built"; exit 1; }
done
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PP_PORT=$(free_port) EV_PORT=$(free_port) TR_PORT=$(free_port)
export KILN_KAFKA_TOPIC_PREFIX=$P KILN_KAFKA_BROKERS=${KILN_KAFKA_BROKERS:-127.0.0.1:19092}
export KILN_PREPROCESS_GROUP=pp-$P KILN_PREPROCESS_INSTANCE=$P
export KILN_PREPROCESS_DATASETS=fashion-mnist KILN_INGEST_PORT=0
CONFIG=$KILN_SOURCE_DIR/deploy/kiln.ini

KILN_REGISTRY_DB="$PG" KILN_REGISTRY_SCHEMA=$SCHEMA KILN_REGISTRY_PORT=0 \
    KILN_REGISTRY_ADMIN_TOKEN=$ADMIN "$B/registry/kiln-registry" >"$TMP/registry.log" 2>&1 &
PIDS+=($!)
port=
for _ in $(seq 1 100); do
    port=$(grep -o '"port":[0-9]*' "$TMP/registry.log" 2>/dev/null | head -n 1 | cut -d: -f2 || true)
    [ -n "$port" ] && break
    sleep 0.1
done
[ -n "$port" ] || { cat "$TMP/registry.log" >&2; log "FAIL: registry did not start"; exit 1; }
export KILN_REGISTRY_URL=http://127.0.0.1:$port KILN_REGISTRY_TOKEN=$ADMIN

log "stopping the broker (pid $KAFKA_PID)"
STOPPED=1
kill -TERM "$KAFKA_PID"
for _ in $(seq 1 600); do kill -0 "$KAFKA_PID" 2>/dev/null || break; sleep 0.1; done
kill -KILL "$KAFKA_PID" 2>/dev/null || true

KILN_PREPROCESS_PORT=$PP_PORT "$B/preprocess/kiln-preprocess" --config "$CONFIG" >"$TMP/preprocess.log" 2>&1 &
PP=$!
KILN_EVALUATOR_PORT=$EV_PORT "$B/evaluator/kiln-evaluator" --config "$CONFIG" >"$TMP/evaluator.log" 2>&1 &
EV=$!
KILN_MODEL_MLP_FMNIST_BATCH=8 KILN_TRAINER_WORK_DIR=$TMP OPENBLAS_NUM_THREADS=1 \
    "$B/trainer/kiln-trainer" --config "$CONFIG" --model mlp-fmnist --port "$TR_PORT" >"$TMP/trainer.log" 2>&1 &
TR=$!
PIDS+=($PP $EV $TR)
declare -A port=([preprocess]=$PP_PORT [evaluator]=$EV_PORT [trainer]=$TR_PORT) pid=([preprocess]=$PP [evaluator]=$EV [trainer]=$TR)
fails=0
fail() { log "FAIL: $*"; fails=$((fails + 1)); }

# --- waiting, and saying so ---
for s in preprocess evaluator trainer; do
    body=
    for _ in $(seq 1 300); do
        body=$(curl -s "http://127.0.0.1:${port[$s]}/readyz" || true)
        case $body in *"waiting for Kafka"*) break ;; esac
        sleep 0.1
    done
    case $body in
    *"waiting for Kafka"*) log "ok: kiln-$s waits: /readyz $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${port[$s]}/readyz") $body" ;;
    *) fail "kiln-$s /readyz does not say it waits for Kafka: '$body'"; tail -n 5 "$TMP/$s.log" >&2 ;;
    esac
done
sleep 3
for s in preprocess evaluator trainer; do
    kill -0 "${pid[$s]}" 2>/dev/null || fail "kiln-$s exited while the broker was down"
    n=$(grep -c 'waiting for Kafka' "$TMP/$s.log" || true)
    [ "$n" = 1 ] && log "ok: kiln-$s logged the wait once" || fail "kiln-$s logged the wait $n times (want 1)"
done

# --- the broker comes up: each proceeds by itself ---
t0=$(date +%s.%N)
broker_up || { cat "$TMP/stack.log" >&2; fail "the broker did not come back"; exit 1; }
log "broker up again after $(printf %.1f "$(echo "$(date +%s.%N) - $t0" | bc)") s"
images() {
    python3 - "$1" <<'PY'
import base64, json, struct, sys, zlib
def chunk(t, d):
    c = struct.pack(">I", len(d)) + t + d
    return c + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
for i in range(int(sys.argv[1])):
    rows = b"".join(b"\0" + bytes(((x * 7 + y * 13 + i * 31) & 255) for x in range(28)) for y in range(28))
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 28, 28, 8, 0, 0, 0, 0)) \
        + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    print(json.dumps({"image_base64": base64.b64encode(png).decode(), "label": i % 10, "dataset": "fashion-mnist"}))
PY
}
images 400 >"$TMP/feed.jsonl"
"$B/ingest/kiln-ingest" --config "$CONFIG" jsonl "$TMP/feed.jsonl" >"$TMP/ingest.log" 2>&1 ||
    { tail -n 20 "$TMP/ingest.log" >&2; fail "ingest"; }
records_in() {
    curl -sf "http://127.0.0.1:$PP_PORT/metrics" 2>/dev/null |
        awk '/^kiln_preprocess_records_in_total/ {s += $NF} END {printf "%d\n", s}'
}
declare -A done_at=()
while [ "$(echo "$(date +%s.%N) - $t0 < 120" | bc)" = 1 ] && [ ${#done_at[@]} -lt 3 ]; do
    el=$(echo "$(date +%s.%N) - $t0" | bc)
    [ -z "${done_at[preprocess]:-}" ] && [ "$(records_in)" -ge 400 ] && done_at[preprocess]=$el
    [ -z "${done_at[trainer]:-}" ] && grep -q '"step":[1-9]' "$TMP/trainer.log" && done_at[trainer]=$el
    [ -z "${done_at[evaluator]:-}" ] && [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$EV_PORT/readyz")" = 200 ] && done_at[evaluator]=$el
    sleep 0.5
done
declare -A what=([preprocess]="consumed the 400 records" [trainer]="trained a step" [evaluator]="is ready")
for s in preprocess evaluator trainer; do
    if [ -n "${done_at[$s]:-}" ] && kill -0 "${pid[$s]}" 2>/dev/null; then
        log "ok: kiln-$s ${what[$s]} $(printf %.1f "${done_at[$s]}") s after the broker's start, same process"
    else
        fail "kiln-$s has not ${what[$s]#* } 120 s after the broker's start"
        tail -n 8 "$TMP/$s.log" >&2
    fi
    grep -q 'answers, after' "$TMP/$s.log" || fail "kiln-$s did not log that Kafka answers"
done
[ "$fails" -eq 0 ] || exit 1
log "all checks passed"
