// A sequence's KV cache in tiers: fixed-size blocks per layer, on the device while room lasts, then in RAM, then on disk.
import type { ModelShape } from "../arch/types.js";
import { dtypeBytes, type FloatDType } from "../backend/dtype.js";
import type { Backend, HostBuffer, Tensor } from "../backend/ops.js";
import type { KvBlockPool } from "./kv-blocks.js";
import type { DiskPlace, KvSpill } from "./kv-spill.js";

export type KvTier = "device" | "host" | "disk";

/** One block of one layer. Off the device, its bytes are K rows then V rows, each `blockTokens` long. */
export interface KvBlockState {
  readonly start: number;
  length: number;
  tier: KvTier;
  k?: Tensor;
  v?: Tensor;
  host?: HostBuffer;
  disk?: DiskPlace;
}

export interface KvPolicy {
  readonly blockTokens: number;
  readonly dtype: FloatDType;
  /** Full blocks per layer kept on the device while prefilling; later ones go to RAM while `hostBlocks` allows, then to disk. */
  readonly deviceBlocks: number;
  /** The same while decoding (at least `deviceBlocks`): the prompt's activations are gone, and their room holds KV. */
  readonly decodeDeviceBlocks: number;
  readonly hostBlocks: number;
  /** Free blocks a sliding-window layer can no longer see (off when the persistent cache needs every block). */
  readonly dropOutsideWindow: boolean;
}

/** Reads a block kept on disk (a scratch file, or the persistent cache). */
export interface DiskBlockReader {
  read(place: DiskPlace, into: Uint8Array): Promise<void>;
}

interface RecurrentState {
  readonly tensors: Readonly<Record<string, Tensor>>;
  /** Tokens the state has seen. */
  tokens: number;
}

export class KvCache {
  private readonly layers: KvBlockState[][];
  /** Recurrent layers' state (linear attention), on the device; it cannot be rewound, only dropped. */
  private readonly states = new Map<number, RecurrentState>();
  /** Copies of recurrent state at block boundaries (position -> layer -> bytes), until the persistent cache has them. */
  private readonly snapshots = new Map<number, Map<number, Uint8Array>>();
  /** Recurrent state taken from the persistent cache, not yet turned into tensors. */
  private readonly adoptedStates = new Map<number, { bytes: Uint8Array; tokens: number }>();
  /** The first layer that stores KV: its length is the sequence's. */
  private readonly lengthLayer: number;
  readonly stats = { spilledBytes: 0 };
  /** Full blocks per layer that stay on the device now: the policy's prefill or decode share (see useShare). */
  private share: number;
  /** Blocks the last settle started moving off the device: their copies to host memory, and where they go. */
  private moves: { b: KvBlockState; host: HostBuffer; toDisk: boolean; copies: Promise<void>[]; bytes: number }[] = [];

  constructor(
    private readonly backend: Backend,
    readonly shape: ModelShape,
    readonly policy: KvPolicy,
    private readonly spill: KvSpill,
    readonly diskReader: DiskBlockReader,
    private readonly pool: KvBlockPool,
  ) {
    this.layers = shape.kvLayers.map(() => []);
    this.share = policy.deviceBlocks;
    this.lengthLayer = Math.max(
      0,
      shape.kvLayers.findIndex((l) => l.kvHeads > 0),
    );
  }

  /** Tokens stored in `layer` (every layer holds the same count between forwards). */
  length(layer = this.lengthLayer): number {
    const blocks = this.layers[layer]!;
    const last = blocks[blocks.length - 1];
    return last ? last.start + last.length : 0;
  }

  blocks(layer: number): readonly KvBlockState[] {
    return this.layers[layer]!;
  }

  /** Bytes of K (or of V) in one block of `layer`. */
  blockBytes(layer: number): number {
    const l = this.shape.kvLayers[layer]!;
    return this.policy.blockTokens * l.kvHeads * l.headDim * dtypeBytes[this.policy.dtype];
  }

  kvCols(layer: number): number {
    const l = this.shape.kvLayers[layer]!;
    return l.kvHeads * l.headDim;
  }

