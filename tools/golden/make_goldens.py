#!/usr/bin/env python3
"""Golden logits from Hugging Face transformers for layerwise's test checkpoints.

usage: python3 tools/golden/make_goldens.py OUT_DIR MODEL_DIR [MODEL_DIR ...]

Each MODEL_DIR is a folder written by `layerwise make-test-model` (it holds .layerwise-test-model.json).
Writes OUT_DIR/<preset>-<dtype>.json with, for fixed prompts of token ids:
  - "short": full float32 logits at every position (rounded to 6 decimals),
  - "long":  logits at the last 4 positions of a 300-token prompt (RoPE far from position 0),
  - "greedy": 24 greedy ids after the short prompt, computed step by step with transformers' KV cache,
    and the smallest top-1/top-2 margin along that path.
Weights are loaded in their checkpoint dtype and upcast to float32 for the math (TF32 off), so the
fixture tests layerwise's f32 reference to 1e-3.
"""
import hashlib
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

FORMAT = 1
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
torch.set_float32_matmul_precision("highest")
device = "cuda" if torch.cuda.is_available() else "cpu"


def prompt_ids(n, low, high, seed, bos):
    """Deterministic ids in [low, high), BOS first when the model has one."""
    x = seed
    ids = [] if bos is None else [bos]
    while len(ids) < n:
        x = (1103515245 * x + 12345) % (2 ** 31)
        ids.append(low + x % (high - low))
    return ids


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@torch.no_grad()
def main():
    out_dir, model_dirs = sys.argv[1], sys.argv[2:]
    os.makedirs(out_dir, exist_ok=True)
    for model_dir in model_dirs:
        marker = json.load(open(os.path.join(model_dir, ".layerwise-test-model.json")))
        config = json.load(open(os.path.join(model_dir, "config.json")))
        model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True, dtype=torch.float32,
                                                     attn_implementation="eager").to(device).eval()
        vocab = config["vocab_size"]
        bos = config.get("bos_token_id")
        special_start = min(json.load(open(os.path.join(model_dir, "generation_config.json")))["eos_token_id"])

        def logits(ids):
            x = torch.tensor([ids], dtype=torch.long, device=device)
            return model(input_ids=x, use_cache=False).logits[0].float().cpu()

        short = prompt_ids(12, 32, special_start, 7, bos)
        long = prompt_ids(300, 32, special_start, 11, bos)
        short_logits = logits(short)
        long_logits = logits(long)[-4:]

        # Greedy with transformers' own KV cache, one token per step.
        out = model(input_ids=torch.tensor([short], device=device), use_cache=True)
        past, step_logits = out.past_key_values, out.logits[0, -1].float()
        greedy, margins = [], []
        for _ in range(24):
            top2 = torch.topk(step_logits, 2)
            margins.append(float(top2.values[0] - top2.values[1]))
            nxt = int(top2.indices[0])
            greedy.append(nxt)
            out = model(input_ids=torch.tensor([[nxt]], device=device), past_key_values=past, use_cache=True)
            past, step_logits = out.past_key_values, out.logits[0, -1].float()

        weights = [f for f in sorted(os.listdir(model_dir)) if f.endswith(".safetensors")]
        fixture = {
            "format": FORMAT,
            "producer": f"tools/golden/make_goldens.py: torch {torch.__version__}, transformers {transformers.__version__}, "
                        f"{device}, float32 math, eager attention",
            "model": {**marker, "model_type": config["model_type"], "vocab_size": vocab,
                      "sha256": {f: sha256(os.path.join(model_dir, f)) for f in weights}},
            "short": {"ids": short, "logits": [[round(v, 6) for v in row] for row in short_logits.tolist()]},
            "long": {"ids": long, "last": 4, "logits": [[round(v, 6) for v in row] for row in long_logits.tolist()]},
            "greedy": {"ids": short, "new_ids": greedy, "min_margin": min(margins)},
        }
        name = f"{marker['preset']}-{marker['dtype']}.json"
        with open(os.path.join(out_dir, name), "w") as f:
            json.dump(fixture, f, separators=(",", ":"))
        print(f"{name}: greedy {greedy[:8]}... min margin {min(margins):.4f}, "
              f"logit std {float(short_logits.std()):.3f}", flush=True)


if __name__ == "__main__":
    main()
