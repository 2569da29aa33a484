// Gemma 3 text (Gemma3ForCausalLM, and the language model of Gemma3ForConditionalGeneration): local sliding-window and
// global layers with their own RoPE bases, q/k norms, (1 + w) RMSNorms around attention and MLP, GELU-tanh MLP, embeddings
// scaled by sqrt(hidden), optional soft-capping.
import { z } from "zod";
import type { Ops, Tensor } from "../backend/ops.js";
import { checkAttention, checkLayerTypes, headCount, layerCount, positionCount, sizeCount } from "./limits.js";
import { RopeScaling, ropeTable, type RopeTable } from "./rope.js";
import { gatedMlp, type ArchModel, type Architecture, type LayerRun, type WeightNames, type Weights } from "./types.js";

const int = z.number().int().positive();
const LayerType = z.enum(["sliding_attention", "full_attention"]);

const Gemma3TextConfigFields = z.object({
  hidden_size: sizeCount,
  intermediate_size: sizeCount,
  num_hidden_layers: layerCount,
  num_attention_heads: headCount,
  num_key_value_heads: headCount,
  head_dim: headCount,
  vocab_size: sizeCount,
  max_position_embeddings: positionCount,
  rms_norm_eps: z.number().positive().default(1e-6),
  rope_theta: z.number().positive().default(1_000_000),
  rope_local_base_freq: z.number().positive().default(10_000),
  rope_scaling: RopeScaling,
  /** transformers 5 writes RoPE per layer type. */
  rope_parameters: z.record(LayerType, RopeScaling).nullish(),
  sliding_window: positionCount,
  sliding_window_pattern: int.default(6),
  layer_types: z.array(LayerType).nullish(),
  query_pre_attn_scalar: z.number().positive(),
  attn_logit_softcapping: z.number().positive().nullish(),
  final_logit_softcapping: z.number().positive().nullish(),
  hidden_activation: z.literal("gelu_pytorch_tanh").default("gelu_pytorch_tanh"),
  tie_word_embeddings: z.boolean().default(true),
  attention_bias: z.literal(false).default(false),
});
export const Gemma3TextConfig = Gemma3TextConfigFields.superRefine((c, ctx) => {
  checkAttention(c, ctx);
  checkLayerTypes(c, ctx);
});
export type Gemma3TextConfig = z.infer<typeof Gemma3TextConfigFields>;

/** Layer i's kind: config.layer_types, else every `sliding_window_pattern`-th layer is global. */
function layerTypes(c: Gemma3TextConfig): z.infer<typeof LayerType>[] {
  if (c.layer_types) return c.layer_types;
  return Array.from({ length: c.num_hidden_layers }, (_, i) =>
    (i + 1) % c.sliding_window_pattern === 0 ? "full_attention" : "sliding_attention",
  );
}

