// Device memory for the CUDA backend: a caching allocator. Buffers are carved from segments the driver gave; a freed
// buffer merges with free neighbours and serves later requests of any size that fits, so the working set of a layer
// pass (whose tensor sizes differ op by op) settles into the same memory instead of asking the driver again. Every
// buffer is reused in compute-stream order (see Allocations.free). cuMemFree waits for the whole device, so segments go
// back to the driver only when the budget needs their bytes, or on trim. A buffer still being copied to the host is
// held back until its copy is done. Where the driver has virtual memory, large buffers come from one DeviceArena
// instead of segments of their own, and its cached memory goes back granule by granule.
import type { DeviceArena } from "./arena.js";
import type { Driver, Handle } from "./driver.js";

/** The driver calls the pool makes. */
export type PoolDriver = Pick<Driver, "memAlloc" | "memFree" | "eventDone" | "eventSynchronize" | "eventDestroy">;

export class DeviceBuffer {
  /** Event on the copy stream after the last upload into this buffer; compute waits for it before reading. */
  pendingCopy?: Handle;
  /** Event after the last copy out of this buffer to the host (on its own stream): the pool reuses it only after. */
  pendingRead?: Handle;

  constructor(
    readonly ptr: Handle,
    readonly bytes: number,
    /** Where the buffer sits in its segment. */
    readonly block: Block,
  ) {}
}

interface Segment {
  readonly ptr: Handle;
  readonly bytes: number;
  readonly small: boolean;
  /** The block at offset 0: it stays the same object, as merges keep the lower block. */
  first: Block;
}

/** A stretch of a segment, in use or free; blocks of a segment are linked in address order. */
export interface Block {
  readonly segment: Segment;
  offset: number;
  bytes: number;
  free: boolean;
  prev?: Block;
  next?: Block;
}

const MiB = 1 << 20;
/** Requests up to this size come from small segments, so that long-lived small buffers (KV blocks, block lists) do not pin stretches of the large ones. */
const smallMax = MiB;
const smallSegmentBytes = 2 * MiB;
const smallAlign = 512;
const largeAlign = MiB;

/** Bytes a request takes: 512-byte steps up to 1 MiB, whole MiB above. */
export function blockBytes(bytes: number): number {
  const align = bytes <= smallMax ? smallAlign : largeAlign;
  return Math.max(align, Math.ceil(bytes / align) * align);
}

/**
 * Bytes to plan for a tensor of `bytes`: at least what the allocator takes, rounded up to a power of two below 1 MiB
 * (the allocator's small segments fragment; the plan keeps that slack).
 */
export function plannedBytes(bytes: number): number {
  if (bytes <= smallMax) return Math.max(smallAlign, 2 ** Math.ceil(Math.log2(Math.max(1, bytes))));
  return blockBytes(bytes);
}

export class DevicePool {
  private readonly segments = new Set<Segment>();
  private readonly freeBlocks = { small: new Set<Block>(), large: new Set<Block>() };
  /** Released buffers whose copy to the host may still run, each with the event that ends it (the pool's to destroy). */
  private readonly held: { block: Block; copied: Handle }[] = [];
  /** Bytes of the segments held from the driver (in use or cached). */
  private segmentBytesHeld = 0;
  /** Most bytes held from the driver (see reserved) so far. */
  reservedPeak = 0;
  /** Most bytes the pool may hold; past it, free segments go back to the driver before it is asked for more. */
  limit = Infinity;
  /** Calls to the driver's allocator: few after warm-up, or the pool is thrashing. */
  readonly stats = { driverAllocs: 0, driverFrees: 0, copyWaits: 0, copyWaitMs: 0 };
  /** Bytes in blocks handed out (not free, not held for a copy). */
  private inUse = 0;
  /** The pool at its largest overrun of the limit, if any: what held the memory then (in use, cached free, held for copies). */
  overrun?: {
    readonly bytes: number;
    readonly request: number;
    readonly inUse: number;
    readonly cachedSmall: number;
    readonly cachedLarge: number;
    readonly held: number;
    readonly segments: number;
  };

  /** The arena's addresses, carved like one segment (never given back whole). */
  private readonly arenaSegment?: Segment;

  constructor(
    private readonly driver: PoolDriver,
    private readonly arena?: DeviceArena,
  ) {
    if (arena) {
      const segment = { ptr: arena.base, bytes: arena.bytes, small: false } as Segment;
      segment.first = { segment, offset: 0, bytes: arena.bytes, free: true };
      this.freeBlocks.large.add(segment.first);
      this.arenaSegment = segment;
    }
  }

  /** Bytes held from the driver now, in use or cached: the segments, and the arena's mapped granules. */
  get reserved(): number {
    return this.segmentBytesHeld + (this.arena?.mappedBytes ?? 0);
  }

