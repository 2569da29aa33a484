// The memory planner: from layer sizes, context and budgets, decides what lives on the GPU, in RAM and on disk.
import type { ModelShape } from "../arch/types.js";
import { dtypeBytes, type DType } from "../backend/dtype.js";
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
  readonly kvDtype: DType;
  /** Everything layerwise allocates on the compute device must fit here. */
  readonly vramBytes: number;
  /** RAM for caching weights and KV (staging buffers for disk reads come on top, see `hostBytes.staging`). */
  readonly ramBytes: number;
}

export interface Plan {
  readonly input: PlanInput;
  readonly layerTier: readonly WeightTier[];
  /** Device slots that streamed layers rotate through (0 when every layer is resident). */
  readonly slots: number;
  /** Pinned host buffers that disk reads land in before their copy to the device. */
  readonly stagingBuffers: number;
  /** Per sequence and layer: KV tokens kept on the device (the rest go to RAM, then disk). */
  readonly kvDeviceTokens: number;
  readonly kvHostTokens: number;
  /** KV blocks per layer that can be staged on the device at once when attending over RAM or disk blocks. */
  readonly kvStagingBlocks: number;
  readonly deviceBytes: { globals: number; workspace: number; kvHeadroom: number; slots: number; kvStaging: number; residentLayers: number; kv: number; total: number };
  readonly hostBytes: { ramLayers: number; kv: number; staging: number; total: number };
  readonly kvDiskBytes: number;
  /** Bytes that must cross each link to decode one token at the planned context. */
  readonly perToken: { diskBytes: number; h2dBytes: number };
}

/** KV bytes per token summed over layers (sliding-window layers hold at most their window). */
export function kvBytesPerToken(shape: ModelShape, dtype: DType): number {
  return shape.kvLayers.reduce((n, l) => n + 2 * l.kvHeads * l.headDim * dtypeBytes[dtype], 0);
}

function kvBytesAt(shape: ModelShape, dtype: DType, tokens: number): number {
  return shape.kvLayers.reduce((n, l) => n + 2 * l.kvHeads * l.headDim * dtypeBytes[dtype] * Math.min(tokens, l.slidingWindow ?? tokens), 0);
}

export function workspaceBytes(shape: ModelShape, rows: number): number {
  // The layer's activations, the hidden state of the chunk, and one row of logits (read back for sampling).
  return rows * shape.activationsPerRow * 4 + rows * shape.hiddenSize * 4 + shape.vocabSize * 4 * 2;
}

