#!/usr/bin/env python3
"""Reference speeds from torch on this GPU, for layerwise's benchmarks (bench/kernels.ts runs it).

Prints one JSON object: bf16 matmul TFLOP/s (4096^3), device copy GB/s (bytes read + written), causal SDPA TFLOP/s at
8k and 32k tokens (32 query heads, 8 KV heads, head_dim 128, bf16), pinned and pageable host->device GB/s.
"""
import json
import torch
import torch.nn.functional as F


def bench(fn, reps=20, warmup=3):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(reps):
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    return times[len(times) // 2] / 1000  # median seconds


def main():
    dev = "cuda"
    out = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}
    n = 4096
    a = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    out["matmul_bf16_tflops"] = 2 * n ** 3 / bench(lambda: a @ b) / 1e12
    src = torch.randn(512 * 1024 * 1024 // 2, device=dev, dtype=torch.bfloat16)
    dst = torch.empty_like(src)
    out["copy_gbps"] = 2 * src.numel() * 2 / bench(lambda: dst.copy_(src)) / 1e9
    for t in (8192, 32768):
        q = torch.randn(1, 32, t, 128, device=dev, dtype=torch.bfloat16)
        k = torch.randn(1, 8, t, 128, device=dev, dtype=torch.bfloat16)
        v = torch.randn(1, 8, t, 128, device=dev, dtype=torch.bfloat16)
        s = bench(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True), reps=5)
        out[f"sdpa_{t // 1024}k_tflops"] = 4 * t * t / 2 * 32 * 128 / s / 1e12
        out[f"sdpa_{t // 1024}k_s"] = s
    host = torch.empty(1 << 30, dtype=torch.uint8).pin_memory()
    pageable = torch.empty(1 << 30, dtype=torch.uint8)
    gpu = torch.empty(1 << 30, dtype=torch.uint8, device=dev)
    out["h2d_pinned_gbps"] = (1 << 30) / bench(lambda: gpu.copy_(host, non_blocking=True), reps=5) / 1e9
    out["h2d_pageable_gbps"] = (1 << 30) / bench(lambda: gpu.copy_(pageable), reps=3) / 1e9
    print(json.dumps(out))


if __name__ == "__main__":
    main()
