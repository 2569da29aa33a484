// The memory planner: from layer sizes, context and budgets, decides what lives on the GPU, in RAM and on disk.
import type { ModelShape } from "../arch/types.js";
import { dtypeBytes, type FloatDType } from "../backend/dtype.js";
import { UsageError } from "../errors.js";
import { formatBytes } from "../util/bytes.js";
import type { ModelLayout } from "./layout.js";

export type WeightTier = "device" | "ram" | "disk";

export interface PlanInput {
  readonly layout: ModelLayout;
  readonly shape: ModelShape;
  /** Tokens each sequence's KV cache must hold (prompt plus new tokens). */
  readonly contextTokens: number;
  readonly batch: number;
  readonly prefillChunk: number;
  readonly kvBlockTokens: number;
  readonly kvDtype: FloatDType;
  /** Everything layerwise allocates on the compute device must fit here (the user's budget less deviceOverheadBytes). */
  readonly vramBytes: number;
  /** Device memory the backend holds of the user's budget before layerwise allocates anything (the CUDA context). */
  readonly deviceOverheadBytes?: number;
  /** RAM for caching weights and KV (staging buffers for disk reads come on top, see `hostBytes.staging`). */
  readonly ramBytes: number;
  /** Rows taken through all layers at once; their hidden states wait in host memory between layers. */
  readonly prefillSpan: number;
  /** True with the persistent KV cache: blocks stay whole, so sliding-window layers keep every block too. */
  readonly kvKeepsEveryBlock?: boolean;
  /** Most device slots for hot experts (default: what the budget leaves room for). */
  readonly expertSlots?: number;
  /** Device bytes an allocation of n bytes really holds (the backend's rounding); identity by default. */
  readonly deviceBytesFor?: (n: number) => number;
  /** The backend's allocator's fragmentation, as a share of the workspace (Backend.workspaceSlack); 0 by default. */
  readonly workspaceSlack?: number;
}

export interface Plan {
  readonly input: PlanInput;
  readonly layerTier: readonly WeightTier[];
  /** Device slots that streamed layers rotate through (0 when every layer is resident). */
  readonly slots: number;
  /** Pinned host buffers that disk reads land in before their copy to the device. */
  readonly stagingBuffers: number;
  /** Per sequence and layer: KV tokens kept on the device while prefilling (the rest go to RAM, then disk). */
  readonly kvDeviceTokens: number;
  /** The same while decoding: the prompt's activations are gone, and their room holds KV brought back from RAM. */
  readonly kvDeviceTokensDecode: number;
  readonly kvHostTokens: number;
  /** KV blocks per layer that can be staged on the device at once when attending over RAM or disk blocks. */
  readonly kvStagingBlocks: number;
  /** KV blocks of one layer in transit while a prompt's span passes (kvTransitBlocks), part of deviceBytes.kvHeadroom. */
  readonly kvTransitBlocks: number;
  /**
   * Device bytes a prompt's activations leave free while decoding, beyond decode's own rows and a step's new KV blocks.
   * Decode's KV share beyond the pool's reserve takes them first (it moves as many bytes a token from RAM as a layer's
   * weights would); streamed layers are kept in the rest until the next prompt (decodeKeptLayers).
   */
  readonly decodeSpare: number;
  /**
   * Pinned host buffers of one chunk's hidden states (`rows` f32 rows each, hostBytes.activations in all): a span of
   * several chunks waits in them between layers. Taken at load, as pinning memory stalls the host for milliseconds per
   * megabyte, which would leave the GPU idle in a prompt's first layer.
   */
  readonly hiddenHostBuffers: { readonly count: number; readonly rows: number };
  /**
   * Mixture of experts: device slots of the hot-expert cache (every expert resident when it equals `total`), experts kept
   * in pinned RAM (the first ones, layer by layer; the others are read from disk), and host buffers for those reads.
   */
  readonly experts: { readonly total: number; readonly deviceSlots: number; readonly ram: number; readonly stagingBuffers: number };
  readonly deviceBytes: { globals: number; workspace: number; kvHeadroom: number; slots: number; kvStaging: number; residentLayers: number; kv: number; experts: number; total: number };
  /**
   * The smallest VRAM budget (the backend's own memory included, as --vram counts it) this input still runs in: every
   * layer streamed through two slots. VRAM_TOO_SMALL names it.
   */
  readonly minDeviceBytes: number;
  /**
   * Host memory: the caches --ram bounds (layers, KV), and working buffers on top of it: disk staging, the span's
   * hidden states, and KV transfer buffers.
   */
  readonly hostBytes: { ramLayers: number; kv: number; ramExperts: number; staging: number; activations: number; transfer: number; total: number };
  readonly kvDiskBytes: number;
  /** Bytes that must cross each link to decode one token at the planned context (routed experts: misses if routing were uniform). */
  readonly perToken: { diskBytes: number; h2dBytes: number };
}

