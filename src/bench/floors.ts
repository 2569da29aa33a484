// Physical floors for the benchmark: what a run cannot beat given the bytes it must move and the FLOPs it must do.
import type { ArchModel } from "../arch/types.js";
import type { ModelLayout } from "../engine/layout.js";

export interface Links {
  /** GB/s measured in the same run. */
  diskGbps: number;
  h2dGbps: number;
  /** TFLOP/s of a large bf16 matmul and of causal attention (torch's, or layerwise's own without torch). */
  matmulTflops: number;
  attentionTflops: number;
}

/** FLOPs of a prefill of `ctx` tokens: every layer's matmuls (2 per weight) and causal attention. */
export function prefillFlops(
  layout: ModelLayout,
  model: ArchModel,
  ctx: number,
  heads: number,
  headDim: number,
): { matmul: number; attention: number } {
  const params = layout.layers.reduce((n, l) => n + l.dataBytes / 2, 0);
  const attention = model.shape.numLayers * 4 * ((ctx * ctx) / 2) * heads * headDim;
  return { matmul: 2 * params * ctx, attention };
}

export function prefillFloorS(
  flops: { matmul: number; attention: number },
  weightBytes: number,
  linkGbps: number,
  links: Links,
): number {
  const compute = flops.matmul / (links.matmulTflops * 1e12) + flops.attention / (links.attentionTflops * 1e12);
  return Math.max(compute, weightBytes / (linkGbps * 1e9));
}

/** Seconds to move `bytes` over a link of `gbps` GB/s. */
export function transferS(bytes: number, gbps: number): number {
  return bytes / (gbps * 1e9);
}

/** Bytes of every layer's weights (globals and routed experts aside): what a prefill streams once. */
export function layerWeightBytes(layout: ModelLayout): number {
  return layout.layers.reduce((n, l) => n + l.dataBytes, 0);
}
