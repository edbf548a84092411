#!/usr/bin/env bash
# it-registry-api.sh: every registry endpoint against the real PostgreSQL of
# the native stack, with the error paths, the auth role matrix, hostile input
# (malformed JSON, SQL injection strings, bad UTF-8, huge bodies, path tricks:
# clear 4xx, no crash, database unchanged), rollback, events and kilnctl.
source "$(dirname "${BASH_SOURCE[0]}")/../registry/lib.sh"
start_registry
A=$(auth "$ADMIN")
J='Content-Type: application/json'

# --- basics ---
expect healthz 200 GET /healthz
expect readyz 200 GET /readyz
expect "web page" 200 GET /
grep -q 'kiln registry' "$TMP/body" || fail "web page content"
expect "unknown endpoint" 404 GET /v1/nope
expect "wrong method" 405 DELETE /v1/models

# --- models ---
expect "create model" 201 POST /v1/models -H "$A" -H "$J" -d '{"name":"mnist","task":"image-classification","description":"digits"}'
[ "$(json .name)" = mnist ] || fail "model name echoed"
expect "duplicate model" 409 POST /v1/models -H "$A" -d '{"name":"mnist"}'
expect "model without name" 400 POST /v1/models -H "$A" -d '{"task":"x"}'
expect "get model" 200 GET /v1/models/mnist
expect "missing model" 404 GET /v1/models/nosuch
expect "patch model" 200 PATCH /v1/models/mnist -H "$A" -d '{"description":"MNIST digits"}'
[ "$(json .description)" = "MNIST digits" ] || fail "patched description"
expect "list models" 200 GET /v1/models
[ "$(json '.models | length')" = 1 ] || fail "one model listed"

# --- versions ---
expect "create v1" 201 POST /v1/models/mnist/versions -H "$A" -H 'Idempotency-Key: run-1' \
    -d '{"lineage":{"dataset":"mnist","offsets":{"0":[0,100]},"step":100},"tags":{"run":"a"}}'
[ "$(json .version)" = 1 ] && [ "$(json .status)" = registered ] || fail "v1 document"
expect "retry v1 (idempotent)" 200 POST /v1/models/mnist/versions -H "$A" -H 'Idempotency-Key: run-1' -d '{}'
[ "$(json .version)" = 1 ] || fail "retry returns version 1"
expect "create v2 (key in body)" 201 POST /v1/models/mnist/versions -H "$A" -d '{"idempotency_key":"run-2","tags":{"run":"b"}}'
expect "create v3" 201 POST /v1/models/mnist/versions -H "$A" -d '{}'
[ "$(sql "SELECT count(*) FROM versions")" = 3 ] || fail "three versions in the database"
expect "version of missing model" 404 POST /v1/models/nosuch/versions -H "$A" -d '{}'
expect "lineage not an object" 400 POST /v1/models/mnist/versions -H "$A" -d '{"lineage":[1]}'
expect "get v2" 200 GET /v1/models/mnist/versions/2
expect "missing version" 404 GET /v1/models/mnist/versions/99
expect "bad version number" 400 GET /v1/models/mnist/versions/abc
expect "zero version" 400 GET /v1/models/mnist/versions/0

# --- metrics, status, tags ---
expect "metrics v1" 201 POST /v1/models/mnist/versions/1/metrics -H "$A" -d '{"metrics":[{"name":"accuracy","value":0.91,"dataset":"eval","step":100},{"name":"loss","value":0.3}]}'
expect "metrics v2" 201 POST /v1/models/mnist/versions/2/metrics -H "$A" -d '{"name":"accuracy","value":0.95,"dataset":"eval"}'
expect "metrics v3" 201 POST /v1/models/mnist/versions/3/metrics -H "$A" -d '{"name":"accuracy","value":0.85}'
expect "metric NaN-ish" 400 POST /v1/models/mnist/versions/3/metrics -H "$A" -d '{"name":"accuracy","value":"high"}'
expect "metric bad name" 400 POST /v1/models/mnist/versions/3/metrics -H "$A" -d '{"name":"a b","value":1}'
expect "get metrics" 200 GET /v1/models/mnist/versions/1/metrics
[ "$(json '.metrics | length')" = 2 ] || fail "two metric records"
expect "status evaluated" 200 POST /v1/models/mnist/versions/2/status -H "$A" -d '{"status":"evaluated","reason":"scored"}'
expect "status promoted refused" 400 POST /v1/models/mnist/versions/2/status -H "$A" -d '{"status":"promoted"}'
expect "tags" 200 POST /v1/models/mnist/versions/2/tags -H "$A" -d '{"tags":{"candidate":"yes"}}'