  alloc(bytes: number): DeviceBuffer {
    const size = blockBytes(bytes);
    const small = size <= smallMax;
    this.reclaim(false);
    if (!small && this.arena) return this.allocInArena(size);
    let block = this.bestFit(small, size);
    if (!block && this.held.length > 0 && this.reserved + this.segmentBytes(small, size) > this.limit) {
      // Copies to the host run on while compute goes on; near the budget, wait for them rather than take more memory.
      this.reclaim(true);
      block = this.bestFit(small, size);
    }
    return this.handOut(block ?? this.newSegment(small, size), size);
  }

  /** A large buffer from the arena; mapping its granules may first take cached memory back, to keep within the limit. */
  private allocInArena(size: number): DeviceBuffer {
    const arena = this.arena!;
    // The free stretch whose start needs the fewest granules mapped, then the smallest: a layer pass's buffers land
    // where the last pass's did, in memory still mapped, so passes of the same shape map and unmap nothing.
    const fit = () => {
      let best: Block | undefined;
      let bestUnmapped = Infinity;
      for (const b of this.freeBlocks.large) {
        if (b.bytes < size) continue;
        const unmapped = arena.unmappedIn(b.offset, size);
        if (unmapped < bestUnmapped || (unmapped === bestUnmapped && b.bytes < best!.bytes))
          [best, bestUnmapped] = [b, unmapped];
      }
      if (!best) throw new Error(`DevicePool: no ${size} bytes of addresses left in the arena`);
      return best;
    };
    let block = fit();
    if (this.reserved + arena.unmappedIn(block.offset, size) > this.limit && this.held.length > 0) {
      this.reclaim(true);
      block = fit();
    }
    const keep = { offset: block.offset, bytes: size };
    const over = () => this.reserved + arena.unmappedIn(block.offset, size) - this.limit;
    // The arena's own cached granules first (small segments hold KV blocks that come back soon), then empty segments.
    if (over() > 0) arena.trim(over(), keep);
    if (over() > 0) this.trim(over(), keep);
    return this.handOut(block, size);
  }

  /** Cuts `size` bytes off free `block` and hands them out (mapping them first if the block is the arena's). */
  private handOut(block: Block, size: number): DeviceBuffer {
    this.split(block, size);
    block.free = false;
    this.freeSet(block.segment.small).delete(block);
    if (block.segment === this.arenaSegment) this.arena!.use(block.offset, block.bytes);
    this.inUse += block.bytes;
    this.reservedPeak = Math.max(this.reservedPeak, this.reserved);
    if (this.reserved - this.limit > (this.overrun?.bytes ?? 0)) this.noteOverrun(size);
    return new DeviceBuffer(block.segment.ptr + BigInt(block.offset), block.bytes, block);
  }

  private noteOverrun(request: number): void {
    const sum = (set: Set<Block>) => [...set].reduce((n, b) => n + b.bytes, 0);
    const held = this.held.reduce((n, h) => n + h.block.bytes, 0);
    const cachedLarge = this.arena ? this.arena.cachedBytes() : sum(this.freeBlocks.large);
    this.overrun = {
      bytes: this.reserved - this.limit,
      request,
      inUse: this.inUse,
      cachedSmall: sum(this.freeBlocks.small),
      cachedLarge,
      held,
      segments: this.segments.size,
    };
  }

  release(b: DeviceBuffer): void {
    b.pendingCopy = undefined;
    if (b.block.free || this.held.some((h) => h.block === b.block))
      throw new Error("DevicePool: buffer released twice");
    this.inUse -= b.block.bytes;
    if (b.pendingRead !== undefined) {
      this.held.push({ block: b.block, copied: b.pendingRead });
      b.pendingRead = undefined;
      return;
    }
    this.freeBlock(b.block);
  }

  /** Frees held buffers whose copies are done; `wait`: waits for all of them first. */
  private reclaim(wait: boolean): void {
    for (let i = 0; i < this.held.length;) {
      const { block, copied } = this.held[i]!;
      if (wait) {
        const t0 = performance.now();
        this.driver.eventSynchronize(copied);
        this.stats.copyWaits++;
        this.stats.copyWaitMs += performance.now() - t0;
      } else if (!this.driver.eventDone(copied)) {
        i++;
        continue;
      }
      this.held.splice(i, 1);
      this.driver.eventDestroy(copied);
      this.freeBlock(block);
    }
  }

  private freeBlock(b: Block): void {
    let block = b;
    if (block.segment === this.arenaSegment) this.arena!.unuse(block.offset, block.bytes);
    block.free = true;
    const free = this.freeSet(block.segment.small);
    for (const neighbour of [block.prev, block.next]) {
      if (!neighbour?.free) continue;
      free.delete(neighbour);
      const [first, second] = neighbour === block.prev ? [neighbour, block] : [block, neighbour];
      first.bytes += second.bytes;
      first.next = second.next;
      if (second.next) second.next.prev = first;
      block = first;
    }
    free.add(block);
  }

