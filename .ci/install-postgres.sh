#!/usr/bin/env bash
# Installs PostgreSQL from the Debian package (if missing), starts a private
# cluster on 127.0.0.1 and creates the gateway test role and database.
# Idempotent: re-running reuses the running cluster and existing role.
# Prints the connection string as the last stdout line and writes it to
# ${ENCLAVE_PG_ENV_FILE:-.ci/postgres.env} as ENCLAVE_TEST_POSTGRES=...
set -euo pipefail

PORT="${ENCLAVE_PG_PORT:-55432}"
DATA="${ENCLAVE_PG_DATA:-/var/tmp/enclave-pg}"
USER_NAME="enclave_test"
PASSWORD="${ENCLAVE_PG_PASSWORD:-enclave_test_pw}"
DB_NAME="enclave_test"
ENV_FILE="${ENCLAVE_PG_ENV_FILE:-$(dirname "$0")/postgres.env}"

as_pg() {
    if [ "$(id -u)" = "0" ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

find_bin() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    echo "$dir"
}

BIN=$(find_bin)
if [ -z "$BIN" ] || [ ! -x "$BIN/initdb" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq postgresql >&2
    BIN=$(find_bin)
fi

if [ "$(id -u)" = "0" ]; then
    mkdir -p "$DATA"
    chown postgres:postgres "$DATA"
fi

if [ ! -f "$DATA/PG_VERSION" ]; then
    as_pg "$BIN/initdb" -D "$DATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >&2
fi

if ! as_pg "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
    as_pg "$BIN/pg_ctl" -D "$DATA" -w -t 60 -l "$DATA/server.log" \
        -o "-c listen_addresses=127.0.0.1 -c port=$PORT -c unix_socket_directories=$DATA -c fsync=off -c max_connections=200" start >&2
fi

PSQL=("$BIN/psql" -h "$DATA" -p "$PORT" -U postgres -v ON_ERROR_STOP=1 -qtA)
as_pg "${PSQL[@]}" -d postgres -c "DO \$\$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$USER_NAME') THEN CREATE ROLE $USER_NAME LOGIN CREATEDB PASSWORD '$PASSWORD'; END IF; END \$\$;" >&2
# Tests drop their scratch databases WITH (FORCE); an autovacuum worker connected to one belongs to no role the test
# role is a member of, so without pg_signal_backend the drop fails now and then.
as_pg "${PSQL[@]}" -d postgres -c "GRANT pg_signal_backend TO $USER_NAME" >&2
if [ "$(as_pg "${PSQL[@]}" -d postgres -c "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'")" != "1" ]; then
    as_pg "${PSQL[@]}" -d postgres -c "CREATE DATABASE $DB_NAME OWNER $USER_NAME" >&2
fi

CONN="Host=127.0.0.1;Port=$PORT;Database=$DB_NAME;Username=$USER_NAME;Password=$PASSWORD"
echo "ENCLAVE_TEST_POSTGRES=\"$CONN\"" > "$ENV_FILE"
echo "$CONN"
