// Llama (1, 2, 3.x): RMSNorm, GQA attention with RoPE (incl. llama3 scaling), SwiGLU MLP; tied or untied head.
import { z } from "zod";
import type { Ops, Tensor } from "../backend/ops.js";
import { checkAttention, headCount, layerCount, positionCount, sizeCount } from "./limits.js";
import { RopeScaling, ropeTable } from "./rope.js";
import {
  gatedMlp,
  type ArchModel,
  type Architecture,
  type LayerRun,
  type MlpWeight,
  type Weights,
  type WeightSpec,
  type WeightSpecs,
} from "./types.js";

/** The fields, before the checks across them (Qwen3 extends these). */
export const LlamaConfigFields = z.object({
  hidden_size: sizeCount,
  intermediate_size: sizeCount,
  num_hidden_layers: layerCount,
  num_attention_heads: headCount,
  num_key_value_heads: headCount.optional(),
  head_dim: headCount.nullish(),
  vocab_size: sizeCount,
  max_position_embeddings: positionCount,
  rms_norm_eps: z.number().positive(),
  rope_theta: z.number().positive().optional(),
  rope_scaling: RopeScaling,
  rope_parameters: RopeScaling,
  tie_word_embeddings: z.boolean().default(false),
  attention_bias: z.boolean().default(false),
  mlp_bias: z.boolean().default(false),
  hidden_act: z.literal("silu").default("silu"),
});
export const LlamaConfig = LlamaConfigFields.superRefine(checkAttention);
export type LlamaConfig = z.infer<typeof LlamaConfigFields>;

/** A decoder layer's weights: biases where the config has them, and Qwen3's per-head q/k norms. */
export type LlamaLayerWeight =
  | "attnNorm"
  | "q"
  | "k"
  | "v"
  | "o"
  | "mlpNorm"
  | MlpWeight
  | "qBias"
  | "kBias"
  | "vBias"
  | "oBias"
  | "qNorm"
  | "kNorm";

/** Weight names of one decoder layer; `qk norm` adds Qwen3's per-head norms. */
export function llamaLayerWeights(c: LlamaConfig, i: number, qkNorm: boolean): WeightSpecs<LlamaLayerWeight> {
  const { hidden_size: h, intermediate_size: inter } = c;
  const { heads, kvHeads, headDim } = attentionShape(c);
  const p = `model.layers.${i}`;
  const specs: { [K in LlamaLayerWeight]?: WeightSpec } = {
    attnNorm: { name: `${p}.input_layernorm.weight`, shape: [h] },
    q: { name: `${p}.self_attn.q_proj.weight`, shape: [heads * headDim, h] },
    k: { name: `${p}.self_attn.k_proj.weight`, shape: [kvHeads * headDim, h] },
    v: { name: `${p}.self_attn.v_proj.weight`, shape: [kvHeads * headDim, h] },
    o: { name: `${p}.self_attn.o_proj.weight`, shape: [h, heads * headDim] },
    mlpNorm: { name: `${p}.post_attention_layernorm.weight`, shape: [h] },
    gate: { name: `${p}.mlp.gate_proj.weight`, shape: [inter, h] },
    up: { name: `${p}.mlp.up_proj.weight`, shape: [inter, h] },
    down: { name: `${p}.mlp.down_proj.weight`, shape: [h, inter] },
  };
  if (c.attention_bias) {
    specs.qBias = { name: `${p}.self_attn.q_proj.bias`, shape: [heads * headDim] };
    specs.kBias = { name: `${p}.self_attn.k_proj.bias`, shape: [kvHeads * headDim] };
    specs.vBias = { name: `${p}.self_attn.v_proj.bias`, shape: [kvHeads * headDim] };
    specs.oBias = { name: `${p}.self_attn.o_proj.bias`, shape: [h] };
  }
  if (c.mlp_bias) {
    specs.gateBias = { name: `${p}.mlp.gate_proj.bias`, shape: [inter] };
    specs.upBias = { name: `${p}.mlp.up_proj.bias`, shape: [inter] };
    specs.downBias = { name: `${p}.mlp.down_proj.bias`, shape: [h] };
  }
  if (qkNorm) {
    specs.qNorm = { name: `${p}.self_attn.q_norm.weight`, shape: [headDim] };
    specs.kNorm = { name: `${p}.self_attn.k_norm.weight`, shape: [headDim] };
  }
  return specs;
}