  /**
   * Gives segments with nothing in use back to the driver, the largest first, then the arena's cached granules (other
   * than those under `keep`, about to be used), until `bytes` are freed (default: all).
   */
  trim(bytes = Infinity, keep?: { readonly offset: number; readonly bytes: number }): void {
    this.reclaim(bytes === Infinity);
    const freed = this.freeSegments(
      [...this.segments].filter((s) => this.isEmpty(s)),
      bytes,
    );
    if (this.arena && freed < bytes) this.arena.trim(bytes - freed, keep);
  }

  /** Gives every small segment with nothing in use back to the driver (the arena and large segments keep their cache). */
  trimSmallSegments(): void {
    this.reclaim(false);
    this.freeSegments([...this.segments].filter((s) => s.small && this.isEmpty(s)));
  }

  /** Gives `segments` back to the driver, the largest first, until `bytes` are freed; returns the bytes freed. */
  private freeSegments(segments: Segment[], bytes = Infinity): number {
    let freed = 0;
    for (const s of segments.sort((a, b) => b.bytes - a.bytes)) {
      if (freed >= bytes) break;
      this.freeSet(s.small).delete(s.first);
      this.segments.delete(s);
      this.driver.memFree(s.ptr);
      this.stats.driverFrees++;
      this.segmentBytesHeld -= s.bytes;
      freed += s.bytes;
    }
    return freed;
  }

  /** Granules the arena mapped and unmapped, and its drains (undefined without one). */
  get arenaStats(): DeviceArena["stats"] | undefined {
    return this.arena?.stats;
  }

  /** Gives every segment and the arena back (every buffer must be free). */
  dispose(): void {
    this.trim();
    this.arena?.dispose();
  }

  /** Bytes in free blocks (cached, not given back); for the arena, its mapped granules under no buffer. */
  cachedBytes(): number {
    let n = this.arena?.cachedBytes() ?? 0;
    for (const set of [this.freeBlocks.small, this.freeBlocks.large])
      for (const b of set) if (b.segment !== this.arenaSegment) n += b.bytes;
    return n;
  }

  private freeSet(small: boolean): Set<Block> {
    return small ? this.freeBlocks.small : this.freeBlocks.large;
  }

  /** The smallest free block that holds `size` (the lowest address among equals). */
  private bestFit(small: boolean, size: number): Block | undefined {
    let best: Block | undefined;
    for (const b of this.freeSet(small)) {
      if (b.bytes < size) continue;
      if (
        !best ||
        b.bytes < best.bytes ||
        (b.bytes === best.bytes && b.segment.ptr + BigInt(b.offset) < best.segment.ptr + BigInt(best.offset))
      )
        best = b;
    }
    return best;
  }

  /** A new segment's size: a small one's, or (near the budget, where that could overrun it, and for large ones) the request's. */
  private segmentBytes(small: boolean, size: number): number {
    return small && this.reserved + smallSegmentBytes <= this.limit ? smallSegmentBytes : size;
  }

  private newSegment(small: boolean, size: number): Block {
    // The arena's cached granules make room for a whole small segment (KV blocks brought back for decode take the
    // memory a prompt's activations left) rather than a segment per block. (Large requests reach here only without one.)
    if (this.arena && this.reserved + this.segmentBytes(small, size) > this.limit)
      this.arena.trim(this.reserved + smallSegmentBytes - this.limit);
    const bytes = this.segmentBytes(small, size);
    if (this.reserved + bytes > this.limit) this.trim(this.reserved + bytes - this.limit);
    let ptr: Handle;
    try {
      ptr = this.driver.memAlloc(bytes);
    } catch (e) {
      if (![...this.segments].some((s) => this.isEmpty(s))) throw e;
      this.trim();
      ptr = this.driver.memAlloc(bytes);
    }
    this.stats.driverAllocs++;
    this.segmentBytesHeld += bytes;
    const segment = { ptr, bytes, small } as Segment;
    segment.first = { segment, offset: 0, bytes, free: true };
    this.segments.add(segment);
    this.freeSet(small).add(segment.first);
    return segment.first;
  }

  /** Cuts `block` to `size`, the rest staying free after it (if worth keeping: a step of its kind or more). */
  private split(block: Block, size: number): void {
    const rest = block.bytes - size;
    if (rest < (block.segment.small ? smallAlign : largeAlign)) return;
    const tail: Block = {
      segment: block.segment,
      offset: block.offset + size,
      bytes: rest,
      free: true,
      prev: block,
      next: block.next,
    };
    if (block.next) block.next.prev = tail;
    block.next = tail;
    block.bytes = size;
    this.freeSet(block.segment.small).add(tail);
  }

  private isEmpty(s: Segment): boolean {
    return s.first.free && s.first.bytes === s.bytes;
  }
}
