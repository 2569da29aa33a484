// Qwen3-Next (Qwen3NextForCausalLM): every `full_attention_interval`-th layer gated attention (q/k norms, partial RoPE,
// a sigmoid gate on the output), the others Gated DeltaNet linear attention (short causal conv, gated delta rule,
// gated RMSNorm), all with zero-centred (1 + w) RMSNorms and a mixture of experts (softmax then top-k, renormalized)
// beside a shared expert whose output a sigmoid gate scales.
import { z } from "zod";
import type { Ops, Tensor } from "../backend/ops.js";
import { routedExperts, softmaxThenTopK } from "./moe.js";
import {
  checkAttention,
  checkExpertsPerToken,
  checkLayerTypes,
  configLimits,
  expertCount,
  headCount,
  layerCount,
  positionCount,
  sizeCount,
} from "./limits.js";
import { RopeScaling, ropeTable } from "./rope.js";
import {
  gatedMlp,
  type ArchModel,
  type Architecture,
  type LayerRun,
  type Weights,
  type WeightSpec,
  type WeightSpecs,
} from "./types.js";

const int = z.number().int().positive();
const LayerType = z.enum(["linear_attention", "full_attention"]);

const Qwen3NextConfigFields = z.object({
  hidden_size: sizeCount,
  num_hidden_layers: layerCount,
  num_attention_heads: headCount,
  num_key_value_heads: headCount,
  head_dim: headCount.nullish(),
  vocab_size: sizeCount,
  max_position_embeddings: positionCount,
  rms_norm_eps: z.number().positive().default(1e-6),
  rope_theta: z.number().positive().optional(),
  rope_scaling: RopeScaling,
  rope_parameters: RopeScaling,
  partial_rotary_factor: z.number().positive().max(1).optional(),
  intermediate_size: sizeCount,
  moe_intermediate_size: sizeCount,
  shared_expert_intermediate_size: sizeCount,
  num_experts: expertCount,
  num_experts_per_tok: int,
  norm_topk_prob: z.boolean().default(true),
  decoder_sparse_step: int.default(1),
  mlp_only_layers: z.array(z.number().int().nonnegative().max(configLimits.layers)).default([]),
  linear_num_value_heads: headCount,
  linear_num_key_heads: headCount,
  linear_key_head_dim: headCount,
  linear_value_head_dim: headCount,
  linear_conv_kernel_dim: headCount.default(4),
  layer_types: z.array(LayerType).nullish(),
  full_attention_interval: int.default(4),
  attention_bias: z.literal(false).default(false),
  tie_word_embeddings: z.boolean().default(false),
  hidden_act: z.literal("silu").default("silu"),
});
export const Qwen3NextConfig = Qwen3NextConfigFields.superRefine((c, ctx) => {
  checkAttention(c, ctx);
  checkLayerTypes(c, ctx);
  checkExpertsPerToken(c.num_experts_per_tok, c.num_experts, "num_experts", ctx);
  if (c.linear_num_value_heads % c.linear_num_key_heads !== 0) {
    ctx.addIssue({
      code: "custom",
      path: ["linear_num_value_heads"],
      message: `linear_num_value_heads ${c.linear_num_value_heads} is not a multiple of linear_num_key_heads ${c.linear_num_key_heads}`,
    });
  }
  const headDim = c.head_dim ?? c.hidden_size / c.num_attention_heads;
  const partial = rotaryFactor(c);
  const rotary = Math.floor(headDim * partial);
  if (rotary < 2 || rotary % 2 !== 0) {
    ctx.addIssue({
      code: "custom",
      path: ["partial_rotary_factor"],
      message: `partial_rotary_factor ${partial} of head_dim ${headDim} rotates ${rotary} dimensions; RoPE needs an even number of them, at least 2`,
    });
  }
});
export type Qwen3NextConfig = z.infer<typeof Qwen3NextConfigFields>;

const rotaryFactor = (c: Pick<Qwen3NextConfig, "rope_parameters" | "partial_rotary_factor">) =>
  c.rope_parameters?.partial_rotary_factor ?? c.partial_rotary_factor ?? 0.25;

