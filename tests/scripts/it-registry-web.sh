#!/usr/bin/env bash
# it-registry-web.sh: loads the registry's web page in headless Chromium
# (Debian's chromium, installed with apt-get when missing) and checks that
# the versions, statuses and aliases it shows are the ones in the database,
# that the metric chart has a point per version with that metric, and that
# it shows which version each kiln-serve instance reported it serves.
source "$(dirname "${BASH_SOURCE[0]}")/../registry/lib.sh"
CHROMIUM=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$CHROMIUM" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing chromium with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >"$TMP/apt.log" 2>&1 ||
        { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >"$TMP/apt.log" 2>&1; } || true
    CHROMIUM=$(command -v chromium || true)
fi
[ -n "$CHROMIUM" ] || { log "FAIL: chromium is not installed and could not be installed"; exit 1; }

start_registry
A=$(auth "$ADMIN")
expect "model" 201 POST /v1/models -H "$A" -d '{"name":"web","task":"lm"}'
expect "other model" 201 POST /v1/models -H "$A" -d '{"name":"other"}'
for i in 1 2 3 4 5; do
    expect "v$i" 201 POST /v1/models/web/versions -H "$A" -d '{}'
    expect "metric v$i" 201 POST /v1/models/web/versions/$i/metrics -H "$A" -d "{\"name\":\"accuracy\",\"value\":0.8$i}"
done
expect "promote 3" 200 PUT /v1/models/web/aliases/production -H "$A" -d '{"version":3,"reason":"good"}'
expect "promote 5" 200 PUT /v1/models/web/aliases/production -H "$A" -d '{"version":5,"expected_version":3}'
expect "staging 4" 200 PUT /v1/models/web/aliases/staging -H "$A" -d '{"version":4}'
expect "reject 2" 200 POST /v1/models/web/versions/2/reject -H "$A" -d '{"reason":"worse"}'

# what kiln-serve instances report (serve/follow.c does this every 5 s)
expect "serving report a" 200 PUT /v1/serving/host-a:8085 -d '{"url":"http://host-a:8085","models":[{"name":"web","alias":"production","version":5,"status":"serving","since":"2026-11-30T20:00:00Z"}]}'
expect "serving report b" 200 PUT /v1/serving/host-b:8085 -d '{"url":"http://host-b:8085","models":[{"name":"web","alias":"production","version":3,"status":"serving"},{"name":"other","alias":"production","version":null,"status":"not_served"}]}'
expect "serving report, bad id" 400 PUT '/v1/serving/bad%20id' -d '{"models":[]}'
expect "serving report, bad models" 400 PUT /v1/serving/host-c -d '{"models":{}}'
expect "serving list" 200 GET /v1/serving
[ "$(json '[.instances[].instance] | join(" ")')" = "host-a:8085 host-b:8085" ] && ok "both instances listed" ||
    fail "instances listed: $(json '[.instances[].instance] | join(" ")')"

profile=$(mktemp -d)
timeout 60 "$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-dev-shm-usage \
    --disable-background-networking --disable-component-update --disable-sync --no-first-run \
    --user-data-dir="$profile" --virtual-time-budget=10000 --dump-dom "$URL/?model=web" \
    >"$TMP/dom.html" 2>"$TMP/chromium.log" || { tail -n 20 "$TMP/chromium.log" >&2; fail "chromium failed"; }
rm -rf "$profile"
grep -q 'data-loaded="true"' "$TMP/dom.html" && ok "page loaded its data" ||
    fail "page did not load: $(grep -o 'id="error">[^<]*' "$TMP/dom.html")"

shown=$(grep -o 'data-version="[0-9]*" data-status="[a-z]*"' "$TMP/dom.html" |
    sed 's/data-version="\([0-9]*\)" data-status="\([a-z]*\)"/\1:\2/' | sort -n | tr '\n' ' ')
indb=$(sql "SELECT string_agg(version || ':' || status, ' ' ORDER BY version) FROM versions v JOIN models m ON m.id = v.model_id WHERE m.name = 'web'")
[ "$shown" = "$indb " ] && ok "versions shown = database ($indb)" || fail "versions shown '$shown' vs database '$indb'"

shown=$(grep -o 'data-alias="[a-z]*" data-alias-version="[0-9]*"' "$TMP/dom.html" |
    sed 's/data-alias="\([a-z]*\)" data-alias-version="\([0-9]*\)"/\1=\2/' | sort | tr '\n' ' ')
indb=$(sql "SELECT string_agg(alias || '=' || version, ' ' ORDER BY alias) FROM aliases a JOIN models m ON m.id = a.model_id WHERE m.name = 'web'")
[ "$shown" = "$indb " ] && ok "aliases shown = database ($indb)" || fail "aliases shown '$shown' vs database '$indb'"

shown=$(grep -o 'data-instance="[a-z:0-9-]*" data-serving-version="[0-9]*"' "$TMP/dom.html" |
    sed 's/data-instance="\([^"]*\)" data-serving-version="\([0-9]*\)"/\1=\2/' | sort | tr '\n' ' ')
[ "$shown" = "host-a:8085=5 host-b:8085=3 " ] && ok "serving instances shown: $shown" ||
    fail "serving instances shown '$shown', want 'host-a:8085=5 host-b:8085=3 '"

points=$(grep -o '<circle[^>]*data-version' "$TMP/dom.html" | wc -l)
[ "$points" = 5 ] && ok "chart has 5 points" || fail "chart points: $points"
grep -q 'data-model="other"' "$TMP/dom.html" || fail "model list"
[ "$(grep -o 'data-event="version.promoted"' "$TMP/dom.html" | wc -l)" = 2 ] || fail "promotion history rows"
grep -q 'data-event="version.rejected"' "$TMP/dom.html" || fail "rejection in history"
finish
