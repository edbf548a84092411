#!/usr/bin/env bash
# docker-compose.yml validates (no Docker engine runs here: config only),
# with and without the gpu profile, and names the services the design lists.
# Security (issue 18, finding 1; docs/security.md): no default secret
# (config refuses to render without the admin token and the database
# password), the admin token reaches only the registry and the one-shot
# `tokens` job, each service holds its own token with the fewest roles, and
# published ports are bound to 127.0.0.1 unless KILN_PUBLISH_ADDR opts in.
set -euo pipefail
cd "${KILN_SOURCE_DIR:-$(dirname "$0")/../..}"
command -v docker-compose >/dev/null || { echo "docker-compose is not installed (deploy/install-deps.sh installs it)"; exit 1; }
command -v yq >/dev/null || { echo "yq is not installed (deploy/install-deps.sh installs it)"; exit 1; }
fail() { echo "compose-config: $*" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# 1. No secret, no stack: each missing secret is named.
unset KILN_REGISTRY_ADMIN_TOKEN KILN_PG_PASSWORD KILN_PUBLISH_ADDR
! grep -n 'change-me' docker-compose.yml deploy/*.sh deploy/Dockerfile || fail "a known default secret is still there"
if KILN_PG_PASSWORD=p docker-compose config -q 2>"$tmp/err"; then fail "config renders without KILN_REGISTRY_ADMIN_TOKEN"; fi
grep -q KILN_REGISTRY_ADMIN_TOKEN "$tmp/err" || fail "the refusal does not name KILN_REGISTRY_ADMIN_TOKEN: $(cat "$tmp/err")"
if KILN_REGISTRY_ADMIN_TOKEN=a docker-compose config -q 2>"$tmp/err"; then fail "config renders without KILN_PG_PASSWORD"; fi
grep -q KILN_PG_PASSWORD "$tmp/err" || fail "the refusal does not name KILN_PG_PASSWORD: $(cat "$tmp/err")"

# 2. With both: valid, with and without the gpu profile.
export KILN_REGISTRY_ADMIN_TOKEN=sentinel-admin-0f3c KILN_PG_PASSWORD=sentinel-pg-7d21
docker-compose config -q
docker-compose --profile gpu config -q
services=$(docker-compose --profile gpu config --services | sort | tr '\n' ' ')
for s in kafka postgres registry tokens tokenizer importer ingest preprocess trainer-cnn trainer-gpt trainer-gpu evaluator serve; do
    [[ " $services " == *" $s "* ]] || fail "service $s missing from docker-compose.yml (have: $services)"
done
docker-compose --profile gpu config >"$tmp/c.yml"
yq . "$tmp/c.yml" >"$tmp/c.json"

# 2b. The cluster profile (docs/cluster.md): with deploy/compose-cluster.env,
# kafka, kafka-2 and kafka-3 are nodes 1-3 of one 3-voter quorum with one
# cluster id, replication 3 and min.insync.replicas 2, and every service
# bootstraps from the three.
docker-compose --env-file deploy/compose-cluster.env --profile cluster config | yq . >"$tmp/cl.json"
# podman-compose has no --env-file: the file must also work sourced by a shell
bash -c 'set -ea; . deploy/compose-cluster.env; [ "$KILN_KAFKA_HEAP_OPTS" = "$(sed -n "s/^KILN_KAFKA_HEAP_OPTS=//p" deploy/compose-cluster.env)" ]' 2>/dev/null ||
    fail "deploy/compose-cluster.env does not source cleanly in a shell (podman-compose users export it)"
for n in 1 2 3; do
    s=$([ $n = 1 ] && echo kafka || echo kafka-$n)
    got=$(jq -r --arg s "$s" '.services[$s].environment | "\(.KAFKA_NODE_ID) \(.KAFKA_CONTROLLER_QUORUM_VOTERS) \(.CLUSTER_ID) \(.KAFKA_DEFAULT_REPLICATION_FACTOR) \(.KAFKA_MIN_INSYNC_REPLICAS) \(.KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR) \(.KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR) \(.KAFKA_TRANSACTION_STATE_LOG_MIN_ISR) \(.KAFKA_ADVERTISED_LISTENERS)"' "$tmp/cl.json")
    read -r id voters cid rf isr orf trf tisr adv <<<"$got"
    [ "$id" = $n ] && [ "$voters" = "1@kafka:9093,2@kafka-2:9093,3@kafka-3:9093" ] && [ -n "$cid" ] &&
        [ "$cid" != null ] && [ "$rf $isr $orf $trf $tisr" = "3 2 3 3 2" ] && [ "$adv" = "PLAINTEXT://$s:9092" ] ||
        fail "cluster profile: $s is not node $n of the 3-voter quorum with replication 3 / min ISR 2: $got"
    [ -z "${cid0:-}" ] || [ "$cid" = "$cid0" ] || fail "cluster profile: $s has cluster id $cid, kafka has $cid0"
    cid0=$cid
done
bad=$(jq -r '.services | to_entries[] | select(.value.environment.KILN_KAFKA_BROKERS? and .value.environment.KILN_KAFKA_BROKERS != "kafka:9092,kafka-2:9092,kafka-3:9092") | .key' "$tmp/cl.json")
[ -z "$bad" ] || fail "cluster profile: these services do not bootstrap from the three nodes: $bad"
# and without the env file, kafka is one node alone, as before
[ "$(jq -r '.services.kafka.environment | "\(.KAFKA_CONTROLLER_QUORUM_VOTERS) \(.KAFKA_DEFAULT_REPLICATION_FACTOR)"' "$tmp/c.json")" = "1@kafka:9093 1" ] ||
    fail "without the cluster env file, kafka is not a single node"

# holders SECRET: the services whose rendered definition holds the value.
holders() { jq -r --arg v "$1" '.services | to_entries[] | select(tojson | contains($v)) | .key' "$tmp/c.json" | sort | tr '\n' ' '; }
[ "$(holders "$KILN_REGISTRY_ADMIN_TOKEN")" = "registry tokens " ] ||
    fail "the admin token reaches: $(holders "$KILN_REGISTRY_ADMIN_TOKEN") (only registry and tokens may hold it)"
[ "$(holders "$KILN_PG_PASSWORD")" = "postgres registry " ] ||
    fail "the database password reaches: $(holders "$KILN_PG_PASSWORD") (only postgres and registry may hold it)"

# 3. One token per service, from its own volume; the roles the tokens job
# gives are the fewest each needs, and nobody gets admin.
for pair in trainer-cnn:token-trainer trainer-gpt:token-trainer trainer-gpu:token-trainer \
    evaluator:token-evaluator tokenizer:token-tokenizer ingest:token-ingest; do
    s=${pair%%:*} v=${pair#*:}
    vols=$(jq -r --arg s "$s" '.services[$s].volumes // [] | map(if type == "string" then . else "\(.source):\(.target)" end) | join(" ")' "$tmp/c.json")
    [[ " $vols " == *" $v:"* ]] || fail "$s does not mount its token volume $v (has: $vols)"
    other=$(tr ' ' '\n' <<<"$vols" | grep '^token-' | grep -v "^$v:" || true)
    [ -z "$other" ] || fail "$s mounts another service's token volume: $other"
    [[ " $vols " == *" $v:"*":ro "* ]] || fail "$s mounts $v writable"
done
for s in $services; do
    case $s in tokens) continue ;; esac
    jq -e --arg s "$s" '.services[$s].environment // {} | has("KILN_REGISTRY_TOKEN")' "$tmp/c.json" >/dev/null &&
        fail "$s gets KILN_REGISTRY_TOKEN in its compose environment (a token belongs in its volume)"
done
roles() { sed -n "s/^registry $1 \\([a-z,]*\\)\$/\\1/p" deploy/compose-tokens.sh; }
[ "$(roles trainer)" = write ] || fail "trainer token roles: '$(roles trainer)' (want write)"
[ "$(roles evaluator)" = write,promote ] || fail "evaluator token roles: '$(roles evaluator)' (want write,promote)"
[ "$(roles tokenizer)" = write ] || fail "tokenizer token roles: '$(roles tokenizer)' (want write)"
! grep -nE '^registry .*admin' deploy/compose-tokens.sh || fail "compose-tokens.sh hands out admin"
grep -q 'compose-tokens.sh' deploy/Dockerfile || fail "deploy/Dockerfile does not ship compose-tokens.sh"

# 4. Published ports: loopback unless the user opts in.
ports() { jq -r '.services[] | .ports // [] | .[] | if type == "string" then . else "\(.host_ip // "*"):\(.published)" end' "$1"; }
[ -n "$(ports "$tmp/c.json")" ] || fail "no published ports found"
bad=$(ports "$tmp/c.json" | grep -v '^127\.0\.0\.1:' || true)
[ -z "$bad" ] || fail "ports published beyond loopback by default: $bad"
KILN_PUBLISH_ADDR=0.0.0.0 docker-compose config | yq . >"$tmp/open.json"
bad=$(ports "$tmp/open.json" | grep -v '^0\.0\.0\.0:' || true)
[ -z "$bad" ] || fail "KILN_PUBLISH_ADDR=0.0.0.0 does not open every published port: $bad"
echo "docker-compose.yml valid and locked down; services: $services"
