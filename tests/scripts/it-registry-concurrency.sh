#!/usr/bin/env bash
# it-registry-concurrency.sh: 16 clients creating versions of one model at
# once get 1..N with no gap or duplicate; 16 clients racing to move
# `production` with the same expected version: exactly one wins, the rest get
# 409, and the event log holds exactly one promotion.
source "$(dirname "${BASH_SOURCE[0]}")/../registry/lib.sh"
start_registry
A=$(auth "$ADMIN")
N=16
pids=()
ROUNDS=4

expect "create model" 201 POST /v1/models -H "$A" -d '{"name":"race"}'

# 16 concurrent creators, 4 rounds each (64 versions), half with retried keys.
for c in $(seq 1 $N); do
    (
        for r in $(seq 1 $ROUNDS); do
            curl -sS -o /dev/null -w '%{http_code}\n' -X POST -H "$A" -H "Idempotency-Key: c$c-r$r" \
                -d '{"lineage":{"client":'"$c"'}}' "$URL/v1/models/race/versions"
            if ((c % 2 == 0)); then # a retry of the same request must not make a second version
                curl -sS -o /dev/null -w '%{http_code}\n' -X POST -H "$A" -H "Idempotency-Key: c$c-r$r" \
                    -d '{"lineage":{"client":'"$c"'}}' "$URL/v1/models/race/versions"
            fi
        done
    ) >"$TMP/create-$c.out" &
    pids+=($!)
done
wait "${pids[@]}"; pids=()
total=$((N * ROUNDS))
created=$(cat "$TMP"/create-*.out | grep -c '^201$' || true)
replayed=$(cat "$TMP"/create-*.out | grep -c '^200$' || true)
[ "$created" = "$total" ] || fail "created $created of $total"
[ "$replayed" = $((total / 2)) ] || fail "replayed $replayed, want $((total / 2))"
got=$(sql "SELECT count(*) || ' ' || count(DISTINCT version) || ' ' || min(version) || ' ' || max(version) FROM versions")
[ "$got" = "$total $total 1 $total" ] && ok "versions 1..$total, no gap, no duplicate" || fail "versions: $got"
[ "$(sql "SELECT next_version FROM models WHERE name = 'race'")" = $((total + 1)) ] || fail "next_version"

# production at v1, then 16 racers all expecting 1, each moving to its own version.
expect "production v1" 200 PUT /v1/models/race/aliases/production -H "$A" -d '{"version":1,"expected_version":null}'
for c in $(seq 1 $N); do
    curl -sS -o /dev/null -w '%{http_code}\n' -X PUT -H "$A" \
        -d '{"version":'"$((c + 1))"',"expected_version":1,"reason":"racer '"$c"'"}' \
        "$URL/v1/models/race/aliases/production" >"$TMP/move-$c.out" &
    pids+=($!)
done
wait "${pids[@]}"; pids=()
wins=$(cat "$TMP"/move-*.out | grep -c '^200$' || true)
losses=$(cat "$TMP"/move-*.out | grep -c '^409$' || true)
[ "$wins" = 1 ] && [ "$losses" = $((N - 1)) ] && ok "one winner, $losses conflicts" || fail "wins=$wins losses=$losses"
promos=$(sql "SELECT count(*) FROM events WHERE kind = 'version.promoted' AND data->>'from' = '1'")
[ "$promos" = 1 ] && ok "exactly one promotion event from v1" || fail "promotion events from v1: $promos"
winner=$(sql "SELECT version FROM aliases WHERE alias = 'production'")
[ "$(sql "SELECT (data->>'to') FROM events WHERE kind = 'version.promoted' AND data->>'from' = '1'")" = "$winner" ] ||
    fail "the event names the winner"

# Racing creations of a new alias (expected: absent): one wins.
for c in $(seq 1 $N); do
    curl -sS -o /dev/null -w '%{http_code}\n' -X PUT -H "$A" \
        -d '{"version":'"$c"',"expected_version":null}' "$URL/v1/models/race/aliases/canary" >"$TMP/new-$c.out" &
    pids+=($!)
done
wait "${pids[@]}"; pids=()
wins=$(cat "$TMP"/new-*.out | grep -c '^200$' || true)
[ "$wins" = 1 ] && ok "one creator of a new alias" || fail "new alias winners: $wins ($(cat "$TMP"/new-*.out | sort | uniq -c | tr '\n' ' '))"
finish
