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
fixture tests layerwise's f32 reference to 1e-3. gpt-oss's MXFP4 experts are dequantized by transformers'
own Mxfp4Config(dequantize=True) path (exact: each value is an e2m1 number times a power of two); if that
path is unavailable, by the same arithmetic here, written into the model's expert parameters.
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


FP4 = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]


def dequantize_mxfp4(blocks, scales):
    """[..., rows, groups, 16] packed e2m1 (low nibble first) and [..., rows, groups] e8m0 -> [..., rows, groups * 32]."""
    lut = torch.tensor(FP4, dtype=torch.float32)
    values = torch.stack([lut[(blocks & 15).long()], lut[(blocks >> 4).long()]], dim=-1).flatten(-2)
    return (values * torch.pow(2.0, scales.to(torch.float32) - 127).unsqueeze(-1)).flatten(-2)


def load(model_dir, config):
    kwargs = dict(local_files_only=True, dtype=torch.float32, attn_implementation="eager")
    if config["model_type"] == "qwen3_next":
        model, info = AutoModelForCausalLM.from_pretrained(model_dir, output_loading_info=True, **kwargs)
        problems = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
        if not problems:
            return model.to(device).eval(), ""
        # Per-expert tensors (as the Qwen release stores them) into transformers' stacked expert parameters.
        print(f"stacking experts by hand ({str(problems)[:200]})", flush=True)
        return load_stacking_experts(model, model_dir), ", experts stacked by the script"
    if config["model_type"] != "gpt_oss":
        return AutoModelForCausalLM.from_pretrained(model_dir, **kwargs).to(device).eval(), ""
    try:
        from transformers import Mxfp4Config
        model = AutoModelForCausalLM.from_pretrained(model_dir, quantization_config=Mxfp4Config(dequantize=True), **kwargs)
        return model.to(torch.float32).to(device).eval(), ", MXFP4 dequantized by transformers"
    except Exception as e:  # noqa: BLE001 - any failure of that path falls back to the explicit arithmetic
        print(f"Mxfp4Config(dequantize=True) failed ({e}); dequantizing in the script", flush=True)
    from safetensors.torch import load_file
    from transformers import AutoConfig
    cfg = AutoConfig.from_pretrained(model_dir, local_files_only=True)
    cfg.quantization_config = None
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32, attn_implementation="eager")
    state = {}
    for f in sorted(os.listdir(model_dir)):
        if f.endswith(".safetensors"):
            state.update(load_file(os.path.join(model_dir, f)))
    params = dict(model.named_parameters())
    for name in [n for n in state if n.endswith("_blocks")]:
        base = name[: -len("_blocks")]
        w = dequantize_mxfp4(state.pop(name), state.pop(base + "_scales"))  # [experts, out, in]
        target = params[base].shape
        state[base] = w if tuple(w.shape) == tuple(target) else w.transpose(1, 2)
    missing, unexpected = model.load_state_dict({k: v.to(torch.float32) for k, v in state.items()}, strict=False)
    assert not unexpected and all("rotary" in m for m in missing), (missing, unexpected)
    return model.to(device).eval(), ", MXFP4 dequantized by the script"


def load_stacking_experts(model, model_dir):
    from safetensors.torch import load_file
    state = {}
    for f in sorted(os.listdir(model_dir)):
        if f.endswith(".safetensors"):
            state.update(load_file(os.path.join(model_dir, f)))
    params = dict(model.named_parameters())
    for name in [n for n in params if n.endswith("mlp.experts.gate_up_proj") or n.endswith("mlp.experts.down_proj")]:
        base = name.rsplit(".", 1)[0]
        count = params[name].shape[0]
        if name.endswith("gate_up_proj"):
            w = torch.stack([torch.cat([state.pop(f"{base}.{e}.gate_proj.weight"), state.pop(f"{base}.{e}.up_proj.weight")]) for e in range(count)])
        else:
            w = torch.stack([state.pop(f"{base}.{e}.down_proj.weight") for e in range(count)])
        state[name] = w if tuple(w.shape) == tuple(params[name].shape) else w.transpose(1, 2)
    missing, unexpected = model.load_state_dict({k: v.to(torch.float32) for k, v in state.items()}, strict=False)
    assert not unexpected and not missing, (missing, unexpected)
    return model.to(device).eval()


@torch.no_grad()
def main():
    out_dir, model_dirs = sys.argv[1], sys.argv[2:]
    os.makedirs(out_dir, exist_ok=True)
    for model_dir in model_dirs:
        marker = json.load(open(os.path.join(model_dir, ".layerwise-test-model.json")))
        config = json.load(open(os.path.join(model_dir, "config.json")))
        model, how = load(model_dir, config)
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
                        f"{device}, float32 math, eager attention{how}",
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
