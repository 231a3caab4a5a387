#!/usr/bin/env bash
# Enclave and llama.cpp on the same GGUF files, one after the other, `ROUNDS` times each (default 2), printing one
# Markdown table row per file with the best prefill and decode figure of each engine (the best of a few runs is the
# figure least disturbed by whatever else the machine is doing).
#
#   ENCLAVE=src/Enclave.Cli/bin/Release/net10.0/enclave NLC=/tmp/nlc/node_modules/node-llama-cpp \
#     tools/bench/gguf-vs-llama-cpp.sh FILE.gguf...
#
# Environment: THREADS (2), PROMPT (128), GEN (64), ROUNDS (2). llama.cpp runs through tools/bench/llama-cpp-bench.mjs
# (the prebuilt CPU binaries of the npm package node-llama-cpp).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
enclave=${ENCLAVE:-enclave}
threads=${THREADS:-2} prompt=${PROMPT:-128} gen=${GEN:-64} rounds=${ROUNDS:-2}

best() { sort -g | tail -1; }
field() { awk -v key="$1" '$1 == key { print $2 }'; }

echo "| file | Enclave prefill / decode tok/s | llama.cpp prefill / decode tok/s | decode ratio | Enclave RSS MiB | llama.cpp RSS MiB |"
echo "| --- | --- | --- | --- | --- | --- |"
for file in "$@"; do
    ep=() ed=() lp=() ld=() erss=0 lrss=0
    for _ in $(seq "$rounds"); do
        out=$("$enclave" bench --model "$file" --prompt-len "$prompt" --gen-len "$gen" --threads "$threads" --device cpu 2>&1)
        ep+=("$(field prefill <<<"$out")") ed+=("$(field decode <<<"$out")")
        erss=$(awk '$1 == "memory" { for (i = 1; i <= NF; i++) if ($i == "now") print $(i - 2) }' <<<"$out")
        out=$(node "$here/llama-cpp-bench.mjs" "$file" "$prompt" "$gen" "$threads" 2>&1)
        lp+=("$(field prefill <<<"$out")") ld+=("$(field decode <<<"$out")")
        lrss=$(awk '$1 == "memory" { print $2 }' <<<"$out")
    done
    bep=$(printf '%s\n' "${ep[@]}" | best) bed=$(printf '%s\n' "${ed[@]}" | best)
    blp=$(printf '%s\n' "${lp[@]}" | best) bld=$(printf '%s\n' "${ld[@]}" | best)
    ratio=$(awk -v a="$bed" -v b="$bld" 'BEGIN { printf "%.2f", a / b }')
    echo "| $(basename "$file") | $bep / $bed | $blp / $bld | $ratio | $erss | $lrss |"
done
