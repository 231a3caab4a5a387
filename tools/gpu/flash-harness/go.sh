#!/bin/bash
# Builds harness.cu against kernel sources and runs it, then times torch SDPA on the same prefill shapes.
# VARIANTS: space-separated name:kernel-dir[:nvcc-flag,nvcc-flag...] (default: the engine's kernels, copied here at
# run time). Everything goes to stdout and to $OUT/log.txt; ptxas reports to $OUT/ptxas.txt.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
OUT=${OUT:-/tmp/flash-harness-out}
BUILD=${BUILD:-/tmp/flash-harness-build}
VARIANTS=${VARIANTS:-"current:$ROOT/src/Enclave.Engine.Cuda/Kernels"}
REPS=${REPS:-20}
mkdir -p "$OUT" "$BUILD"
exec > >(tee "$OUT/log.txt") 2>&1
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
pids=()
for v in $VARIANTS; do # builds in parallel
    IFS=: read -r name dir flags <<<"$v"
    mkdir -p "$BUILD/$name"
    cp "$dir/flash_prefill_bf16.cu" "$dir/flash_mma.cuh" "$dir/common.cuh" "$BUILD/$name/"
    nvcc -O3 -arch=sm_90a -std=c++17 -Xptxas -v -I"$BUILD/$name" ${flags//,/ } -o "$BUILD/$name/harness" "$HERE/harness.cu" \
        >"$BUILD/$name/ptxas.txt" 2>&1 &
    pids+=($!)
done
wait "${pids[@]}"
for v in $VARIANTS; do
    IFS=: read -r name dir flags <<<"$v"
    echo "== $name ($dir ${flags//,/ })"
    (echo "== $name"; cat "$BUILD/$name/ptxas.txt") >>"$OUT/ptxas.txt"
    [ -x "$BUILD/$name/harness" ] || { cat "$BUILD/$name/ptxas.txt"; continue; }
    grep -A4 "entry function 'flash_prefill_bf16_d" "$BUILD/$name/ptxas.txt" | grep -E "registers|spill" | sed 's/ptxas info *: //'
    "$BUILD/$name/harness" "$REPS"
done
[ "${SDPA:-1}" = 1 ] && python3 "$HERE/sdpa.py" 2>&1 | grep -v Warning
exit 0
