// The op interface every compute backend implements. Architectures are written against `Ops`; the engine drives `Backend`.
import type { DType } from "./dtype.js";

/**
 * A tensor handle. Activations are row-major [rows, cols] f32; weights keep their checkpoint dtype
 * and the HF Linear layout [out, in]. The bytes live wherever the backend put them.
 */
export interface Tensor {
  readonly shape: readonly number[];
  readonly dtype: DType;
}

/** `length` valid rows of one cache block, keys and values [capacity, kvHeads * headDim]; row 0 is at sequence position `start`. */
export interface KvBlock {
  readonly k: Tensor;
  readonly v: Tensor;
  readonly start: number;
  readonly length: number;
}

/** The query rows of one sequence inside a batch and the KV it attends to. */
export interface AttentionSeq {
  /** First row of q for this sequence, and how many rows; rows are consecutive positions from `qPos`. */
  readonly qRow: number;
  readonly qRows: number;
  readonly qPos: number;
  /** KV blocks in position order; keys after a query's position are masked (causal). */
  readonly blocks: readonly KvBlock[];
}

export interface AttentionOptions {
  readonly heads: number;
  readonly kvHeads: number;
  readonly headDim: number;
  /** Multiplies q.k before softmax (1/sqrt(headDim) unless the architecture says otherwise). */
  readonly scale: number;
  /** A query at position p sees keys at positions p - window + 1 .. p only. */
  readonly slidingWindow?: number;
  /** Scores become softcap * tanh(score / softcap). */
  readonly softcap?: number;
  /** Per head, a learned logit that joins each row's softmax with no value (gpt-oss's attention sinks). */
  readonly sinks?: Tensor;
  readonly seqs: readonly AttentionSeq[];
}

export interface RopeOptions {
  /** Sequence position of each row of x. */
  readonly positions: Int32Array;
  /** rotaryDim / 2 inverse frequencies; dims of a head past rotaryDim pass through unrotated. */
  readonly invFreq: Float32Array;
  readonly headDim: number;
  /** Multiplies cos and sin (YaRN's attention factor); 1 for plain RoPE. */
  readonly scale: number;
}

export type GateActivation = "silu" | "gelu_tanh" | "sigmoid";

/** The rows of one sequence inside a batch and its state for a recurrent layer (updated in place as the rows pass). */
export interface RecurrentSeq {
  readonly row: number;
  readonly rows: number;
  readonly state: Tensor;
}

export interface DeltaRuleOptions {
  readonly kHeads: number;
  readonly vHeads: number;
  readonly kDim: number;
  readonly vDim: number;
  /** Per value head: A_log and dt_bias, giving the decay g = -exp(A_log) * softplus(a + dt_bias). */
  readonly aLog: Tensor;
  readonly dtBias: Tensor;
  /** Each sequence's state [vHeads, kDim, vDim] (f32). */
  readonly seqs: readonly RecurrentSeq[];
}

