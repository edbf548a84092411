#!/usr/bin/env bash
# it-registry-artifacts.sh: artifact upload and download: digest checks (a
# wrong digest is refused and leaves no large object behind), immutability,
# content-addressed dedup, ETag / If-None-Match / Range, the size limit, and
# a 200 MB artifact streamed both ways while the registry's peak RSS
# (VmHWM) stays well below the artifact's size.
source "$(dirname "${BASH_SOURCE[0]}")/../registry/lib.sh"
start_registry
A=$(auth "$ADMIN")
los() { psql "$PG_CONNINFO" -XAtq -c "SELECT count(*) FROM pg_largeobject_metadata"; }

expect "model" 201 POST /v1/models -H "$A" -d '{"name":"art"}'
for i in 1 2 3; do expect "version $i" 201 POST /v1/models/art/versions -H "$A" -d '{}'; done
head -c 100000 /dev/urandom >"$TMP/a.bin"
sha=$(sha256sum "$TMP/a.bin" | cut -d' ' -f1)
bad=$(printf 'x' | sha256sum | cut -d' ' -f1)

lo0=$(los)
expect "wrong digest" 422 PUT /v1/models/art/versions/1/artifact -H "$A" -H "X-Kiln-Sha256: $bad" --data-binary @"$TMP/a.bin"
[ "$(los)" = "$lo0" ] && ok "no large object left behind" || fail "large objects $lo0 -> $(los)"
[ "$(sql "SELECT count(*) FROM artifacts")" = 0 ] || fail "artifact row after a mismatch"
[ "$(sql "SELECT artifact_sha256 IS NULL FROM versions WHERE version = 1")" = t ] || fail "version linked after a mismatch"
expect "no digest" 400 PUT /v1/models/art/versions/1/artifact -H "$A" --data-binary @"$TMP/a.bin"
expect "malformed digest" 400 PUT /v1/models/art/versions/1/artifact -H "$A" -H "X-Kiln-Sha256: xyz" --data-binary @"$TMP/a.bin"
expect "anonymous upload" 401 PUT /v1/models/art/versions/1/artifact -H "X-Kiln-Sha256: $sha" --data-binary @"$TMP/a.bin"
expect "upload to missing version" 404 PUT /v1/models/art/versions/9/artifact -H "$A" -H "X-Kiln-Sha256: $sha" --data-binary @"$TMP/a.bin"
expect "download before upload" 404 GET /v1/models/art/versions/1/artifact
[ "$(json .error.code)" = no_artifact ] || fail "no_artifact code"
expect "upload" 201 PUT "/v1/models/art/versions/1/artifact?sha256=$sha" -H "$A" --data-binary @"$TMP/a.bin"
[ "$(json .artifact.sha256)" = "$sha" ] && [ "$(json .artifact.size)" = 100000 ] || fail "artifact in the document"
expect "same upload again" 200 PUT /v1/models/art/versions/1/artifact -H "$A" -H "X-Kiln-Sha256: $sha" --data-binary @"$TMP/a.bin"
head -c 10 /dev/urandom >"$TMP/b.bin"
shb=$(sha256sum "$TMP/b.bin" | cut -d' ' -f1)
expect "replace artifact" 409 PUT /v1/models/art/versions/1/artifact -H "$A" -H "X-Kiln-Sha256: $shb" --data-binary @"$TMP/b.bin"
lo1=$(los)
expect "same bytes, other version (dedup)" 201 PUT /v1/models/art/versions/2/artifact -H "$A" -H "X-Kiln-Sha256: $sha" --data-binary @"$TMP/a.bin"
[ "$(los)" = "$lo1" ] && [ "$(sql "SELECT count(*) FROM artifacts")" = 1 ] && ok "stored once" || fail "dedup"
: >"$TMP/empty.bin"
she=$(sha256sum "$TMP/empty.bin" | cut -d' ' -f1)
expect "empty artifact" 201 PUT /v1/models/art/versions/3/artifact -H "$A" -H "X-Kiln-Sha256: $she" --data-binary @"$TMP/empty.bin"
expect "empty download" 200 GET /v1/models/art/versions/3/artifact
[ ! -s "$TMP/body" ] || fail "empty body"

