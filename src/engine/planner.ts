// The memory planner: from layer sizes, context and budgets, decides what lives on the GPU, in RAM and on disk.
import type { ModelShape } from "../arch/types.js";
import { UsageError } from "../errors.js";
import { formatBytes } from "../util/bytes.js";
import type { Plan, PlanInput, WeightTier } from "./plan-types.js";
import {
  decodeBytesAt,
  heldBy,
  kvBlockPairBytes,
  kvBytesBetween,
  kvLayersOf,
  kvShapeOf,
  kvTokensWithin,
} from "./plan-traffic.js";

export * from "./plan-types.js";
export * from "./plan-traffic.js";

/** Rows of logits computed at once (more rows are done in groups of this many). */
export const logitRows = 8;

export function workspaceBytes(shape: ModelShape, rows: number): number {
  // A layer's live activations for a chunk, the next chunk's hidden states copied in meanwhile and the last chunk's
  // still copying out (prefill: their memory is reused only once that copy is done), and a group of logit rows with the
  // final norm before it.
  return (
    rows * (shape.activationsPerRow + 2 * shape.hiddenSize) * 4 + logitRows * (shape.vocabSize + shape.hiddenSize) * 4
  );
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
 * (Bigger chunks prefill faster: docs/benchmarks.md, "Figures behind defaults".) A bigger span keeps a layer's KV of
 * more of the prompt on the device during its pass (kvTransitBlocks) and takes it from the prefill share (decode gets it
 * back too); in exchange the layers' weights pass once per span, and no span re-reads the KV of the spans before it
 * from RAM, chunk after chunk. The smallest choices are the last resort, and their error says what would fit.
 */
export function planPrefill(
  input: Omit<PlanInput, "prefillChunk" | "prefillSpan"> & {
    readonly prefillChunk?: number;
    readonly prefillSpan?: number;
  },
): Plan {
  const contextRows = Math.max(1, Math.ceil(input.contextTokens / input.kvBlockTokens) * input.kvBlockTokens);
  const chunks =
    input.prefillChunk !== undefined
      ? [input.prefillChunk]
      : [...new Set(prefillChunkChoices.map((c) => Math.min(c, contextRows)))];
  // A span counts the rows of every sequence of a batch.
  const spans =
    input.prefillSpan !== undefined
      ? [input.prefillSpan]
      : [...new Set(prefillSpanChoices.map((s) => Math.min(s, contextRows * input.batch)))];
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
    const sameLinks =
      within(p.perToken.h2dBytes, fallback.perToken.h2dBytes) &&
      within(p.perToken.diskBytes, fallback.perToken.diskBytes);
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
  const workspaceFor = (rows: number) =>
    8 * held((workspaceBytes(shape, rows) * (1 + (input.workspaceSlack ?? 0))) / 8);
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
      kvStagingBlocks = Math.max(
        2,
        Math.min(Math.ceil((ctx - kvDeviceTokens) / block), Math.floor(Math.min(avail, 64 << 20) / kvLayerBlockBytes)),
      );
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
    expertSlots =
      totalExperts === 0
        ? 0
        : Math.min(maxExpertSlots, minExpertSlots + Math.floor(Math.max(0, avail) / expertSlotBytes));
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
  const ramExperts = expertsResident
    ? 0
    : Math.min(totalExperts, Math.floor(Math.max(0, ramAvail) / Math.max(1, layout.maxExpertHostBytes)));
  ramAvail -= ramExperts * layout.maxExpertHostBytes;
  const expertStaging = expertsResident || ramExperts === totalExperts ? 0 : Math.min(totalExperts - ramExperts, 8);
  const diskLayers = layerTier.filter((t) => t === "disk").length;
  const stagingBuffers = Math.min(diskLayers, 3);
  const staging = stagingBuffers * layout.maxLayerHostBytes + expertStaging * layout.maxExpertHostBytes;
  const hiddenHostBuffers = { count: spanRows > chunkRows ? Math.ceil(spanRows / chunkRows) : 0, rows: chunkRows };
  const activations = hiddenHostBuffers.count * chunkRows * shape.hiddenSize * 4;
  // Staging slots' pinned copies, one block moving off the device, and the image that loads the globals.
  const transfer =
    (kvStagingBlocks + 1) * kvLayerBlockBytes + Math.max(layout.globals.hostBytes, layout.maxLayerHostBytes);

  // Decode's own workspace and headroom are a few rows'; the rest of the prompt's holds KV from RAM (KvCache.useShare).
  const decodeRoom = Math.max(
    0,
    workspace + kvHeadroom - workspaceFor(batch) - kvHeadroomFor(kvTransitBlocks(batch, batch, block, batch)),
  );
  const kvDeviceTokensDecode = Math.max(
    kvDeviceTokens,
    Math.min(
      kvDeviceTokens + kvHostTokens,
      kvTokensWithin(kvRange, 0, ctx, block, kvRange(0, kvDeviceTokens) + decodeRoom),
    ),
  );
  // The prompt's activations' room, less decode's own rows and the blocks a decode step may open (one a layer and sequence).
  const decodeSpare =
    slots > 0 ? Math.max(0, workspace - workspaceFor(batch) - kvLayersOf(input).length * batch * kvLayerBlockBytes) : 0;

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
    hostBytes: {
      ramLayers,
      kv: kvHost,
      ramExperts: ramExperts * layout.maxExpertHostBytes,
      staging,
      activations,
      transfer,
      total: ramLayers + kvHost + ramExperts * layout.maxExpertHostBytes + staging + activations + transfer,
    },
    kvDiskBytes,
    perToken: decodeBytesAt(
      {
        input,
        layerTier,
        slots,
        kvDeviceTokens,
        kvDeviceTokensDecode,
        kvHostTokens,
        kvTransitBlocks: transitBlocks,
        decodeSpare,
        experts,
      },
      ctx,
    ),
  };
}