# --- list filters, sort, keyset pagination ---
expect "filter metric" 200 GET '/v1/models/mnist/versions?metric=accuracy%3E%3D0.9'
[ "$(json '[.versions[].version] | join(",")')" = "2,1" ] || fail "accuracy>=0.9 gives 2,1: $(cat "$TMP/body")"
expect "filter status" 200 GET '/v1/models/mnist/versions?status=evaluated'
[ "$(json '[.versions[].version] | join(",")')" = "2" ] || fail "status filter"
expect "filter tag" 200 GET '/v1/models/mnist/versions?tag=run=b'
[ "$(json '[.versions[].version] | join(",")')" = "2" ] || fail "tag filter"
expect "sort by metric" 200 GET '/v1/models/mnist/versions?sort=-metric:accuracy'
[ "$(json '[.versions[].version] | join(",")')" = "2,1,3" ] || fail "sort by accuracy"
expect "page 1" 200 GET '/v1/models/mnist/versions?limit=2&sort=version'
[ "$(json '[.versions[].version] | join(",")')" = "1,2" ] || fail "page 1 content"
tok=$(json .next_page_token)
expect "page 2" 200 GET "/v1/models/mnist/versions?limit=2&sort=version&page_token=$tok"
[ "$(json '[.versions[].version] | join(",")')" = "3" ] && [ "$(json .next_page_token)" = null ] || fail "page 2 content"
expect "metric-sorted pages" 200 GET '/v1/models/mnist/versions?limit=1&sort=-metric:accuracy'
tok=$(json .next_page_token)
expect "metric-sorted page 2" 200 GET "/v1/models/mnist/versions?limit=1&sort=-metric:accuracy&page_token=$tok"
[ "$(json '.versions[0].version')" = 1 ] || fail "keyset over metric"
expect "bad page token" 400 GET '/v1/models/mnist/versions?page_token=zzz'
expect "bad metric filter" 400 GET '/v1/models/mnist/versions?metric=accuracy~1'
expect "bad status filter" 400 GET '/v1/models/mnist/versions?status=bogus'

# --- aliases: set, CAS, what-to-deploy, rollback, delete ---
expect "promote v1" 200 PUT /v1/models/mnist/aliases/production -H "$A" -d '{"version":1,"expected_version":null,"reason":"first"}'
expect "promote again same expectation" 409 PUT /v1/models/mnist/aliases/production -H "$A" -d '{"version":2,"expected_version":null}'
expect "promote v2 CAS" 200 PUT /v1/models/mnist/aliases/production -H "$A" -d '{"version":2,"expected_version":1,"reason":"better accuracy"}'
expect "stale CAS" 409 PUT /v1/models/mnist/aliases/production -H "$A" -d '{"version":3,"expected_version":1}'
expect "alias to missing version" 404 PUT /v1/models/mnist/aliases/staging -H "$A" -d '{"version":42}'
expect "staging v3" 200 PUT /v1/models/mnist/aliases/staging -H "$A" -d '{"version":3}'
expect "what do I deploy" 200 GET /v1/models/mnist/aliases/production
[ "$(json .version)" = 2 ] && [ "$(json .metrics.accuracy)" = 0.95 ] && [ "$(json .status)" = promoted ] ||
    fail "deploy answer: $(cat "$TMP/body")"
