# The `bench` mode of tools/gpu/run.sh (sourced by it after unpacking: $dir, $logs, $work, $fixtures and $t0 are set).
# One H100, under 9 minutes in all: every step runs under `timeout`, bounded by what is left of the budget, and is
# skipped (saying so) when too little is left. Figures go to $logs/bench.log, each also as a `ROW key=value ...` line.
set +e +u +o pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
budget=${ENCLAVE_BENCH_SECONDS:-530}
enclave=$work/app/enclave
q7=$dir/bench/deepseek-r1-distill-qwen-7b.json
q15=$dir/bench/deepseek-r1-distill-qwen-1.5b.json
# Prefill-sized products through cuBLAS tensor cores (activations rounded to bf16): the fast path a GPU deployment uses.
export ENCLAVE_CUDA_GEMM=tensor-core
# KV cache element type for every Enclave run (ENCLAVE_KV_CACHE_DTYPE: f32, or bf16 as vLLM keeps it for bf16 models).
kv_dtype=${ENCLAVE_KV_CACHE_DTYPE:-bf16}

left() { echo $((budget - (SECONDS - t0))); }

# run_for MIN MAX CMD...: CMD under a timeout of MAX seconds or what is left of the budget, whichever is less;
# skipped when fewer than MIN seconds are left.
run_for() {
    local min=$1 max=$2 l
    shift 2
    l=$(left)
    if ((l < min)); then
        echo "SKIP ($l s of the budget left, $min s needed): ${*##*/}"
        return 0
    fi
    timeout -k 5 $((l < max ? l : max)) "$@"
    local rc=$?
    ((rc == 0)) || echo "EXIT $rc$( ((rc == 124)) && echo ' (timed out)'): ${*##*/}"
}

