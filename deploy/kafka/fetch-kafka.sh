#!/usr/bin/env bash
# Copies Apache Kafka's broker jars (pinned in pom.xml beside this file) from
# Maven Central into $KILN_CACHE/kafka-<version>/libs. Idempotent: a complete
# cache is left alone. Checks that every org.apache.kafka jar is one version.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
cache=${KILN_CACHE:-$root/.cache}
version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/pom.xml")
libs="$cache/kafka-$version/libs"

if [ -f "$libs/.complete" ]; then
    exit 0
fi

echo "fetch-kafka: resolving Apache Kafka $version from Maven Central into $libs" >&2
rm -rf "$libs"
mkdir -p "$libs"
mvn -q -B -f "$here/pom.xml" \
    org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy-dependencies \
    -DoutputDirectory="$libs" -DincludeScope=runtime

# Every org.apache.kafka jar must be of the pinned version.
bad=$(ls "$libs" | grep -E '^(kafka|connect)[-_]' | grep -v -- "-$version\.jar$" || true)
if [ -n "$bad" ]; then
    echo "fetch-kafka: jars of another version than $version: $bad" >&2
    exit 1
fi
ls "$libs"/kafka_2.13-"$version".jar >/dev/null
touch "$libs/.complete"