export function plan(input: PlanInput): Plan {
  const { layout, shape, batch, kvBlockTokens: block } = input;
  const ctx = Math.ceil(input.contextTokens / block) * block;
  const globals = layout.globals.deviceBytes;
  const workspace = workspaceBytes(shape, Math.max(input.prefillChunk, batch));
  const kvTokenBytes = kvBytesPerToken(shape, input.kvDtype) * batch;
  const kvTotal = kvBytesAt(shape, input.kvDtype, ctx) * batch;
  const kvStagingBlocks = Math.max(1, Math.min(Math.ceil(ctx / block), Math.floor((64 << 20) / Math.max(1, (kvTokenBytes / shape.numLayers) * block))));
  const kvStaging = (kvStagingBlocks * block * kvTokenBytes) / shape.numLayers / batch;
  const layerBytes = layout.layers.map((l) => l.deviceBytes);
  const allLayers = layerBytes.reduce((a, b) => a + b, 0);

  // New KV blocks of one layer stay on the device until the chunk that wrote them is done.
  const kvHeadroom = (Math.ceil(input.prefillChunk / block) + 1) * block * (kvTokenBytes / shape.numLayers);
  const fixed = globals + workspace + kvHeadroom;
  let slots = 0;
  let kvDeviceTokens = ctx;
  const layerTier: WeightTier[] = layerBytes.map(() => "device");
  if (fixed + allLayers + kvTotal > input.vramBytes) {
    slots = Math.min(shape.numLayers, 3);
    const needed = (n: number) => fixed + kvStaging + n * layout.maxLayerDeviceBytes + block * kvTokenBytes;
    if (needed(slots) > input.vramBytes) slots = 2;
    if (needed(slots) > input.vramBytes) {
      throw new UsageError(
        "VRAM_TOO_SMALL",
        `a VRAM budget of ${formatBytes(input.vramBytes)} cannot hold the embeddings and head (${formatBytes(globals)}), the prefill workspace (${formatBytes(workspace)}) and two streamed layers (${formatBytes(2 * layout.maxLayerDeviceBytes)}): needs ${formatBytes(needed(2))}`,
        "give more --vram, or a smaller --prefill-chunk",
      );
    }
    let avail = input.vramBytes - fixed - kvStaging - slots * layout.maxLayerDeviceBytes;
    // KV first (it is read every token and grows with the context), then whole layers, in order.
    kvDeviceTokens = Math.max(block, Math.min(ctx, Math.floor(avail / kvTokenBytes / block) * block));
    avail -= kvBytesAt(shape, input.kvDtype, kvDeviceTokens) * batch;
    for (let i = 0; i < layerBytes.length; i++) {
      if (layerBytes[i]! <= avail) avail -= layerBytes[i]!;
      else layerTier[i] = "ram";
    }
    if (layerTier.every((t) => t === "device")) slots = 0;
  }

  let ramAvail = input.ramBytes;
  const kvBeyondDevice = Math.max(0, ctx - kvDeviceTokens);
  const kvHostTokens = Math.min(kvBeyondDevice, Math.floor(ramAvail / kvTokenBytes / block) * block);
  ramAvail -= kvHostTokens * kvTokenBytes;
  let ramLayers = 0;
  for (let i = 0; i < layerTier.length; i++) {
    if (layerTier[i] !== "ram") continue;
    const bytes = layout.layers[i]!.hostBytes;
    if (bytes <= ramAvail) {
      ramAvail -= bytes;
      ramLayers += bytes;
    } else layerTier[i] = "disk";
  }
  const diskLayers = layerTier.filter((t) => t === "disk").length;
  const stagingBuffers = diskLayers === 0 ? 0 : Math.min(diskLayers, 3);
  const staging = stagingBuffers * layout.maxLayerHostBytes;
  const kvDiskTokens = Math.max(0, ctx - kvDeviceTokens - kvHostTokens);

  const residentLayers = layerBytes.reduce((n, b, i) => n + (layerTier[i] === "device" ? b : 0), 0);
  const kvDevice = kvBytesAt(shape, input.kvDtype, Math.min(ctx, kvDeviceTokens)) * batch;
  const kvHost = kvHostTokens * kvTokenBytes;
  const streamedBytes = (tier: WeightTier) => layout.layers.reduce((n, l, i) => n + (layerTier[i] === tier ? l.dataBytes : 0), 0);
  const kvDiskBytes = kvDiskTokens * kvTokenBytes;
  const deviceTotal = fixed + (slots ? kvStaging : 0) + slots * layout.maxLayerDeviceBytes + residentLayers + kvDevice;
  return {
    input,
    layerTier,
    slots,
    stagingBuffers,
    kvDeviceTokens,
    kvHostTokens,
    kvStagingBlocks,
    deviceBytes: { globals, workspace, kvHeadroom, slots: slots * layout.maxLayerDeviceBytes, kvStaging: slots ? kvStaging : 0, residentLayers, kv: kvDevice, total: deviceTotal },
    hostBytes: { ramLayers, kv: kvHost, staging, total: ramLayers + kvHost + staging },
    kvDiskBytes,
    perToken: {
      diskBytes: streamedBytes("disk") + kvDiskBytes,
      h2dBytes: streamedBytes("disk") + streamedBytes("ram") + kvHost + kvDiskBytes,
    },
  };
}