export function attentionShape(c: LlamaConfig) {
  const heads = c.num_attention_heads;
  return { heads, kvHeads: c.num_key_value_heads ?? heads, headDim: c.head_dim ?? c.hidden_size / heads };
}

/** The Llama decoder; Qwen3 is this with q/k norms. */
export function createLlamaFamily(c: LlamaConfig, qkNorm: boolean): ArchModel<LlamaLayerWeight> {
  const { heads, kvHeads, headDim } = attentionShape(c);
  const rope = ropeTable(c, headDim);
  const eps = c.rms_norm_eps;
  const attn = { heads, kvHeads, headDim, scale: 1 / Math.sqrt(headDim) };
  const ropeAt = (ops: Ops, x: Tensor, run: LayerRun) =>
    ops.rope(x, { positions: run.positions, invFreq: rope.invFreq, headDim, scale: rope.scale });

  return {
    shape: {
      numLayers: c.num_hidden_layers,
      hiddenSize: c.hidden_size,
      vocabSize: c.vocab_size,
      maxPositions: c.max_position_embeddings,
      kvLayers: Array.from({ length: c.num_hidden_layers }, () => ({ kvHeads, headDim })),
      // Attention block: x, its norm, q/k/v and their roped copies, merged attention parts, the projection.
      // MLP block: x, attention output, h, its norm, gate, up, their product, the projection, then y.
      // Plus a 16-bit copy of one matmul's input (tensor-core backends), half an f32 per element.
      activationsPerRow:
        Math.max(
          3 * c.hidden_size + 5 * heads * headDim + 4 * kvHeads * headDim,
          6 * c.hidden_size + 3 * c.intermediate_size,
        ) +
        Math.max(c.hidden_size, c.intermediate_size) / 2,
    },
    globalWeights: {
      embed: { name: "model.embed_tokens.weight", shape: [c.vocab_size, c.hidden_size] },
      norm: { name: "model.norm.weight", shape: [c.hidden_size] },
      lmHead: {
        name: c.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight",
        shape: [c.vocab_size, c.hidden_size],
      },
    },
    layerWeights: (i) => llamaLayerWeights(c, i, qkNorm),
    embed: (ops, g, ids) => ops.embed(g.embed!, ids),
    async forwardLayer(
      ops: Ops,
      _layer: number,
      w: Weights<LlamaLayerWeight>,
      x: Tensor,
      run: LayerRun,
    ): Promise<Tensor> {
      const attention = await ops.scoped(async () => {
        const a = ops.rmsNorm(x, w.attnNorm!, { eps });
        let q = ops.matmul(a, w.q!, w.qBias);
        let k = ops.matmul(a, w.k!, w.kBias);
        const v = ops.matmul(a, w.v!, w.vBias);
        if (qkNorm) {
          q = ops.rmsNorm(q, w.qNorm!, { eps }); // per-head norm: what Qwen3 adds
          k = ops.rmsNorm(k, w.kNorm!, { eps });
        }
        return ops.matmul(await run.attention(ropeAt(ops, q, run), ropeAt(ops, k, run), v, attn), w.o!, w.oBias);
      });
      const h = ops.add(x, attention);
      return ops.add(h, gatedMlp(ops, ops.rmsNorm(h, w.mlpNorm!, { eps }), w, "silu"));
    },
    head: (ops, g, x) => ops.matmul(ops.rmsNorm(x, g.norm!, { eps }), g.lmHead!),
  };
}

export const llama: Architecture<LlamaConfig> = {
  modelType: "llama",
  config: LlamaConfig,
  create: (c) => createLlamaFamily(c, false),
};
