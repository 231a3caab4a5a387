# torch scaled_dot_product_attention (bf16, causal, GQA) on the harness's prefill shapes, for comparison.
import torch
import torch.nn.functional as F

def bench(fn, reps=20):
    for _ in range(3):
        fn()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn()
    stop.record()
    torch.cuda.synchronize()
    return start.elapsed_time(stop) * 1000 / reps

for name, heads, kv_heads, d, t in [("7B T512", 28, 4, 128, 512), ("7B T2048", 28, 4, 128, 2048), ("7B T8192", 28, 4, 128, 8192),
                                    ("d64 14/2 T2048", 14, 2, 64, 2048)]:
    q = torch.randn(1, heads, t, d, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(1, kv_heads, t, d, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(1, kv_heads, t, d, device="cuda", dtype=torch.bfloat16)
    flops = 4 * t * t / 2 * d * heads
    us = bench(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True))
    g = heads // kv_heads
    ke, ve = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.FLASH_ATTENTION):
        us_flash = bench(lambda: F.scaled_dot_product_attention(q, ke, ve, is_causal=True))
    print(f"sdpa {name:16s} gqa {us:8.1f} us {flops / us * 1e-6:6.1f} TFLOP/s | flash, kv expanded {us_flash:8.1f} us "
          f"{flops / us_flash * 1e-6:6.1f} TFLOP/s", flush=True)
