#!/usr/bin/env bash
# Installs Redis from the Debian package (if missing) and starts a private instance on 127.0.0.1
# for the gateway's distributed limiter tests. Idempotent: re-running reuses the running server.
# Prints the connection string as the last stdout line and writes it to
# ${ENCLAVE_REDIS_ENV_FILE:-.ci/redis.env} as ENCLAVE_TEST_REDIS=...
set -euo pipefail

PORT="${ENCLAVE_REDIS_PORT:-56379}"
DATA="${ENCLAVE_REDIS_DATA:-/var/tmp/enclave-redis}"
ENV_FILE="${ENCLAVE_REDIS_ENV_FILE:-$(dirname "$0")/redis.env}"

if ! command -v redis-server > /dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    # The package's own service is not used: the instance below has its own port and directory.
    apt-get install -y -qq --no-install-recommends redis-server >&2
fi

mkdir -p "$DATA"
if ! redis-cli -h 127.0.0.1 -p "$PORT" ping > /dev/null 2>&1; then
    # appendonly keeps token budgets across a Redis restart, as a deployment should.
    redis-server --bind 127.0.0.1 --port "$PORT" --dir "$DATA" --daemonize yes \
        --appendonly yes --save "" --logfile "$DATA/redis.log" --pidfile "$DATA/redis.pid" >&2
    for _ in $(seq 1 50); do
        redis-cli -h 127.0.0.1 -p "$PORT" ping > /dev/null 2>&1 && break
        sleep 0.1
    done
    redis-cli -h 127.0.0.1 -p "$PORT" ping > /dev/null
fi

CONN="127.0.0.1:$PORT"
echo "ENCLAVE_TEST_REDIS=$CONN" > "$ENV_FILE"
echo "$CONN"