# enclave_bench LABEL CONFIG BATCH PROMPT GEN MIN MAX: one `enclave bench` run, its figures as ROW lines. The decode
# row only when it decodes more than one step, the prefill row always (batch B prompts of P tokens).
enclave_bench() {
    local label=$1 config=$2 b=$3 p=$4 g=$5 min=$6 max=$7 out
    echo "== enclave bench $label: batch $b, prompt $p, generate $g ($(left) s left)"
    out=$(run_for "$min" "$max" "$enclave" bench --dummy "$config" --device cuda --batch "$b" --prompt-len "$p" --gen-len "$g" --kv-cache-dtype "$kv_dtype" 2>&1)
    echo "$out"
    echo "$out" | awk -v m="$label" -v b="$b" -v p="$p" -v g="$g" '
        /^prefill +[0-9.]+ tokens\/s/ { print "ROW engine=enclave model=" m " kind=prefill batch=" b " prompt=" p " tok_s=" $2 }
        /^prefill work/ { for (i = 1; i <= NF; i++) if ($i == "TFLOP/s") print "ROW engine=enclave model=" m " kind=prefill-tflops batch=" b " prompt=" p " tflops=" $(i - 1) }
        /^decode / && g > 2 { print "ROW engine=enclave model=" m " kind=decode batch=" b " prompt=" p " tok_s=" $2 }
        /^bandwidth / && b == 1 && g > 2 { print "ROW engine=enclave model=" m " kind=roofline batch=1 prompt=" p " tok_s=" $6 " bandwidth_gbs=" $2 }
        /^host / && g > 2 { share = $2; sub(/%/, "", share); print "ROW engine=enclave model=" m " kind=host batch=" b " prompt=" p " share_pct=" share " ms_per_step=" (match($0, /\([0-9.]+ ms/) ? substr($0, RSTART + 1, RLENGTH - 4) : "") }'
}

serve_bench() {
    local port=18123 model_dir=$work/serve-7b pid ready=0 c n out
    echo "== enclave serve (7B dummy shape, cuda) + enclave bench serve ($(left) s left)"
    if (($(left) < 90)); then
        echo "SKIP serve: $(left) s left, 90 s needed"
        return 0
    fi
    # config.json of the 7B shape with a small fixture tokenizer: prompts are token ids and unknown output ids decode
    # to nothing, so the tokenizer does not matter to the figures.
    mkdir -p "$model_dir"
    cp "$q7" "$model_dir/config.json"
    cp "$fixtures/tiny-qwen2-r1/tokenizer.json" "$fixtures/tiny-qwen2-r1/tokenizer_config.json" "$model_dir/"
    "$enclave" serve --model "$model_dir" --dummy-weights --device cuda --host 127.0.0.1 --port $port --no-auth \
        --max-num-seqs 256 --max-num-batched-tokens 2048 --max-model-len 2048 --kv-cache-dtype "$kv_dtype" --plain-logs >"$logs/serve-server.log" 2>&1 &
    pid=$!
    # /ready answers 200 once the model has loaded (the API answers 503 "still loading" before that).
    for _ in $(seq 1 150); do
        if python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/ready', timeout=2)" 2>/dev/null; then
            ready=1
            break
        fi
        kill -0 $pid 2>/dev/null || break
        sleep 1
    done
    if ((ready == 0)); then
        echo "serve did not come up; last lines of its log:"
        tail -20 "$logs/serve-server.log"
    else
        echo "server ready after $((SECONDS - t0)) s of the budget"
        # Warm-up, not reported: the first requests load the kernels and JIT-compile the request path.
        run_for 20 60 "$enclave" bench serve --url "http://127.0.0.1:$port" --concurrency 4 --requests 8 --input-len 64 --output-len 16 >/dev/null 2>&1
        # The issue's saturation workload: random 1k-token prompts, 1k-token outputs.
        for cn in 16:32 64:64 256:256; do
            c=${cn%%:*}
            n=${cn##*:}
            echo "-- concurrency $c, $n requests, input 1024, output 1024 ($(left) s left)"
            out=$(run_for 30 170 "$enclave" bench serve --url "http://127.0.0.1:$port" --concurrency "$c" --requests "$n" --input-len 1024 --output-len 1024 2>&1)
            echo "$out"
            echo "$out" | awk -v c="$c" -v n="$n" '
                /^Successful requests:/ { ok = $NF } /^Failed requests:/ { failed = $NF }
                /^Output token throughput/ { tok = $NF } /^Mean TTFT/ { ttft = $NF } /^Mean TPOT/ { tpot = $NF }
                END { if (tok != "") print "ROW engine=enclave model=7b kind=serve concurrency=" c " requests=" n " ok=" ok " failed=" failed " out_tok_s=" tok " ttft_ms=" ttft " tpot_ms=" tpot }'
        done
    fi
    kill $pid 2>/dev/null
    wait $pid 2>/dev/null
}

hf_bench() { # LABEL CONFIG MODE MIN MAX ARGS...
    local label=$1 config=$2 hf_mode=$3 min=$4 max=$5 l
    shift 5
    l=$(left)
    echo "== transformers $hf_mode $label ($l s left)"
    l=$((l < max ? l : max))
    run_for "$min" "$max" python3 "$here/hf_bench.py" --config "$config" --label "$label" --mode "$hf_mode" --deadline $((l - 15)) "$@" 2>&1 | grep -v -E '^\s*$'
}

summary() {
    echo "== summary"
    python3 - "$logs/bench.log" <<'PY'
import re, sys
rows = []
for line in open(sys.argv[1], errors="replace"):
    if line.startswith("ROW "):
        rows.append(dict(kv.split("=", 1) for kv in line.split()[1:]))
def find(**want):
    for r in rows:
        if all(r.get(k) == str(v) for k, v in want.items()):
            return r
    return None
def num(r, key):
    try:
        return float(r[key]) if r and key in r else None
    except ValueError:
        return None
def ratio(name, a, b, fmt="{:.2f}"):
    if a is None or b is None or b == 0:
        print(f"{name:<58} n/a (a figure is missing)")
    else:
        print(f"{name:<58} {fmt.format(a / b)}  ({a:g} / {b:g})")
print("-- side by side (tok/s): kind batch prompt | enclave | hf-eager | hf-compiled")
keys = []
for r in rows:
    if r.get("kind") in ("decode", "prefill") and "tok_s" in r:
        k = (r["model"], r["kind"], r.get("batch"), r.get("prompt"))
        if k not in keys:
            keys.append(k)
for k in keys:
    cells = []
    for engine in ("enclave", "hf-eager", "hf-compiled"):
        r = find(engine=engine, model=k[0], kind=k[1], batch=k[2], prompt=k[3])
        cells.append(r["tok_s"] if r else "-")
    print(f"{k[0]:>4} {k[1]:<8} batch {k[2]:>3} prompt {k[3]:>5} | " + " | ".join(f"{c:>10}" for c in cells))
print("-- ratios")
peak = num(find(engine="cublas", kind="gemm-peak"), "tflops")
ratio("decode batch 1 (7B) / roofline", num(find(engine="enclave", model="7b", kind="decode", batch=1), "tok_s"),
      num(find(engine="enclave", model="7b", kind="roofline"), "tok_s"))
ratio("decode batch 1 (1.5B) / roofline", num(find(engine="enclave", model="1.5b", kind="decode", batch=1), "tok_s"),
      num(find(engine="enclave", model="1.5b", kind="roofline"), "tok_s"))
ratio("decode batch 64 (7B): enclave / transformers eager", num(find(engine="enclave", model="7b", kind="decode", batch=64), "tok_s"),
      num(find(engine="hf-eager", model="7b", kind="decode", batch=64), "tok_s"))
ratio("decode batch 64 (7B): enclave / transformers compiled", num(find(engine="enclave", model="7b", kind="decode", batch=64), "tok_s"),
      num(find(engine="hf-compiled", model="7b", kind="decode", batch=64), "tok_s"))
ratio("prefill 2048 (7B) TFLOP/s / cuBLAS bf16 peak", num(find(engine="enclave", model="7b", kind="prefill-tflops", prompt=2048), "tflops"), peak)
ratio("prefill 2048 (7B): enclave / transformers eager", num(find(engine="enclave", model="7b", kind="prefill", batch=1, prompt=2048), "tok_s"),
      num(find(engine="hf-eager", model="7b", kind="prefill", batch=1, prompt=2048), "tok_s"))
h = find(engine="enclave", model="7b", kind="host", batch=64)
print(f"{'host share of a batch-64 decode step (7B), target < 5%':<58} " + (f"{h['share_pct']}% ({h['ms_per_step']} ms a step)" if h else "n/a (a figure is missing)"))
s = find(engine="enclave", kind="serve", concurrency=256)
print(f"{'serve output tok/s at concurrency 256 (7B)':<58} " + (f"{s['out_tok_s']} (TTFT {s['ttft_ms']} ms, TPOT {s['tpot_ms']} ms, {s['ok']} ok, {s['failed']} failed)" if s else "n/a (a figure is missing)"))
PY
}

# ENCLAVE_BENCH_STEPS picks steps (default all, in this order): gemm decode7b prefill7b hf7b serve small hfcompiled hf15
steps=" ${ENCLAVE_BENCH_STEPS:-gemm decode7b prefill7b hf7b serve small hfcompiled hf15} "
want() { [[ "$steps" == *" $1 "* ]]; }

{
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
    echo "budget $budget s; steps${steps% }; ENCLAVE_CUDA_GEMM=$ENCLAVE_CUDA_GEMM; kv cache $kv_dtype; unpacked in $((SECONDS - t0)) s"

    if want gemm; then
        echo "== cuBLAS BF16 GEMM peak"
        out=$(run_for 20 60 "$work/app/GpuCheck" --gemm-peak 2>&1)
        echo "$out"
        echo "$out" | awk '/^gemm-peak +best/ { print "ROW engine=cublas kind=gemm-peak tflops=" $3 }'
    fi
    # 7B: decode over 1k-token contexts at growing batch, then prefill at batch 1.
    if want decode7b; then
        for bg in 1:64 8:64 32:48 64:32 128:32 256:24; do
            enclave_bench 7b "$q7" "${bg%%:*}" 1024 "${bg##*:}" 30 100
        done
    fi
    if want prefill7b; then
        for p in 512 2048 8192; do
            enclave_bench 7b "$q7" 1 "$p" 2 25 60
        done
    fi
    want hf7b && hf_bench 7b "$q7" eager 60 150 --batch 1 64 --prompt-len 1024 --gen-len 64 --prefill 512 2048 8192
    want serve && serve_bench
    # 1.5B at batch 1.
    if want small; then
        enclave_bench 1.5b "$q15" 1 1024 64 25 60
        for p in 512 2048 8192; do
            enclave_bench 1.5b "$q15" 1 "$p" 2 20 60
        done
    fi
    want hfcompiled && hf_bench 7b "$q7" compiled 100 220 --batch 1 64 --prompt-len 1024 --gen-len 64 --prefill
    want hf15 && hf_bench 1.5b "$q15" eager 40 90 --batch 1 --prompt-len 1024 --gen-len 64 --prefill 512 2048 8192
    echo "== done in $((SECONDS - t0)) s"
} 2>&1 | tee "$logs/bench.log"
summary 2>&1 | tee -a "$logs/bench.log"
