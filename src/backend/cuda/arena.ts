// One reserved range of device addresses with physical memory mapped into it granule by granule (the CUDA virtual
// memory API), for the pool's large buffers. Buffers are carved from the range as from one huge segment, so the pool
// never needs a new segment for a size its free blocks cannot hold; what the device holds is the granules under
// buffers in use plus those cached, and cached granules go back granule by granule, wherever they sit. With plain
// segments (cuMemAlloc), a free stretch inside a segment that also holds a live buffer could never be given back:
// a long prefill's changing tensor sizes left gigabytes of such stretches and ran past the budget.
import type { Driver, Handle } from "./driver.js";

/** The driver calls the arena makes. */
export type ArenaDriver = Pick<Driver, "memAddressReserve" | "memAddressFree" | "memMapNew" | "memUnmapRelease">;

/** Each drain unmaps at least this much: KV blocks taking a prompt's activation memory back for decode would drain per block. */
const minTrimBytes = 256 << 20;

export class DeviceArena {
  readonly base: Handle;
  readonly bytes: number;
  /** Per granule: buffers (or held buffers) over it, and its physical memory while mapped. */
  private readonly users: Uint32Array;
  private readonly handles: (Handle | undefined)[];
  /** Bytes of physical memory mapped now. */
  mappedBytes = 0;
  /** Granules mapped and unmapped, and drains before unmapping (each one leaves the GPU without queued work). */
  readonly stats = { maps: 0, unmaps: 0, drains: 0 };

  /**
   * Reserves `bytes` of addresses (rounded up to whole granules) on `device`. `drain` waits until the device has
   * finished all work enqueued so far: memory is unmapped only then, since freed buffers are reused in stream order
   * and work already enqueued may still touch them.
   */
  constructor(
    private readonly driver: ArenaDriver,
    private readonly device: number,
    readonly granule: number,
    bytes: number,
    private readonly drain: () => void,
  ) {
    const granules = Math.ceil(bytes / granule);
    this.bytes = granules * granule;
    this.base = driver.memAddressReserve(this.bytes);
    this.users = new Uint32Array(granules);
    this.handles = new Array<Handle | undefined>(granules);
  }

  /** Bytes that `use(offset, bytes)` would map. */
  unmappedIn(offset: number, bytes: number): number {
    let n = 0;
    for (let g = this.first(offset); g <= this.last(offset, bytes); g++)
      if (this.handles[g] === undefined) n += this.granule;
    return n;
  }

  /** A buffer at `offset` of `bytes` is handed out: its granules are mapped (those not yet) and counted as used. */
  use(offset: number, bytes: number): void {
    for (let g = this.first(offset); g <= this.last(offset, bytes); g++) {
      if (this.handles[g] === undefined) {
        this.handles[g] = this.driver.memMapNew(this.base + BigInt(g * this.granule), this.granule, this.device);
        this.mappedBytes += this.granule;
        this.stats.maps++;
      }
      this.users[g]!++;
    }
  }

  /** The buffer at `offset` of `bytes` is free again; its granules stay mapped (cached) until trimmed. */
  unuse(offset: number, bytes: number): void {
    for (let g = this.first(offset); g <= this.last(offset, bytes); g++) this.users[g]!--;
  }

  /** Mapped bytes under no buffer. */
  cachedBytes(): number {
    let n = 0;
    for (let g = 0; g < this.users.length; g++)
      if (this.users[g] === 0 && this.handles[g] !== undefined) n += this.granule;
    return n;
  }

  /**
   * Unmaps cached granules (after draining the device, once) until `bytes` are freed, and at least `minTrimBytes` (a
   * drain costs more than mapping again), or none is left; the highest addresses first (the pool carves from the
   * lowest), sparing those under `keep` (a buffer about to be handed out). Returns the bytes freed.
   */
  trim(bytes = Infinity, keep?: { readonly offset: number; readonly bytes: number }): number {
    bytes = Math.max(bytes, minTrimBytes);
    const spared = (g: number) =>
      keep !== undefined && g >= this.first(keep.offset) && g <= this.last(keep.offset, keep.bytes);
    const unmappable = (g: number) => this.users[g] === 0 && this.handles[g] !== undefined && !spared(g);
    if (!this.users.some((_, g) => unmappable(g))) return 0;
    this.drain();
    this.stats.drains++;
    let freed = 0;
    for (let g = this.users.length - 1; g >= 0 && freed < bytes; g--) {
      const handle = this.handles[g];
      if (!unmappable(g) || handle === undefined) continue;
      this.driver.memUnmapRelease(this.base + BigInt(g * this.granule), this.granule, handle);
      this.handles[g] = undefined;
      this.mappedBytes -= this.granule;
      this.stats.unmaps++;
      freed += this.granule;
    }
    return freed;
  }

  /**
   * Unmaps what no buffer uses and gives the addresses back if nothing is left; returns whether it was. (Buffers still
   * in use after a failure go with the context, which the backend releases next: disposing must not throw over them.)
   */
  dispose(): boolean {
    this.trim();
    if (this.users.some((u) => u > 0)) return false;
    this.driver.memAddressFree(this.base, this.bytes);
    return true;
  }

  private first(offset: number): number {
    return Math.floor(offset / this.granule);
  }

  private last(offset: number, bytes: number): number {
    return Math.floor((offset + bytes - 1) / this.granule);
  }
}
