// Device memory for the CUDA backend: buffers from a caching pool (freed buffers are reused by size, trimmed under pressure).
import type { Driver, Handle } from "./driver.js";

export class DeviceBuffer {
  /** Event on the copy stream after the last upload into this buffer; compute waits for it before reading. */
  pendingCopy?: Handle;

  constructor(
    readonly ptr: Handle,
    readonly bytes: number,
  ) {}
}

const small = 1 << 20;

/**
 * Size classes: powers of two up to 1 MiB (block lists and attention partials change size with the context), whole
 * MiB above. Few classes keep the cache from filling with sizes that never come back.
 */
export function bucket(bytes: number): number {
  if (bytes <= small) return Math.max(512, 2 ** Math.ceil(Math.log2(bytes)));
  return Math.ceil(bytes / small) * small;
}

export class DevicePool {
  private readonly free = new Map<number, DeviceBuffer[]>();
  /** Bytes held from the driver (in use or cached) now and at most. */
  reserved = 0;
  reservedPeak = 0;
  /** Most bytes the pool may hold; past it the cache is released before asking the driver. */
  limit = Infinity;
  /** Calls to the driver's allocator: few after warm-up, or the pool is thrashing. */
  readonly stats = { driverAllocs: 0, driverFrees: 0 };

  constructor(private readonly driver: Pick<Driver, "memAlloc" | "memFree">) {}

  alloc(bytes: number): DeviceBuffer {
    const size = bucket(bytes);
    const cached = this.free.get(size)?.pop();
    if (cached) return cached;
    if (this.reserved + size > this.limit) {
      // Near the budget, a cached buffer up to twice the size serves before the driver is asked: cuMemFree waits for
      // the whole device, so trimming on every new size would leave the GPU idle while the host catches up.
      const larger = this.smallestCachedWithin(size, 2 * size);
      if (larger) return larger;
      this.trim(this.reserved + size - this.limit);
    }
    let ptr: Handle;
    try {
      ptr = this.driver.memAlloc(size);
    } catch (e) {
      if (this.cachedBytes() === 0) throw e;
      this.trim();
      ptr = this.driver.memAlloc(size);
    }
    this.stats.driverAllocs++;
    this.reserved += size;
    this.reservedPeak = Math.max(this.reservedPeak, this.reserved);
    return new DeviceBuffer(ptr, size);
  }

  release(b: DeviceBuffer): void {
    b.pendingCopy = undefined;
    const list = this.free.get(b.bytes);
    if (list) list.push(b);
    else this.free.set(b.bytes, [b]);
  }

  /**
   * Gives cached buffers back to the driver, the largest first, until `bytes` are freed (default: all of them).
   * cuMemFree waits for work in flight that may use them.
   */
  trim(bytes = Infinity): void {
    const sizes = [...this.free.keys()].sort((a, b) => b - a);
    let freed = 0;
    for (const size of sizes) {
      const list = this.free.get(size)!;
      while (list.length > 0 && freed < bytes) {
        this.driver.memFree(list.pop()!.ptr);
        this.reserved -= size;
        freed += size;
        this.stats.driverFrees++;
      }
      if (list.length === 0) this.free.delete(size);
      if (freed >= bytes) break;
    }
  }

  private smallestCachedWithin(size: number, most: number): DeviceBuffer | undefined {
    let best: number | undefined;
    for (const [s, list] of this.free) if (s > size && s <= most && list.length > 0 && (best === undefined || s < best)) best = s;
    return best === undefined ? undefined : this.free.get(best)!.pop();
  }

  private cachedBytes(): number {
    let n = 0;
    for (const list of this.free.values()) for (const b of list) n += b.bytes;
    return n;
  }
}
