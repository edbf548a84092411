#!/usr/bin/env bash
# it-registry-cache.sh: alias lookups answered from memory (registry/cache.c)
# never outlive a change. With registry.cache_ms = 60000, so that only the
# invalidation can make a changed alias visible:
#   - repeated lookups are answered from memory (the hit counter moves);
#   - a change by another writer (psql, not through this registry) is seen
#     within 1 s (LISTEN/NOTIFY; measured, typically a few ms);
#   - a move through the API is seen by the very next lookup, 30 rounds;
#   - 100 promotions racing 4 readers: no lookup begun after a promotion was
#     answered shows an older version;
#   - with registry.cache_ms = 0 nothing is kept (no hits).
source "$(dirname "${BASH_SOURCE[0]}")/../registry/lib.sh"
start_registry KILN_REGISTRY_CACHE_MS=60000
A=$(auth "$ADMIN")
expect "create model" 201 POST /v1/models -H "$A" -d '{"name":"cm"}'
for i in 1 2 3; do expect "version $i" 201 POST /v1/models/cm/versions -H "$A" -d '{}'; done
expect "alias to 1" 200 PUT /v1/models/cm/aliases/production -H "$A" -d '{"version":1}'

hits() { curl -sS "$URL/metrics" | awk '/^kiln_registry_cache_hits_total/ {print $2}'; }
alias_version() { curl -sS "$URL/v1/models/cm/aliases/production" | jq -r .version; }

h0=$(hits)
for _ in 1 2 3 4 5; do v=$(alias_version); done
h1=$(hits)
[ "$v" = 1 ] && ok "lookup says 1" || fail "lookup says $v, want 1"
[ "$((${h1:-0} - ${h0:-0}))" -ge 4 ] && ok "answered from memory ($h0 -> $h1 hits)" ||
    fail "not answered from memory ($h0 -> $h1 hits)"

# another writer: the registry hears of it by NOTIFY
sql "UPDATE aliases SET version = 2 WHERE alias = 'production'"
t0=$(date +%s%N) seen=
for _ in $(seq 1 100); do
    [ "$(alias_version)" = 2 ] && { seen=1; break; }
    sleep 0.01
done
ms=$((($(date +%s%N) - t0) / 1000000))
[ -n "$seen" ] && ok "a change by psql seen after ${ms} ms" || fail "a change by psql not seen in ${ms} ms"
sql "UPDATE versions SET description = 'by psql' WHERE version = 2"
for _ in $(seq 1 100); do
    [ "$(curl -sS "$URL/v1/models/cm/aliases/production" | jq -r .description)" = "by psql" ] && break
    sleep 0.01
done
[ "$(curl -sS "$URL/v1/models/cm/aliases/production" | jq -r .description)" = "by psql" ] &&
    ok "a change to the version's row seen" || fail "a change to the version's row not seen"

# our own writes: the next lookup sees them, every time
bad=0
for r in $(seq 1 30); do
    want=$((r % 3 + 1))
    alias_version >/dev/null # make sure something is cached
    code=$(curl -sS -o /dev/null -w '%{http_code}' -X PUT -H "$A" -d '{"version":'"$want"'}' \
        "$URL/v1/models/cm/aliases/production")
    got=$(alias_version)
    [ "$code" = 200 ] && [ "$got" = "$want" ] || { bad=$((bad + 1)); log "round $r: PUT $code, then lookup $got, want $want"; }
done
[ "$bad" = 0 ] && ok "30 moves through the API, each seen by the next lookup" || fail "$bad of 30 moves not seen at once"

# racing: 100 promotions (v4..v103, each after the last) while 4 readers look
# the alias up as fast as they can; a lookup that began after a promotion was
# answered must show that version or a later one (never an older one), and
# every answer is a version production was at some moment
for i in $(seq 4 103); do req POST /v1/models/cm/versions -H "$A" -d '{}' >/dev/null; done
expect "production to 3" 200 PUT /v1/models/cm/aliases/production -H "$A" -d '{"version":3}'
out=$(python3 - "$URL" "$ADMIN" <<'PY'
import json, sys, threading, time, urllib.request
url, admin = sys.argv[1], sys.argv[2]
acked = []  # (time the PUT's answer arrived, version)
reads = []  # (start, version)
stop = False
def get():
    with urllib.request.urlopen(url + "/v1/models/cm/aliases/production") as r:
        return json.load(r)["version"]
def reader():
    while not stop:
        t = time.monotonic()
        reads.append((t, get()))
th = [threading.Thread(target=reader) for _ in range(4)]
for t in th: t.start()
for v in range(4, 104):
    req = urllib.request.Request(url + "/v1/models/cm/aliases/production", method="PUT",
                                 data=json.dumps({"version": v, "expected_version": v - 1}).encode(),
                                 headers={"Authorization": "Bearer " + admin})
    urllib.request.urlopen(req).read()
    acked.append((time.monotonic(), v))
    time.sleep(0.01)
stop = True
for t in th: t.join()
stale = 0
for start, v in reads:
    floor = max([av for at, av in acked if at < start], default=3)
    if v < floor or v < 3 or v > 103: stale += 1
print(len(reads), stale)
PY
)
n=${out% *} stale=${out#* }
[ "$stale" = 0 ] && ok "100 racing promotions, $n lookups: none older than the last answered promotion" ||
    fail "$stale of $n lookups showed a version older than an answered promotion"
[ "$(alias_version)" = 103 ] && ok "production ends at v103" || fail "production ends at $(alias_version)"
finish

# cache off: nothing from memory
kill "$REG_PID"; wait "$REG_PID" 2>/dev/null || true
start_registry KILN_REGISTRY_CACHE_MS=0
for _ in 1 2 3; do alias_version >/dev/null; done
[ "$(hits)" = "" ] && ok "cache_ms = 0: no reads from memory (no cache metrics)" || fail "cache_ms = 0 but $(hits) hits"
finish
