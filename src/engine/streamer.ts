// Weight streaming: resident layers stay on the device; the others rotate through device slots, read from RAM or disk
// ahead of use, but for those decode keeps on the device in the room a prompt's activations leave.
import type { Weights } from "../arch/types.js";
import type { Backend, Fence, HostBuffer, Tensor } from "../backend/ops.js";
import type { DiskReader } from "../model/disk-reader.js";
import { ExpertCache } from "./expert-cache.js";
import type { ModelLayout } from "./layout.js";
import { decodeKeptLayers, type Plan } from "./planner.js";
import { BufferPool, deviceBytes, fetchGroup, loadGroup, readGroup } from "./streamer-io.js";
import type { WeightSource } from "./weights.js";

interface Slot {
  readonly buffer: Tensor;
  layer?: number;
  loading?: Promise<Weights>;
  /** The compute that read the previous occupant; copies into the slot wait for it. */
  freeAfter?: Fence;
  busy: boolean;
}

export interface StreamStats {
  /** Seconds the engine waited for a layer's weights. */
  ioWaitS: number;
  h2dBytes: number;
}

export class LayerStreamer implements WeightSource {
  readonly stats: StreamStats = { ioWaitS: 0, h2dBytes: 0 };
  private readonly resident = new Map<number, Weights>();
  /** Streamed layers decode keeps on the device, each in a buffer of its own, until a prompt needs the room (useShare). */
  private readonly kept = new Map<number, { buffer: Tensor; weights: Weights }>();
  private readonly ramImages = new Map<number, HostBuffer>();
  private readonly buffers: Tensor[] = [];
  private readonly slots: Slot[] = [];
  private staging?: BufferPool;
  private experts?: ExpertCache;
  /** The layers that rotate through the slots, in order; a layer's place decides its slot. */
  private streamed: number[];
  private readonly slotWaiters = new Map<Slot, (() => void)[]>();

  private constructor(
    private readonly backend: Backend,
    private readonly layout: ModelLayout,
    private readonly plan: Plan,
    private readonly reader: DiskReader,
    readonly globals: Weights,
    /** Device bytes of KV blocks beyond the pool's reserve now (KvBlockPool.extraDeviceBytes): they come first. */
    private readonly extraKvBytes: () => number,
  ) {
    this.streamed = this.rotation();
  }

  /** Loads the globals and resident layers onto the device and the RAM tier into host memory. */
  static async create(
    backend: Backend,
    layout: ModelLayout,
    plan: Plan,
    reader: DiskReader,
    extraKvBytes: () => number,
  ): Promise<LayerStreamer> {
    const globalsBuffer = deviceBytes(backend, layout.globals.deviceBytes);
    const image = backend.allocHost(Math.max(layout.globals.hostBytes, layout.maxLayerHostBytes));
    const s = new LayerStreamer(
      backend,
      layout,
      plan,
      reader,
      await loadGroup(backend, reader, layout.globals, image, globalsBuffer),
      extraKvBytes,
    );
    s.buffers.push(globalsBuffer);
    try {
      for (let i = 0; i < layout.layers.length; i++) {
        const tier = plan.layerTier[i]!;
        if (tier === "device") {
          const buffer = deviceBytes(backend, layout.layers[i]!.deviceBytes);
          s.buffers.push(buffer);
          s.resident.set(i, await loadGroup(backend, reader, layout.layers[i]!, image, buffer));
        } else if (tier === "ram") {
          const ram = backend.allocHost(layout.layers[i]!.hostBytes);
          await readGroup(reader, layout.layers[i]!, ram);
          s.ramImages.set(i, ram);
        }
      }
    } finally {
      backend.freeHost(image);
    }
    for (let i = 0; i < plan.slots; i++)
      s.slots.push({ buffer: deviceBytes(backend, layout.maxLayerDeviceBytes), busy: false });
    s.staging = new BufferPool(backend, plan.stagingBuffers, layout.maxLayerHostBytes);
    if (plan.experts.total > 0) s.experts = await ExpertCache.create(backend, layout, plan, reader);
    return s;
  }

  async layer(i: number): Promise<Weights> {
    const resident = this.resident.get(i) ?? this.kept.get(i)?.weights;
    if (resident) return resident;
    const pos = this.streamed.indexOf(i);
    const loading = this.startLoad(pos);
    // Read ahead: the next streamed layers (wrapping to the next token's first ones) into the other slots.
    for (let d = 1; d < this.slots.length; d++) void this.startLoad((pos + d) % this.streamed.length)?.catch(() => {});
    const t0 = performance.now();
    const w = await loading!;
    this.stats.ioWaitS += (performance.now() - t0) / 1000;
    return w;
  }

  release(i: number): void {
    if (this.resident.has(i) || this.kept.has(i)) return;
    const slot = this.slots.find((s) => s.layer === i);
    if (!slot) return;
    slot.freeAfter = this.backend.fence();
    slot.busy = false;
    this.slotWaiters
      .get(slot)
      ?.splice(0)
      .forEach((wake) => wake());
  }