/** Ops enqueue work and return at once; results are new tensors owned by the current scope. */
export interface Ops {
  /** Rows `ids` of `table` [vocab, hidden] as f32 [ids.length, hidden]. */
  embed(table: Tensor, ids: Int32Array): Tensor;
  /** x [rows, in] times w [out, in] transposed, plus bias [out]: [rows, out]. */
  matmul(x: Tensor, w: Tensor, bias?: Tensor): Tensor;
  /** Normalizes each group of w.shape[0] values of x by its RMS, then multiplies by (offset + w). */
  rmsNorm(x: Tensor, w: Tensor, o: { eps: number; offset?: number }): Tensor;
  /** Rotates each head of x [rows, heads * headDim] by its row's position, rotate_half style (HF). */
  rope(x: Tensor, o: RopeOptions): Tensor;
  /** Causal attention of q [rows, heads * headDim] over KV blocks: [rows, heads * headDim]. */
  attention(q: Tensor, o: AttentionOptions): Tensor;
  /** The same over some of the blocks, mergeable with other parts (flash-decoding across memory tiers). */
  attentionPart(q: Tensor, o: AttentionOptions): AttentionPart;
  /** Combines two parts over disjoint keys into one, as if attention had seen both. */
  mergeAttention(a: AttentionPart, b: AttentionPart): AttentionPart;
  /** act(gate) * up, elementwise (sigmoid: an output gate). */
  gatedActivation(gate: Tensor, up: Tensor, act: GateActivation): Tensor;
  add(a: Tensor, b: Tensor): Tensor;
  scale(x: Tensor, factor: number): Tensor;
  /** cap * tanh(x / cap), elementwise (Gemma's logit soft-capping). */
  softcap(x: Tensor, cap: number): Tensor;
  /**
   * Depthwise causal convolution over time then SiLU (Qwen3-Next's short conv): x [rows, channels], w [channels, 1, K];
   * each sequence's state [channels, K - 1] holds its last K - 1 inputs (zeros at its start) and is updated.
   */
  causalConv1d(x: Tensor, w: Tensor, seqs: readonly RecurrentSeq[]): Tensor;
  /**
   * The gated delta rule (linear attention of Qwen3-Next, FLA's definition): qkv [rows, 2 * kHeads * kDim + vHeads * vDim]
   * (q, k, v side by side), a and b [rows, vHeads]. q and k are L2-normalized per head, q scaled by 1/sqrt(kDim), k heads
   * shared by vHeads / kHeads value heads; beta = sigmoid(b). Per row: S = S * exp(g); S += k (beta (v - S^T k))^T;
   * out = S^T q. Returns [rows, vHeads * vDim]; each sequence's state is updated.
   */
  gatedDeltaRule(qkv: Tensor, a: Tensor, b: Tensor, o: DeltaRuleOptions): Tensor;
  /** gpt-oss's expert activation on interleaved [gate, up] columns: (clamp(up) + 1) * g * sigmoid(alpha * g), g = min(gate, limit). */
  clampedSwiglu(gateUp: Tensor, o: { alpha: number; limit: number }): Tensor;
  /** In place, on row `row` of x: values at `ids` divided by `factor` where positive, multiplied where negative (repetition penalty). */
  penalize(x: Tensor, row: number, ids: Int32Array, factor: number): void;
  /** f32 zeros [rows, cols]. */
  zeros(shape: readonly number[]): Tensor;
  /** Rows `rows[i]` of x, in that order. */
  gatherRows(x: Tensor, rows: Int32Array): Tensor;
  /** In place: acc[rows[i]] += scales[i] * y[i] (a mixture-of-experts combine). */
  accumulateRows(acc: Tensor, y: Tensor, rows: Int32Array, scales: Float32Array): void;
  /** A copy of rows start .. start + count - 1 of x. */
  rows(x: Tensor, start: number, count: number): Tensor;
  /** Runs `fn` and frees every tensor its ops made except the one it returns (bounds a layer's live activations). */
  scoped<T extends Tensor | Promise<Tensor>>(fn: () => T): T;
}

export interface MemoryStats {
  /** Bytes held now and at most in the compute tier (GPU memory, or what stands for it on the CPU backend). */
  deviceBytes: number;
  deviceBytesPeak: number;
  /** Bytes of host buffers (pinned where the backend can pin) held now and at most. */
  hostBytes: number;
  hostBytesPeak: number;
  /** Bytes copied host -> device so far. */
  h2dBytes: number;
}

/** Host memory the backend can copy from and to asynchronously: page-locked on CUDA, plain RAM on the CPU backend. */
export interface HostBuffer {
  readonly bytes: Uint8Array;
}

/** A point in the compute queue: work enqueued before it. */
export interface Fence {
  readonly id: number;
}

/** Attention over part of the keys: normalized output and the log-sum-exp of each row's scores per head. */
export interface AttentionPart {
  readonly out: Tensor;
  /** [rows, heads] f32; -Infinity where a row saw no key. */
  readonly lse: Tensor;
}

/** Which queue a copy to the device waits in: "needed" by compute next, or a "prefetch" for later. */
export type CopyQueue = "needed" | "prefetch";

