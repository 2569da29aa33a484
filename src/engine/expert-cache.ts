// The hot-expert cache of mixture-of-experts models: device slots hold recently routed experts (least recently used goes
// first); the others come from pinned RAM or are read from disk when a token routes to them.
import type { Weights } from "../arch/types.js";
import type { Backend, Fence, HostBuffer, Tensor } from "../backend/ops.js";
import type { DiskReader } from "../model/disk-reader.js";
import type { ModelLayout, TensorGroup } from "./layout.js";
import type { Plan } from "./planner.js";
import { BufferPool, deviceBytes, fetchGroup, readGroup } from "./streamer-io.js";

interface ExpertSlot {
  readonly buffer: Tensor;
  key?: number;
  weights?: Promise<Weights>;
  /** Forward passes using it now; a pinned slot is never reused. */
  pins: number;
  lastUse: number;
  /** The compute that read the previous occupant; copies into the slot wait for it. */
  freeAfter?: Fence;
}

export interface ExpertStats {
  /** Experts copied to the device (cache misses), cache hits, and the bytes those copies moved. */
  loads: number;
  hits: number;
  loadBytes: number;
  /** Seconds with at least one expert load in flight (the router waits for them; they start only once it has run). */
  waitS: number;
}

export class ExpertCache {
  readonly stats: ExpertStats = { loads: 0, hits: 0, loadBytes: 0, waitS: 0 };
  private readonly slots: ExpertSlot[] = [];
  private readonly byKey = new Map<number, ExpertSlot>();
  private readonly ramImages = new Map<number, HostBuffer>();
  private readonly slotWaiters: (() => void)[] = [];
  private tick = 0;
  private inFlight = 0;
  private busySince = 0;

  /** Every expert's group, layer by layer (dense layers have none); an expert's key is its index here. */
  private readonly groups: readonly TensorGroup[];
  private readonly firstKey: readonly number[];

  private constructor(
    private readonly backend: Backend,
    perLayer: readonly (readonly TensorGroup[])[],
    private readonly reader: DiskReader,
    private readonly staging: BufferPool,
  ) {
    this.groups = perLayer.flat();
    this.firstKey = perLayer.map((_, l) => perLayer.slice(0, l).reduce((n, g) => n + g.length, 0));
  }

  private key(layer: number, expert: number): number {
    return this.firstKey[layer]! + expert;
  }

  /** Allocates the plan's slots and RAM images; with a slot for every expert, loads them all now. */
  static async create(backend: Backend, layout: ModelLayout, plan: Plan, reader: DiskReader): Promise<ExpertCache> {
    const { deviceSlots, ram, stagingBuffers, total } = plan.experts;
    const staging = new BufferPool(
      backend,
      Math.max(stagingBuffers, deviceSlots === total ? 1 : 0),
      layout.maxExpertHostBytes,
    );
    const c = new ExpertCache(backend, layout.experts, reader, staging);
    try {
      for (let i = 0; i < deviceSlots; i++)
        c.slots.push({ buffer: deviceBytes(backend, layout.maxExpertDeviceBytes), pins: 0, lastUse: 0 });
      for (let key = 0; key < ram; key++) {
        const image = backend.allocHost(c.group(key).hostBytes);
        c.ramImages.set(key, image);
        await readGroup(reader, c.group(key), image);
      }
      if (deviceSlots === total && total > 0) {
        for (let key = 0; key < total; key++) {
          c.assign(c.slots[key]!, key);
          await c.slots[key]!.weights;
        }
        c.stats.loads = c.stats.loadBytes = c.stats.waitS = 0; // loading at start is not a cache miss
        staging.dispose(); // resident: nothing is read again
      }
    } catch (e) {
      await c.dispose();
      throw e;
    }
    return c;
  }

  private group(key: number): TensorGroup {
    return this.groups[key]!;
  }

  /** The expert's weights on the device, pinned until `release`. */
  async acquire(layer: number, expert: number): Promise<Weights> {
    const key = this.key(layer, expert);
    let slot = this.byKey.get(key);
    if (slot) this.stats.hits++;
    while (!slot) {
      // Choosing and pinning a slot happen with no await between them, so concurrent requests never share one.
      const free = this.leastRecentlyUsed();
      if (free) {
        this.assign(free, key);
        slot = free;
        break;
      }
      await new Promise<void>((resolve) => this.slotWaiters.push(resolve));
      slot = this.byKey.get(key); // another request may have brought it in meanwhile
      if (slot) this.slotWaiters.shift()?.(); // then the slot that woke this one is someone else's
    }
    slot.pins++;
    slot.lastUse = ++this.tick;
    return slot.weights!;
  }

  release(layer: number, expert: number): void {
    const slot = this.byKey.get(this.key(layer, expert));
    if (!slot || slot.pins === 0) return;
    if (--slot.pins === 0) {
      slot.freeAfter = this.backend.fence();
      this.slotWaiters.shift()?.();
    }
  }

  /** A failed pass: unpin everything once its loads have settled, and forget loads that failed. */
  async reset(): Promise<void> {
    this.slotWaiters.splice(0);
    for (const slot of this.slots) {
      const ok = await slot.weights?.then(
        () => true,
        () => false,
      );
      if (ok === false) this.evict(slot);
      if (slot.pins > 0) slot.freeAfter = this.backend.fence();
      slot.pins = 0;
    }
  }

  private leastRecentlyUsed(): ExpertSlot | undefined {
    let best: ExpertSlot | undefined;
    for (const s of this.slots) if (s.pins === 0 && (!best || s.lastUse < best.lastUse)) best = s;
    return best;
  }

  private evict(slot: ExpertSlot): void {
    if (slot.key !== undefined) this.byKey.delete(slot.key);
    slot.key = slot.weights = undefined;
  }

  private assign(slot: ExpertSlot, key: number): void {
    this.evict(slot);
    slot.key = key;
    this.byKey.set(key, slot);
    const group = this.group(key);
    if (this.inFlight++ === 0) this.busySince = performance.now();
    slot.weights = (async () => {
      try {
        // A chunk's routed experts are needed by its own pass.
        const w = await fetchGroup(
          this.backend,
          this.reader,
          group,
          this.ramImages.get(key),
          this.staging,
          slot.buffer,
          slot.freeAfter,
          "needed",
        );
        this.stats.loads++;
        this.stats.loadBytes += group.dataBytes;
        return w;
      } finally {
        if (--this.inFlight === 0) this.stats.waitS += (performance.now() - this.busySince) / 1000;
      }
    })();
    slot.weights.catch(() => {
      if (slot.key === key) this.evict(slot);
    });
  }

  /** Frees everything once expert reads still in flight have landed and their copies are done. */
  async dispose(): Promise<void> {
    await Promise.allSettled(this.slots.map((s) => s.weights));
    await this.backend.sync();
    for (const s of this.slots.splice(0)) this.backend.free(s.buffer);
    for (const b of this.ramImages.values()) this.backend.freeHost(b);
    this.ramImages.clear();
    this.byKey.clear();
    this.staging.dispose();
  }
}
