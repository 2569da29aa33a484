// What an architecture file provides: its config schema, its tensor names and shapes, and a layer's forward over `Ops`.
import type { z } from "zod";
import type { GateActivation, Ops, Tensor } from "../backend/ops.js";

/** The numbers the engine and planner need, derived from a validated config. */
export interface ModelShape {
  readonly numLayers: number;
  readonly hiddenSize: number;
  readonly vocabSize: number;
  readonly maxPositions: number;
  /** Per layer: the KV it stores per token, and the window bounding it (undefined = full attention). */
  readonly kvLayers: readonly { readonly kvHeads: number; readonly headDim: number; readonly slidingWindow?: number }[];
  /** Most f32 activations per row alive at once inside a layer (what the planner reserves per prefill row). */
  readonly activationsPerRow: number;
}

export interface WeightSpec {
  readonly name: string;
  readonly shape: readonly number[];
}

export type WeightSpecs = Readonly<Record<string, WeightSpec>>;
export type Weights = Readonly<Record<string, Tensor>>;

export interface AttentionCall {
  readonly heads: number;
  readonly kvHeads: number;
  readonly headDim: number;
  readonly scale: number;
  readonly slidingWindow?: number;
  readonly softcap?: number;
}

/** The engine's side of a layer's forward: positions of the rows, and attention backed by its KV cache. */
export interface LayerRun {
  readonly positions: Int32Array;
  /** Stores k and v [rows, kvHeads * headDim] in this layer's cache, then attends q over everything each row may see (KV may come from RAM or disk). */
  attention(q: Tensor, k: Tensor, v: Tensor, o: AttentionCall): Promise<Tensor>;
}

/** One model built from a validated config: names, shapes and math, no files and no memory tiers. */
export interface ArchModel {
  readonly shape: ModelShape;
  /** Embedding table, final norm and LM head (the head may name the embedding table when tied). */
  readonly globalWeights: WeightSpecs;
  layerWeights(layer: number): WeightSpecs;
  embed(ops: Ops, g: Weights, ids: Int32Array): Tensor;
  forwardLayer(ops: Ops, layer: number, w: Weights, x: Tensor, run: LayerRun): Promise<Tensor>;
  /** Final norm and LM head: logits [rows, vocab]. */
  head(ops: Ops, g: Weights, x: Tensor): Tensor;
}

export interface Architecture<C = any> {
  readonly modelType: string;
  readonly config: z.ZodType<C>;
  create(config: C): ArchModel;
}

/** gate/up/down MLP shared by the Llama family (its temporaries freed on return). */
export function gatedMlp(ops: Ops, x: Tensor, w: Weights, act: GateActivation): Tensor {
  return ops.scoped(() => {
    const h = ops.gatedActivation(ops.matmul(x, w.gate!, w.gateBias), ops.matmul(x, w.up!, w.upBias), act);
    return ops.matmul(h, w.down!, w.downBias);
  });
}
