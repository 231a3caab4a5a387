#!/usr/bin/env bash
# Installs promtool from the Debian package prometheus (if missing), for the alert-rule checks and unit tests in
# tests/Enclave.Deploy.Tests. Only the tool is used: the package's service is not started.
# Idempotent: does nothing when promtool is already on PATH.
set -euo pipefail
if command -v promtool > /dev/null; then
    promtool --version 2>&1 | head -n 1 >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
# policy-rc.d keeps the package's post-install from starting a Prometheus server on the CI machine.
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get install -y -qq --no-install-recommends prometheus >&2
promtool --version 2>&1 | head -n 1 >&2
