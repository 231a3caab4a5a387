#!/usr/bin/env python3
"""Hugging Face transformers side of the GPU benchmark (tools/gpu/run.sh bench).

Builds Qwen2ForCausalLM from one of the tools/bench/*.json configs with random weights in bf16 on the GPU (nothing
downloaded), then measures
  decode   generate() tok/s after the first token (greedy, min_new_tokens = max_new_tokens, so EOS never stops it)
           at each --batch with --prompt-len token prompts;
  prefill  tok/s of one forward pass over --prefill lengths at batch 1 (the last position's logits only, as
           generate's own prefill does).
--mode eager runs the model as built (attn_implementation="sdpa"); --mode compiled uses a static KV cache, with
which generate() compiles the decoding forward itself (torch.compile, CUDA graphs). Every measurement prints one line

  ROW engine=hf-eager model=7b kind=decode batch=64 prompt=1024 tok_s=1234.5

in the same form run.sh prints for Enclave, so the two can be matched. --deadline (seconds since start) skips the
measurements that would not finish in time; a failure prints `SKIP ... reason` and moves on.
"""
import argparse
import json
import os
import sys
import time
import traceback


def log(text):
    print(text, flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True, help="a config.json (tools/bench/*.json)")
    parser.add_argument("--label", required=True, help="model label in the ROW lines, e.g. 7b")
    parser.add_argument("--mode", choices=["eager", "compiled"], default="eager")
    parser.add_argument("--batch", type=int, nargs="*", default=[1, 64])
    parser.add_argument("--prompt-len", type=int, default=1024)
    parser.add_argument("--gen-len", type=int, default=64)
    parser.add_argument("--prefill", type=int, nargs="*", default=[512, 2048, 8192])
    parser.add_argument("--deadline", type=float, default=300, help="seconds from start after which nothing new starts")
    args = parser.parse_args()
    start = time.monotonic()

    def left():
        return args.deadline - (time.monotonic() - start)

    import torch
    import transformers
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from transformers.generation.streamers import BaseStreamer

    engine = "hf-" + args.mode
    log(f"hf_bench: torch {torch.__version__}, transformers {transformers.__version__}, {torch.cuda.get_device_name(0)}, mode {args.mode}")
    with open(args.config) as f:
        raw = json.load(f)
    config = Qwen2Config.from_dict(raw)
    config._attn_implementation = "sdpa"
    clock = time.monotonic()
    torch.manual_seed(0)
    # Built straight on the GPU in bf16 (random initialisation, nothing loaded).
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = Qwen2ForCausalLM(config)
    torch.set_default_dtype(torch.float32)
    model.eval()
    params = sum(p.numel() for p in model.parameters())
    log(f"hf_bench: {args.label} built with random weights in {time.monotonic() - clock:.1f} s, {params / 1e9:.2f} B parameters, "
        f"{torch.cuda.memory_allocated() / 2**30:.1f} GiB on the GPU, attention {model.config._attn_implementation}, "
        f"dtype {next(model.parameters()).dtype}")
    vocab = config.vocab_size
    model.generation_config.pad_token_id = config.eos_token_id if isinstance(config.eos_token_id, int) else 0

    if args.mode == "compiled":
        # A static cache makes generate() compile the decoding forward itself (its compile_config: fullgraph,
        # mode "reduce-overhead", i.e. CUDA graphs). Wrapping model.forward in torch.compile by hand as well trips
        # over CUDA-graph outputs overwritten between steps, so generate's own compilation is the one measured.
        model.generation_config.cache_implementation = "static"
        log(f"hf_bench: compile config {getattr(model.generation_config, 'compile_config', None)}")

    class StepClock(BaseStreamer):
        """Timestamps each generated step (generate calls put() with the prompt first, then once per new token)."""

        def __init__(self):
            self.times = []
            self.calls = 0

        def put(self, value):
            self.calls += 1
            if self.calls > 1:
                self.times.append(time.perf_counter())

        def end(self):
            pass

    def prompt(batch, length):
        return torch.randint(100, vocab - 100, (batch, length), device="cuda")

    @torch.inference_mode()
    def generate(ids, new_tokens, streamer=None):
        return model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                              min_new_tokens=new_tokens, do_sample=False, streamer=streamer)

    for batch in args.batch:
        # A rough bound: prefill of batch x prompt tokens, then gen-len steps; compiling adds its own minutes.
        need = 10 + batch * args.prompt_len / 20000 + (60 if args.mode == "compiled" else 0)
        if left() < need:
            log(f"SKIP engine={engine} model={args.label} kind=decode batch={batch}: {left():.0f} s left, about {need:.0f} s needed")
            continue
        try:
            ids = prompt(batch, args.prompt_len)
            clock = time.monotonic()
            generate(ids, args.gen_len)  # warm-up (and, compiled, the compile of both shapes)
            torch.cuda.synchronize()
            warm = time.monotonic() - clock
            steps = StepClock()
            out = generate(ids, args.gen_len, steps)
            torch.cuda.synchronize()
            produced = out.shape[1] - args.prompt_len
            if produced != args.gen_len or len(steps.times) < 2:
                raise RuntimeError(f"generated {produced} tokens ({len(steps.times)} timed steps), wanted {args.gen_len}")
            seconds = steps.times[-1] - steps.times[0]
            rate = batch * (len(steps.times) - 1) / seconds
            compiled = ""
            if args.mode == "compiled":
                from torch._dynamo.utils import counters
                graphs = counters["stats"].get("unique_graphs", 0)
                compiled = f" compiled_graphs={graphs}"
                if graphs == 0:
                    raise RuntimeError("generate() compiled nothing: the figure would be an eager static-cache one")
            log(f"ROW engine={engine} model={args.label} kind=decode batch={batch} prompt={args.prompt_len} tok_s={rate:.2f} "
                f"step_ms={1000 * seconds / (len(steps.times) - 1):.2f} warmup_s={warm:.1f}{compiled}")
            del out, ids
        except Exception as e:  # noqa: BLE001 - report and go on with the next measurement
            log(f"SKIP engine={engine} model={args.label} kind=decode batch={batch}: {type(e).__name__}: {e}")
            traceback.print_exc(limit=3)
        torch.cuda.empty_cache()

    for length in args.prefill:
        need = 5 + length / 4000 + (60 if args.mode == "compiled" else 0)
        if left() < need:
            log(f"SKIP engine={engine} model={args.label} kind=prefill prompt={length}: {left():.0f} s left, about {need:.0f} s needed")
            continue
        try:
            ids = prompt(1, length)
            with torch.inference_mode():
                if args.mode == "compiled":
                    # generate() with one new token over the static cache: the time is its prefill.
                    run = lambda: generate(ids, 1)  # noqa: E731
                else:
                    run = lambda: model(input_ids=ids, use_cache=False, logits_to_keep=1)  # noqa: E731
                run()
                torch.cuda.synchronize()
                times = []
                for _ in range(3):
                    clock = time.perf_counter()
                    run()
                    torch.cuda.synchronize()
                    times.append(time.perf_counter() - clock)
            seconds = sorted(times)[1]
            linear = 2 * non_embedding_params(config) * length
            attention = 4 * config.num_attention_heads * head_dim(config) * length * (length + 1) / 2 * config.num_hidden_layers
            log(f"ROW engine={engine} model={args.label} kind=prefill batch=1 prompt={length} tok_s={length / seconds:.1f} "
                f"ms={1000 * seconds:.1f} tflops={(linear + attention) / seconds / 1e12:.1f}")
            del ids
        except Exception as e:  # noqa: BLE001
            log(f"SKIP engine={engine} model={args.label} kind=prefill prompt={length}: {type(e).__name__}: {e}")
            traceback.print_exc(limit=3)
        torch.cuda.empty_cache()
    return 0


def head_dim(config):
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def non_embedding_params(config):
    """Parameters of the projections and MLPs: the ones every prompt token multiplies (as Enclave's bench counts)."""
    hidden, q, kv = config.hidden_size, config.num_attention_heads * head_dim(config), config.num_key_value_heads * head_dim(config)
    return config.num_hidden_layers * (hidden * q + 2 * hidden * kv + q * hidden + 3 * hidden * config.intermediate_size)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
