// Attention over a tiered KV cache: device blocks directly, RAM and disk blocks staged to the device in groups, parts merged.
import type { AttentionCall } from "../arch/types.js";
import { dtypeBytes, type FloatDType } from "../backend/dtype.js";
import type { AttentionPart, AttentionSeq, Backend, Fence, HostBuffer, KvBlock, Tensor } from "../backend/ops.js";
import type { KvBlockState, KvCache } from "./kv-cache.js";

export interface AttendItem {
  readonly cache: KvCache;
  readonly qRow: number;
  readonly qRows: number;
  readonly qPos: number;
}

interface StagingSlot {
  readonly k: Tensor;
  readonly v: Tensor;
  /** Pinned bytes for blocks that come from disk. */
  readonly host: HostBuffer;
  /** Compute that last read this slot; copies into it wait for it. */
  lastUse?: Fence;
}

/** Device buffers that RAM and disk KV blocks are copied into before attention reads them. */
export class KvStager {
  private readonly slots: StagingSlot[] = [];
  private next = 0;
  readonly stats = { h2dBytes: 0, diskReadBytes: 0, waitS: 0 };

  constructor(
    private readonly backend: Backend,
    /** Largest K (or V) block in bytes, blocks staged at once, and the cache's dtype. */
    private readonly blockBytes: number,
    readonly capacity: number,
    private readonly dtype: FloatDType,
  ) {}

  /** Allocates every slot now (the plan's share of device memory), instead of at first use. */
  reserve(): void {
    while (this.slots.length < this.capacity) this.addSlot();
  }

  private addSlot(): void {
    const elements = [this.blockBytes / dtypeBytes[this.dtype]];
    this.slots.push({
      k: this.backend.alloc(elements, this.dtype),
      v: this.backend.alloc(elements, this.dtype),
      host: this.backend.allocHost(2 * this.blockBytes),
    });
  }

  /**
   * Copies blocks (at most `capacity`) into the next slots; returns them as KvBlocks for attention, in order. Blocks on
   * disk are read at once, so the disk sees them together rather than one after another.
   */
  async stageGroup(group: readonly { cache: KvCache; b: KvBlockState }[], layer: number): Promise<KvBlock[]> {
    if (group.length > this.capacity) throw new Error(`KvStager: ${group.length} blocks for ${this.capacity} slots`);
    const t0 = performance.now();
    // Every stage takes its slot before its first wait, and all of them end before this returns, even on failure (a
    // slot's pinned buffer is only reused once its copies are done).
    const settled = await Promise.allSettled(group.map(({ cache, b }) => this.stage(cache, layer, b)));
    if (group.some(({ b }) => b.tier === "disk")) this.stats.waitS += (performance.now() - t0) / 1000;
    const failed = settled.find((r) => r.status === "rejected");
    if (failed) throw (failed as PromiseRejectedResult).reason;
    return settled.map((r) => (r as PromiseFulfilledResult<KvBlock>).value);
  }

  /** Copies one block into the next slot; returns it as a KvBlock for attention. */
  private async stage(cache: KvCache, layer: number, b: KvBlockState): Promise<KvBlock> {
    const slot = this.slot();
    const bytes = cache.blockBytes(layer);
    const shape = [cache.policy.blockTokens, cache.kvCols(layer)];
    let src: HostBuffer;
    if (b.tier === "host") src = b.host!;
    else {
      await cache.blockBytesOf(layer, b, slot.host.bytes);
      this.stats.diskReadBytes += 2 * bytes;
      src = slot.host;
    }
    const k = this.backend.view(slot.k, 0, shape, this.dtype);
    const v = this.backend.view(slot.v, 0, shape, this.dtype);
    const copies = [
      this.backend.copyToDevice(k, 0, src, 0, bytes, slot.lastUse),
      this.backend.copyToDevice(v, 0, src, bytes, bytes, slot.lastUse),
    ];
    this.stats.h2dBytes += 2 * bytes;
    // A disk block's pinned buffer is reused by this slot's next block: its copy must be done by then.
    if (b.tier === "disk") await Promise.all(copies);
    return { k, v, start: b.start, length: b.length };
  }

  /** Marks the slots staged since the last call as read by the compute enqueued so far. */
  markUsed(n: number): void {
    const fence = this.backend.fence();
    for (let i = 1; i <= n; i++) this.slots[(this.next - i + this.slots.length) % this.slots.length]!.lastUse = fence;
  }

  private slot(): StagingSlot {
    if (this.slots.length < this.capacity) this.addSlot();
    const s = this.slots[this.next % this.capacity]!;
    this.next = (this.next + 1) % this.capacity;
    return s;
  }

  dispose(): void {
    for (const s of this.slots.splice(0)) {
      this.backend.free(s.k);
      this.backend.free(s.v);
      this.backend.freeHost(s.host);
    }
  }
}

/** Attention of q over every item's KV, wherever its blocks live. */
export async function attendTiered(
  backend: Backend,
  stager: KvStager | undefined,
  layer: number,
  q: Tensor,
  items: readonly AttendItem[],
  o: AttentionCall,
): Promise<Tensor> {
  const onDevice = (b: KvBlockState): b is KvBlockState & KvBlock => b.tier === "device";
  const deviceSeqs: AttentionSeq[] = items.map((it) => ({
    qRow: it.qRow,
    qRows: it.qRows,
    qPos: it.qPos,
    blocks: it.cache.blocks(layer).filter(onDevice),
  }));
  const off = items.flatMap((it) =>
    it.cache
      .blocks(layer)
      .filter((b) => !onDevice(b))
      .map((b) => ({ it, b })),
  );
  if (off.length === 0) return backend.attention(q, { ...o, seqs: deviceSeqs });
  if (!stager) throw new Error("attendTiered: KV blocks off the device but no stager");
  let acc: AttentionPart = backend.attentionPart(q, { ...o, seqs: deviceSeqs });
  for (let g = 0; g < off.length; g += stager.capacity) {
    const group = off.slice(g, g + stager.capacity);
    const blocks = await stager.stageGroup(
      group.map(({ it, b }) => ({ cache: it.cache, b })),
      layer,
    );
    const staged = new Map<AttendItem, KvBlock[]>();
    group.forEach(({ it }, i) => staged.set(it, [...(staged.get(it) ?? []), blocks[i]!]));
    const seqs = [...staged].map(([it, blocks]) => ({ qRow: it.qRow, qRows: it.qRows, qPos: it.qPos, blocks }));
    // Sinks belong to one part only (the device part has them): a merge then counts them once.
    const part = backend.attentionPart(q, { ...o, sinks: undefined, seqs });
    const merged = backend.mergeAttention(acc, part);
    stager.markUsed(group.length);
    for (const t of [acc.out, acc.lse, part.out, part.lse]) backend.free(t); // bounded however many groups there are
    acc = merged;
  }
  backend.free(acc.lse);
  return acc.out;
}