/** `count` rows from `start`, every `stride` rows, `groups` times: one part of an output interleaved per head group. */
const strided = (name: string, groups: number, stride: number, start: number, count: number) =>
  Array.from({ length: groups }, (_, g) => ({ name, start: g * stride + start, count }));

/** A full-attention layer's weights (every 4th), a linear-attention layer's, an MLP's (dense, shared or routed expert). */
type AttentionWeight = "q" | "outGate" | "k" | "v" | "o" | "qNorm" | "kNorm";
type LinearAttentionWeight = "qkv" | "z" | "b" | "a" | "conv" | "dtBias" | "aLog" | "norm" | "out";
type ExpertWeight = "gateProj" | "up" | "down";
type Qwen3NextLayerWeight = "attnNorm" | "mlpNorm" | AttentionWeight | LinearAttentionWeight | ExpertWeight | "router";

function createQwen3Next(c: Qwen3NextConfig): ArchModel<Qwen3NextLayerWeight, ExpertWeight> {
  const {
    hidden_size: h,
    num_attention_heads: heads,
    num_key_value_heads: kvHeads,
    num_experts: experts,
    num_experts_per_tok: topK,
  } = c;
  const headDim = c.head_dim ?? h / heads;
  const norm = { eps: c.rms_norm_eps, offset: 1 };
  const types =
    c.layer_types ??
    Array.from({ length: c.num_hidden_layers }, (_, i) =>
      (i + 1) % c.full_attention_interval === 0 ? "full_attention" : "linear_attention",
    );
  const rope = ropeTable(c, Math.floor(headDim * rotaryFactor(c)));
  const mlpOnly = new Set(c.mlp_only_layers);
  const sparse = (i: number) => !mlpOnly.has(i) && (i + 1) % c.decoder_sparse_step === 0;
  // Gated DeltaNet: key heads share their value heads in groups of `r`; in_proj_qkvz / in_proj_ba outputs run per group.
  const [nk, nv, hk, hv, kernel] = [
    c.linear_num_key_heads,
    c.linear_num_value_heads,
    c.linear_key_head_dim,
    c.linear_value_head_dim,
    c.linear_conv_kernel_dim,
  ];
  const r = nv / nk;
  const convDim = 2 * nk * hk + nv * hv;
  const stateShapes = { conv: [convDim, kernel - 1], ssm: [nv, hk, hv] };

  const layerWeights = (i: number): WeightSpecs<Qwen3NextLayerWeight> => {
    const p = `model.layers.${i}`;
    const specs: { [K in Qwen3NextLayerWeight]?: WeightSpec } = {
      attnNorm: { name: `${p}.input_layernorm.weight`, shape: [h] },
      mlpNorm: { name: `${p}.post_attention_layernorm.weight`, shape: [h] },
    };
    if (types[i] === "full_attention") {
      const qp = `${p}.self_attn.q_proj.weight`; // per head: its query, then its output gate
      Object.assign(specs, {
        q: { name: qp, shape: [heads * headDim, h], rowRanges: strided(qp, heads, 2 * headDim, 0, headDim) },
        outGate: {
          name: qp,
          shape: [heads * headDim, h],
          rowRanges: strided(qp, heads, 2 * headDim, headDim, headDim),
        },
        k: { name: `${p}.self_attn.k_proj.weight`, shape: [kvHeads * headDim, h] },
        v: { name: `${p}.self_attn.v_proj.weight`, shape: [kvHeads * headDim, h] },
        o: { name: `${p}.self_attn.o_proj.weight`, shape: [h, heads * headDim] },
        qNorm: { name: `${p}.self_attn.q_norm.weight`, shape: [headDim] },
        kNorm: { name: `${p}.self_attn.k_norm.weight`, shape: [headDim] },
      } satisfies { [K in AttentionWeight]: WeightSpec });
    } else {
      const la = `${p}.linear_attn`;
      const qkvz = `${la}.in_proj_qkvz.weight`;
      const ba = `${la}.in_proj_ba.weight`;
      const group = 2 * hk + 2 * r * hv;
      Object.assign(specs, {
        // q, k and v side by side in the conv's channel order.
        qkv: {
          name: qkvz,
          shape: [convDim, h],
          rowRanges: [
            ...strided(qkvz, nk, group, 0, hk),
            ...strided(qkvz, nk, group, hk, hk),
            ...strided(qkvz, nk, group, 2 * hk, r * hv),
          ],
        },
        z: { name: qkvz, shape: [nv * hv, h], rowRanges: strided(qkvz, nk, group, 2 * hk + r * hv, r * hv) },
        b: { name: ba, shape: [nv, h], rowRanges: strided(ba, nk, 2 * r, 0, r) },
        a: { name: ba, shape: [nv, h], rowRanges: strided(ba, nk, 2 * r, r, r) },
        conv: { name: `${la}.conv1d.weight`, shape: [convDim, 1, kernel] },
        dtBias: { name: `${la}.dt_bias`, shape: [nv] },
        aLog: { name: `${la}.A_log`, shape: [nv] },
        norm: { name: `${la}.norm.weight`, shape: [hv] },
        out: { name: `${la}.out_proj.weight`, shape: [h, nv * hv] },
      } satisfies { [K in LinearAttentionWeight]: WeightSpec });
    }
    const m = `${p}.mlp`;
    const inter = sparse(i) ? c.shared_expert_intermediate_size : c.intermediate_size;
    const mlp = sparse(i) ? `${m}.shared_expert` : m;
    Object.assign(specs, {
      gateProj: { name: `${mlp}.gate_proj.weight`, shape: [inter, h] },
      up: { name: `${mlp}.up_proj.weight`, shape: [inter, h] },
      down: { name: `${mlp}.down_proj.weight`, shape: [h, inter] },
    } satisfies { [K in ExpertWeight]: WeightSpec });
    if (sparse(i)) {
      // The router and the shared expert's gate in one matmul: logits of every expert, then the gate's.
      specs.router = {
        name: `${m}.gate.weight`,
        shape: [experts + 1, h],
        rowRanges: [
          { name: `${m}.gate.weight`, start: 0, count: experts },
          { name: `${m}.shared_expert_gate.weight`, start: 0, count: 1 },
        ],
      };
    }
    return specs;
  };
  const expertWeights = (i: number, e: number): WeightSpecs<ExpertWeight> => {
    const p = `model.layers.${i}.mlp.experts.${e}`;
    const inter = c.moe_intermediate_size;
    return {
      gateProj: { name: `${p}.gate_proj.weight`, shape: [inter, h] },
      up: { name: `${p}.up_proj.weight`, shape: [inter, h] },
      down: { name: `${p}.down_proj.weight`, shape: [h, inter] },
    };
  };
  const mlpOf = (ops: Ops, x: Tensor, w: Weights<ExpertWeight>) =>
    gatedMlp(ops, x, { gate: w.gateProj!, up: w.up!, down: w.down! }, "silu");

  async function attention(ops: Ops, w: Weights<AttentionWeight>, x: Tensor, run: LayerRun): Promise<Tensor> {
    const ropeAt = (t: Tensor) =>
      ops.rope(t, { positions: run.positions, invFreq: rope.invFreq, headDim, scale: rope.scale });
    const q = ops.rmsNorm(ops.matmul(x, w.q!), w.qNorm!, norm);
    const k = ops.rmsNorm(ops.matmul(x, w.k!), w.kNorm!, norm);
    const o = await run.attention(ropeAt(q), ropeAt(k), ops.matmul(x, w.v!), {
      heads,
      kvHeads,
      headDim,
      scale: 1 / Math.sqrt(headDim),
    });
    return ops.matmul(ops.gatedActivation(ops.matmul(x, w.outGate!), o, "sigmoid"), w.o!);
  }

  async function linearAttention(
    ops: Ops,
    w: Weights<LinearAttentionWeight>,
    x: Tensor,
    run: LayerRun,
  ): Promise<Tensor> {
    const seqs = await run.recurrent(stateShapes);
    const state = (key: string) => seqs.map((s) => ({ row: s.row, rows: s.rows, state: s.state[key]! }));
    const qkv = ops.causalConv1d(ops.matmul(x, w.qkv!), w.conv!, state("conv"));
    const core = ops.gatedDeltaRule(qkv, ops.matmul(x, w.a!), ops.matmul(x, w.b!), {
      kHeads: nk,
      vHeads: nv,
      kDim: hk,
      vDim: hv,
      aLog: w.aLog!,
      dtBias: w.dtBias!,
      seqs: state("ssm"),
    });
    const gated = ops.gatedActivation(ops.matmul(x, w.z!), ops.rmsNorm(core, w.norm!, { eps: c.rms_norm_eps }), "silu");
    return ops.matmul(gated, w.out!);
  }

  async function moe(
    ops: Ops,
    w: Weights<Qwen3NextLayerWeight>,
    x: Tensor,
    run: LayerRun<ExpertWeight>,
  ): Promise<Tensor> {
    const logits = await run.read(ops.matmul(x, w.router!));
    const rows = x.shape[0]!;
    const routes = softmaxThenTopK(logits, experts + 1, experts, topK, c.norm_topk_prob);
    const out = await routedExperts(ops, run, x, routes, (we, xe) => mlpOf(ops, xe, we));
    const sharedScale = Float32Array.from(
      { length: rows },
      (_, i) => 1 / (1 + Math.exp(-logits[i * (experts + 1) + experts]!)),
    );
    ops.scoped(() => {
      ops.accumulateRows(
        out,
        mlpOf(ops, x, w),
        Int32Array.from({ length: rows }, (_, i) => i),
        sharedScale,
      );
      return out;
    });
    return out;
  }

  return {
    shape: {
      numLayers: c.num_hidden_layers,
      hiddenSize: h,
      vocabSize: c.vocab_size,
      maxPositions: c.max_position_embeddings,
      kvLayers: types.map((t) =>
        t === "full_attention"
          ? { kvHeads, headDim }
          : { kvHeads: 0, headDim: 0, stateFloats: convDim * (kernel - 1) + nv * hk * hv },
      ),
      // Attention: x, its norm, q, gate, k, v, roped q/k, merged parts, the gated output, the projection.
      // Linear attention: x, norm, qkv, conv output, z, a, b, core, its norm, the gated product, the projection.
      // MoE: x, h, norm, router logits, the sum, one expert's rows and its gate/up/product, the shared expert's.
      activationsPerRow:
        Math.max(
          3 * h + 6 * heads * headDim + 4 * kvHeads * headDim,
          3 * h + 2 * convDim + 4 * nv * hv + 2 * nv,
          7 * h +
            experts +
            1 +
            3 * c.moe_intermediate_size +
            3 * Math.max(c.shared_expert_intermediate_size, c.intermediate_size),
        ) +
        Math.max(h, convDim) / 2,
      moe: { experts, topK, layers: types.map((_, i) => sparse(i)) },
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
      w: Weights<Qwen3NextLayerWeight>,
      x: Tensor,
      run: LayerRun<ExpertWeight>,
    ): Promise<Tensor> {
      const mixed = await ops.scoped(async () => {
        const a = ops.rmsNorm(x, w.attnNorm!, norm);
        return types[layer] === "full_attention" ? attention(ops, w, a, run) : linearAttention(ops, w, a, run);
      });
      const hidden = ops.add(x, mixed);
      const mlp = await ops.scoped(async () => {
        const m = ops.rmsNorm(hidden, w.mlpNorm!, norm);
        return sparse(layer) ? moe(ops, w, m, run) : mlpOf(ops, m, w);
      });
      return ops.add(hidden, mlp);
    },
    head: (ops, g, x) => ops.matmul(ops.rmsNorm(x, g.norm!, norm), g.lmHead!),
  };
}

export const qwen3Next: Architecture<Qwen3NextConfig> = {
  modelType: "qwen3_next",
  config: Qwen3NextConfig,
  create: createQwen3Next,
};
