#!/usr/bin/env bash
# it-binaries.sh: the README's promise for every binary in the build tree
# (every kiln-* and kilnctl found under it, so a new one is covered without
# editing this file): --version prints "<name> <project version>" and exits
# 0; --help prints a usage text on stdout and exits 0; an unknown option
# exits non-zero. Each service is then started against the native stack on a
# free port and must answer /healthz 200, /readyz 200 (within 90 s), /metrics
# 200 in Prometheus text, and exit 0 on SIGTERM.
set -euo pipefail
: "${KILN_SOURCE_DIR:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
: "${KILN_BINARY_DIR:=$KILN_SOURCE_DIR/build}"
B=$KILN_BINARY_DIR
PG=${KILN_PG_CONNINFO:-host=127.0.0.1 port=15432 dbname=kiln user=kiln password=kiln}
TMP=$(mktemp -d)
P=t_bins_$$_$RANDOM
ADMIN=admin-$P
PIDS=()
FAILS=0
log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
fail() { log "FAIL: $*"; FAILS=$((FAILS + 1)); }
ok() { log "ok: $*"; }
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
    psql "$PG" -XAtq -c "SET client_min_messages = warning; DROP SCHEMA IF EXISTS $P CASCADE" >/dev/null 2>&1 || true
    [ -n "${KEEP_TMP:-}" ] || rm -rf "$TMP"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

version=$(sed -nE 's/^project\(kiln[^)]*VERSION ([0-9.]+).*/\1/p' "$KILN_SOURCE_DIR/CMakeLists.txt")
[ -n "$version" ] || { log "FAIL: no project VERSION in CMakeLists.txt"; exit 1; }
# binaries sit one folder down (registry/kiln-registry); deeper ones belong
# to nested build trees (sanitize/, mutation copies)
mapfile -t bins < <(find "$B" -mindepth 2 -maxdepth 2 -type f -perm -u+x \
    \( -name 'kiln-*' -o -name kilnctl \) | sort)
names=$(for b in "${bins[@]}"; do basename "$b"; done | sort -u | tr '\n' ' ')
log "binaries: $names(project version $version)"
for want in kiln-registry kilnctl kiln-ingest kiln-preprocess kiln-trainer kiln-evaluator; do
    [[ " $names" == *" $want "* ]] || fail "$want not built"
done

for b in "${bins[@]}"; do
    n=$(basename "$b")
    rc=0
    out=$("$b" --version 2>"$TMP/err") || rc=$?
    if [ $rc = 0 ] && [[ "$out" =~ ^$n\ $version([^0-9.]|$) ]] && [ "$(printf '%s\n' "$out" | wc -l)" = 1 ]; then
        ok "$n --version: $out"
    else
        fail "$n --version: exit $rc, \"$out\" (want \"$n $version\" on one line)"
    fi
    rc=0
    "$b" --help >"$TMP/help" 2>"$TMP/err" || rc=$?
    if [ $rc = 0 ] && grep -qi '^usage: ' "$TMP/help" && [ "$(wc -l <"$TMP/help")" -ge 3 ]; then
        ok "$n --help ($(wc -l <"$TMP/help") lines)"
    else
        fail "$n --help: exit $rc, $(head -c 200 "$TMP/help" "$TMP/err" | tr '\n' ' ')"
    fi
    rc=0
    "$b" --no-such-option-$P >/dev/null 2>&1 </dev/null || rc=$?
    [ $rc != 0 ] && ok "$n refuses an unknown option (exit $rc)" || fail "$n accepts --no-such-option"
done

# --- the services' HTTP endpoints, against the native stack
psql "$PG" -XAtq -c "SELECT 1" >/dev/null 2>&1 || { log "FAIL: PostgreSQL does not answer ($PG)"; exit 1; }
CONFIG=$KILN_SOURCE_DIR/deploy/kiln.ini
export KILN_KAFKA_TOPIC_PREFIX=$P KILN_KAFKA_BROKERS=${KILN_KAFKA_BROKERS:-127.0.0.1:19092}
export KILN_PREPROCESS_GROUP=pp-$P KILN_PREPROCESS_INSTANCE=$P KILN_PREPROCESS_DATASETS=fashion-mnist
export KILN_TRAINER_WORK_DIR=$TMP KILN_EVALUATOR_BACKEND=cpu KILN_TRAINER_BACKEND=cpu

