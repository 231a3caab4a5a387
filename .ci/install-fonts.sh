#!/usr/bin/env bash
# Installs a simplified-Chinese TrueType font (AR PL SungtiL GB) so the knowledge-base tests can write Chinese text
# into a PDF with PdfPig and read it back. Idempotent; the test that needs it skips, saying why, when it is absent.
set -euo pipefail
FONT=/usr/share/fonts/truetype/arphic-gbsn00lp/gbsn00lp.ttf
if [[ -f "$FONT" ]]; then
  exit 0
fi
if [[ "$(id -u)" != "0" ]]; then
  echo "install-fonts: not root; skipping (the Chinese PDF test will be skipped)" >&2
  exit 0
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-arphic-gbsn00lp > /dev/null