expect "missing alias" 404 GET /v1/models/mnist/aliases/canary
expect "bad alias name" 400 GET /v1/models/mnist/aliases/Prod%20uction
expect "list aliases" 200 GET /v1/models/mnist/aliases
[ "$(json '.aliases | length')" = 2 ] || fail "two aliases"
expect "rollback production" 200 POST /v1/models/mnist/aliases/production/rollback -H "$A" -d '{"reason":"regression"}'
[ "$(json .version)" = 1 ] && [ "$(json .previous_version)" = 2 ] || fail "rollback 2 -> 1"
[ "$(sql "SELECT version FROM aliases WHERE alias = 'production'")" = 1 ] || fail "database says production=1"
expect "rollback past the first" 409 POST /v1/models/mnist/aliases/production/rollback -H "$A"
expect "archive aliased version refused" 409 POST /v1/models/mnist/versions/3/status -H "$A" -d '{"status":"archived"}'
expect "delete staging (wrong expectation)" 409 DELETE '/v1/models/mnist/aliases/staging?expected_version=2' -H "$A"
expect "delete staging" 200 DELETE '/v1/models/mnist/aliases/staging?expected_version=3' -H "$A"
expect "delete staging again" 404 DELETE /v1/models/mnist/aliases/staging -H "$A"

# --- reject ---
expect "reject v3" 200 POST /v1/models/mnist/versions/3/reject -H "$A" -d '{"reason":"accuracy 0.85 < champion 0.91","metrics":{"champion_accuracy":0.91}}'
[ "$(json .status)" = rejected ] || fail "v3 rejected"
expect "reject without reason" 400 POST /v1/models/mnist/versions/2/reject -H "$A" -d '{}'
expect "reject twice" 409 POST /v1/models/mnist/versions/3/reject -H "$A" -d '{"reason":"again"}'
expect "alias to rejected" 409 PUT /v1/models/mnist/aliases/production -H "$A" -d '{"version":3}'
snap=$(sql "SELECT data->'metrics'->>'accuracy' || ',' || (data->'metrics'->>'champion_accuracy') FROM events WHERE kind = 'version.rejected'")
[ "$snap" = "0.85,0.91" ] || fail "rejection snapshot: $snap"

# --- events ---
expect "events" 200 GET /v1/models/mnist/events
n=$(json '.events | length')
last=$(json .next_since)
[ "$n" -ge 10 ] || fail "events recorded ($n)"
[ "$(json '[.events[] | select(.kind == "version.promoted")] | length')" = 2 ] || fail "two promotions"
[ "$(json '[.events[] | select(.kind == "version.rolled_back")][0].data.to')" = 1 ] || fail "rollback event"
expect "events since" 200 GET "/v1/models/mnist/events?since=$last"
[ "$(json '.events | length')" = 0 ] || fail "nothing after the cursor"
expect "events bad since" 400 GET '/v1/models/mnist/events?since=-4'
sql "UPDATE events SET kind = 'x'" 2>/dev/null && fail "events table accepted an UPDATE" || ok "events are append-only"

# --- auth matrix ---
tok() { # tok NAME ROLES_JSON → the secret
    req POST /v1/tokens -H "$A" -d "{\"name\":\"$1\",\"roles\":$2}" >/dev/null
    json .token
}
R=$(tok reader '["read"]'); W=$(tok writer '["write"]'); P=$(tok promoter '["promote"]')
ADM2=$(tok admin2 '["admin"]')
expect "anonymous read (open reads)" 200 GET /v1/models
expect "anonymous write" 401 POST /v1/models -d '{"name":"anon"}'
expect "bad token" 401 GET /v1/models -H "$(auth nope)"
expect "malformed Authorization" 401 GET /v1/models -H 'Authorization: Basic eDp5'
expect "reader writes" 403 POST /v1/models -H "$(auth "$R")" -d '{"name":"r"}'
expect "writer writes" 201 POST /v1/models -H "$(auth "$W")" -d '{"name":"w-model"}'
expect "writer creates version" 201 POST /v1/models/w-model/versions -H "$(auth "$W")" -d '{}'
expect "writer moves staging" 200 PUT /v1/models/w-model/aliases/staging -H "$(auth "$W")" -d '{"version":1}'
expect "writer moves production" 403 PUT /v1/models/w-model/aliases/production -H "$(auth "$W")" -d '{"version":1}'
expect "promoter moves production" 200 PUT /v1/models/w-model/aliases/production -H "$(auth "$P")" -d '{"version":1}'
expect "promoter writes" 403 POST /v1/models/w-model/versions -H "$(auth "$P")" -d '{}'
expect "promoter rolls back production" 409 POST /v1/models/w-model/aliases/production/rollback -H "$(auth "$P")"
expect "writer lists tokens" 403 GET /v1/tokens -H "$(auth "$W")"
expect "promoter creates token" 403 POST /v1/tokens -H "$(auth "$P")" -d '{"name":"x","roles":["read"]}'
expect "admin lists tokens" 200 GET /v1/tokens -H "$(auth "$ADM2")"
grep -q "$W" "$TMP/body" && fail "token list shows a secret" || ok "token list shows no secrets"
[ "$(sql "SELECT count(*) FROM tokens WHERE hash = encode(sha256('$W'::bytea), 'hex')")" = 1 ] || fail "token stored hashed"
grep -q "$ADMIN\|$W" "$TMP/registry.log" && fail "a secret reached the log" || ok "no secret in the log"
expect "bad roles" 400 POST /v1/tokens -H "$A" -d '{"name":"x","roles":["root"]}'
wid=$(sql "SELECT id FROM tokens WHERE name = 'writer'")
expect "revoke writer" 200 DELETE "/v1/tokens/$wid" -H "$A"
expect "revoked writer" 401 POST /v1/models -H "$(auth "$W")" -d '{"name":"w2"}'
expect "revoke again" 404 DELETE "/v1/tokens/$wid" -H "$A"
expect "whoami" 200 GET /v1/whoami -H "$(auth "$R")"
[ "$(json .name)" = reader ] || fail "whoami name"

