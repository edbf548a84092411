#!/usr/bin/env bash
# it-registry-disk-full.sh: the registry's artifact store on a full disk
# (issue 14, hostile neighbours). The registry stages uploads in
# registry.staging_dir, here a 4 MiB tmpfs the test mounts (root; without
# the right to mount, an equivalent: a file-size limit on the registry,
# `ulimit -f`, which fails its writes the same way). With the disk full:
#   - an upload is refused with 507 insufficient_storage and a message that
#     says why; nothing is stored (no artifact row, the version unlinked);
#   - the registry stays up: /readyz 200, reads and other writes answer;
# then space returns (the filler removed) and the same upload succeeds, its
# download has the same SHA-256: nothing acknowledged was lost.
source "$(dirname "${BASH_SOURCE[0]}")/../registry/lib.sh"
STAGE=$TMP/stage
mkdir -p "$STAGE"
MOUNTED=
umount_stage() { [ -n "$MOUNTED" ] && umount "$STAGE" 2>/dev/null || true; }
# the registry first (it may hold a staged file open), then the tmpfs, then the rest
trap '[ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null && wait "$REG_PID" 2>/dev/null; umount_stage; cleanup' EXIT
if mount -t tmpfs -o size=4m tmpfs "$STAGE" 2>/dev/null; then
    MOUNTED=1
    log "staging on a 4 MiB tmpfs at $STAGE"
    start_registry KILN_REGISTRY_STAGING_DIR="$STAGE"
else
    log "cannot mount a tmpfs here: the registry runs with ulimit -f 4096 (4 MiB files) instead"
    trap '' XFSZ # a write over the limit then fails (EFBIG) instead of killing the writer
    ulimit -S -f 4096
    start_registry KILN_REGISTRY_STAGING_DIR="$STAGE"
    ulimit -S -f unlimited
fi
A=$(auth "$ADMIN")
expect "create model" 201 POST /v1/models -H "$A" -d '{"name":"full"}'
expect "version 1" 201 POST /v1/models/full/versions -H "$A" -d '{}'
expect "alias" 200 PUT /v1/models/full/aliases/production -H "$A" -d '{"version":1}'

head -c $((3 * 1024 * 1024)) /dev/urandom >"$TMP/a.bin"
sha=$(sha256sum "$TMP/a.bin" | cut -d' ' -f1)
if [ -n "$MOUNTED" ]; then
    # leave about 1 MiB free: less than the 3 MiB upload
    dd if=/dev/zero of="$STAGE/filler" bs=1M count=3 status=none 2>/dev/null || true
    log "free on the staging disk: $(df -k --output=avail "$STAGE" | tail -n 1 | tr -d ' ') KiB"
else
    head -c $((5 * 1024 * 1024)) /dev/urandom >"$TMP/a.bin" # over the file-size limit
    sha=$(sha256sum "$TMP/a.bin" | cut -d' ' -f1)
fi

expect "upload on a full disk" 507 PUT /v1/models/full/versions/1/artifact -H "$A" \
    -H "X-Kiln-Sha256: $sha" --data-binary @"$TMP/a.bin"
[ "$(json .error.code)" = insufficient_storage ] && ok "code insufficient_storage: $(json .error.message)" ||
    fail "error code $(json .error.code), want insufficient_storage"
[ "$(sql "SELECT count(*) FROM artifacts")" = 0 ] && ok "no artifact stored" || fail "an artifact row after a failed upload"
[ "$(sql "SELECT artifact_sha256 IS NULL FROM versions WHERE version = 1")" = t ] && ok "version not linked" ||
    fail "version linked after a failed upload"
grep -q "staging full v1" "$TMP/registry.log" && ok "the log says why" || fail "nothing in the log about the staging failure"
expect "still ready" 200 GET /readyz
expect "reads answer" 200 GET /v1/models/full/aliases/production
expect "other writes answer" 201 POST /v1/models/full/versions -H "$A" -d '{}'

# space returns
if [ -n "$MOUNTED" ]; then rm -f "$STAGE/filler"; else
    kill "$REG_PID"; wait "$REG_PID" 2>/dev/null || true
    start_registry KILN_REGISTRY_STAGING_DIR="$STAGE"
fi
expect "upload once space returned" 201 PUT /v1/models/full/versions/1/artifact -H "$A" \
    -H "X-Kiln-Sha256: $sha" --data-binary @"$TMP/a.bin"
curl -sS -o "$TMP/back.bin" "$URL/v1/models/full/versions/1/artifact"
[ "$(sha256sum "$TMP/back.bin" | cut -d' ' -f1)" = "$sha" ] && ok "download has the uploaded SHA-256" ||
    fail "download differs from the upload"
[ -z "$(ls -A "$STAGE")" ] && ok "nothing left in the staging dir" || fail "left in staging: $(ls -A "$STAGE")"
finish
