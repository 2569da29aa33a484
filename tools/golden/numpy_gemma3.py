#!/usr/bin/env python3
"""An independent NumPy forward of Gemma 3 text (from transformers' modeling_gemma3.py), for a cross-check where torch is
not installed. The fixtures the tests trust come from transformers (make_goldens.py); this is the interim second opinion.

usage: python3 tools/golden/numpy_gemma3.py MODEL_DIR IDS_JSON OUT_JSON
Writes {"logits": [[...vocab] per position]} for the token ids in IDS_JSON (a JSON list).
"""
import json
import math
import struct
import sys

import numpy as np


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        raw = data[a:b]
        if t["dtype"] == "F32":
            arr = np.frombuffer(raw, dtype=np.float32)
        elif t["dtype"] == "BF16":
            arr = (np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            raise SystemExit(f"dtype {t['dtype']} not handled")
        out[name] = arr.reshape(t["shape"]).astype(np.float64)
    return out


def rms(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * (1.0 + w)


def inv_freq(theta, dim, factor=1.0):
    return 1.0 / (theta ** (np.arange(0, dim, 2) / dim)) / factor


def rope(x, pos, freq):
    # x: [T, heads, hd]; rotate_half
    ang = np.outer(pos, freq)
    cos, sin = np.cos(np.concatenate([ang, ang], -1))[:, None, :], np.sin(np.concatenate([ang, ang], -1))[:, None, :]
    half = x.shape[-1] // 2
    rot = np.concatenate([-x[..., half:], x[..., :half]], -1)
    return x * cos + rot * sin


def gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def main():
    model_dir, ids_file, out_file = sys.argv[1:4]
    c = json.load(open(f"{model_dir}/config.json"))
    w = read_safetensors(f"{model_dir}/model.safetensors")
    ids = json.load(open(ids_file))
    T, H, hd = len(ids), c["hidden_size"], c["head_dim"]
    nh, nkv = c["num_attention_heads"], c["num_key_value_heads"]
    eps = c["rms_norm_eps"]
    pattern = c.get("sliding_window_pattern", 6)
    types = c.get("layer_types") or ["full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(c["num_hidden_layers"])]
    scaling = c.get("rope_scaling") or {}
    freqs = {"full_attention": inv_freq(c["rope_theta"], hd, scaling.get("factor", 1.0) if scaling.get("rope_type", scaling.get("type")) == "linear" else 1.0),
             "sliding_attention": inv_freq(c["rope_local_base_freq"], hd)}
    pos = np.arange(T)
    x = w["model.embed_tokens.weight"][ids] * np.float32(math.sqrt(H))
    for i, kind in enumerate(types):
        p = f"model.layers.{i}"
        a = rms(x, w[f"{p}.input_layernorm.weight"], eps)
        q = (a @ w[f"{p}.self_attn.q_proj.weight"].T).reshape(T, nh, hd)
        k = (a @ w[f"{p}.self_attn.k_proj.weight"].T).reshape(T, nkv, hd)
        v = (a @ w[f"{p}.self_attn.v_proj.weight"].T).reshape(T, nkv, hd)
        q = rope(rms(q, w[f"{p}.self_attn.q_norm.weight"], eps), pos, freqs[kind])
        k = rope(rms(k, w[f"{p}.self_attn.k_norm.weight"], eps), pos, freqs[kind])
        mask = np.tril(np.ones((T, T), bool))
        if kind == "sliding_attention":
            mask &= (pos[:, None] - pos[None, :]) < c["sliding_window"]
        o = np.zeros((T, nh, hd))
        for h in range(nh):
            g = h // (nh // nkv)
            s = q[:, h] @ k[:, g].T * c["query_pre_attn_scalar"] ** -0.5
            s = np.where(mask, s, -np.inf)
            s = np.exp(s - s.max(-1, keepdims=True))
            o[:, h] = (s / s.sum(-1, keepdims=True)) @ v[:, g]
        attn = o.reshape(T, nh * hd) @ w[f"{p}.self_attn.o_proj.weight"].T
        x = x + rms(attn, w[f"{p}.post_attention_layernorm.weight"], eps)
        m = rms(x, w[f"{p}.pre_feedforward_layernorm.weight"], eps)
        m = (gelu_tanh(m @ w[f"{p}.mlp.gate_proj.weight"].T) * (m @ w[f"{p}.mlp.up_proj.weight"].T)) @ w[f"{p}.mlp.down_proj.weight"].T
        x = x + rms(m, w[f"{p}.post_feedforward_layernorm.weight"], eps)
    logits = rms(x, w["model.norm.weight"], eps) @ w["model.embed_tokens.weight"].T
    json.dump({"logits": logits.tolist()}, open(out_file, "w"))


if __name__ == "__main__":
    main()
