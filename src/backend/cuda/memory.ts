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

  constructor(private readonly driver: Driver) {}

  alloc(bytes: number): DeviceBuffer {
    const size = bucket(bytes);
    const cached = this.free.get(size)?.pop();
    if (cached) return cached;
    if (this.reserved + size > this.limit) this.trim();
    let ptr: Handle;
    try {
      ptr = this.driver.memAlloc(size);
    } catch (e) {
      if (this.cachedBytes() === 0) throw e;
      this.trim();
      ptr = this.driver.memAlloc(size);
    }
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

  /** Gives every cached buffer back to the driver (cuMemFree waits for work in flight that may use them). */
  trim(): void {
    for (const list of this.free.values()) {
      for (const b of list) {
        this.driver.memFree(b.ptr);
        this.reserved -= b.bytes;
      }
    }
    this.free.clear();
  }

  private cachedBytes(): number {
    let n = 0;
    for (const list of this.free.values()) for (const b of list) n += b.bytes;
    return n;
  }
}
