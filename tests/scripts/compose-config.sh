#!/usr/bin/env bash
# docker-compose.yml validates (no Docker engine runs here: config only),
# with and without the gpu profile, and names the services the design lists.
set -euo pipefail
cd "${KILN_SOURCE_DIR:-$(dirname "$0")/../..}"
command -v docker-compose >/dev/null || { echo "docker-compose is not installed (deploy/install-deps.sh installs it)"; exit 1; }
docker-compose config -q
docker-compose --profile gpu config -q
services=$(docker-compose --profile gpu config --services | sort | tr '\n' ' ')
for s in kafka postgres registry tokenizer importer ingest preprocess trainer-cnn trainer-gpt trainer-gpu evaluator serve; do
    [[ " $services " == *" $s "* ]] || { echo "service $s missing from docker-compose.yml (have: $services)"; exit 1; }
done
echo "docker-compose.yml valid; services: $services"