# check_service NAME PORT PID: the three endpoints, then SIGTERM -> exit 0
check_service() {
    local n=$1 port=$2 pid=$3 code= t
    for t in $(seq 1 900); do
        code=$(curl -s -o "$TMP/body" -w '%{http_code}' "http://127.0.0.1:$port/readyz" || true)
        [ "$code" = 200 ] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    [ "$code" = 200 ] && ok "$n /readyz 200 after $((t / 10)) s" ||
        { fail "$n /readyz: $code $(head -c 200 "$TMP/body" 2>/dev/null)"; tail -n 5 "$TMP/$n.log" >&2; }
    code=$(curl -s -o "$TMP/body" -w '%{http_code}' "http://127.0.0.1:$port/healthz" || true)
    [ "$code" = 200 ] && ok "$n /healthz 200" || fail "$n /healthz: $code"
    code=$(curl -s -o "$TMP/body" -w '%{http_code}' "http://127.0.0.1:$port/metrics" || true)
    if [ "$code" = 200 ] && grep -q '^# TYPE ' "$TMP/body"; then
        ok "$n /metrics 200 ($(grep -c '^# TYPE ' "$TMP/body") families)"
    else
        fail "$n /metrics: $code, no '# TYPE' line"
    fi
    kill -TERM "$pid"
    local rc=0
    wait "$pid" || rc=$?
    [ $rc = 0 ] && ok "$n exits 0 on SIGTERM" || { fail "$n exit $rc on SIGTERM"; tail -n 5 "$TMP/$n.log" >&2; }
}

port=$(free_port)
KILN_REGISTRY_DB="$PG" KILN_REGISTRY_SCHEMA=$P KILN_REGISTRY_PORT=$port KILN_REGISTRY_ADMIN_TOKEN=$ADMIN \
    "$B/registry/kiln-registry" --config "$CONFIG" >"$TMP/kiln-registry.log" 2>&1 &
reg_pid=$!
PIDS+=($reg_pid)
export KILN_REGISTRY_URL=http://127.0.0.1:$port KILN_REGISTRY_TOKEN=$ADMIN
for _ in $(seq 1 100); do curl -sf "$KILN_REGISTRY_URL/readyz" >/dev/null 2>&1 && break; sleep 0.1; done

port=$(free_port)
"$B/ingest/kiln-ingest" --config "$CONFIG" --port "$port" serve >"$TMP/kiln-ingest.log" 2>&1 &
PIDS+=($!)
check_service kiln-ingest "$port" $!

port=$(free_port)
KILN_PREPROCESS_PORT=$port "$B/preprocess/kiln-preprocess" --config "$CONFIG" >"$TMP/kiln-preprocess.log" 2>&1 &
pp_pid=$!
PIDS+=($pp_pid)
# the trainer needs its topic: preprocess creates it; keep preprocess running meanwhile
for _ in $(seq 1 600); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
pp_port=$port

port=$(free_port)
"$B/trainer/kiln-trainer" --config "$CONFIG" --model mlp-fmnist --port "$port" >"$TMP/kiln-trainer.log" 2>&1 &
PIDS+=($!)
check_service kiln-trainer "$port" $!

port=$(free_port)
KILN_EVALUATOR_PORT=$port "$B/evaluator/kiln-evaluator" --config "$CONFIG" >"$TMP/kiln-evaluator.log" 2>&1 &
PIDS+=($!)
check_service kiln-evaluator "$port" $!

check_service kiln-preprocess "$pp_port" $pp_pid
check_service kiln-registry "${KILN_REGISTRY_URL##*:}" $reg_pid

[ "$FAILS" = 0 ] || { log "$FAILS check(s) failed"; exit 1; }
log "all checks passed"
