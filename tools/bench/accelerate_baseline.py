#!/usr/bin/env python3
"""The baseline layerwise is compared with: Hugging Face transformers + accelerate offload on the same checkpoint.

usage: python3 tools/bench/accelerate_baseline.py MODEL_DIR CONTEXT [CONTEXT ...] [--vram 8GiB] [--tokens 8]

For each context: a random prompt of that many tokens, time to first token (prefill), then greedy decode with the
KV cache, seconds per token, and torch's peak GPU memory. device_map="auto" with max_memory {0: vram, cpu: 100GiB}.
Prints one JSON line per context.
"""
import argparse
import json
import time

import torch
from transformers import AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("contexts", nargs="+", type=int)
    ap.add_argument("--vram", default="8GiB")
    ap.add_argument("--tokens", type=int, default=8)
    a = ap.parse_args()
    t0 = time.time()
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.bfloat16, device_map="auto", max_memory={0: a.vram, "cpu": "100GiB"}).eval()
    load_s = time.time() - t0
    g = torch.Generator().manual_seed(0)
    for ctx in a.contexts:
        ids = torch.randint(300, 100000, (1, ctx), generator=g).to("cuda")
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
        with torch.no_grad():
            t = time.time()
            out = model(input_ids=ids, use_cache=True)
            nxt = out.logits[:, -1:].argmax(-1)
            torch.cuda.synchronize()
            ttft = time.time() - t
            past = out.past_key_values
            del out
            t = time.time()
            for _ in range(a.tokens):
                out = model(input_ids=nxt, past_key_values=past, use_cache=True)
                past = out.past_key_values
                nxt = out.logits[:, -1:].argmax(-1)
            torch.cuda.synchronize()
            decode = (time.time() - t) / a.tokens
        print(json.dumps({"context": ctx, "ttft_s": ttft, "decode_s_per_token": decode, "peak_vram_bytes": torch.cuda.max_memory_allocated(),
                          "load_s": load_s, "vram_cap": a.vram, "transformers": __import__("transformers").__version__}), flush=True)
        del past
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
