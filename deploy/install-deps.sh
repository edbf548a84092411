#!/usr/bin/env bash
# Installs what kiln needs to build, test and run natively: Debian packages
# (toolchain, client libraries, PostgreSQL, Java, Maven) and Apache Kafka's
# broker jars from Maven Central. Idempotent and quiet when already done.
#
# Usage: deploy/install-deps.sh [--quiet]
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# Debian packages, one per line: what the build, the tests and the stack use
# (the last line: the compose stack's images and tests/compose/run, podman).
packages=(
    build-essential cmake pkg-config clang-format
    clang libclang-rt-14-dev
    librdkafka-dev libpq-dev libcurl4-openssl-dev libmicrohttpd-dev
    libjansson-dev libcmocka-dev libopenblas-dev libssl-dev
    libutf8proc-dev libpcre2-dev libspng-dev libturbojpeg0-dev libzstd-dev
    libxxhash-dev zlib1g-dev libdeflate-dev
    postgresql postgresql-contrib default-jre-headless maven
    docker-compose wrk procps curl jq yq
    dataset-fashion-mnist fortunes
    python3-numpy
    podman podman-compose runc netavark aardvark-dns iptables debootstrap
)

# Node.js and npm run the tokenizer's reference (npm tiktoken) in the tests;
# a machine that has them from elsewhere keeps its own.
command -v npm >/dev/null 2>&1 || packages+=(nodejs npm)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
    echo "install-deps: installing ${missing[*]}" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq >/dev/null
    $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Kafka's broker jars from Maven Central, into the cache kept out of git.
"$here/kafka/fetch-kafka.sh"