  /** Appends `count` rows of k and v (from `srcRow`) at the end of `layer`, in device blocks (one write each for K and V). */
  append(layer: number, k: Tensor, v: Tensor, srcRow: number, count: number): void {
    if (count === 0) return;
    const blocks = this.layers[layer]!;
    const block = this.policy.blockTokens;
    const tail = blocks[blocks.length - 1];
    const partial = tail && tail.length < block ? tail : undefined;
    if (partial && partial.tier !== "device")
      throw new Error("KvCache: the tail block is not on the device (truncate promotes it)");
    const targets = partial ? [partial] : [];
    for (let room = partial ? block - partial.length : 0; room < count; room += block) {
      // Every block before a new one is full once this write is done.
      const before = blocks[blocks.length - 1];
      const added: KvBlockState = {
        start: before ? before.start + block : 0,
        length: 0,
        tier: "device",
        ...this.deviceBlock(layer),
      };
      blocks.push(added);
      targets.push(added);
    }
    const firstRow = partial?.length ?? 0;
    this.backend.writeRows(
      targets.map((b) => b.k!),
      firstRow,
      k,
      srcRow,
      count,
    );
    this.backend.writeRows(
      targets.map((b) => b.v!),
      firstRow,
      v,
      srcRow,
      count,
    );
    let left = count;
    for (const b of targets) {
      const n = Math.min(left, block - b.length);
      b.length += n;
      left -= n;
    }
  }

  /** Adds a full block read from elsewhere (the persistent cache) at the end of `layer`, in the tier the policy allows. */
  async adopt(layer: number, bytes: Uint8Array | DiskPlace): Promise<void> {
    const blocks = this.layers[layer]!;
    const start = this.length(layer);
    const state: KvBlockState = { start, length: this.policy.blockTokens, tier: "disk" };
    const onDevice = blocks.filter((b) => b.tier === "device").length;
    const onHost = blocks.filter((b) => b.host).length; // in RAM, or on the device with a RAM copy
    if ("file" in bytes) {
      if (onDevice < this.share || onHost < this.policy.hostBlocks) {
        const data = new Uint8Array(2 * this.blockBytes(layer));
        await this.diskReader.read(bytes, data);
        return this.adopt(layer, data);
      }
      state.disk = bytes;
    } else if (onDevice < this.share) {
      Object.assign(state, { tier: "device" }, this.deviceBlock(layer));
      await this.backend.upload(state.k!, bytes.subarray(0, this.blockBytes(layer)));
      await this.backend.upload(state.v!, bytes.subarray(this.blockBytes(layer)));
    } else if (onHost < this.policy.hostBlocks) {
      state.tier = "host";
      state.host = this.pool.takeHost(bytes.byteLength);
      state.host.bytes.set(bytes);
    } else {
      state.disk = await this.spill.write(bytes);
      this.stats.spilledBytes += bytes.byteLength;
    }
    blocks.push(state);
  }

  /**
   * After a layer's pass: lands the moves the previous settle started (see finishMoves), frees blocks a sliding-window
   * layer will not see again, then starts moving full device blocks beyond the policy's device share to RAM or disk:
   * their copies are enqueued after the compute that wrote them, and the blocks stay on the device until they land.
   */
  async settle(layer: number): Promise<void> {
    await this.finishMoves();
    const blocks = this.layers[layer]!;
    const window = this.shape.kvLayers[layer]!.slidingWindow;
    if (window && this.policy.dropOutsideWindow) {
      // The next query is at position length(); it sees keys from length() - window + 1 on.
      const oldest = this.length(layer) - window + 1;
      while (blocks.length > 1 && blocks[0]!.start + blocks[0]!.length <= oldest) this.release(blocks.shift()!);
    }
    this.startMoves(layer);
  }

  /** Starts moving `layer`'s full device blocks beyond the share to RAM or disk (finishMoves lands them). */
  private startMoves(layer: number): void {
    const blocks = this.layers[layer]!;
    const bytes = this.blockBytes(layer);
    let onDevice = 0;
    // Blocks holding RAM: those there, and those brought back for decode that kept their copy.
    let onHost = blocks.filter((b) => b.host).length;
    for (const b of blocks) {
      if (b.tier !== "device" || b.length < this.policy.blockTokens) continue;
      if (++onDevice <= this.share) continue;
      if (b.host) {
        // Brought back from RAM for decode (useShare) and unchanged since: its RAM copy is still good.
        this.moves.push({ b, host: b.host, toDisk: false, copies: [], bytes });
        b.host = undefined;
        continue;
      }
      // Newest full blocks leave, so each block moves at most once.
      const toDisk = onHost >= this.policy.hostBlocks;
      if (!toDisk) onHost++;
      const host = this.pool.takeHost(2 * bytes);
      const copies = [
        this.backend.copyToHost(b.k!, 0, host, 0, bytes),
        this.backend.copyToHost(b.v!, 0, host, bytes, bytes),
      ];
      this.moves.push({ b, host, toDisk, copies, bytes });
    }
  }