/** KV bytes of one sequence of `tokens` tokens (sliding-window layers hold at most their window). */
export function kvBytesAt(shape: ModelShape, dtype: FloatDType, tokens: number): number {
  return shape.kvLayers.reduce((n, l) => n + 2 * l.kvHeads * l.headDim * dtypeBytes[dtype] * Math.min(tokens, l.slidingWindow ?? tokens), 0);
}

/** KV bytes of one sequence for its tokens from..to (window-bounded layers stop growing once they hold their window). */
export function kvBytesBetween(shape: ModelShape, dtype: FloatDType, from: number, to: number): number {
  return kvBytesAt(shape, dtype, to) - kvBytesAt(shape, dtype, from);
}

/** KV shape as a cache holds it: the persistent KV cache keeps every block whole, so sliding windows do not bound it. */
function kvShapeOf(input: Pick<PlanInput, "shape" | "kvKeepsEveryBlock">): ModelShape {
  const { shape } = input;
  return input.kvKeepsEveryBlock ? { ...shape, kvLayers: shape.kvLayers.map((l) => ({ kvHeads: l.kvHeads, headDim: l.headDim })) } : shape;
}

/**
 * Bytes that must cross each link to decode one token at `tokens` of context with this plan: layers streamed from RAM
 * or disk (but for those decode keeps on the device at that context), the KV past decode's device share (from disk too
 * past RAM's), and routed experts. `Plan.perToken` is this at the planned context; the bench takes it at the context
 * it runs.
 */
