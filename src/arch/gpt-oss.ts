// gpt-oss (GptOssForCausalLM): alternating sliding-window and full attention with biases and attention sinks, YaRN RoPE,
// and a mixture of experts (top-k of the router's logits, softmax over those) whose experts are MXFP4 and clamped SwiGLU.
import { z } from "zod";
import type { Ops, Tensor } from "../backend/ops.js";
import { routedExperts, softmaxOfTopK } from "./moe.js";
import {
  checkAttention,
  checkExpertsPerToken,
  checkLayerTypes,
  expertCount,
  headCount,
  layerCount,
  positionCount,
  sizeCount,
} from "./limits.js";
import { RopeScaling, ropeTable } from "./rope.js";
import type { ArchModel, Architecture, LayerRun, WeightNames, Weights } from "./types.js";

const int = z.number().int().positive();
const LayerType = z.enum(["sliding_attention", "full_attention"]);

const GptOssConfigFields = z.object({
  hidden_size: sizeCount.refine((n) => n % 32 === 0, "must be a multiple of 32 (MXFP4 groups)"),
  intermediate_size: sizeCount.refine((n) => n % 32 === 0, "must be a multiple of 32 (MXFP4 groups)"),
  num_hidden_layers: layerCount,
  num_attention_heads: headCount,
  num_key_value_heads: headCount,
  head_dim: headCount,
  vocab_size: sizeCount,
  max_position_embeddings: positionCount,
  rms_norm_eps: z.number().positive().default(1e-5),
  rope_theta: z.number().positive().default(150000),
  rope_scaling: RopeScaling,
  rope_parameters: RopeScaling,
  sliding_window: positionCount,
  layer_types: z.array(LayerType).nullish(),
  num_local_experts: expertCount,
  num_experts_per_tok: int,
  swiglu_limit: z.number().positive().default(7),
  attention_bias: z.literal(true).default(true),
  tie_word_embeddings: z.boolean().default(false),
  quantization_config: z.looseObject(
    {
      quant_method: z.literal("mxfp4", {
        message: 'layerwise reads gpt-oss experts as MXFP4 (quant_method "mxfp4", the official release)',
      }),
    },
    {
      error:
        'missing: layerwise reads gpt-oss experts as MXFP4, as released (quant_method "mxfp4"); bf16 re-releases are not supported',
    },
  ),
});
export const GptOssConfig = GptOssConfigFields.superRefine((c, ctx) => {
  checkAttention(c, ctx);
  checkLayerTypes(c, ctx);
  checkExpertsPerToken(c.num_experts_per_tok, c.num_local_experts, "num_local_experts", ctx);
});
export type GptOssConfig = z.infer<typeof GptOssConfigFields>;

/** The activation's sigmoid slope, fixed in transformers' GptOssExperts. */
const swigluAlpha = 1.702;

