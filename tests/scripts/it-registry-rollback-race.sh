#!/usr/bin/env bash
# it-registry-rollback-race.sh: a rollback of `production` racing an archive
# of the version it rolls back to, many rounds. Exactly one of the two wins
# each round and production never points at an archived version (issue 18,
# finding 6: rollback read the target's status without its row lock).
# A trigger in the test schema holds every archive open for a moment after
# its alias check, so the interleaving that broke the invariant is hit every
# round rather than by luck.
source "$(dirname "${BASH_SOURCE[0]}")/../registry/lib.sh"
start_registry
A=$(auth "$ADMIN")
ROUNDS=${ROUNDS:-20}

expect "create model" 201 POST /v1/models -H "$A" -d '{"name":"rb"}'
sql "CREATE FUNCTION slow_archive() RETURNS trigger LANGUAGE plpgsql AS \$\$
     BEGIN IF NEW.status = 'archived' THEN PERFORM pg_sleep(0.2); END IF; RETURN NEW; END \$\$;
     CREATE TRIGGER slow_archive BEFORE UPDATE ON versions
     FOR EACH ROW EXECUTE FUNCTION slow_archive()"

bad=0
for r in $(seq 1 "$ROUNDS"); do
    a=$((2 * r - 1)) b=$((2 * r))
    req POST /v1/models/rb/versions -H "$A" -d '{}' >/dev/null
    req POST /v1/models/rb/versions -H "$A" -d '{}' >/dev/null
    prev=$(sql "SELECT version FROM aliases WHERE alias = 'production'")
    exp=${prev:-null}
    req PUT /v1/models/rb/aliases/production -H "$A" -d '{"version":'"$a"',"expected_version":'"$exp"'}' >/dev/null
    req PUT /v1/models/rb/aliases/production -H "$A" -d '{"version":'"$b"',"expected_version":'"$a"'}' >/dev/null
    [ "$(sql "SELECT version FROM aliases WHERE alias = 'production'")" = "$b" ] || { fail "round $r: setup"; continue; }
    # Odd rounds: the archive starts first (the rollback arrives while it
    # sleeps); even rounds: the rollback starts first.
    if ((r % 2)); then first="archive" d1=0 d2=0.05; else first="rollback" d1=0.05 d2=0; fi
    (sleep $d1; curl -sS -o /dev/null -w '%{http_code}' -X POST -H "$A" \
        -d '{"status":"archived","reason":"race"}' "$URL/v1/models/rb/versions/$a/status") >"$TMP/arch" &
    p1=$!
    (sleep $d2; curl -sS -o /dev/null -w '%{http_code}' -X POST -H "$A" \
        -d '{"reason":"race"}' "$URL/v1/models/rb/aliases/production/rollback") >"$TMP/roll" &
    p2=$!
    wait $p1 $p2
    got=$(sql "SELECT a.version || ' ' || v.status FROM aliases a JOIN versions v
               ON v.model_id = a.model_id AND v.version = a.version WHERE a.alias = 'production'")
    codes="archive=$(cat "$TMP/arch") rollback=$(cat "$TMP/roll")"
    if [ "${got#* }" = archived ]; then
        fail "round $r ($first first): production points at archived version ${got% *} ($codes)"
        bad=$((bad + 1))
    elif [ "$(sort <<<"$(cat "$TMP/arch"; echo; cat "$TMP/roll")" | tr -d '\n')" != "200409" ]; then
        fail "round $r ($first first): want one 200 and one 409, got $codes"
    fi
    # Leave production on b (the newest) for the next round if it rolled back.
    if [ "${got% *}" = "$a" ] && [ "${got#* }" != archived ]; then
        req PUT /v1/models/rb/aliases/production -H "$A" -d '{"version":'"$b"',"expected_version":'"$a"'}' >/dev/null
    fi
done
[ "$bad" = 0 ] && ok "$ROUNDS rounds: production never points at an archived version"
n=$(sql "SELECT count(*) FROM aliases a JOIN versions v ON v.model_id = a.model_id
         AND v.version = a.version WHERE v.status = 'archived'")
[ "$n" = 0 ] && ok "no alias points at an archived version" || fail "$n alias(es) on archived versions"
finish
