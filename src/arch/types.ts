// What an architecture file provides: its config schema, its tensor names and shapes, and a layer's forward over `Ops`.
import type { z } from "zod";
import type { GateActivation, Ops, Tensor } from "../backend/ops.js";

/** The numbers the engine and planner need, derived from a validated config. */
export interface ModelShape {
  readonly numLayers: number;
  readonly hiddenSize: number;
  readonly vocabSize: number;
  readonly maxPositions: number;
  /**
   * Per layer: the KV it stores per token, and the window bounding it (undefined = full attention); a recurrent layer
   * (linear attention) stores none (kvHeads 0) and keeps `stateFloats` f32 per sequence instead.
   */
  readonly kvLayers: readonly {
    readonly kvHeads: number;
    readonly headDim: number;
    readonly slidingWindow?: number;
    readonly stateFloats?: number;
  }[];
  /** Most f32 activations per row alive at once inside a layer (what the planner reserves per prefill row). */
  readonly activationsPerRow: number;
  /**
   * Mixture of experts: experts per layer and how many each token uses (the engine loads only the routed ones), and
   * which layers have them (default: all).
   */
  readonly moe?: { readonly experts: number; readonly topK: number; readonly layers?: readonly boolean[] };
}

/** Whether some layers keep recurrent state (linear attention) instead of KV. */
export function hasRecurrentLayers(shape: ModelShape): boolean {
  return shape.kvLayers.some((l) => (l.stateFloats ?? 0) > 0);
}

/** Experts of `layer` (0 for a dense layer or model). */
export function expertsIn(shape: ModelShape, layer: number): number {
  return shape.moe && (shape.moe.layers?.[layer] ?? true) ? shape.moe.experts : 0;
}

export interface WeightSpec {
  readonly name: string;
  /** The shape the architecture computes with ([out, in] for matrices). */
  readonly shape: readonly number[];
  /** Slice `index` along the first dimension of a stacked tensor (one expert of [experts, ...]). */
  readonly index?: number;
  /** MXFP4: `name` holds the packed values [..., rows, cols / 32, 16] (U8), `scales` their e8m0 exponents [..., rows, cols / 32] (U8). */
  readonly scales?: string;
  /**
   * Rows of stored tensors, in this order, as one weight (the engine copies them back to back): how a projection whose
   * outputs are interleaved per head is split, or two projections fused. `name` is the first range's tensor.
   */
  readonly rowRanges?: readonly { readonly name: string; readonly start: number; readonly count: number }[];
}

/**
 * Specs of weights by the names an architecture gives them, and the tensors loaded for them. An architecture types
 * them with its own names (`Weights<LlamaLayerWeight>`), so a misspelt weight in its forward does not compile; the
 * engine sees any names.
 */
export type WeightSpecs<K extends string = string> = { readonly [P in K]?: WeightSpec };
export type Weights<K extends string = string> = { readonly [P in K]?: Tensor };
/** The names a spec function gives its weights: `Weights<WeightNames<typeof layerWeights>>`. */
export type WeightNames<F extends (...args: never[]) => object> = Extract<keyof ReturnType<F>, string>;
/** The specs an architecture gave, with their names (names it left out for this config are not there). */
export function specEntries(specs: WeightSpecs): [string, WeightSpec][] {
  return Object.entries(specs).filter((e): e is [string, WeightSpec] => e[1] !== undefined);
}

export function specList(specs: WeightSpecs): WeightSpec[] {
  return specEntries(specs).map(([, spec]) => spec);
}

/** Embedding table, final norm and LM head: every architecture's global weights. */
export type GlobalWeight = "embed" | "norm" | "lmHead";

export interface AttentionCall {
  readonly heads: number;
  readonly kvHeads: number;
  readonly headDim: number;
  readonly scale: number;
  readonly slidingWindow?: number;
  readonly softcap?: number;
  /** Per-head logits that join the softmax with no value (gpt-oss). */
  readonly sinks?: Tensor;
}

/** The engine's side of a layer's forward: positions of the rows, and attention backed by its KV cache. */
export interface LayerRun<E extends string = string> {
  readonly positions: Int32Array;
  /** Stores k and v [rows, kvHeads * headDim] in this layer's cache, then attends q over everything each row may see (KV may come from RAM or disk). */
  attention(q: Tensor, k: Tensor, v: Tensor, o: AttentionCall): Promise<Tensor>;
  /**
   * For a recurrent layer: each sequence's rows and its state tensors of the given shapes (f32, zeros at the sequence's
   * start), which the layer's ops update in place. Call once per layer pass.
   */
  recurrent(
    shapes: Readonly<Record<string, readonly number[]>>,
  ): Promise<
    readonly { readonly row: number; readonly rows: number; readonly state: Readonly<Record<string, Tensor>> }[]
  >;
  /** Values of a small tensor (router logits) on the host. */
  read(t: Tensor): Promise<Float32Array>;
  /** Expert `expert` of this layer on the compute tier, loaded if it is not cached; hold it until `releaseExpert`. */
  expert(expert: number): Promise<Weights<E>>;
  /** The expert's compute is queued: its memory may be reused once that work is done. */
  releaseExpert(expert: number): void;
}

/**
 * One model built from a validated config: names, shapes and math, no files and no memory tiers. `L` and `E` are the
 * names of a layer's and an expert's weights.
 */
export interface ArchModel<L extends string = string, E extends string = string> {
  readonly shape: ModelShape;
  /** Embedding table, final norm and LM head (the head may name the embedding table when tied). */
  readonly globalWeights: WeightSpecs<GlobalWeight>;
  /** The layer's dense weights (every token uses them). */
  layerWeights(layer: number): WeightSpecs<L>;
  /** One expert's weights (models with `shape.moe`). */
  expertWeights?(layer: number, expert: number): WeightSpecs<E>;
  embed(ops: Ops, g: Weights<GlobalWeight>, ids: Int32Array): Tensor;
  forwardLayer(ops: Ops, layer: number, w: Weights<L>, x: Tensor, run: LayerRun<E>): Promise<Tensor>;
  /** Final norm and LM head: logits [rows, vocab]. */
  head(ops: Ops, g: Weights<GlobalWeight>, x: Tensor): Tensor;
}

export interface Architecture<C = any> {
  readonly modelType: string;
  readonly config: z.ZodType<C>;
  create(config: C): ArchModel;
}

/** The weights of a gate/up/down MLP. */
export type MlpWeight = "gate" | "up" | "down" | "gateBias" | "upBias" | "downBias";

/** gate/up/down MLP shared by the Llama family (its temporaries freed on return). */
export function gatedMlp(ops: Ops, x: Tensor, w: Weights<MlpWeight>, act: GateActivation): Tensor {
  return ops.scoped(() => {
    const h = ops.gatedActivation(ops.matmul(x, w.gate!, w.gateBias), ops.matmul(x, w.up!, w.upBias), act);
    return ops.matmul(h, w.down!, w.downBias);
  });
}