function createGemma3(c: Gemma3TextConfig, prefix: string): ArchModel {
  const {
    hidden_size: h,
    intermediate_size: inter,
    num_attention_heads: heads,
    num_key_value_heads: kvHeads,
    head_dim: headDim,
  } = c;
  const eps = c.rms_norm_eps;
  const norm = { eps, offset: 1 };
  const types = layerTypes(c);
  const ropes: Record<string, RopeTable> = {
    full_attention: ropeTable(
      {
        rope_theta: c.rope_theta,
        rope_scaling: c.rope_scaling,
        rope_parameters: c.rope_parameters?.full_attention,
        max_position_embeddings: c.max_position_embeddings,
      },
      headDim,
    ),
    sliding_attention: ropeTable(
      {
        rope_theta: c.rope_local_base_freq,
        rope_parameters: c.rope_parameters?.sliding_attention,
        max_position_embeddings: c.max_position_embeddings,
      },
      headDim,
    ),
  };
  const embedScale = Math.fround(Math.sqrt(h));
  const layerWeights = (i: number) => {
    const p = `${prefix}layers.${i}`;
    return {
      attnNorm: { name: `${p}.input_layernorm.weight`, shape: [h] },
      q: { name: `${p}.self_attn.q_proj.weight`, shape: [heads * headDim, h] },
      k: { name: `${p}.self_attn.k_proj.weight`, shape: [kvHeads * headDim, h] },
      v: { name: `${p}.self_attn.v_proj.weight`, shape: [kvHeads * headDim, h] },
      o: { name: `${p}.self_attn.o_proj.weight`, shape: [h, heads * headDim] },
      qNorm: { name: `${p}.self_attn.q_norm.weight`, shape: [headDim] },
      kNorm: { name: `${p}.self_attn.k_norm.weight`, shape: [headDim] },
      postAttnNorm: { name: `${p}.post_attention_layernorm.weight`, shape: [h] },
      mlpNorm: { name: `${p}.pre_feedforward_layernorm.weight`, shape: [h] },
      postMlpNorm: { name: `${p}.post_feedforward_layernorm.weight`, shape: [h] },
      gate: { name: `${p}.mlp.gate_proj.weight`, shape: [inter, h] },
      up: { name: `${p}.mlp.up_proj.weight`, shape: [inter, h] },
      down: { name: `${p}.mlp.down_proj.weight`, shape: [h, inter] },
    };
  };
  type Gemma3LayerWeight = WeightNames<typeof layerWeights>;
  return {
    shape: {
      numLayers: c.num_hidden_layers,
      hiddenSize: h,
      vocabSize: c.vocab_size,
      maxPositions: c.max_position_embeddings,
      kvLayers: types.map((t) => ({
        kvHeads,
        headDim,
        ...(t === "sliding_attention" ? { slidingWindow: c.sliding_window } : {}),
      })),
      // Attention block as Llama's plus its post-norm; MLP block plus pre- and post-norms; a 16-bit matmul input copy.
      activationsPerRow:
        Math.max(4 * h + 5 * heads * headDim + 4 * kvHeads * headDim, 7 * h + 3 * inter) + Math.max(h, inter) / 2,
    },
    globalWeights: {
      embed: { name: `${prefix}embed_tokens.weight`, shape: [c.vocab_size, h] },
      norm: { name: `${prefix}norm.weight`, shape: [h] },
      lmHead: {
        name: c.tie_word_embeddings
          ? `${prefix}embed_tokens.weight`
          : `${prefix.replace(/model\.$/, "")}lm_head.weight`,
        shape: [c.vocab_size, h],
      },
    },
    layerWeights,
    embed: (ops, g, ids) => ops.scoped(() => ops.scale(ops.embed(g.embed!, ids), embedScale)),
    async forwardLayer(
      ops: Ops,
      layer: number,
      w: Weights<Gemma3LayerWeight>,
      x: Tensor,
      run: LayerRun,
    ): Promise<Tensor> {
      const type = types[layer]!;
      const rope = ropes[type]!;
      const ropeAt = (t: Tensor) =>
        ops.rope(t, { positions: run.positions, invFreq: rope.invFreq, headDim, scale: rope.scale });
      const attention = await ops.scoped(async () => {
        const a = ops.rmsNorm(x, w.attnNorm!, norm);
        const q = ops.rmsNorm(ops.matmul(a, w.q!), w.qNorm!, norm);
        const k = ops.rmsNorm(ops.matmul(a, w.k!), w.kNorm!, norm);
        const v = ops.matmul(a, w.v!);
        const o = await run.attention(ropeAt(q), ropeAt(k), v, {
          heads,
          kvHeads,
          headDim,
          scale: 1 / Math.sqrt(c.query_pre_attn_scalar),
          ...(type === "sliding_attention" ? { slidingWindow: c.sliding_window } : {}),
          ...(c.attn_logit_softcapping ? { softcap: c.attn_logit_softcapping } : {}),
        });
        return ops.rmsNorm(ops.matmul(o, w.o!), w.postAttnNorm!, norm);
      });
      const hidden = ops.add(x, attention);
      const mlp = ops.scoped(() =>
        ops.rmsNorm(gatedMlp(ops, ops.rmsNorm(hidden, w.mlpNorm!, norm), w, "gelu_tanh"), w.postMlpNorm!, norm),
      );
      return ops.add(hidden, mlp);
    },
    head(ops, g, x) {
      const logits = ops.matmul(ops.rmsNorm(x, g.norm!, norm), g.lmHead!);
      return c.final_logit_softcapping ? ops.softcap(logits, c.final_logit_softcapping) : logits;
    },
  };
}

export const gemma3Text: Architecture<Gemma3TextConfig> = {
  modelType: "gemma3_text",
  config: Gemma3TextConfig,
  create: (c) => createGemma3(c, "model."),
};

/** The multimodal checkpoint: its text model under text_config, weights under language_model.model. (vision is not run). */
export const gemma3: Architecture<{ text_config: Gemma3TextConfig }> = {
  modelType: "gemma3",
  config: z.object({ text_config: Gemma3TextConfig }),
  create: (c) => createGemma3(c.text_config, "language_model.model."),
};
