#!/usr/bin/env bash
# it-registry-lease.sh: the training lease (issue 18, finding 8) and operator
# events (finding 2) at the API level: one holder at a time, epochs that only
# grow, versions refused under a stale epoch (nothing created), release, and
# POST .../events limited to evalset.refrozen with the promote role.
source "$(dirname "${BASH_SOURCE[0]}")/../registry/lib.sh"
start_registry
A=$(auth "$ADMIN")
L=/v1/models/lm/lease

expect "model" 201 POST /v1/models -H "$A" -d '{"name":"lm"}'
expect "A takes the lease" 200 POST $L -H "$A" -d '{"holder":"a","ttl_s":30,"epoch":null}'
[ "$(json .epoch) $(json .acquired)" = "1 true" ] || fail "epoch 1 acquired: $(cat "$TMP/body")"
expect "B is refused while A holds it" 409 POST $L -H "$A" -d '{"holder":"b","ttl_s":30,"epoch":null}'
[ "$(json .error.code)" = lease_held ] && grep -q "'a'" "$TMP/body" || fail "lease_held names a: $(cat "$TMP/body")"
expect "A renews" 200 POST $L -H "$A" -d '{"holder":"a","ttl_s":30,"epoch":1}'
[ "$(json .epoch) $(json .acquired)" = "1 false" ] || fail "renewal keeps epoch 1"
expect "version under epoch 1" 201 POST /v1/models/lm/versions -H "$A" -H 'X-Kiln-Lease-Epoch: 1' -d '{}'
expect "version under a wrong epoch" 409 POST /v1/models/lm/versions -H "$A" -H 'X-Kiln-Lease-Epoch: 7' -d '{}'
[ "$(json .error.code)" = fenced ] || fail "fenced code"
expect "bad epoch header" 400 POST /v1/models/lm/versions -H "$A" -H 'X-Kiln-Lease-Epoch: x' -d '{}'
expect "B cannot release A's lease" 409 DELETE "$L?holder=b&epoch=1" -H "$A"
expect "A releases" 200 DELETE "$L?holder=a&epoch=1" -H "$A"
expect "B takes it over" 200 POST $L -H "$A" -d '{"holder":"b","ttl_s":30,"epoch":null}'
[ "$(json .epoch) $(json .acquired)" = "2 true" ] || fail "epoch 2 acquired: $(cat "$TMP/body")"
expect "A's renewal is fenced" 409 POST $L -H "$A" -d '{"holder":"a","ttl_s":30,"epoch":1}'
[ "$(json .error.code)" = fenced ] || fail "renewal fenced code"
expect "A's version is fenced" 409 POST /v1/models/lm/versions -H "$A" -H 'X-Kiln-Lease-Epoch: 1' -d '{}'
expect "B's version" 201 POST /v1/models/lm/versions -H "$A" -H 'X-Kiln-Lease-Epoch: 2' -d '{}'
[ "$(sql "SELECT string_agg(version::text, ',' ORDER BY version) FROM versions")" = "1,2" ] &&
    ok "fenced calls created nothing" || fail "versions: $(sql "SELECT string_agg(version::text, ',') FROM versions")"
[ "$(sql "SELECT count(*) FROM events WHERE kind = 'lease.acquired'")" = 2 ] || fail "two lease.acquired events"
expect "expired lease is free" 200 POST $L -H "$A" -d '{"holder":"b","ttl_s":1,"epoch":2}'
sleep 1.5
expect "C takes an expired lease" 200 POST $L -H "$A" -d '{"holder":"c","ttl_s":30,"epoch":null}'
[ "$(json .epoch)" = 3 ] || fail "epoch 3"
expect "lease of a missing model" 404 POST /v1/models/nope/lease -H "$A" -d '{"holder":"a","ttl_s":30}'
expect "lease without ttl" 400 POST $L -H "$A" -d '{"holder":"a"}'
expect "lease anonymous" 401 POST $L -d '{"holder":"a","ttl_s":30}'

# operator events
expect "writer token" 201 POST /v1/tokens -H "$A" -d '{"name":"w","roles":["write"]}'
W=$(auth "$(json .token)")
expect "event needs promote" 403 POST /v1/models/lm/events -H "$W" -d '{"kind":"evalset.refrozen","reason":"r"}'
expect "event kind allow-list" 400 POST /v1/models/lm/events -H "$A" -d '{"kind":"version.promoted","reason":"r"}'
expect "event needs a reason" 400 POST /v1/models/lm/events -H "$A" -d '{"kind":"evalset.refrozen"}'
expect "re-freeze recorded" 201 POST /v1/models/lm/events -H "$A" \
    -d '{"kind":"evalset.refrozen","reason":"retention","data":{"dataset":"d"}}'
expect "in the log" 200 GET "/v1/models/lm/events?kind=evalset.refrozen"
[ "$(json '.events[0].reason') $(json '.events[0].data.dataset') $(json '.events[0].actor')" = "retention d bootstrap-admin" ] ||
    fail "event: $(cat "$TMP/body")"
finish
