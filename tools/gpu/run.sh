#!/usr/bin/env bash
# CUDA checks and benchmark on a GPU host that has no .NET SDK and no network.
#
#   tools/gpu/run.sh pack [DIR]   on a development machine: publishes GpuCheck and the enclave CLI self-contained for
#                                 linux-x64 into DIR (default .gpu, git-ignored) as one xz tarball, with the benchmark
#                                 configs they read (the fixtures travel with the working tree).
#   tools/gpu/run.sh run [DIR] [LOGS]  on the GPU host: unpacks DIR's tarball, runs the op table, fixture parity and
#                                 the BF16 benchmarks, and `enclave bench --device cuda`, writing logs to LOGS
#                                 (default $OUT, else ./gpu-logs).
#   tools/gpu/run.sh bench [DIR] [LOGS]  on the GPU host, in under 9 minutes (ENCLAVE_BENCH_SECONDS, default 530):
#                                 cuBLAS BF16 peak, Enclave decode at batch 1-256 and prefill at 512-8192 tokens
#                                 (7B and 1.5B dummy shapes), `enclave bench serve` at 16/64/256 concurrent requests,
#                                 transformers (eager, then static cache + torch.compile) on the same shapes, and a
#                                 summary of the ratios, into LOGS/bench.log. Every figure is also a `ROW key=value ...`
#                                 line, the same form for both engines. Steps that would overrun the budget are skipped.
set -euo pipefail
mode=${1:-run}
dir=${2:-.gpu}

case "$mode" in
pack)
    root=$(cd "$(dirname "$0")/../.." && pwd)
    rm -rf "$dir/app" && mkdir -p "$dir/app"
    for project in tools/gpu/GpuCheck/GpuCheck.csproj src/Enclave.Cli/Enclave.Cli.csproj; do
        dotnet publish "$root/$project" -c Release -r linux-x64 --self-contained -p:InvariantGlobalization=true \
            -p:DebugType=none -o "$dir/app"
    done
    # xz: the publish must travel in well under 64 MiB together with the working tree (fixtures included).
    rm -f "$dir/app.tar.gz" && tar -C "$dir" -cJf "$dir/app.tar.xz" app && rm -rf "$dir/app"
    rm -rf "$dir/fixtures" "$dir/bench" && mkdir -p "$dir/bench"
    cp "$root"/tools/bench/*.json "$dir/bench/"
    du -sh "$dir"
    ;;
run | bench)
    logs=${3:-${OUT:-./gpu-logs}}
    mkdir -p "$logs"
    t0=$SECONDS
    work=$(mktemp -d)
    tar -C "$work" -xJf "$dir/app.tar.xz"
    # The fixtures come with the working tree; the packed folder carries only the programs and benchmark configs.
    fixtures="$(cd "$(dirname "$0")/../.." && pwd)/tests/fixtures/models"
    # NVRTC and cuBLAS from the toolkit or from the Python wheels, whichever the host has.
    extra=/usr/local/cuda/lib64
    for d in $(python3 -c 'import nvidia, os; p = nvidia.__path__[0]; print(" ".join(os.path.join(p, s, "lib") for s in os.listdir(p)))' 2>/dev/null || true); do
        extra="$extra:$d"
    done
    export ENCLAVE_CUDA_LIBRARY_PATH=$extra ENCLAVE_HOME=$work/home
    if [ "$mode" = bench ]; then
        . "$(dirname "$0")/bench.sh"
        exit 0
    fi
    {
        date -u
        nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || true
        "$work/app/GpuCheck" --fixtures "$fixtures" --bench "$dir/bench/deepseek-r1-distill-qwen-1.5b.json" \
            --bench "$dir/bench/deepseek-r1-distill-qwen-7b.json" || echo "GpuCheck exit code $?"
        echo "== second start: kernels must come from the disk cache"
        "$work/app/GpuCheck" 2>&1 | grep -E "kernels compiled|ALL|FAILED" || true
        echo "== enclave bench --device cuda"
        "$work/app/enclave" bench --dummy "$dir/bench/deepseek-r1-distill-qwen-7b.json" --device cuda --prompt-len 128 --gen-len 32 || echo "enclave bench exit code $?"
        "$work/app/enclave" bench --dummy "$dir/bench/qwen2-0.5b.json" --device auto --prompt-len 128 --gen-len 32 || echo "enclave bench exit code $?"
        echo "== decode graphs (the default) against --enforce-eager, 1.5B"
        for eager in "" --enforce-eager; do
            "$work/app/enclave" bench --dummy "$dir/bench/deepseek-r1-distill-qwen-1.5b.json" --device cuda --prompt-len 128 --gen-len 64 $eager || echo "enclave bench exit code $?"
        done
        echo "== DeepSeek (MLA + MoE) on CUDA"
        "$work/app/enclave" bench --dummy "$dir/bench/deepseek-v2-lite-4layers.json" --device cuda --prompt-len 128 --gen-len 32 || echo "enclave bench exit code $?"
    } 2>&1 | tee "$logs/gpucheck.log"
    ;;
*)
    echo "usage: $0 pack|run|bench [DIR] [LOGS]" >&2
    exit 2
    ;;
esac