function createGptOss(c: GptOssConfig): ArchModel {
  const {
    hidden_size: h,
    intermediate_size: inter,
    num_attention_heads: heads,
    num_key_value_heads: kvHeads,
    head_dim: headDim,
  } = c;
  const experts = c.num_local_experts;
  const topK = c.num_experts_per_tok;
  const norm = { eps: c.rms_norm_eps };
  const types =
    c.layer_types ??
    Array.from({ length: c.num_hidden_layers }, (_, i) => (i % 2 === 0 ? "sliding_attention" : "full_attention"));
  const rope = ropeTable(c, headDim);
  const layerWeights = (i: number) => {
    const p = `model.layers.${i}`;
    return {
      attnNorm: { name: `${p}.input_layernorm.weight`, shape: [h] },
      q: { name: `${p}.self_attn.q_proj.weight`, shape: [heads * headDim, h] },
      qBias: { name: `${p}.self_attn.q_proj.bias`, shape: [heads * headDim] },
      k: { name: `${p}.self_attn.k_proj.weight`, shape: [kvHeads * headDim, h] },
      kBias: { name: `${p}.self_attn.k_proj.bias`, shape: [kvHeads * headDim] },
      v: { name: `${p}.self_attn.v_proj.weight`, shape: [kvHeads * headDim, h] },
      vBias: { name: `${p}.self_attn.v_proj.bias`, shape: [kvHeads * headDim] },
      o: { name: `${p}.self_attn.o_proj.weight`, shape: [h, heads * headDim] },
      oBias: { name: `${p}.self_attn.o_proj.bias`, shape: [h] },
      sinks: { name: `${p}.self_attn.sinks`, shape: [heads] },
      mlpNorm: { name: `${p}.post_attention_layernorm.weight`, shape: [h] },
      router: { name: `${p}.mlp.router.weight`, shape: [experts, h] },
      routerBias: { name: `${p}.mlp.router.bias`, shape: [experts] },
    };
  };
  const expertWeights = (i: number, e: number) => {
    const p = `model.layers.${i}.mlp.experts`;
    return {
      gateUp: { name: `${p}.gate_up_proj_blocks`, scales: `${p}.gate_up_proj_scales`, shape: [2 * inter, h], index: e },
      gateUpBias: { name: `${p}.gate_up_proj_bias`, shape: [2 * inter], index: e },
      down: { name: `${p}.down_proj_blocks`, scales: `${p}.down_proj_scales`, shape: [h, inter], index: e },
      downBias: { name: `${p}.down_proj_bias`, shape: [h], index: e },
    };
  };
  type GptOssLayerWeight = WeightNames<typeof layerWeights>;
  type GptOssExpertWeight = WeightNames<typeof expertWeights>;
  // gate_up's rows interleave gate and up (row 2j is gate j, 2j + 1 is up j).
  const expert = (ops: Ops) => (w: Weights<GptOssExpertWeight>, x: Tensor) =>
    ops.scoped(() =>
      ops.matmul(
        ops.clampedSwiglu(ops.matmul(x, w.gateUp!, w.gateUpBias), { alpha: swigluAlpha, limit: c.swiglu_limit }),
        w.down!,
        w.downBias,
      ),
    );
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
      // Attention: x, its norm, q/k/v with biases and their roped copies, merged parts, the projection.
      // Experts: x, h, its norm, the sum, one expert's gathered rows, gate_up, the activation, its output; a 16-bit matmul input.
      activationsPerRow:
        Math.max(3 * h + 5 * heads * headDim + 4 * kvHeads * headDim, 6 * h + 3 * inter + experts) +
        Math.max(h, 2 * inter) / 2,
      moe: { experts, topK },
    },
    globalWeights: {
      embed: { name: "model.embed_tokens.weight", shape: [c.vocab_size, h] },
      norm: { name: "model.norm.weight", shape: [h] },
      lmHead: {
        name: c.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight",
        shape: [c.vocab_size, h],
      },
    },
    layerWeights,
    expertWeights,
    embed: (ops, g, ids) => ops.embed(g.embed!, ids),
    async forwardLayer(
      ops: Ops,
      layer: number,
      w: Weights<GptOssLayerWeight>,
      x: Tensor,
      run: LayerRun<GptOssExpertWeight>,
    ): Promise<Tensor> {
      const ropeAt = (t: Tensor) =>
        ops.rope(t, { positions: run.positions, invFreq: rope.invFreq, headDim, scale: rope.scale });
      const attention = await ops.scoped(async () => {
        const a = ops.rmsNorm(x, w.attnNorm!, norm);
        const q = ops.matmul(a, w.q!, w.qBias);
        const k = ops.matmul(a, w.k!, w.kBias);
        const v = ops.matmul(a, w.v!, w.vBias);
        const o = await run.attention(ropeAt(q), ropeAt(k), v, {
          heads,
          kvHeads,
          headDim,
          scale: 1 / Math.sqrt(headDim),
          sinks: w.sinks!,
          ...(types[layer] === "sliding_attention" ? { slidingWindow: c.sliding_window } : {}),
        });
        return ops.matmul(o, w.o!, w.oBias);
      });
      const hidden = ops.add(x, attention);
      const mlp = await ops.scoped(async () => {
        const m = ops.rmsNorm(hidden, w.mlpNorm!, norm);
        const routes = softmaxOfTopK(await run.read(ops.matmul(m, w.router!, w.routerBias)), experts, topK);
        return routedExperts(ops, run, m, routes, expert(ops));
      });
      return ops.add(hidden, mlp);
    },
    head: (ops, g, x) => ops.matmul(ops.rmsNorm(x, g.norm!, norm), g.lmHead!),
  };
}

export const gptOss: Architecture<GptOssConfig> = {
  modelType: "gpt_oss",
  config: GptOssConfig,
  create: createGptOss,
};