export function decodeBytesAt(p: DecodeLayout, tokens: number): { diskBytes: number; h2dBytes: number; kvDiskBytes: number } {
  const { layout, shape, kvDtype, batch } = p.input;
  const kv = (from: number) => kvBytesBetween(kvShapeOf(p.input), kvDtype, Math.min(tokens, from), tokens) * batch;
  const copied = copiedLayers(p, new Set(decodeKeptLayers(p, decodeExtraKvBytesAt(p, tokens))));
  const streamed = (tier: WeightTier) => layout.layers.reduce((n, l, i) => n + (p.layerTier[i] === tier && copied.has(i) ? l.dataBytes : 0), 0);
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
function copiedLayers(p: Pick<Plan, "layerTier" | "slots">, kept: ReadonlySet<number>): Set<number> {
  const rotating = p.layerTier.flatMap((t, i) => (t === "device" || kept.has(i) ? [] : [i]));
  return new Set(rotating.filter((_, pos) => pos >= p.slots || pos + p.slots < rotating.length));
}

/** What decode's traffic and room depend on. */
export type DecodeLayout = Pick<Plan, "input" | "layerTier" | "slots" | "kvDeviceTokens" | "kvDeviceTokensDecode" | "kvHostTokens" | "kvTransitBlocks" | "decodeSpare" | "experts">;

/**
 * KV blocks the device pool reserves at load, by column count: per sequence and KV layer its prefill share (at most
 * the window of a sliding-window layer that frees what its window passed) and its partly filled last block; once,
 * one layer's blocks in transit while a span passes. Nothing is reserved when every layer is resident.
 */
export function kvReservedBlocks(p: Pick<Plan, "input" | "slots" | "kvDeviceTokens" | "kvTransitBlocks">): Map<number, number> {
  if (p.slots === 0) return new Map();
  const { batch, kvBlockTokens: block } = p.input;
  return blocksByKvCols(p.input, (l, i) => batch * (Math.min(Math.floor(p.kvDeviceTokens / block), windowBlocks(p.input, l)) + 1) + (i === 0 ? p.kvTransitBlocks : 0));
}

/**
 * Device bytes of KV blocks beyond the pool's reserve while `batch` sequences of `tokens` tokens decode: each layer
 * keeps its full blocks up to decode's share (or its window), and one being filled. The pool counts the same at run
 * time (KvBlockPool.extraDeviceBytes).
 */
export function decodeExtraKvBytesAt(p: DecodeLayout, tokens: number): number {
  const { batch, kvBlockTokens: block } = p.input;
  const used = blocksByKvCols(p.input, (l) => batch * (Math.min(Math.floor(tokens / block), Math.floor(p.kvDeviceTokensDecode / block), windowBlocks(p.input, l)) + 1));
  return kvBytesBeyondReserve(p.input, used, kvReservedBlocks(p));
}

/** Device bytes of `blocks` beyond `reserved`, both by column count; none where nothing is reserved (no limit). */
export function kvBytesBeyondReserve(input: Pick<PlanInput, "kvBlockTokens" | "kvDtype" | "deviceBytesFor">, blocks: ReadonlyMap<number, number>, reserved: ReadonlyMap<number, number>): number {
  let bytes = 0;
  for (const [kvCols, n] of blocks) bytes += Math.max(0, n - (reserved.get(kvCols) ?? Infinity)) * kvBlockPairBytes(input, kvCols);
  return bytes;
}

/** A block count per KV layer, summed by the layers' column count (the pool keeps blocks by it). */
function blocksByKvCols(input: Pick<PlanInput, "shape">, count: (l: ModelShape["kvLayers"][number], i: number) => number): Map<number, number> {
  const by = new Map<number, number>();
  kvLayersOf(input).forEach((l, i) => by.set(l.kvHeads * l.headDim, (by.get(l.kvHeads * l.headDim) ?? 0) + count(l, i)));
  return by;
}

/** Device bytes an allocation of n bytes holds (PlanInput.deviceBytesFor; n itself by default). */
function heldBy(input: Pick<PlanInput, "deviceBytesFor">): (n: number) => number {
  return input.deviceBytesFor ?? ((n: number) => n);
}

/** Device bytes of one KV block's K and V for layers of `kvCols` columns (two allocations). */
function kvBlockPairBytes(input: Pick<PlanInput, "kvBlockTokens" | "kvDtype" | "deviceBytesFor">, kvCols: number): number {
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
export function windowBlocks(input: Pick<PlanInput, "kvBlockTokens" | "kvKeepsEveryBlock">, l: ModelShape["kvLayers"][number]): number {
  return l.slidingWindow && !input.kvKeepsEveryBlock ? Math.ceil(l.slidingWindow / input.kvBlockTokens) : Infinity;
}

/**
 * Bytes of routed experts a decoded token must copy to the device (hot-cache misses) and read from disk (misses not in
 * RAM), if routing spreads evenly over the experts (random weights route about so).
 */
export function routedExpertBytes(layout: ModelLayout, shape: ModelShape, experts: Plan["experts"]): { h2d: number; disk: number } {
  const { total, deviceSlots, ram } = experts;
  if (total === 0 || !shape.moe) return { h2d: 0, disk: 0 };
  const perExpert = layout.experts.flat().reduce((n, g) => n + g.dataBytes, 0) / total;
  const routed = layout.experts.filter((l) => l.length > 0).length * shape.moe.topK * perExpert;
  const h2d = routed * (1 - deviceSlots / total);
  return { h2d, disk: h2d * (1 - ram / total) };
}

/** The most tokens past `from`, in whole blocks up to `limit`, whose KV fits in `bytes`. */
function kvTokensWithin(bytesOf: (from: number, to: number) => number, from: number, limit: number, block: number, bytes: number): number {
  let lo = 0;
  let hi = Math.floor(limit / block);
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (bytesOf(from, from + mid * block) <= bytes) lo = mid;
    else hi = mid - 1;
  }
  return lo * block;
}

/** Rows of logits computed at once (more rows are done in groups of this many). */
export const logitRows = 8;

export function workspaceBytes(shape: ModelShape, rows: number): number {
  // A layer's live activations for a chunk, the next chunk's hidden states copied in meanwhile and the last chunk's
  // still copying out (prefill: their memory is reused only once that copy is done), and a group of logit rows with the
  // final norm before it.
  return rows * (shape.activationsPerRow + 2 * shape.hiddenSize) * 4 + logitRows * (shape.vocabSize + shape.hiddenSize) * 4;
}

/**
 * KV blocks of one layer beyond its device share while a span of `spanRows` rows (of `sequences` sequences) passes in
 * chunks of `chunkRows`: the layer's new blocks stay on the device for its whole pass, and those leaving stay there
 * until the next layer's second chunk is enqueued (Runner.forward, KvCache.settle), meanwhile two chunks of that layer
 * come; each sequence's rows may start a block.
 */
export function kvTransitBlocks(spanRows: number, chunkRows: number, blockTokens: number, sequences = 1): number {
  return Math.ceil(spanRows / blockTokens) + Math.ceil(Math.min(2 * chunkRows, spanRows) / blockTokens) + 2 * sequences;
}

/** Prefill chunk sizes tried when none is given, largest first. */
export const prefillChunkChoices = [8192, 4096, 2048] as const;
/** Prefill spans tried when none is given, largest first: the whole context, then 32k rows. */
export const prefillSpanChoices = [Infinity, 32768] as const;

/**
 * The plan for the prefill chunk and span given, or else for the largest of `prefillChunkChoices` (cut to the
 * context), and for it the largest of `prefillSpanChoices`, that costs decode nothing: its plan moves no more bytes
 * per decoded token over any link than the smallest choices', with as many layer slots and no more KV on disk. A
 * bigger chunk's activations take device memory; decode gets it back for KV (the decode share), but not the layers,
 * experts or slots the plan gave up for it, and KV pushed to disk during the prompt is read back by its later chunks.
 * (Llama-3.1-8B at 32k in 8 GB, KV in RAM: 8192-row chunks prefill 13% faster than 2048.) A bigger span keeps a
 * layer's KV of more of the prompt on the device during its pass (kvTransitBlocks) and takes it from the prefill share
 * (decode gets it back too); in exchange the layers' weights pass once per span, and no span re-reads the KV of the
 * spans before it from RAM, chunk after chunk. The smallest choices are the last resort, and their error says what
 * would fit.
 */
export function planPrefill(input: Omit<PlanInput, "prefillChunk" | "prefillSpan"> & { readonly prefillChunk?: number; readonly prefillSpan?: number }): Plan {
  const contextRows = Math.max(1, Math.ceil(input.contextTokens / input.kvBlockTokens) * input.kvBlockTokens);
  const chunks = input.prefillChunk !== undefined ? [input.prefillChunk] : [...new Set(prefillChunkChoices.map((c) => Math.min(c, contextRows)))];
  // A span counts the rows of every sequence of a batch.
  const spans = input.prefillSpan !== undefined ? [input.prefillSpan] : [...new Set(prefillSpanChoices.map((s) => Math.min(s, contextRows * input.batch)))];
  const choices = chunks.flatMap((prefillChunk) => spans.map((prefillSpan) => ({ prefillChunk, prefillSpan })));
  const fallback = plan({ ...input, ...choices[choices.length - 1]! });
  for (const choice of choices.slice(0, -1)) {
    let p: Plan;
    try {
      p = plan({ ...input, ...choice });
    } catch (e) {
      if (e instanceof UsageError && e.code === "VRAM_TOO_SMALL") continue;
      throw e;
    }
    // Within 1%: block rounding and staging slots move a few MB between the plans. As many layer slots, so decode reads
    // as far ahead, and no more KV on disk, which the prompt's later chunks would read back.
    const within = (a: number, b: number) => a <= 1.01 * b;
    const sameLinks = within(p.perToken.h2dBytes, fallback.perToken.h2dBytes) && within(p.perToken.diskBytes, fallback.perToken.diskBytes);
    if (sameLinks && p.slots >= fallback.slots && within(p.kvDiskBytes, fallback.kvDiskBytes)) return p;
  }
  return fallback;
}

export function plan(input: PlanInput): Plan {
  const { layout, shape, batch, kvBlockTokens: block } = input;
  const ctx = Math.ceil(input.contextTokens / block) * block;
  const kvShape = kvShapeOf(input);
  const kvRange = (from: number, to: number) => kvBytesBetween(kvShape, input.kvDtype, from, to) * batch;
  const held = heldBy(input);
  // The widest layer's block.
  const kvLayerBlockBytes = kvBlockPairBytes(input, Math.max(...shape.kvLayers.map((l) => l.kvHeads * l.headDim)));
  const kvTotal = kvRange(0, ctx);
  const layerBytes = layout.layers.map((l) => held(l.deviceBytes));
  const slotBytesEach = held(layout.maxLayerDeviceBytes);
  const allLayers = layerBytes.reduce((a, b) => a + b, 0);

  const totalExperts = layout.experts.reduce((n, l) => n + l.length, 0);
  const expertSlotBytes = held(layout.maxExpertDeviceBytes);
  // A chunk's experts load one after another while others compute: a few slots always, the routed set of a token if room.
  const maxExpertSlots = Math.min(totalExperts, Math.max(2, input.expertSlots ?? totalExperts));
  const minExpertSlots = Math.min(maxExpertSlots, Math.max(2, shape.moe?.topK ?? 0));

  const globals = held(layout.globals.deviceBytes);
  // The workspace for passes of `rows` rows is many tensors; count it as eight equal ones for the rounding.
  const workspaceFor = (rows: number) => 8 * held((workspaceBytes(shape, rows) * (1 + (input.workspaceSlack ?? 0))) / 8);
  // Every layer's partly filled last block lives on the device, and one layer's blocks in transit (kvTransitBlocks).
  const kvHeadroomFor = (transitBlocks: number) => (shape.numLayers * batch + transitBlocks) * kvLayerBlockBytes;
  // A chunk holds at least a row of each sequence.
  const chunkRows = Math.max(input.prefillChunk, batch);
  const workspace = workspaceFor(chunkRows);
  const spanRows = Math.min(input.prefillSpan, ctx * batch);
  const transitBlocks = kvTransitBlocks(Math.max(spanRows, batch), chunkRows, block, batch);
  const kvHeadroom = kvHeadroomFor(transitBlocks);
  // Recurrent layers' state (linear attention) stays on the device for every sequence.
  const recurrentState = batch * shape.kvLayers.reduce((n, l) => n + held(4 * (l.stateFloats ?? 0)), 0);
  const base = globals + workspace + kvHeadroom + recurrentState;
  const must = base + minExpertSlots * expertSlotBytes;

  const layerTier: WeightTier[] = layerBytes.map(() => "device");
  let slots = 0;
  let kvDeviceTokens = ctx;
  let kvStagingBlocks = 0;
  let expertSlots = maxExpertSlots;
  const minStaging = 2 * kvLayerBlockBytes;
  const overhead = input.deviceOverheadBytes ?? 0;
  const minDeviceBytes = overhead + must + 2 * slotBytesEach + minStaging;
  if (base + allLayers + kvTotal + maxExpertSlots * expertSlotBytes > input.vramBytes) {
    // Streaming: slots for layers in flight, KV staging for blocks in RAM or on disk, then KV and whole layers while room lasts.
    slots = must + 3 * slotBytesEach + minStaging <= input.vramBytes ? Math.min(3, shape.numLayers) : 2;
    let avail = input.vramBytes - must - slots * slotBytesEach;
    if (avail < minStaging) {
      throw new UsageError(
        "VRAM_TOO_SMALL",
        `a VRAM budget of ${formatBytes(input.vramBytes + overhead)}${overhead ? ` (${formatBytes(overhead)} of it the CUDA context's)` : ""} cannot hold the embeddings and head (${formatBytes(globals)}), the prefill workspace (${formatBytes(workspace + kvHeadroom)}) and two streamed layers (${formatBytes(2 * slotBytesEach)}): needs ${formatBytes(minDeviceBytes)}`,
        "give more --vram, or a smaller --prefill-chunk",
      );
    }
    kvDeviceTokens = kvTokensWithin(kvRange, 0, ctx, block, avail - minStaging);
    avail -= kvRange(0, kvDeviceTokens);
    if (kvDeviceTokens < ctx) {
      kvStagingBlocks = Math.max(2, Math.min(Math.ceil((ctx - kvDeviceTokens) / block), Math.floor(Math.min(avail, 64 << 20) / kvLayerBlockBytes)));
      avail -= kvStagingBlocks * kvLayerBlockBytes;
    }
    for (let i = 0; i < layerBytes.length; i++) {
      if (layerBytes[i]! <= avail) avail -= layerBytes[i]!;
      else layerTier[i] = "ram";
    }
    if (layerTier.every((t) => t === "device")) {
      avail += slots * slotBytesEach;
      slots = 0;
    }
    // What is left caches hot experts.
    expertSlots = totalExperts === 0 ? 0 : Math.min(maxExpertSlots, minExpertSlots + Math.floor(Math.max(0, avail) / expertSlotBytes));
  }

  let ramAvail = input.ramBytes;
  const kvHostTokens = kvTokensWithin(kvRange, kvDeviceTokens, ctx - kvDeviceTokens, block, ramAvail);
  ramAvail -= kvRange(kvDeviceTokens, kvDeviceTokens + kvHostTokens);
  let ramLayers = 0;
  for (let i = 0; i < layerTier.length; i++) {
    if (layerTier[i] !== "ram") continue;
    const bytes = layout.layers[i]!.hostBytes;
    if (bytes <= ramAvail) {
      ramAvail -= bytes;
      ramLayers += bytes;
    } else layerTier[i] = "disk";
  }
  const expertsResident = expertSlots === totalExperts;
  const ramExperts = expertsResident ? 0 : Math.min(totalExperts, Math.floor(Math.max(0, ramAvail) / Math.max(1, layout.maxExpertHostBytes)));
  ramAvail -= ramExperts * layout.maxExpertHostBytes;
  const expertStaging = expertsResident || ramExperts === totalExperts ? 0 : Math.min(totalExperts - ramExperts, 8);
  const diskLayers = layerTier.filter((t) => t === "disk").length;
  const stagingBuffers = Math.min(diskLayers, 3);
  const staging = stagingBuffers * layout.maxLayerHostBytes + expertStaging * layout.maxExpertHostBytes;
  const hiddenHostBuffers = { count: spanRows > chunkRows ? Math.ceil(spanRows / chunkRows) : 0, rows: chunkRows };
  const activations = hiddenHostBuffers.count * chunkRows * shape.hiddenSize * 4;
  // Staging slots' pinned copies, one block moving off the device, and the image that loads the globals.
  const transfer = (kvStagingBlocks + 1) * kvLayerBlockBytes + Math.max(layout.globals.hostBytes, layout.maxLayerHostBytes);

  // Decode's own workspace and headroom are a few rows'; the rest of the prompt's holds KV from RAM (KvCache.useShare).
  const decodeRoom = Math.max(0, workspace + kvHeadroom - workspaceFor(batch) - kvHeadroomFor(kvTransitBlocks(batch, batch, block, batch)));
  const kvDeviceTokensDecode = Math.max(kvDeviceTokens, Math.min(kvDeviceTokens + kvHostTokens, kvTokensWithin(kvRange, 0, ctx, block, kvRange(0, kvDeviceTokens) + decodeRoom)));
  // The prompt's activations' room, less decode's own rows and the blocks a decode step may open (one a layer and sequence).
  const decodeSpare = slots > 0 ? Math.max(0, workspace - workspaceFor(batch) - kvLayersOf(input).length * batch * kvLayerBlockBytes) : 0;

  const residentLayers = layerBytes.reduce((n, b, i) => n + (layerTier[i] === "device" ? b : 0), 0);
  const kvDevice = kvRange(0, kvDeviceTokens);
  const kvStaging = kvStagingBlocks * kvLayerBlockBytes;
  const kvHost = kvRange(kvDeviceTokens, kvDeviceTokens + kvHostTokens);
  const kvDiskBytes = kvRange(kvDeviceTokens + kvHostTokens, ctx);
  const slotBytes = slots * slotBytesEach;
  const expertDevice = expertSlots * expertSlotBytes;
  const experts = { total: totalExperts, deviceSlots: expertSlots, ram: ramExperts, stagingBuffers: expertStaging };
  return {
    input,
    layerTier,
    slots,
    stagingBuffers,
    kvDeviceTokens,
    kvDeviceTokensDecode,
    kvHostTokens,
    kvStagingBlocks,
    kvTransitBlocks: transitBlocks,
    decodeSpare,
    hiddenHostBuffers,
    experts,
    deviceBytes: {
      globals,
      workspace,
      kvHeadroom,
      slots: slotBytes,
      kvStaging,
      residentLayers,
      kv: kvDevice,
      experts: expertDevice,
      total: base + slotBytes + kvStaging + residentLayers + kvDevice + expertDevice,
    },
    minDeviceBytes,
    hostBytes: { ramLayers, kv: kvHost, ramExperts: ramExperts * layout.maxExpertHostBytes, staging, activations, transfer, total: ramLayers + kvHost + ramExperts * layout.maxExpertHostBytes + staging + activations + transfer },
    kvDiskBytes,
    perToken: decodeBytesAt({ input, layerTier, slots, kvDeviceTokens, kvDeviceTokensDecode, kvHostTokens, kvTransitBlocks: transitBlocks, decodeSpare, experts }, ctx),
  };
}
