#!/usr/bin/env bash
# Installs the openai npm package for the Node client test (node_modules is not committed).
set -euo pipefail
cd "$(dirname "$0")"
if [ -f package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
else
  npm install --no-audit --no-fund --loglevel=error
fi
