#!/usr/bin/env bash
# it-secrets.sh: secrets never leak (issue 18; docs/security.md). Runs the
# services with secrets this test makes up — the registry's admin token, a
# PostgreSQL role whose password is in the registry's conninfo, the
# per-service tokens deploy/compose-tokens.sh makes (so its roles are checked
# too), an ingest write token — sends a few requests (good, wrong and
# missing tokens), starts the registry once more with a wrong database
# password, and then greps every log line, every /metrics page, every HTTP
# answer and `ps -o args` of every service process for each secret: none may
# appear.
set -euo pipefail
: "${KILN_SOURCE_DIR:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
: "${KILN_BINARY_DIR:=$KILN_SOURCE_DIR/build}"
B=$KILN_BINARY_DIR
PG=${KILN_PG_CONNINFO:-host=127.0.0.1 port=15432 dbname=kiln user=kiln password=kiln}
stackdir=${KILN_STACK_DIR:-$KILN_SOURCE_DIR/.stack}
TMP=$(mktemp -d)
P=t_secrets_$$_$RANDOM
PIDS=()
log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
fail() { log "FAIL: $*"; exit 1; }
rnd() { head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
# psql as the stack's superuser, over its socket (deploy/stack: local trust).
su_psql() {
    local port
    port=$(sed -n 's/.*port=\([0-9]*\).*/\1/p' <<<"$PG")
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- psql -h "$stackdir/pg" -p "$port" -U postgres -d kiln -XAtq "$@"
    else
        psql -h "$stackdir/pg" -p "$port" -U postgres -d kiln -XAtq "$@"
    fi
}
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
    su_psql -c "SET client_min_messages = warning; DROP SCHEMA IF EXISTS $P CASCADE; DROP ROLE IF EXISTS $P" \
        >/dev/null 2>&1 || true
    [ -n "${KEEP_TMP:-}" ] || rm -rf "$TMP"
}
trap cleanup EXIT

for bin in registry/kiln-registry registry/kilnctl ingest/kiln-ingest evaluator/kiln-evaluator \
    trainer/kiln-trainer; do
    [ -x "$B/$bin" ] || fail "$B/$bin not built"
done
ADMIN=kn_admin_$(rnd)
PGPW=pgpw_$(rnd)
WRONG_PGPW=pgwrong_$(rnd)
PGPART=pgpart_$(rnd) # the second word of a password typed without quotes
su_psql -c "CREATE ROLE $P LOGIN PASSWORD '$PGPW'; GRANT CREATE ON DATABASE kiln TO $P" >/dev/null 2>&1 ||
    { log "SKIPPED: cannot reach the stack's PostgreSQL as its superuser over $stackdir/pg"; exit 77; }
host_port=$(sed -E 's/.*(host=[^ ]+).*(port=[0-9]+).*/\1 \2/' <<<"$PG")
DB="$host_port dbname=kiln user=$P password=$PGPW"

export KILN_KAFKA_TOPIC_PREFIX=$P KILN_KAFKA_BROKERS=${KILN_KAFKA_BROKERS:-127.0.0.1:19092}
export KILN_LOG_LEVEL=debug # the most a log says
CONFIG=$KILN_SOURCE_DIR/deploy/kiln.ini