export interface Backend extends Ops {
  readonly name: "cpu" | "cuda";
  readonly memory: MemoryStats;
  /** directIo: host buffers are page-aligned, so O_DIRECT reads can land in them. */
  readonly caps: { readonly directIo: boolean };
  /**
   * Device bytes layerwise may allocate when the user sets no budget: free memory less a margin. Like setDeviceBudget's,
   * this excludes deviceOverheadBytes; the user's --vram includes it (planForLoad converts, in one place).
   */
  defaultDeviceBudget(): Promise<number>;
  /** Device memory the backend holds before any tensor (the CUDA context); part of every budget a user gives. */
  readonly deviceOverheadBytes: number;
  /** Caps the device bytes layerwise's tensors and caches may take (the plan's); releases what the backend has cached. */
  setDeviceBudget(bytes: number): void;
  /**
   * Gives back at once the device memory held for small buffers that are all gone (decode's KV blocks, after a prompt
   * sends them out), so a prompt's activations do not free it piece by piece mid-pass, each piece waiting for the device.
   */
  releaseSmallCache(): void;
  /** Device bytes an allocation of `bytes` really holds (allocators round sizes); the planner counts these. */
  deviceBytesFor(bytes: number): number;
  /**
   * The share of a layer pass's working set a caching allocator loses to fragmentation (free memory in pieces the next
   * pass's tensors do not fit); the planner adds it to the workspace.
   */
  readonly workspaceSlack: number;
  /** Starts the peaks of `memory` again from what is held now (for a new run on a shared backend). */
  resetPeaks(): void;
  /** A new uninitialized tensor that outlives scopes until `free`. */
  alloc(shape: readonly number[], dtype: DType): Tensor;
  /** A tensor over `byteLength(shape, dtype)` bytes of `base` from `byteOffset`; freeing `base` invalidates it. */
  view(base: Tensor, byteOffset: number, shape: readonly number[], dtype: DType): Tensor;
  /** Copies raw little-endian bytes into t at byte offset `offset`. The source may be reused once the returned promise settles. */
  upload(t: Tensor, bytes: Uint8Array, offset?: number): Promise<void>;
  allocHost(byteLength: number): HostBuffer;
  freeHost(b: HostBuffer): void;
  /**
   * Enqueues a copy of `length` bytes from `src` to `dst` on a copy queue, after compute reaches `after` (by default,
   * all compute enqueued so far, copies to host included). Ops that read `dst` wait for it by themselves. Resolves when
   * `src` may be reused by the host. Copies that read ahead (weights for later layers) say "prefetch": a backend may
   * queue them apart from the copies compute needs next (hidden states, KV blocks), so those need not wait behind them.
   */
  copyToDevice(
    dst: Tensor,
    dstOffset: number,
    src: HostBuffer,
    srcOffset: number,
    length: number,
    after?: Fence,
    queue?: CopyQueue,
  ): Promise<void>;
  /**
   * Enqueues a copy of bytes of `src` to host memory after the compute enqueued so far, in order with it: `src` may be
   * freed at once, and a later copyToDevice from `dst` (without `after`) reads what it wrote. Resolves when the host
   * may read `dst`; a caller that only hands the bytes back to the device need not wait.
   */
  copyToHost(src: Tensor, srcOffset: number, dst: HostBuffer, dstOffset: number, length: number): Promise<void>;
  /** Marks the compute enqueued so far. */
  fence(): Fence;
  /**
   * Copies `count` rows of `src` (f32 activations) from `srcRow` into `dst` at row `dstRow`, converting to its dtype.
   * `dst` may be a run of tensors of one shape taken as consecutive rows (a KV cache's blocks): row `dstRow` of the
   * first, then on into the next.
   */
  writeRows(dst: Tensor | readonly Tensor[], dstRow: number, src: Tensor, srcRow: number, count: number): void;
  /** Waits for t and returns its values as f32. */
  read(t: Tensor): Promise<Float32Array>;
  /**
   * The `k` largest values of each row of x [rows, cols] (f32, k <= cols) and their columns, best first, equal values by
   * lower column (NaN last): [rows * k] each. Only these cross to the host.
   */
  topK(x: Tensor, k: number): Promise<{ ids: Int32Array; values: Float32Array }>;
  /** Raw bytes of rows start .. start + count - 1 of t, in t's dtype. */
  readRows(t: Tensor, start: number, count: number): Promise<Uint8Array>;
  free(t: Tensor): void;
  /** Tensors made by ops after `pushScope` are freed by the matching `popScope`, except those in `keep`. */
  pushScope(): void;
  popScope(keep?: readonly Tensor[]): void;
  /** Waits until all queued work is done. */
  sync(): Promise<void>;
  dispose(): Promise<void>;
}

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}
