#!/bin/sh
# compose-tokens.sh DIR: the per-service tokens of a kiln stack, made once.
# Run with KILN_REGISTRY_URL and KILN_REGISTRY_TOKEN (the admin token) set;
# it is the only user of the admin token besides the registry itself. Writes,
# each only when missing or no longer known to the registry (a restart keeps
# them; a registry whose database was reset gets new ones):
#   DIR/trainer/token     registry token, roles: write
#   DIR/evaluator/token   registry token, roles: write, promote
#   DIR/tokenizer/token   registry token, roles: write (registers the BPE vocabulary)
#   DIR/ingest/tokens     ingest's token file: "NAME ROLES SHA256" (docs/ingest.md)
#   DIR/operator/ingest-write-token  the plain ingest write token, for people
# Files are mode 0400, owned by KILN_TOKEN_OWNER (65534:65534, the images'
# user) when run as root. No token is ever printed.
set -eu
dir=${1:?usage: compose-tokens.sh DIR}
owner=${KILN_TOKEN_OWNER:-65534:65534}
: "${KILN_REGISTRY_TOKEN:?compose-tokens.sh needs the admin token in KILN_REGISTRY_TOKEN}"

# put FILE: stdin into FILE atomically, private to the services' user.
put() {
    rm -f "$1.tmp"
    (umask 077 && cat >"$1.tmp")
    chmod 0400 "$1.tmp"
    if [ "$(id -u)" = 0 ]; then chown "$owner" "$1.tmp"; fi
    mv -f "$1.tmp" "$1"
}

# The names of the registry's active tokens (columns ID NAME ROLES REVOKED).
active=$(kilnctl token list) || { echo "compose-tokens: cannot list the registry's tokens" >&2; exit 1; }
active=$(printf '%s\n' "$active" | awk 'NR > 1 && $4 == "-" { print $2 }')

# registry SERVICE ROLES: a registry token named compose-SERVICE.
registry() {
    f=$dir/$1/token
    if [ -s "$f" ] && printf '%s\n' "$active" | grep -qx "compose-$1"; then return 0; fi
    mkdir -p "$dir/$1"
    out=$(kilnctl token create "compose-$1" --roles "$2") ||
        { echo "compose-tokens: creating the $1 token failed" >&2; exit 1; }
    tok=$(printf '%s\n' "$out" | sed -n '1s/^token [0-9][0-9]* ([^)]*): //p')
    [ -n "$tok" ] || { echo "compose-tokens: kilnctl gave no $1 token" >&2; exit 1; }
    printf '%s\n' "$tok" | put "$f"
    echo "compose-tokens: made the $1 token (roles $2)"
}

registry trainer write
registry evaluator write,promote
registry tokenizer write

# ingest checks its callers itself: a random token, stored there hashed.
if [ ! -s "$dir/ingest/tokens" ]; then
    mkdir -p "$dir/ingest" "$dir/operator"
    tok=ki_$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
    hash=$(printf '%s' "$tok" | sha256sum | cut -d' ' -f1)
    printf '%s\n' "$tok" | put "$dir/operator/ingest-write-token"
    printf '# NAME ROLES SHA256 (docs/ingest.md)\ncompose-writer write %s\n' "$hash" | put "$dir/ingest/tokens"
    echo "compose-tokens: made the ingest write token (for people: $dir/operator/ingest-write-token)"
fi
