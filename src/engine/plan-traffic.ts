// What a plan holds and moves: KV bytes by context, the KV blocks the device pool reserves, the bytes a decoded token
// moves over each link, and the streamed layers decode keeps on the device. The planner sizes a plan with these; the
// engine and the bench check a run against them.
import type { ModelShape } from "../arch/types.js";
import { dtypeBytes, type FloatDType } from "../backend/dtype.js";
import type { ModelLayout } from "./layout.js";
import type { DecodeLayout, Plan, PlanInput, WeightTier } from "./plan-types.js";

/** KV bytes of one sequence of `tokens` tokens (sliding-window layers hold at most their window). */
export function kvBytesAt(shape: ModelShape, dtype: FloatDType, tokens: number): number {
  return shape.kvLayers.reduce(
    (n, l) => n + 2 * l.kvHeads * l.headDim * dtypeBytes[dtype] * Math.min(tokens, l.slidingWindow ?? tokens),
    0,
  );
}

/** KV bytes of one sequence for its tokens from..to (window-bounded layers stop growing once they hold their window). */
export function kvBytesBetween(shape: ModelShape, dtype: FloatDType, from: number, to: number): number {
  return kvBytesAt(shape, dtype, to) - kvBytesAt(shape, dtype, from);
}

/** KV shape as a cache holds it: the persistent KV cache keeps every block whole, so sliding windows do not bound it. */
export function kvShapeOf(input: Pick<PlanInput, "shape" | "kvKeepsEveryBlock">): ModelShape {
  const { shape } = input;
  return input.kvKeepsEveryBlock
    ? { ...shape, kvLayers: shape.kvLayers.map((l) => ({ kvHeads: l.kvHeads, headDim: l.headDim })) }
    : shape;
}

/**
 * Bytes that must cross each link to decode one token at `tokens` of context with this plan: layers streamed from RAM
 * or disk (but for those decode keeps on the device at that context), the KV past decode's device share (from disk too
 * past RAM's), and routed experts. `Plan.perToken` is this at the planned context; the bench takes it at the context
 * it runs.
 */
export function decodeBytesAt(
  p: DecodeLayout,
  tokens: number,
): { diskBytes: number; h2dBytes: number; kvDiskBytes: number } {
  const { layout, shape, kvDtype, batch } = p.input;
  const kv = (from: number) => kvBytesBetween(kvShapeOf(p.input), kvDtype, Math.min(tokens, from), tokens) * batch;
  const copied = copiedLayers(p, new Set(decodeKeptLayers(p, decodeExtraKvBytesAt(p, tokens))));
  const streamed = (tier: WeightTier) =>
    layout.layers.reduce((n, l, i) => n + (p.layerTier[i] === tier && copied.has(i) ? l.dataBytes : 0), 0);
  const kvFromDisk = kv(p.kvDeviceTokens + p.kvHostTokens);
  const routed = routedExpertBytes(layout, shape, p.experts);
  return {
    diskBytes: streamed("disk") + kvFromDisk + routed.disk,
    h2dBytes: streamed("disk") + streamed("ram") + kv(p.kvDeviceTokensDecode) + routed.h2d,
    /** The part of diskBytes that is KV read back from the spill file (written through the page cache). */
    kvDiskBytes: kvFromDisk,
  };
}

/**
 * The streamed layers a decoded token copies to the device: those in the slots' rotation (not resident, not kept) that
 * share their slot with another (the n-th streamed layer takes slot n mod slots; one alone there stays from token to
 * token, LayerStreamer.startLoad).
 */
export function copiedLayers(p: Pick<Plan, "layerTier" | "slots">, kept: ReadonlySet<number>): Set<number> {
  const rotating = p.layerTier.flatMap((t, i) => (t === "device" || kept.has(i) ? [] : [i]));
  return new Set(rotating.filter((_, pos) => pos >= p.slots || pos + p.slots < rotating.length));
}

/**
 * KV blocks the device pool reserves at load, by column count: per sequence and KV layer its prefill share (at most
 * the window of a sliding-window layer that frees what its window passed) and its partly filled last block; once,
 * one layer's blocks in transit while a span passes. Nothing is reserved when every layer is resident.
 */
export function kvReservedBlocks(
  p: Pick<Plan, "input" | "slots" | "kvDeviceTokens" | "kvTransitBlocks">,
): Map<number, number> {
  if (p.slots === 0) return new Map();
  const { batch, kvBlockTokens: block } = p.input;
  return blocksByKvCols(
    p.input,
    (l, i) =>
      batch * (Math.min(Math.floor(p.kvDeviceTokens / block), windowBlocks(p.input, l)) + 1) +
      (i === 0 ? p.kvTransitBlocks : 0),
  );
}

/**
 * Device bytes of KV blocks beyond the pool's reserve while `batch` sequences of `tokens` tokens decode: each layer
 * keeps its full blocks up to decode's share (or its window), and one being filled. The pool counts the same at run
 * time (KvBlockPool.extraDeviceBytes).
 */
