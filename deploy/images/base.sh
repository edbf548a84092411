#!/usr/bin/env bash
# Makes the Debian bookworm base image for machines that cannot pull
# debian:bookworm (no image registry reachable): `debootstrap --variant=minbase`
# into a folder, imported into podman as one layer. Cached: an image of that
# name already there is kept (KILN_BASE_REBUILD=1 makes it again).
#
# Usage: deploy/images/base.sh [IMAGE]      (default localhost/kiln-base:bookworm)
# Environment: KILN_DEBIAN_MIRROR (default http://deb.debian.org/debian),
# CONTAINERS_CONF (default deploy/images/containers.conf, when unset).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
image=${1:-localhost/kiln-base:bookworm}
mirror=${KILN_DEBIAN_MIRROR:-http://deb.debian.org/debian}
export CONTAINERS_CONF=${CONTAINERS_CONF:-$here/containers.conf}

say() { printf 'base: %s\n' "$*" >&2; }

if [ "${KILN_BASE_REBUILD:-0}" != 1 ] && podman image exists "$image"; then
    say "$image is there (KILN_BASE_REBUILD=1 makes it again)"
    exit 0
fi
[ "$(id -u)" -eq 0 ] || { say "error: debootstrap needs root"; exit 1; }
command -v debootstrap >/dev/null || { say "error: debootstrap is not installed (deploy/install-deps.sh)"; exit 1; }

dir=$(mktemp -d /var/tmp/kiln-base.XXXXXX)
trap 'rm -rf "$dir"' EXIT
t0=$SECONDS
say "debootstrap --variant=minbase bookworm from $mirror"
nice debootstrap --variant=minbase bookworm "$dir" "$mirror" >"$dir.log" 2>&1 ||
    { tail -n 20 "$dir.log" >&2; rm -f "$dir.log"; say "error: debootstrap failed"; exit 1; }
rm -f "$dir.log"
# What the official image does too: no apt caches, the lists dropped.
rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
tar -C "$dir" -c . | podman import --quiet \
    --change 'CMD ["bash"]' --change 'ENV LANG=C.UTF-8' - "$image" >/dev/null
say "$image made in $((SECONDS - t0)) s ($(podman image inspect --format '{{.Size}}' "$image") bytes)"