# wait_port LOG: the port a service printed ("port":N) when it started.
wait_port() {
    local port="" i
    for i in $(seq 1 150); do
        port=$(grep -o '"port":[0-9]*' "$1" 2>/dev/null | head -n 1 | cut -d: -f2 || true)
        [ -n "$port" ] && [ "$port" != 0 ] && { echo "$port"; return 0; }
        sleep 0.1
    done
    cat "$1" >&2
    return 1
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# args PID NAME: the command line of a running service, kept for the grep.
args() { ps -o args= -p "$1" >>"$TMP/ps.txt" || fail "$2 is not running"; }

# 1. The registry, with the database password in its conninfo and the admin
#    token, both from the environment (as deploy/pipeline.sh and compose do).
KILN_REGISTRY_DB="$DB" KILN_REGISTRY_SCHEMA=$P KILN_REGISTRY_PORT=0 KILN_REGISTRY_ADMIN_TOKEN=$ADMIN \
    "$B/registry/kiln-registry" >"$TMP/registry.log" 2>&1 &
PIDS+=($!)
rpid=$!
port=$(wait_port "$TMP/registry.log") || fail "the registry did not start"
args "$rpid" registry
export KILN_REGISTRY_URL=http://127.0.0.1:$port

# 2. The per-service tokens, made as the compose stack makes them.
KILN_REGISTRY_TOKEN=$ADMIN PATH=$B/registry:$PATH KILN_TOKEN_OWNER=$(id -u):$(id -g) \
    sh "$KILN_SOURCE_DIR/deploy/compose-tokens.sh" "$TMP/tok" >"$TMP/compose-tokens.log" 2>&1 ||
    { cat "$TMP/compose-tokens.log"; fail "compose-tokens.sh failed"; }
# run again (a restart): nothing new is made
KILN_REGISTRY_TOKEN=$ADMIN PATH=$B/registry:$PATH KILN_TOKEN_OWNER=$(id -u):$(id -g) \
    sh "$KILN_SOURCE_DIR/deploy/compose-tokens.sh" "$TMP/tok" >"$TMP/compose-tokens-again.log" 2>&1 ||
    { cat "$TMP/compose-tokens-again.log"; fail "compose-tokens.sh failed on its second run"; }
! grep -q made "$TMP/compose-tokens-again.log" || fail "compose-tokens.sh made tokens again: $(cat "$TMP/compose-tokens-again.log")"
T_TRAINER=$(cat "$TMP/tok/trainer/token") T_EVAL=$(cat "$TMP/tok/evaluator/token")
T_TOK=$(cat "$TMP/tok/tokenizer/token") T_INGEST=$(cat "$TMP/tok/operator/ingest-write-token")
for f in trainer/token evaluator/token tokenizer/token operator/ingest-write-token ingest/tokens; do
    [ "$(stat -c %a "$TMP/tok/$f")" = 400 ] || fail "$f is mode $(stat -c %a "$TMP/tok/$f"), want 0400"
done
# the roles: each token can do its job and no more
call() { # TOKEN METHOD PATH [BODY]: the HTTP status; the answer is kept for the grep
    curl -s -o "$TMP/answer" -w '%{http_code}' -X "$2" -H "Authorization: Bearer $1" \
        -H 'Content-Type: application/json' ${4:+--data "$4"} "$KILN_REGISTRY_URL$3"
    cat "$TMP/answer" >>"$TMP/answers.txt"
    echo >>"$TMP/answers.txt"
}
[ "$(call "$T_TRAINER" POST /v1/models '{"name":"sec-m"}')" = 201 ] || fail "the trainer token cannot create a model: $(cat "$TMP/answer")"
[ "$(call "$T_TRAINER" GET /v1/tokens)" = 403 ] || fail "the trainer token may list tokens (admin)"
[ "$(call "$T_EVAL" GET /v1/tokens)" = 403 ] || fail "the evaluator token may list tokens (admin)"
[ "$(call "$T_TOK" GET /v1/tokens)" = 403 ] || fail "the tokenizer token may list tokens (admin)"
[ "$(call "$ADMIN" GET /v1/tokens)" = 200 ] || fail "the admin token cannot list tokens"
roles=$(jq -r '.tokens[] | "\(.name)=\(.roles | sort | join(","))"' "$TMP/answer" | sort | tr '\n' ' ')
[ "$roles" = "bootstrap-admin=admin compose-evaluator=promote,write compose-tokenizer=write compose-trainer=write " ] ||
    fail "token roles: $roles"
[ "$(call "${ADMIN}x" GET /v1/tokens)" = 401 ] || fail "a wrong admin token was not refused"
KILN_REGISTRY_TOKEN="${T_EVAL}x" "$B/registry/kilnctl" token list >>"$TMP/kilnctl.txt" 2>&1 || true
KILN_REGISTRY_TOKEN="$T_TRAINER" "$B/registry/kilnctl" token list >>"$TMP/kilnctl.txt" 2>&1 || true

# 3. ingest, with the tokens file compose-tokens.sh wrote.
iport=$(free_port)
KILN_INGEST_TOKENS_FILE=$TMP/tok/ingest/tokens "$B/ingest/kiln-ingest" --config "$CONFIG" serve \
    --port "$iport" >"$TMP/ingest.log" 2>&1 &
PIDS+=($!)
ipid=$!
for _ in $(seq 1 150); do curl -fsS -o /dev/null "http://127.0.0.1:$iport/readyz" 2>/dev/null && break; sleep 0.1; done
args "$ipid" ingest
post() { # TOKEN: the status
    curl -s -o "$TMP/answer" -w '%{http_code}' -H "Authorization: Bearer $1" -H 'Content-Type: text/plain' \
        --data "a record for the secrets test" "http://127.0.0.1:$iport/v1/records?dataset=sec"
    cat "$TMP/answer" >>"$TMP/answers.txt"
    echo >>"$TMP/answers.txt"
}
[ "$(post "$T_INGEST")" = 202 ] || fail "the ingest write token was refused: $(cat "$TMP/answer")"
[ "$(post "${T_INGEST}x")" = 401 ] || fail "a wrong ingest token was not refused"
[ "$(post "$ADMIN")" = 401 ] || fail "the registry admin token works on ingest"

# 4. evaluator and trainer, each with its own token, for a few seconds.
eport=$(free_port) tport=$(free_port)
KILN_REGISTRY_TOKEN=$T_EVAL KILN_EVALUATOR_PORT=$eport KILN_EVALUATOR_GROUP=$P-ev \
    "$B/evaluator/kiln-evaluator" --config "$CONFIG" >"$TMP/evaluator.log" 2>&1 &
PIDS+=($!)
epid=$!
KILN_REGISTRY_TOKEN=$T_TRAINER KILN_TRAINER_WORK_DIR=$TMP OPENBLAS_NUM_THREADS=1 \
    "$B/trainer/kiln-trainer" --config "$CONFIG" --model cnn-fmnist --port "$tport" --idle-exit 30 \
    >"$TMP/trainer.log" 2>&1 &
PIDS+=($!)
tpid=$!
for _ in $(seq 1 100); do
    curl -fsS -o /dev/null "http://127.0.0.1:$eport/healthz" 2>/dev/null &&
        curl -fsS -o /dev/null "http://127.0.0.1:$tport/healthz" 2>/dev/null && break
    sleep 0.2
done
ps -o args= -p "$epid" >>"$TMP/ps.txt" || true
ps -o args= -p "$tpid" >>"$TMP/ps.txt" || true
for p in "$port" "$iport" "$eport" "$tport"; do
    curl -fsS "http://127.0.0.1:$p/metrics" >>"$TMP/metrics.txt" 2>/dev/null || true
done
[ -s "$TMP/metrics.txt" ] || fail "no /metrics answered"

# 5. The registry with a wrong database password: its error messages.
KILN_REGISTRY_DB="$host_port dbname=kiln user=$P password=$WRONG_PGPW" KILN_REGISTRY_SCHEMA=$P \
    KILN_REGISTRY_PORT=0 "$B/registry/kiln-registry" >"$TMP/registry-wrong.log" 2>&1 &
PIDS+=($!)
wpid=$!
# wait_log FILE PATTERN: up to 20 s for a line matching PATTERN (grep -i)
wait_log() { for _ in $(seq 1 200); do grep -qi "$2" "$1" && return 0; sleep 0.1; done; return 1; }
said=0
wait_log "$TMP/registry-wrong.log" 'password authentication failed\|database' && said=1
ps -o args= -p "$wpid" >>"$TMP/ps.txt" || true
[ "$said" = 1 ] ||
    { cat "$TMP/registry-wrong.log"; fail "the registry did not say why it cannot reach the database"; }
# A password with a space and no quotes: a conninfo libpq cannot parse (and
# whose words it quotes in its error).
KILN_REGISTRY_DB="$host_port dbname=kiln user=$P password=$WRONG_PGPW $PGPART" KILN_REGISTRY_SCHEMA=$P \
    KILN_REGISTRY_PORT=0 "$B/registry/kiln-registry" >"$TMP/registry-malformed.log" 2>&1 &
PIDS+=($!)
said=0
wait_log "$TMP/registry-malformed.log" 'conninfo\|database' && said=1
ps -o args= -p "$!" >>"$TMP/ps.txt" || true
[ "$said" = 1 ] ||
    { cat "$TMP/registry-malformed.log"; fail "the registry did not say its conninfo is wrong"; }

for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
PIDS=()

# 6. Nothing may show a secret.
leaks=0
for name in ADMIN PGPW WRONG_PGPW PGPART T_TRAINER T_EVAL T_TOK T_INGEST; do
    s=${!name}
    hits=$(grep -lF -- "$s" "$TMP"/*.log "$TMP"/*.txt 2>/dev/null || true)
    if [ -n "$hits" ]; then
        log "LEAK: $name appears in: $(xargs -n1 basename <<<"$hits" | tr '\n' ' ')"
        grep -hF -- "$s" $hits | head -n 3 | cut -c1-300 >&2
        leaks=$((leaks + 1))
    fi
done
((leaks == 0)) || fail "$leaks secret(s) leaked"
lines=$(cat "$TMP"/*.log | wc -l)
log "OK: no secret in $lines log lines, $(wc -l <"$TMP/metrics.txt") metric lines, $(wc -l <"$TMP/answers.txt") HTTP answers, $(wc -l <"$TMP/ps.txt") process command lines"
