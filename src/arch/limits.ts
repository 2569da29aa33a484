// Bounds on config.json numbers, far above any released model, checked when the config is parsed: before a per-layer
// array, RoPE table or expert loop is sized from them, so a hostile config is a clean CONFIG_INVALID, never an OOM abort.
import { z } from "zod";

export const configLimits = {
  /** num_hidden_layers: released models have up to ~130. */
  layers: 4096,
  /** max_position_embeddings and sliding windows: 2^24 = 16.7M tokens (the longest released context is 10M, Llama 4 Scout). */
  positions: 2 ** 24,
  /** hidden_size, intermediate sizes and vocab_size: released models stay under 2^19. */
  size: 2 ** 24,
  /** Attention and linear-attention heads, head_dim, conv kernels: released models stay under 2^10. */
  heads: 65536,
  /** Experts per mixture-of-experts layer: released models have up to 512. */
  experts: 65536,
} as const;

const bounded = (max: number, what: string) =>
  z
    .number()
    .int()
    .positive()
    .max(max, { error: (i) => `${String(i.input)} is more than ${what}` });

export const layerCount = bounded(configLimits.layers, `the ${configLimits.layers} layers layerwise reads`);
export const positionCount = bounded(
  configLimits.positions,
  `the ${configLimits.positions} positions (2^24) layerwise plans for`,
);
export const sizeCount = bounded(configLimits.size, String(configLimits.size));
export const headCount = bounded(configLimits.heads, String(configLimits.heads));
export const expertCount = bounded(configLimits.experts, String(configLimits.experts));

type Ctx = z.RefinementCtx;

/** Heads divide evenly into KV groups and into hidden_size (when head_dim is derived); head_dim is even (RoPE rotates pairs). */
export function checkAttention(
  c: {
    hidden_size: number;
    num_attention_heads: number;
    num_key_value_heads?: number | undefined;
    head_dim?: number | null | undefined;
  },
  ctx: Ctx,
): void {
  const heads = c.num_attention_heads;
  const kvHeads = c.num_key_value_heads ?? heads;
  if (heads % kvHeads !== 0)
    ctx.addIssue({
      code: "custom",
      path: ["num_key_value_heads"],
      message: `num_attention_heads ${heads} is not a multiple of num_key_value_heads ${kvHeads}`,
    });
  if (c.head_dim === null || c.head_dim === undefined) {
    if (c.hidden_size % heads !== 0) {
      ctx.addIssue({
        code: "custom",
        path: ["hidden_size"],
        message: `hidden_size ${c.hidden_size} is not a multiple of num_attention_heads ${heads}, and no head_dim is given`,
      });
      return;
    }
  }
  const headDim = c.head_dim ?? c.hidden_size / heads;
  if (headDim > configLimits.heads)
    ctx.addIssue({
      code: "custom",
      path: ["head_dim"],
      message: `head_dim ${headDim} is more than ${configLimits.heads}`,
    });
  else if (headDim % 2 !== 0)
    ctx.addIssue({
      code: "custom",
      path: ["head_dim"],
      message: `head_dim ${headDim} is odd: RoPE rotates pairs of dimensions`,
    });
}

/** layer_types, when given, has one entry per layer. */
export function checkLayerTypes(
  c: { num_hidden_layers: number; layer_types?: readonly string[] | null | undefined },
  ctx: Ctx,
): void {
  const types = c.layer_types;
  if (types && types.length !== c.num_hidden_layers) {
    ctx.addIssue({
      code: "custom",
      path: ["layer_types"],
      message: `has ${types.length} entries, num_hidden_layers is ${c.num_hidden_layers}`,
    });
  }
}

/** Each token's experts are some of the layer's experts. */
export function checkExpertsPerToken(topK: number, experts: number, expertsKey: string, ctx: Ctx): void {
  if (topK > experts)
    ctx.addIssue({
      code: "custom",
      path: ["num_experts_per_tok"],
      message: `${topK} is more than ${expertsKey} (${experts})`,
    });
}
