#!/usr/bin/env bash
# it-registry-slow-upload.sh: slow artifact uploads cannot starve the
# registry (issue 18, finding 4). More clients than the pool has connections
# trickle their bodies a byte at a time while normal calls keep answering 2xx
# well under the pool wait (5 s); the slow uploads are cut with 408 upload_too_slow (below
# registry.upload_min_bytes_per_s after the grace, or past
# registry.upload_timeout_s); nothing is attached or left in the database;
# the versions take a normal upload afterwards. A row lock held elsewhere
# makes a call answer within lock_timeout instead of waiting for it.
source "$(dirname "${BASH_SOURCE[0]}")/../registry/lib.sh"
POOL=4
SLOW=$((POOL + 2))
start_registry KILN_REGISTRY_POOL_SIZE=$POOL KILN_REGISTRY_TIMEOUT_S=3 \
    KILN_REGISTRY_UPLOAD_MIN_BYTES_PER_S=100 KILN_REGISTRY_UPLOAD_TIMEOUT_S=8 \
    KILN_REGISTRY_LOCK_TIMEOUT_MS=1000
A=$(auth "$ADMIN")
TRICKLE="python3 $(dirname "${BASH_SOURCE[0]}")/../registry/trickle.py"
los() { psql "$PG_CONNINFO" -XAtq -c "SELECT count(*) FROM pg_largeobject_metadata"; }
now() { date +%s.%N; }

expect "model" 201 POST /v1/models -H "$A" -d '{"name":"slow"}'
for i in $(seq 1 $((SLOW + 1))); do req POST /v1/models/slow/versions -H "$A" -d '{}' >/dev/null; done
[ "$(sql "SELECT count(*) FROM versions")" = $((SLOW + 1)) ] || fail "versions"
LEN=600
SHA=$(head -c $LEN /dev/zero | tr '\0' x | sha256sum | cut -d' ' -f1)
lo0=$(los)

# SLOW clients at ~10 bytes/s (under the 100 bytes/s minimum): cut after the
# 3 s grace. One more at ~200 bytes/s (above the minimum) with a body that
# would take 30 s: cut at the 8 s deadline.
pids=()
for i in $(seq 1 $SLOW); do
    $TRICKLE "$URL/v1/models/slow/versions/$i/artifact" "$ADMIN" "$SHA" $LEN 0.1 >"$TMP/slow-$i.out" 2>&1 &
    pids+=($!)
done
LEN2=6000
SHA2=$(head -c $LEN2 /dev/zero | tr '\0' x | sha256sum | cut -d' ' -f1)
$TRICKLE "$URL/v1/models/slow/versions/$((SLOW + 1))/artifact" "$ADMIN" "$SHA2" $LEN2 0.005 \
    >"$TMP/deadline.out" 2>&1 &
pids+=($!)

# Normal traffic beside them, for 10 s.
sleep 0.5
slowest=0 bad=0 n=0
end=$(($(date +%s) + 10))
while [ "$(date +%s)" -lt "$end" ]; do
    for call in "GET /v1/models" "GET /v1/models/slow/versions" "POST /v1/models/slow/tags"; do
        t0=$(now)
        if [ "$call" = "POST /v1/models/slow/tags" ]; then
            got=$(req POST /v1/models/slow/versions/1/tags -H "$A" -d '{"tags":{"probe":"'"$n"'"}}')
        else
            got=$(req ${call%% *} "${call#* }")
        fi
        dt=$(echo "$(now) - $t0" | bc)
        n=$((n + 1))
        case ${got%% *} in 2??) ;; *) bad=$((bad + 1)); log "during slow uploads: $call -> ${got:0:160}" ;; esac
        (($(echo "$dt > $slowest" | bc))) && slowest=$dt
    done
    sleep 0.2
done
[ "$bad" = 0 ] && ok "$n normal calls beside $((SLOW + 1)) slow uploads (pool $POOL) all 2xx" ||
    fail "$bad of $n normal calls failed beside the slow uploads"
(($(echo "$slowest < 2.5" | bc))) && ok "slowest normal call ${slowest} s" || fail "slowest normal call ${slowest} s (want < 2.5 s; the pool wait is 5 s)"

wait "${pids[@]}" || true
for i in $(seq 1 $SLOW); do
    out=$(cat "$TMP/slow-$i.out")
    secs=$(cut -d' ' -f2 <<<"$out")
    if [ "${out%% *}" = 408 ] && grep -q upload_too_slow <<<"$out" && grep -q 'under the minimum' <<<"$out" &&
        (($(echo "$secs < 8" | bc))); then
        ok "slow client $i cut: ${out:0:200}"
    else
        fail "slow client $i: want 408 upload_too_slow (minimum rate) within 8 s, got: ${out:0:300}"
    fi
done
out=$(cat "$TMP/deadline.out")
secs=$(cut -d' ' -f2 <<<"$out")
if [ "${out%% *}" = 408 ] && grep -q 'upload_timeout_s' <<<"$out" && (($(echo "$secs < 15" | bc))); then
    ok "deadline client cut: ${out:0:200}"
else
    fail "deadline client: want 408 naming upload_timeout_s within 15 s, got: ${out:0:300}"
fi
grep -q '^kiln_registry_uploads_cut_total [1-9]' <(curl -sS "$URL/metrics") && ok "cuts counted" ||
    fail "kiln_registry_uploads_cut_total"

# Nothing half-attached: no artifact rows, no link, no event, no new large
# object, no transaction left open, and the versions take a normal upload.
[ "$(sql "SELECT count(*) FROM artifacts")" = 0 ] || fail "artifact rows after cut uploads"
[ "$(sql "SELECT count(*) FROM versions WHERE artifact_sha256 IS NOT NULL")" = 0 ] || fail "versions linked after cut uploads"
[ "$(sql "SELECT count(*) FROM events WHERE kind = 'artifact.uploaded'")" = 0 ] || fail "upload events after cut uploads"
[ "$(los)" = "$lo0" ] && ok "no large object left behind" || fail "large objects $lo0 -> $(los)"
head -c $LEN /dev/zero | tr '\0' x >"$TMP/x.bin"
expect "normal upload after the cuts" 201 PUT /v1/models/slow/versions/1/artifact -H "$A" -H "X-Kiln-Sha256: $SHA" --data-binary @"$TMP/x.bin"

# A row lock held elsewhere: the call answers after lock_timeout (1 s), not
# when the other transaction ends (6 s).
psql "$PG_CONNINFO options=-csearch_path=$SCHEMA" -XAtq -c "BEGIN" \
    -c "SELECT 1 FROM versions WHERE version = 2 FOR UPDATE" -c "SELECT pg_sleep(6)" -c "COMMIT" >/dev/null &
lockpid=$!
# the lock is taken once that session sleeps (its statements run in order)
locked=0
for _ in $(seq 1 100); do
    [ "$(sql "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query = 'SELECT pg_sleep(6)'")" = 1 ] &&
        locked=1 && break
    sleep 0.1
done
[ "$locked" = 1 ] || fail "the locking session did not get to its pg_sleep within 10 s"
t0=$(now)
got=$(req POST /v1/models/slow/versions/2/status -H "$A" -d '{"status":"evaluated"}')
dt=$(echo "$(now) - $t0" | bc)
if (($(echo "$dt < 3" | bc))) && [ "${got%% *}" != 200 ]; then
    ok "locked row: answered ${got%% *} in ${dt} s"
else
    fail "locked row: want an error within 3 s, got ${got:0:160} after ${dt} s"
fi
wait $lockpid || true
finish