# download: bytes, ETag, If-None-Match, Range
curl -sS -D "$TMP/h" -o "$TMP/got.bin" "$URL/v1/models/art/versions/1/artifact"
cmp -s "$TMP/a.bin" "$TMP/got.bin" && ok "download bytes" || fail "download bytes differ"
grep -qi "^etag: \"$sha\"" "$TMP/h" || fail "ETag"
expect "If-None-Match" 304 GET /v1/models/art/versions/1/artifact -H "If-None-Match: \"$sha\""
expect "range" 206 GET /v1/models/art/versions/1/artifact -H 'Range: bytes=10-19'
cmp -s <(head -c 20 "$TMP/a.bin" | tail -c 10) "$TMP/body" && ok "range bytes" || fail "range bytes"
expect "suffix range" 206 GET /v1/models/art/versions/1/artifact -H 'Range: bytes=-5'
cmp -s <(tail -c 5 "$TMP/a.bin") "$TMP/body" || fail "suffix range bytes"
expect "range past the end" 416 GET /v1/models/art/versions/1/artifact -H 'Range: bytes=100000-'
expect "open range across windows" 206 GET /v1/models/art/versions/1/artifact -H 'Range: bytes=99990-'
[ "$(stat -c %s "$TMP/body")" = 10 ] || fail "open range size"

# 200 MB: streamed in, streamed out, flat memory.
expect "big version" 201 POST /v1/models/art/versions -H "$A" -d '{}'
head -c $((200 * 1024 * 1024)) /dev/urandom >"$TMP/big.bin"
shbig=$(sha256sum "$TMP/big.bin" | cut -d' ' -f1)
t0=$(date +%s.%N)
expect "200 MB upload" 201 PUT /v1/models/art/versions/4/artifact -H "$A" -H "X-Kiln-Sha256: $shbig" -T "$TMP/big.bin"
t1=$(date +%s.%N)
got=$(curl -sS "$URL/v1/models/art/versions/4/artifact" | sha256sum | cut -d' ' -f1)
t2=$(date +%s.%N)
[ "$got" = "$shbig" ] && ok "200 MB download verified" || fail "200 MB download digest"
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$REG_PID/status")
log "200 MB: upload $(echo "$t1 - $t0" | bc) s, download $(echo "$t2 - $t1" | bc) s, registry VmHWM ${hwm} kB"
if ldd "$REGISTRY_BIN" | grep -q libasan; then # ASan's shadow and quarantine count too
    log "peak RSS ${hwm} kB: not checked in a sanitizer build"
else
    [ "$hwm" -lt $((64 * 1024)) ] && ok "peak RSS ${hwm} kB < 64 MiB" || fail "peak RSS ${hwm} kB"
fi
rm -f "$TMP/big.bin"

# size limit: a registry with a 1 MiB limit.
kill "$REG_PID"; wait "$REG_PID" || true
start_registry KILN_REGISTRY_MAX_ARTIFACT_BYTES=1m
A=$(auth "$ADMIN")
expect "version 5" 201 POST /v1/models/art/versions -H "$A" -d '{}'
head -c $((3 * 1024 * 1024)) /dev/urandom >"$TMP/c.bin"
shc=$(sha256sum "$TMP/c.bin" | cut -d' ' -f1)
lo2=$(los)
expect "over the size limit" 413 PUT /v1/models/art/versions/5/artifact -H "$A" -H "X-Kiln-Sha256: $shc" --data-binary @"$TMP/c.bin"
# chunked (no Content-Length): the limit is enforced while streaming.
expect "over the limit, chunked" 413 PUT /v1/models/art/versions/5/artifact -H "$A" -H "X-Kiln-Sha256: $shc" \
    -H 'Transfer-Encoding: chunked' --data-binary @"$TMP/c.bin"
[ "$(los)" = "$lo2" ] && ok "nothing left after 413" || fail "large objects after 413"
finish