  /**
   * Lands the moves the last settle started. The runner calls it once later work is enqueued behind their copies (two
   * chunks of the next layer's pass), so waiting for them here does not leave the GPU without work, as waiting right
   * after enqueueing them would. Until then the blocks stay on the device and attention reads them there. If a copy
   * failed, every block stays on the device and the error is thrown.
   */
  async finishMoves(): Promise<void> {
    const moves = this.moves;
    this.moves = [];
    if (moves.length === 0) return;
    const copied = await Promise.allSettled(moves.flatMap((m) => m.copies));
    const failed = copied.find((c) => c.status === "rejected");
    if (failed) {
      for (const m of moves) this.pool.putHost(m.host);
      throw (failed as PromiseRejectedResult).reason;
    }
    const leaveDevice = (b: KvBlockState) => {
      this.pool.put(b.k!.shape[1]!, { k: b.k!, v: b.v! });
      b.k = b.v = undefined;
    };
    for (const { b, host, toDisk } of moves) {
      if (toDisk) continue;
      leaveDevice(b);
      b.tier = "host";
      b.host = host;
    }
    // Blocks bound for disk are written together; a block whose write fails stays on the device, and all writes end
    // before the failure is thrown.
    const writes = await Promise.allSettled(
      moves
        .filter((m) => m.toDisk)
        .map(async ({ b, host, bytes }) => {
          try {
            b.disk = await this.spill.write(host.bytes);
          } finally {
            this.pool.putHost(host);
          }
          leaveDevice(b);
          b.tier = "disk";
          this.stats.spilledBytes += 2 * bytes;
        }),
    );
    const writeFailed = writes.find((w) => w.status === "rejected");
    if (writeFailed) throw (writeFailed as PromiseRejectedResult).reason;
  }

  /** Whether the cache keeps the prefill or the decode share on the device now (both, where they are equal). */
  atShare(kind: "prefill" | "decode"): boolean {
    return this.share === (kind === "prefill" ? this.policy.deviceBlocks : this.policy.decodeDeviceBlocks);
  }

  /**
   * Sets how many full blocks per layer stay on the device: the prefill share, which leaves room for a prompt's
   * activations, or the larger decode share. Going to the prefill share moves the blocks beyond it off the device (and
   * their memory back to the backend); going to the decode share brings blocks back from RAM, oldest first, so the
   * device keeps a prefix of each layer, as settle does. The whole protocol: docs/engine.md, "Device shares".
   */
  async useShare(kind: "prefill" | "decode"): Promise<void> {
    await this.finishMoves();
    const share = kind === "prefill" ? this.policy.deviceBlocks : this.policy.decodeDeviceBlocks;
    if (share === this.share) return;
    const growing = share > this.share;
    this.share = share;
    if (!growing) {
      for (let layer = 0; layer < this.layers.length; layer++) this.startMoves(layer);
      return this.finishMoves();
    }
    const landed: KvBlockState[] = [];
    const copies: Promise<void>[] = [];
    // One fence for all the copies: their blocks may reuse memory compute freed (none is enqueued meanwhile), and the
    // RAM copies they read were landed by finishMoves.
    const after = this.backend.fence();
    this.layers.forEach((blocks, layer) => {
      const bytes = this.blockBytes(layer);
      let onDevice = blocks.filter((b) => b.tier === "device" && b.length === this.policy.blockTokens).length;
      for (const b of blocks) {
        if (onDevice >= share) break;
        if (b.tier !== "host") continue;
        const { k, v } = this.deviceBlock(layer);
        copies.push(
          this.backend.copyToDevice(k, 0, b.host!, 0, bytes, after),
          this.backend.copyToDevice(v, 0, b.host!, bytes, bytes, after),
        );
        // The RAM copy stays: full blocks do not change, so the next prompt sends the block out again without a copy.
        Object.assign(b, { tier: "device", k, v });
        landed.push(b);
        onDevice++;
      }
    });
    const results = await Promise.allSettled(copies);
    const failed = results.find((r) => r.status === "rejected");
    if (!failed) return;
    // A copy failed: every block stays in RAM, as it was.
    for (const b of landed) {
      this.pool.put(b.k!.shape[1]!, { k: b.k!, v: b.v! });
      Object.assign(b, { tier: "host", k: undefined, v: undefined });
    }
    throw (failed as PromiseRejectedResult).reason;
  }

