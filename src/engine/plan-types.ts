// A memory plan: what goes in (layer sizes, context, budgets) and what comes out (what lives on the device, in RAM and
// on disk, and what a token moves). planner.ts computes it; plan-traffic.ts derives what it moves and holds.
import type { ModelShape } from "../arch/types.js";
import type { FloatDType } from "../backend/dtype.js";
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
  readonly experts: {
    readonly total: number;
    readonly deviceSlots: number;
    readonly ram: number;
    readonly stagingBuffers: number;
  };
  readonly deviceBytes: {
    globals: number;
    workspace: number;
    kvHeadroom: number;
    slots: number;
    kvStaging: number;
    residentLayers: number;
    kv: number;
    experts: number;
    total: number;
  };
  /**
   * The smallest VRAM budget (the backend's own memory included, as --vram counts it) this input still runs in: every
   * layer streamed through two slots. VRAM_TOO_SMALL names it.
   */
  readonly minDeviceBytes: number;
  /**
   * Host memory: the caches --ram bounds (layers, KV), and working buffers on top of it: disk staging, the span's
   * hidden states, and KV transfer buffers.
   */
  readonly hostBytes: {
    ramLayers: number;
    kv: number;
    ramExperts: number;
    staging: number;
    activations: number;
    transfer: number;
    total: number;
  };
  readonly kvDiskBytes: number;
  /** Bytes that must cross each link to decode one token at the planned context (routed experts: misses if routing were uniform). */
  readonly perToken: { diskBytes: number; h2dBytes: number };
}

/** What decode's traffic and room depend on. */
export type DecodeLayout = Pick<
  Plan,
  | "input"
  | "layerTier"
  | "slots"
  | "kvDeviceTokens"
  | "kvDeviceTokensDecode"
  | "kvHostTokens"
  | "kvTransitBlocks"
  | "decodeSpare"
  | "experts"
>;