export function decodeExtraKvBytesAt(p: DecodeLayout, tokens: number): number {
  const { batch, kvBlockTokens: block } = p.input;
  const used = blocksByKvCols(
    p.input,
    (l) =>
      batch *
      (Math.min(Math.floor(tokens / block), Math.floor(p.kvDeviceTokensDecode / block), windowBlocks(p.input, l)) + 1),
  );
  return kvBytesBeyondReserve(p.input, used, kvReservedBlocks(p));
}

/** Device bytes of `blocks` beyond `reserved`, both by column count; none where nothing is reserved (no limit). */
export function kvBytesBeyondReserve(
  input: Pick<PlanInput, "kvBlockTokens" | "kvDtype" | "deviceBytesFor">,
  blocks: ReadonlyMap<number, number>,
  reserved: ReadonlyMap<number, number>,
): number {
  let bytes = 0;
  for (const [kvCols, n] of blocks)
    bytes += Math.max(0, n - (reserved.get(kvCols) ?? Infinity)) * kvBlockPairBytes(input, kvCols);
  return bytes;
}

/** A block count per KV layer, summed by the layers' column count (the pool keeps blocks by it). */
export function blocksByKvCols(
  input: Pick<PlanInput, "shape">,
  count: (l: ModelShape["kvLayers"][number], i: number) => number,
): Map<number, number> {
  const by = new Map<number, number>();
  kvLayersOf(input).forEach((l, i) =>
    by.set(l.kvHeads * l.headDim, (by.get(l.kvHeads * l.headDim) ?? 0) + count(l, i)),
  );
  return by;
}

/** Device bytes an allocation of n bytes holds (PlanInput.deviceBytesFor; n itself by default). */
export function heldBy(input: Pick<PlanInput, "deviceBytesFor">): (n: number) => number {
  return input.deviceBytesFor ?? ((n: number) => n);
}

/** Device bytes of one KV block's K and V for layers of `kvCols` columns (two allocations). */
export function kvBlockPairBytes(
  input: Pick<PlanInput, "kvBlockTokens" | "kvDtype" | "deviceBytesFor">,
  kvCols: number,
): number {
  return 2 * heldBy(input)(kvCols * input.kvBlockTokens * dtypeBytes[input.kvDtype]);
}

/**
 * The streamed layers decode keeps on the device, with `extraKvBytes` of KV beyond the reserve there: the last ones, as
 * many as fit whole in what is left of the plan's decodeSpare. (The last, so that the next token's first layers, read
 * ahead into the slots as a forward ends, keep their places in the streaming order.)
 */
export function decodeKeptLayers(p: Pick<Plan, "input" | "layerTier" | "decodeSpare">, extraKvBytes: number): number[] {
  const held = heldBy(p.input);
  let room = p.decodeSpare - extraKvBytes;
  const kept: number[] = [];
  for (let i = p.layerTier.length - 1; i >= 0; i--) {
    if (p.layerTier[i] === "device") continue;
    const bytes = held(p.input.layout.layers[i]!.deviceBytes);
    if (bytes > room) break;
    room -= bytes;
    kept.push(i);
  }
  return kept;
}

/** Layers that keep KV (recurrent layers keep state instead). */
export function kvLayersOf(input: Pick<PlanInput, "shape">): ModelShape["kvLayers"] {
  return input.shape.kvLayers.filter((l) => l.kvHeads > 0);
}

/** Most full blocks a layer keeps: a sliding-window layer that frees what its window passed holds at most its window's. */
export function windowBlocks(
  input: Pick<PlanInput, "kvBlockTokens" | "kvKeepsEveryBlock">,
  l: ModelShape["kvLayers"][number],
): number {
  return l.slidingWindow && !input.kvKeepsEveryBlock ? Math.ceil(l.slidingWindow / input.kvBlockTokens) : Infinity;
}

/**
 * Bytes of routed experts a decoded token must copy to the device (hot-cache misses) and read from disk (misses not in
 * RAM), if routing spreads evenly over the experts (random weights route about so).
 */
export function routedExpertBytes(
  layout: ModelLayout,
  shape: ModelShape,
  experts: Plan["experts"],
): { h2d: number; disk: number } {
  const { total, deviceSlots, ram } = experts;
  if (total === 0 || !shape.moe) return { h2d: 0, disk: 0 };
  const perExpert = layout.experts.flat().reduce((n, g) => n + g.dataBytes, 0) / total;
  const routed = layout.experts.filter((l) => l.length > 0).length * shape.moe.topK * perExpert;
  const h2d = routed * (1 - deviceSlots / total);
  return { h2d, disk: h2d * (1 - ram / total) };
}

/** The most tokens past `from`, in whole blocks up to `limit`, whose KV fits in `bytes`. */
export function kvTokensWithin(
  bytesOf: (from: number, to: number) => number,
  from: number,
  limit: number,
  block: number,
  bytes: number,
): number {
  let lo = 0;
  let hi = Math.floor(limit / block);
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (bytesOf(from, from + mid * block) <= bytes) lo = mid;
    else hi = mid - 1;
  }
  return lo * block;
}