  /** The block's K and V bytes (K rows then V rows) in host memory, for staging or saving. */
  async blockBytesOf(layer: number, b: KvBlockState, into: Uint8Array): Promise<void> {
    const bytes = this.blockBytes(layer);
    if (b.tier === "host") into.set(b.host!.bytes.subarray(0, 2 * bytes));
    else if (b.tier === "disk") await this.diskReader.read(b.disk!, into.subarray(0, 2 * bytes));
    else {
      const host = this.pool.takeHost(2 * bytes);
      try {
        await this.backend.copyToHost(b.k!, 0, host, 0, bytes);
        await this.backend.copyToHost(b.v!, 0, host, bytes, bytes);
        into.set(host.bytes.subarray(0, 2 * bytes));
      } finally {
        this.pool.putHost(host);
      }
    }
  }

  /**
   * Layer `layer`'s recurrent state for this sequence, f32 tensors of `shapes` (zeros at first use), about to see `rows`
   * more tokens.
   */
  async recurrentState(
    layer: number,
    shapes: Readonly<Record<string, readonly number[]>>,
    rows: number,
  ): Promise<Readonly<Record<string, Tensor>>> {
    let state = this.states.get(layer);
    if (!state) {
      // A state adopted from the persistent cache waits here, as bytes, until the layer says its shapes.
      const adopted = this.adoptedStates.get(layer);
      this.adoptedStates.delete(layer);
      const tensors: Record<string, Tensor> = {};
      let offset = 0;
      for (const [key, shape] of Object.entries(shapes)) {
        const t = this.backend.alloc(shape, "f32");
        const bytes = t.shape.reduce((a, b) => a * b, 4);
        await this.backend.upload(t, adopted ? adopted.bytes.subarray(offset, offset + bytes) : new Uint8Array(bytes));
        offset += bytes;
        tensors[key] = t;
      }
      if (adopted && offset !== adopted.bytes.byteLength)
        throw new Error(
          `KvCache: layer ${layer}'s cached state has ${adopted.bytes.byteLength} bytes, its shapes ${offset}`,
        );
      state = { tensors, tokens: adopted?.tokens ?? 0 };
      this.states.set(layer, state);
    }
    state.tokens += rows;
    return state.tensors;
  }

  /** Whether a layer keeps recurrent state rather than KV. */
  isRecurrent(layer: number): boolean {
    return (this.shape.kvLayers[layer]!.stateFloats ?? 0) > 0;
  }

  /** The layer's recurrent state as bytes (its tensors in order), or undefined before the layer has run. */
  async stateBytes(layer: number): Promise<Uint8Array | undefined> {
    const state = this.states.get(layer) ?? this.adoptedStates.get(layer);
    if (!state) return undefined;
    if ("bytes" in state) return state.bytes.slice();
    const parts = await Promise.all(Object.values(state.tensors).map((t) => this.backend.read(t)));
    const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
    parts.reduce((o, p) => (out.set(new Uint8Array(p.buffer, p.byteOffset, p.byteLength), o), o + p.byteLength), 0);
    return out;
  }

  /** Keeps a copy of the layer's state as it stands after `position` tokens, for the persistent cache. */
  async snapshotState(layer: number, position: number): Promise<void> {
    const bytes = await this.stateBytes(layer);
    if (!bytes) return;
    const at = this.snapshots.get(position) ?? new Map<number, Uint8Array>();
    at.set(layer, bytes);
    this.snapshots.set(position, at);
  }