  /**
   * Streamed layers kept on the device: none while a prompt runs (its activations take the room), and while decoding
   * the last ones that fit in the plan's decodeSpare beside the KV beyond the reserve (decodeKeptLayers); call it when
   * no forward is running, after the KV caches took their share. Layers that stop being kept are freed (in compute
   * order); newly kept ones are copied from RAM (or read from disk) now, and stream no more until the next prompt.
   * The whole protocol, with the KV caches' side: docs/engine.md, "Device shares".
   */
  async useShare(kind: "prefill" | "decode"): Promise<void> {
    const want = new Set(kind === "decode" ? decodeKeptLayers(this.plan, this.extraKvBytes()) : []);
    const adding = [...want].filter((i) => !this.kept.has(i));
    // Every decode step asks: most find the same layers kept.
    if (adding.length === 0 && this.kept.size === want.size) return;
    for (const [i, k] of this.kept) {
      if (want.has(i)) continue;
      this.backend.free(k.buffer);
      this.kept.delete(i);
    }
    // The new buffers may take memory that compute enqueued so far still reads.
    const after = adding.length > 0 ? this.backend.fence() : undefined;
    try {
      for (const i of adding) {
        const group = this.layout.layers[i]!;
        const buffer = deviceBytes(this.backend, group.deviceBytes);
        try {
          this.kept.set(i, {
            buffer,
            weights: await fetchGroup(
              this.backend,
              this.reader,
              group,
              this.ramImages.get(i),
              this.staging!,
              buffer,
              after,
              "needed",
            ),
          });
        } catch (e) {
          this.backend.free(buffer);
          throw e;
        }
        this.stats.h2dBytes += group.dataBytes;
      }
    } finally {
      // Kept layers are the last streamed ones: the others keep their places (and slots), so reads ahead stay good.
      this.streamed = this.rotation();
    }
  }

  /** The streamed layers decode keeps on the device now, in order. */
  get keptLayers(): readonly number[] {
    return [...this.kept.keys()].sort((a, b) => a - b);
  }

  /** The layers that stream now: neither resident nor kept. */
  private rotation(): number[] {
    return this.plan.layerTier.flatMap((t, i) => (t === "device" || this.kept.has(i) ? [] : [i]));
  }

  async reset(): Promise<void> {
    await this.experts?.reset();
    // Reads ahead still queued behind a slot belong to the failed pass: drop them (waking them would take slots out of order).
    this.slotWaiters.clear();
    for (const slot of this.slots) {
      if (!slot.busy) continue;
      const ok = await slot.loading?.then(
        () => true,
        () => false,
      );
      if (!ok) slot.layer = slot.loading = undefined; // a failed read leaves nothing usable in the slot
      slot.freeAfter = this.backend.fence();
      slot.busy = false;
    }
  }

  /** Starts loading the `pos`-th streamed layer into its slot unless it is there or on its way. */
  private startLoad(pos: number): Promise<Weights> | undefined {
    const layer = this.streamed[pos]!;
    const slot = this.slots[pos % this.slots.length]!;
    if (slot.layer === layer && slot.loading) {
      slot.busy = true; // still there from its last use: no copy needed
      return slot.loading;
    }
    if (slot.busy) {
      // The slot's occupant is still in use: queue behind it.
      return new Promise<void>((resolve) =>
        this.slotWaiters.set(slot, [...(this.slotWaiters.get(slot) ?? []), resolve]),
      ).then(() => this.startLoad(pos)!);
    }
    return this.load(slot, layer);
  }

  private load(slot: Slot, layer: number): Promise<Weights> {
    slot.layer = layer;
    slot.busy = true;
    const group = this.layout.layers[layer]!;
    slot.loading = (async () => {
      // Layers load ahead of the compute: a prefetch, which the backend may queue apart from the copies compute needs next.
      const w = await fetchGroup(
        this.backend,
        this.reader,
        group,
        this.ramImages.get(layer),
        this.staging!,
        slot.buffer,
        slot.freeAfter,
        "prefetch",
      );
      this.stats.h2dBytes += group.dataBytes;
      return w;
    })();
    return slot.loading;
  }

  expert(layer: number, expert: number): Promise<Weights> {
    if (!this.experts) throw new Error(`layer ${layer} has no experts`);
    return this.experts.acquire(layer, expert);
  }

  releaseExpert(layer: number, expert: number): void {
    this.experts?.release(layer, expert);
  }

  get expertStats(): ExpertCache["stats"] | undefined {
    return this.experts?.stats;
  }

  /** Resolves once the reads ahead under way have landed in their slots (or failed); it starts none. */
  async readsAheadSettled(): Promise<void> {
    await Promise.allSettled(this.slots.map((s) => s.loading));
  }

  /** Frees everything once reads ahead still in flight have landed and their copies are done (they write into these buffers). */
  async dispose(): Promise<void> {
    this.slotWaiters.clear();
    await this.readsAheadSettled();
    await this.experts?.dispose();
    await this.backend.sync();
    for (const b of this.buffers.splice(0)) this.backend.free(b);
    for (const k of this.kept.values()) this.backend.free(k.buffer);
    this.kept.clear();
    for (const s of this.slots.splice(0)) this.backend.free(s.buffer);
    this.staging?.dispose();
    for (const b of this.ramImages.values()) this.backend.freeHost(b);
    this.ramImages.clear();
  }
}
