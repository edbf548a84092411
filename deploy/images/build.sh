#!/usr/bin/env bash
# Builds every image docker-compose.yml runs, with podman, cached by content
# hash: each image is tagged with the sha256 of its inputs (the files of its
# build context, its Dockerfile, the base image's id) and a second run with the
# same inputs builds nothing. The images are then tagged :latest, the names
# docker-compose.yml gives them.
#
#   kiln-postgres   deploy/postgres/Dockerfile (Debian postgresql-15)
#   kiln-kafka      deploy/kafka/Dockerfile (Kafka's jars from Maven, Debian's JRE)
#   kiln-registry, kiln-ingest, kiln-preprocess, kiln-trainer, kiln-evaluator, kiln-serve
#                   deploy/Dockerfile, one target each
#
# Usage: deploy/images/build.sh
# Environment: KILN_BASE_IMAGE (a Debian bookworm image; default: the one
# deploy/images/base.sh makes, made when missing), KILN_IMAGE_TAG (latest).
# Builds run under `nice` with the host's network (apt and Maven need its
# resolver); the stack itself runs on its own network.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$here/containers.conf}
tag=${KILN_IMAGE_TAG:-latest}

say() { printf 'images: %s\n' "$*" >&2; }

base=${KILN_BASE_IMAGE:-}
if [ -z "$base" ]; then
    base=localhost/kiln-base:bookworm
    "$here/base.sh" "$base"
fi
base_id=$(podman image inspect --format '{{.Id}}' "$base")
# docker format: OCI images cannot carry HEALTHCHECK
build_flags="--network host --layers --quiet --format docker"

# inputs_hash DIR DOCKERFILE: sha256 over the build context's files (those
# git does not ignore, less those its .dockerignore leaves out: the set the
# build sees), the Dockerfile, the base image and the build flags.
inputs_hash() {
    local dir=$1 dockerfile=$2 excl=()
    if [ -f "$dir/.dockerignore" ]; then
        mapfile -t excl < <(sed -e 's/[[:space:]]*$//' -e '/^#/d' -e '/^$/d' \
            -e 's/^/:(exclude,glob)/' "$dir/.dockerignore")
    fi
    {
        (cd "$dir" && git ls-files -co --exclude-standard -z -- . "${excl[@]}" |
            xargs -0 -r sha256sum -- 2>/dev/null | LC_ALL=C sort -k2)
        sha256sum <"$dockerfile"
        echo "$base_id $build_flags"
    } | sha256sum | cut -c1-16
}

# build NAME CONTEXT DOCKERFILE [TARGET]: one image, unless that hash exists;
# non-zero when it fails (explicitly: callers run it in the background and
# after ||, where set -e does not stop a function).
build() {
    local name=$1 ctx=$2 df=$3 target=${4:-} h t0
    h=$(inputs_hash "$ctx" "$df")
    if podman image exists "localhost/$name:src-$h"; then
        say "$name: cached (inputs $h)"
    else
        t0=$SECONDS
        say "$name: building (inputs $h)"
        # shellcheck disable=SC2086 # the flags are words
        nice podman build $build_flags \
            --build-arg BASE_IMAGE="$base" --build-arg RUNTIME_IMAGE="$base" \
            ${target:+--target "$target"} --label "kiln.inputs=$h" \
            -f "$df" -t "localhost/$name:src-$h" "$ctx" >/dev/null ||
            { say "$name: build failed after $((SECONDS - t0)) s"; return 1; }
        say "$name: built in $((SECONDS - t0)) s"
    fi
    podman tag "localhost/$name:src-$h" "localhost/$name:$tag" || return 1
}

# Kafka's jars: fetched on the host (deploy/kafka/fetch-kafka.sh, cached as
# for the native stack) and handed to the build in its context, deploy/kafka/libs.
"$root/deploy/kafka/fetch-kafka.sh"
kversion=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$root/deploy/kafka/pom.xml")
rm -rf "$root/deploy/kafka/libs"
cp -al "${KILN_CACHE:-$root/.cache}/kafka-$kversion/libs" "$root/deploy/kafka/libs" 2>/dev/null ||
    cp -a "${KILN_CACHE:-$root/.cache}/kafka-$kversion/libs" "$root/deploy/kafka/libs"

# PostgreSQL's and Kafka's images are built beside kiln's (mostly package
# installs: they overlap kiln's compile); kiln's six share their stages, so
# the first builds them and the other five are a layer each, in turn.
t0=$SECONDS
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT # a build stopped midway stops the others
trap 'exit 1' INT TERM
build kiln-postgres "$root/deploy/postgres" "$root/deploy/postgres/Dockerfile" &
pg_pid=$!
build kiln-kafka "$root/deploy/kafka" "$root/deploy/kafka/Dockerfile" &
kafka_pid=$!
kiln_rc=0
for svc in registry ingest preprocess trainer evaluator serve; do
    build "kiln-$svc" "$root" "$root/deploy/Dockerfile" "$svc" || { kiln_rc=$?; break; }
done
failed=""
wait "$pg_pid" || failed+=" kiln-postgres"
wait "$kafka_pid" || failed+=" kiln-kafka"
[ "$kiln_rc" -eq 0 ] || failed+=" kiln-$svc"
[ -z "$failed" ] || { say "error: building$failed failed"; exit 1; }
say "all images ready in $((SECONDS - t0)) s"
podman images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E '^localhost/kiln-[a-z]+:'"$tag"' ' >&2
