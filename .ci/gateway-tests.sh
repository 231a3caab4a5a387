#!/usr/bin/env bash
# Runs the gateway test suite against SQLite and a loopback PostgreSQL.
# Used by .ci/run; also runnable by hand from the repository root.
set -euo pipefail
cd "$(dirname "$0")/.."

ENCLAVE_TEST_POSTGRES="$(bash .ci/install-postgres.sh | tail -n 1)"
export ENCLAVE_TEST_POSTGRES

dotnet build Enclave.slnx -c Release
dotnet test tests/Enclave.Gateway.Tests/Enclave.Gateway.Tests.csproj -c Release --no-build