# --- hostile input: 4xx, no crash, database unchanged ---
before=$(sql "SELECT (SELECT count(*) FROM models) || '/' || (SELECT count(*) FROM versions) || '/' || (SELECT count(*) FROM events) || '/' || (SELECT count(*) FROM aliases)")
expect "malformed JSON" 400 POST /v1/models -H "$A" -d '{"name": "x",'
expect "JSON not an object" 400 POST /v1/models -H "$A" -d '[1,2]'
expect "empty body" 400 POST /v1/models -H "$A"
expect "duplicate keys" 400 POST /v1/models -H "$A" -d '{"name":"a","name":"b"}'
expect "SQL injection in name" 400 POST /v1/models -H "$A" -d "{\"name\":\"x'); DROP TABLE models; --\"}"
expect "SQL injection in path" 400 GET "/v1/models/x'%3B%20DROP%20TABLE%20models%3B--"
expect "SQL injection in filter" 400 GET "/v1/models/mnist/versions?status=x'%20OR%20'1'='1"
expect "SQL injection in tag filter" 200 GET "/v1/models/mnist/versions?tag=x'%20OR%201=1--"
[ "$(json '.versions | length')" = 0 ] || fail "injection in a tag matched rows"
expect "SQL injection in reason" 409 PUT /v1/models/mnist/aliases/production -H "$A" -d "{\"version\":2,\"expected_version\":7,\"reason\":\"'; DELETE FROM events; --\"}"
expect "SQL injection in page token" 400 GET "/v1/models?page_token=a&limit=1%3BDROP"
printf '{"name":"bad\xff\xfeutf8"}' >"$TMP/bad.json"
expect "bad UTF-8 body" 400 POST /v1/models -H "$A" --data-binary @"$TMP/bad.json"
expect "bad UTF-8 in path" 400 GET /v1/models/%ff%fe/versions
expect "bad UTF-8 in query" 400 GET '/v1/models/mnist/versions?tag=%ff%fe'
expect "dot-dot in path" 404 GET /v1/models/..%2F..%2Fetc%2Fpasswd
expect "dot-dot name" 400 POST /v1/models -H "$A" -d '{"name":"a..b"}'
expect "slash name" 400 POST /v1/models -H "$A" -d '{"name":"a/b"}'
expect "NUL escape in string" 400 POST /v1/models -H "$A" -d '{"name":"a\u0000b"}'
expect "long name" 400 POST /v1/models -H "$A" -d "{\"name\":\"$(head -c 300 /dev/zero | tr '\0' a)\"}"
expect "huge version number" 400 GET /v1/models/mnist/versions/99999999999999999999
head -c $((2 * 1024 * 1024)) /dev/zero | tr '\0' ' ' >"$TMP/huge.json"
expect "huge body" 413 POST /v1/models -H "$A" --data-binary @"$TMP/huge.json"
expect "deep nesting" 400 POST /v1/models/mnist/versions -H "$A" -d "{\"lineage\":$(printf '[%.0s' $(seq 1 3000))}"
after=$(sql "SELECT (SELECT count(*) FROM models) || '/' || (SELECT count(*) FROM versions) || '/' || (SELECT count(*) FROM events) || '/' || (SELECT count(*) FROM aliases)")
[ "$before" = "$after" ] && ok "database unchanged by hostile input ($after)" || fail "hostile input changed the database: $before -> $after"
expect "still alive" 200 GET /healthz