  /** Every recurrent layer's state after `position` tokens, if all were kept. */
  snapshotAt(position: number): ReadonlyMap<number, Uint8Array> | undefined {
    const at = this.snapshots.get(position);
    return at && at.size === this.shape.kvLayers.filter((_, l) => this.isRecurrent(l)).length ? at : undefined;
  }

  /** Keeps only the snapshots at positions `keep` accepts (the rest are saved, or were truncated away). */
  dropSnapshots(keep: (position: number) => boolean): void {
    for (const position of [...this.snapshots.keys()]) if (!keep(position)) this.snapshots.delete(position);
  }

  /** Takes a recurrent layer's state after `tokens` tokens (from the persistent cache) for an empty sequence. */
  adoptState(layer: number, bytes: Uint8Array, tokens: number): void {
    if (this.states.has(layer)) throw new Error(`KvCache: layer ${layer} already has state`);
    this.adoptedStates.set(layer, { bytes: bytes.slice(), tokens });
  }

  /**
   * Whether `truncate(length)` keeps every key a query at `length` needs (sliding-window layers may have freed them)
   * and recurrent state is at `length` (it cannot go back).
   */
  canTruncate(length: number): boolean {
    if (length > 0 && [...this.states.values(), ...this.adoptedStates.values()].some((s) => s.tokens !== length))
      return false;
    return this.layers.every((blocks, layer) => {
      const window = this.shape.kvLayers[layer]!.slidingWindow;
      const first = blocks[0]?.start ?? 0;
      return first <= (window ? Math.max(0, length - window + 1) : 0) || length === 0;
    });
  }

  /** Drops every token from position `length` on; a partial last block comes back to the device so it can grow. */
  async truncate(length: number): Promise<void> {
    if (!this.canTruncate(length))
      throw new Error(
        `KvCache: keys before ${length} were freed (sliding window) or recurrent state passed it; rewind to 0 instead`,
      );
    // Moves still pending belong to a forward that failed (a forward lands its moves before it returns): that forward's
    // error is the one to report, and a move that fails leaves its blocks on the device, whole.
    await this.finishMoves().catch(() => {});
    if (length === 0) this.freeStates();
    this.dropSnapshots((position) => position <= length);
    for (let layer = 0; layer < this.layers.length; layer++) {
      const blocks = this.layers[layer]!;
      while (blocks.length && blocks[blocks.length - 1]!.start >= length) this.release(blocks.pop()!);
      const last = blocks[blocks.length - 1];
      if (!last || last.start + last.length <= length) continue;
      last.length = length - last.start;
      if (last.tier === "device" && last.host) {
        // It will grow again: a RAM copy kept from before (useShare) goes stale.
        this.pool.putHost(last.host);
        last.host = undefined;
      }
      if (last.tier !== "device") {
        const data = new Uint8Array(2 * this.blockBytes(layer));
        await this.blockBytesOf(layer, last, data);
        this.release(last);
        Object.assign(last, { tier: "device", host: undefined, disk: undefined }, this.deviceBlock(layer));
        await this.backend.upload(last.k!, data.subarray(0, this.blockBytes(layer)));
        await this.backend.upload(last.v!, data.subarray(this.blockBytes(layer)));
      }
    }
  }

  free(): void {
    // Blocks still being copied off the device go back to the pools once their copies are done.
    for (const { b, host, copies } of this.moves.splice(0)) {
      const kv = { k: b.k!, v: b.v! };
      b.k = b.v = undefined;
      void Promise.allSettled(copies).then(() => {
        this.pool.put(kv.k.shape[1]!, kv);
        this.pool.putHost(host);
      });
    }
    for (const blocks of this.layers) while (blocks.length) this.release(blocks.pop()!);
    this.freeStates();
  }

  private freeStates(): void {
    for (const s of this.states.values()) for (const t of Object.values(s.tensors)) this.backend.free(t);
    this.states.clear();
    this.adoptedStates.clear();
    this.snapshots.clear();
  }

  private deviceBlock(layer: number): { k: Tensor; v: Tensor } {
    return this.pool.take(this.kvCols(layer));
  }

  private release(b: KvBlockState): void {
    if (b.k && b.v) this.pool.put(b.k.shape[1]!, { k: b.k, v: b.v });
    if (b.host) this.pool.putHost(b.host);
  }
}