# --- kilnctl ---
export KILN_REGISTRY_TOKEN=$ADMIN
"$KILNCTL" --help | grep -q 'exit codes' || fail "kilnctl --help"
"$KILNCTL" models | grep -q mnist || fail "kilnctl models"
"$KILNCTL" versions mnist | grep -q 'v2 .*evaluated\|v2 .*promoted' || fail "kilnctl versions"
[ "$("$KILNCTL" --json show mnist 2 | jq -r .status)" = promoted ] || fail "kilnctl show --json"
"$KILNCTL" deploy mnist | grep -q 'production -> version 1' || fail "kilnctl deploy"
"$KILNCTL" promote mnist 2 --expect 1 --reason "re-promote" | grep -q 'version 1 -> 2' || fail "kilnctl promote"
set +e
"$KILNCTL" promote mnist 1 --expect 1 >/dev/null 2>&1; rc=$?
[ $rc = 3 ] || fail "kilnctl conflict exit code 3 (got $rc)"
"$KILNCTL" show mnist 77 >/dev/null 2>&1; rc=$?
[ $rc = 2 ] || fail "kilnctl not-found exit code 2 (got $rc)"
KILN_REGISTRY_TOKEN=$R "$KILNCTL" promote mnist 1 >/dev/null 2>&1; rc=$?
[ $rc = 4 ] || fail "kilnctl auth exit code 4 (got $rc)"
"$KILNCTL" frobnicate >/dev/null 2>&1; rc=$?
[ $rc = 1 ] || fail "kilnctl usage exit code 1 (got $rc)"
"$KILNCTL" --registry http://127.0.0.1:1 models >/dev/null 2>&1; rc=$?
[ $rc = 5 ] || fail "kilnctl network exit code 5 (got $rc)"
set -e
"$KILNCTL" rollback mnist | grep -q 'version 2 -> 1' || fail "kilnctl rollback"
"$KILNCTL" events mnist | grep -q 'version.rolled_back' || fail "kilnctl events"
head -c 4096 /dev/urandom >"$TMP/model.bin"
"$KILNCTL" register mnist --file "$TMP/model.bin" --key cli-1 | grep -q 'version 4 registered' || fail "kilnctl register"
"$KILNCTL" download mnist 4 -o "$TMP/got.bin" | grep -q verified || fail "kilnctl download"
cmp -s "$TMP/model.bin" "$TMP/got.bin" || fail "downloaded bytes differ"
"$KILNCTL" reject mnist 4 --reason "cli says no" | grep -q 'version 4 rejected' || fail "kilnctl reject"
[ "$(sql "SELECT status FROM versions v JOIN models m ON m.id = v.model_id WHERE m.name = 'mnist' AND version = 4")" = rejected ] || fail "rejected by kilnctl"
"$KILNCTL" token create ci --roles read,write | grep -q 'kn_' || fail "kilnctl token create"
"$KILNCTL" --json token list | jq -e '.tokens | length >= 5' >/dev/null || fail "kilnctl token list"
ok "kilnctl"

# --- metrics exposition ---
expect "/metrics" 200 GET /metrics
for m in kiln_registry_versions_created_total kiln_registry_promotions_total kiln_registry_rejections_total \
    kiln_registry_artifact_bytes_in_total kiln_http_request_duration_seconds_bucket; do
    grep -q "^$m" "$TMP/body" || fail "/metrics lacks $m"
done

# --- SIGTERM: exit 0 ---
kill -TERM "$REG_PID"
if wait "$REG_PID"; then ok "SIGTERM exit 0"; else fail "exit status after SIGTERM"; fi
REG_PID=
grep -q '"stopped"\|stopped' "$TMP/registry.log" || fail "stop logged"
[ "$FAILS" -eq 0 ] || { tail -n 30 "$TMP/registry.log" >&2; exit 1; }
log "all checks passed"
