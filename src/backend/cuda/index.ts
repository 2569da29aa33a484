// The CUDA backend: the op interface on an NVIDIA GPU through the driver API. Two streams: compute, and copies that
// overlap it; a tensor uploaded on the copy stream makes the compute stream wait before the first op that reads it.
import { BackendError } from "../../errors.js";
import { bf16ToF32Table, f16ToF32Table, tensorBytes, tensorCoreInput, type DType } from "../dtype.js";
import type { AttentionOptions, AttentionPart, Backend, CopyQueue, DeltaRuleOptions, Fence, GateActivation, HostBuffer, KvBlock, MemoryStats, RecurrentSeq, RopeOptions, Tensor } from "../ops.js";
import { numel } from "../ops.js";
import { rowRuns, rowsOf } from "../row-runs.js";
import { ScopeStack, runScoped } from "../scope.js";
import {
  CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
  CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
  CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
  CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
  CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED,
  Driver,
  minDriverVersion,
  type Handle,
} from "./driver.js";
import { topKRows } from "../../util/top-k.js";
import { maxRowBlocks, orderedArgs, type KernelArgs, type KernelSignature } from "./kernel-params.js";
import { Kernels, deltaChunkSmem, deltaRuleKeyDims, flashKernel, flashSmem, flashTiles, gemmKernel, gemmSmem, gemmTiles, gemvColumns, overElements, threadsPerBlock, topKMax, type Dim3, type FlashTile, type GemmTile } from "./kernels.js";
import { DeviceArena } from "./arena.js";
import { DeviceBuffer, DevicePool, plannedBytes } from "./memory.js";
import { StreamProfile, type StreamReport } from "./stream-profile.js";
import { UploadRing } from "./upload-ring.js";

export class CudaTensor implements Tensor {
  constructor(
    readonly shape: readonly number[],
    readonly dtype: DType,
    readonly buffer: DeviceBuffer,
    readonly offset: number,
    /** Whether freeing this tensor gives its buffer back (views never do). */
    readonly owner: boolean,
  ) {}

  get ptr(): Handle {
    return this.buffer.ptr + BigInt(this.offset);
  }

  get byteLength(): number {
    return tensorBytes(this.shape, this.dtype);
  }
}

function cuda(t: Tensor): CudaTensor {
  if (!(t instanceof CudaTensor)) throw new Error("cuda backend was given a tensor of another backend");
  return t;
}

interface CudaHostBuffer extends HostBuffer {
  readonly ptr: Handle;
}

interface CudaFence extends Fence {
  readonly event: Handle;
}

const ringSize = 1024;
/** Pinned bytes for small uploads (see UploadRing): two halves of 2 MB, several prefill layers' worth of ids and block lists. */
const uploadRingBytes = 4 << 20;
/** The 16-bit types tensor-core matmuls take their input in (tensorCoreInput). */
type HalfType = "bf16" | "f16";

interface LaunchSpec<S extends KernelSignature> {
  /** The kernel's name; by default the signature's own (a kernel alone in its entry, as rope). */
  readonly kernel?: string;
  readonly signature: S;
  readonly grid: Dim3;
  readonly block: Dim3;
  /** Bytes of dynamic shared memory (default 0). */
  readonly smem?: number;
  readonly args: KernelArgs<S>;
  /** Tensors the kernel reads: compute waits for copies into them first. */
  readonly reads: readonly (Tensor | undefined)[];
}

export interface DeviceInfo {
  name: string;
  computeCapability: string;
  multiprocessors: number;
  driverVersion: number;
  totalBytes: number;
  /** GPU memory in use right after the context and kernels were loaded (the CUDA context's own cost on an idle GPU). */
  contextBytes: number;
}

export class CudaBackend implements Backend {
  readonly name = "cuda" as const;
  readonly caps = { directIo: true };
  readonly memory: MemoryStats = { deviceBytes: 0, deviceBytesPeak: 0, hostBytes: 0, hostBytesPeak: 0, h2dBytes: 0 };
  private readonly pool: DevicePool;
  private readonly kernels: Kernels;
  private readonly compute: Handle;
  /** Copies to the device that compute needs next (hidden states, KV blocks, a layer waited for). */
  private readonly copy: Handle;
  /** Copies to the device that read ahead (weights for later layers), where prefetchStream is "own": then `copy` never waits behind them. */
  private readonly prefetch: Handle;
  /** Copies to the host, on their own stream so that compute need not wait for them. */
  private readonly toHost: Handle;
  /** Recorded again on toHost after each copy (a wait on it waits for the latest). */
  private readonly toHostDone: Handle;
  private readonly events: Handle[] = [];
  private nextEvent = 0;
  private eventsHandedOut = 0;
  private fenceCount = 0;
  private readonly scopes = new ScopeStack<CudaTensor>((t) => this.free(t));
  private readonly live = new Set<CudaTensor>();
  private readonly hostLive = new Set<CudaHostBuffer>();
  /** Pinned buffers for reads to the host, free ones (a read takes one until its copy is done). */
  private readonly scratches: CudaHostBuffer[] = [];
  private readonly uploadBase: Handle;
  private readonly uploads: UploadRing;
  /**
   * The tensor-core GEMM's tile for 16-bit weights: the wgmma + TMA one on Hopper (compute capability 9.0), elsewhere the
   * deep one where shared memory allows (MXFP4 and smaller GPUs take the square one). The kernel bench compares them.
   */
  gemmTile: GemmTile = "hopper";
  /**
   * The prefill attention tile: the wgmma one on Hopper for head_dim 128, elsewhere "tall" (head_dim 64/128), else
   * "short"; prompts shorter than a tile's rows take "short". The kernel bench compares them.
   */
  flashTile: FlashTile = "hopper";
  /**
   * How small uploads (ids, positions, block lists) reach the device: a kernel reading the pinned ring where the host
   * wrote them, or the copy engine, whose queue they would share with the copy stream's weight and activation copies.
   */
  smallUploads: "kernel" | "copy engine" = "kernel";
  /** Whether prefetch copies (weights read ahead) take a stream of their own, or queue with the copies compute needs next. */
  prefetchStream: "own" | "shared" = "shared";
  private disposed = false;
  private profile?: StreamProfile;
  /** The latest matmul input cast to 16 bits (see castInput), and whether a matmul is being enqueued. */
  private lastCast?: { x: CudaTensor; half: HalfType; xh: CudaTensor };
  /** The 16-bit type of the last cast made for a matmul (what the next matmul of its rows likely wants). */
  private lastCastHalf?: HalfType;
  private inMatmul = false;

  private constructor(
    private readonly driver: Driver,
    private readonly device: number,
    readonly info: DeviceInfo,
  ) {
    this.pool = new DevicePool(driver, this.arenaFor(driver, device));
    this.kernels = new Kernels(driver, driver.attribute(device, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN), info.computeCapability === "9.0");
    this.compute = driver.streamCreate();
    this.copy = driver.streamCreate();
    this.prefetch = driver.streamCreate();
    this.toHost = driver.streamCreate();
    this.toHostDone = driver.eventCreate();
    for (let i = 0; i < ringSize; i++) this.events.push(driver.eventCreate());
    this.uploadBase = driver.hostAlloc(uploadRingBytes, true);
    const uploadDevice = driver.hostDevicePointer(this.uploadBase);
    this.uploads = new UploadRing(driver, Driver.view(this.uploadBase, uploadRingBytes), (dst, offset, bytes, stream) => {
      if (this.smallUploads === "copy engine") return driver.copyHtoDAsync(dst, this.uploadBase + BigInt(offset), bytes, stream);
      const words = Math.ceil(bytes / 4);
      const args = orderedArgs("copy_words", "copy_words", { dst, src: uploadDevice + BigInt(offset), n: words });
      this.kernels.launch("copy_words", [Math.min(64, Math.ceil(words / threadsPerBlock)), 1, 1], [threadsPerBlock, 1, 1], 0, stream, args);
    });
    const { free, total } = driver.memInfo();
    info.contextBytes = total - free;
    info.totalBytes = total;
  }

  static create(ordinal = 0): CudaBackend {
    const driver = Driver.load();
    driver.init();
    const version = driver.driverVersion();
    if (version < minDriverVersion) {
      throw new BackendError("CUDA_DRIVER_TOO_OLD", `the NVIDIA driver supports CUDA ${version / 1000}, layerwise's kernels need ${minDriverVersion / 1000} or newer`, "update the NVIDIA driver to R580 or newer, or use --backend cpu");
    }
    if (driver.deviceCount() <= ordinal) throw new BackendError("CUDA_NO_DEVICE", "the NVIDIA driver found no GPU", "use --backend cpu");
    const device = driver.device(ordinal);
    const major = driver.attribute(device, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR);
    const minor = driver.attribute(device, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR);
    if (major < 8) throw new BackendError("CUDA_GPU_TOO_OLD", `${driver.deviceName(device)} has compute capability ${major}.${minor}; layerwise needs 8.0 (Ampere) or newer`, "use --backend cpu");
    driver.retainPrimaryContext(device);
    return new CudaBackend(driver, device, {
      name: driver.deviceName(device),
      computeCapability: `${major}.${minor}`,
      multiprocessors: driver.attribute(device, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT),
      driverVersion: version,
      totalBytes: 0,
      contextBytes: 0,
    });
  }

  /**
   * Addresses for the pool's large buffers, twice the device's memory (addresses cost nothing; the slack lets free
   * stretches sit between buffers), where the driver has virtual memory management.
   */
  private arenaFor(driver: Driver, device: number): DeviceArena | undefined {
    if (driver.attribute(device, CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED) !== 1) return undefined;
    const drain = () => {
      for (const stream of [this.compute, this.copy, this.prefetch, this.toHost]) driver.streamSynchronize(stream);
    };
    return new DeviceArena(driver, device, driver.memGranularity(device), 2 * driver.memInfo().total, drain);
  }

  get deviceOverheadBytes(): number {
    return this.info.contextBytes;
  }

  async defaultDeviceBudget(): Promise<number> {
    const { free } = this.driver.memInfo();
    return this.info.contextBytes + Math.max(0, free - Math.max(512 << 20, free * 0.05));
  }

  /** The pool never holds more than this (the plan's budget less the context's own memory). */
  setDeviceBudget(bytes: number): void {
    this.pool.trim();
    this.pool.limit = Math.max(0, bytes - this.info.contextBytes);
  }

  releaseSmallCache(): void {
    this.pool.trimSmallSegments();
  }

  deviceBytesFor(bytes: number): number {
    return plannedBytes(bytes);
  }

  /**
   * Measured: a 32k prefill of Llama-3.1-8B in 8 GB needed 14% (8192-row chunks) and 17% (2048) more than its live
   * workspace with plain segments; past the slack, the arena keeps to the budget by unmapping, which drains the GPU.
   */
  readonly workspaceSlack = 0.2;

  resetPeaks(): void {
    this.pool.reservedPeak = this.pool.reserved;
    this.memory.deviceBytesPeak = this.info.contextBytes + this.pool.reserved;
    this.memory.hostBytesPeak = this.memory.hostBytes;
  }

  // ---- memory ----

  alloc(shape: readonly number[], dtype: DType): Tensor {
    const bytes = tensorBytes(shape, dtype);
    const t = new CudaTensor(shape, dtype, this.pool.alloc(Math.max(bytes, 1)), 0, true);
    this.live.add(t);
    this.memory.deviceBytes += bytes;
    this.memory.deviceBytesPeak = Math.max(this.memory.deviceBytesPeak, this.info.contextBytes + this.pool.reservedPeak);
    return t;
  }

  view(base: Tensor, byteOffset: number, shape: readonly number[], dtype: DType): Tensor {
    const b = cuda(base);
    if (byteOffset < 0 || b.offset + byteOffset + tensorBytes(shape, dtype) > b.buffer.bytes) throw new RangeError(`view at byte ${byteOffset} overruns a ${b.buffer.bytes}-byte buffer`);
    return new CudaTensor(shape, dtype, b.buffer, b.offset + byteOffset, false);
  }

  free(t: Tensor): void {
    const c = cuda(t);
    if (this.lastCast?.x === c) this.dropCast();
    if (!c.owner || !this.live.delete(c)) return;
    this.memory.deviceBytes -= c.byteLength;
    this.await([c]); // an upload still in flight must land before the buffer is reused
    this.pool.release(c.buffer); // reused in stream order by later ops on the compute stream
  }

  pushScope(): void {
    this.scopes.push();
  }

  popScope(keep: readonly Tensor[] = []): void {
    this.scopes.pop(keep);
  }

  scoped<T extends Tensor | Promise<Tensor>>(fn: () => T): T {
    return runScoped(this, fn);
  }

  allocHost(byteLength: number): HostBuffer {
    const ptr = this.driver.hostAlloc(Math.max(byteLength, 1));
    const b: CudaHostBuffer = { ptr, bytes: Driver.view(ptr, byteLength) };
    this.hostLive.add(b);
    this.memory.hostBytes += byteLength;
    this.memory.hostBytesPeak = Math.max(this.memory.hostBytesPeak, this.memory.hostBytes);
    return b;
  }

  freeHost(b: HostBuffer): void {
    const h = b as CudaHostBuffer;
    if (!this.hostLive.delete(h)) return;
    this.memory.hostBytes -= h.bytes.byteLength;
    this.driver.hostFree(h.ptr);
  }

  // ---- copies and ordering ----

  /**
   * The next event of the ring, to record. A promise or a stream wait may still refer to its last record (a copy's
   * `done`, checked a layer later): that record must have happened before the event is recorded again, or a wait on
   * it would end at the new record, which may come first on another stream. So a reused event that has not happened
   * yet is waited for here (it was recorded ringSize events ago, far behind what the GPU works on, so this is rare).
   */
  private event(): Handle {
    const e = this.events[this.nextEvent]!;
    this.nextEvent = (this.nextEvent + 1) % ringSize;
    if (this.eventsHandedOut++ >= ringSize && !this.driver.eventDone(e)) this.driver.eventSynchronize(e);
    return e;
  }

  fence(): Fence {
    const event = this.event();
    this.driver.eventRecord(event, this.compute);
    return { id: ++this.fenceCount, event } as CudaFence;
  }

  async upload(t: Tensor, bytes: Uint8Array, offset = 0): Promise<void> {
    const c = cuda(t);
    this.timed("upload", () => this.driver.copyHtoDAsyncFrom(c.ptr + BigInt(offset), bytes, bytes.byteLength, this.compute));
    this.memory.h2dBytes += bytes.byteLength;
  }

  copyToDevice(dst: Tensor, dstOffset: number, src: HostBuffer, srcOffset: number, length: number, after?: Fence, queue: CopyQueue = "needed"): Promise<void> {
    const d = cuda(dst);
    if (this.lastCast?.x.buffer === d.buffer) this.dropCast();
    const stream = queue === "prefetch" && this.prefetchStream === "own" ? this.prefetch : this.copy;
    // Without a fence, the copy waits for all compute so far (the buffer may be one that compute just freed) and for
    // the copies to the host so far (src may be what one of them writes).
    this.driver.streamWaitEvent(stream, ((after ?? this.fence()) as CudaFence).event);
    if (!after) this.driver.streamWaitEvent(stream, this.toHostDone);
    this.driver.copyHtoDAsync(d.ptr + BigInt(dstOffset), (src as CudaHostBuffer).ptr + BigInt(srcOffset), length, stream);
    const done = this.event();
    this.driver.eventRecord(done, stream);
    d.buffer.pendingCopy = done;
    this.memory.h2dBytes += length;
    return lazy(() => this.waitFor("copy to device", done));
  }

  copyToHost(src: Tensor, srcOffset: number, dst: HostBuffer, dstOffset: number, length: number): Promise<void> {
    const s = cuda(src);
    this.await([s]);
    // On its own stream, after the compute so far; the pool reuses src's memory only once this copy is done.
    this.driver.streamWaitEvent(this.toHost, (this.fence() as CudaFence).event);
    this.driver.copyDtoHAsync((dst as CudaHostBuffer).ptr + BigInt(dstOffset), s.ptr + BigInt(srcOffset), length, this.toHost);
    const done = this.event();
    this.driver.eventRecord(done, this.toHost);
    this.driver.eventRecord(this.toHostDone, this.toHost);
    const read = this.driver.eventCreate();
    this.driver.eventRecord(read, this.toHost);
    if (s.buffer.pendingRead !== undefined) this.driver.eventDestroy(s.buffer.pendingRead); // the new copy ends later on the same stream
    s.buffer.pendingRead = read;
    return lazy(() => this.waitFor("copy to host", done));
  }

  /** The compute stream waits for pending uploads into these tensors' buffers. */
  private await(ts: readonly (Tensor | undefined)[]): void {
    for (const t of ts) {
      if (!t) continue;
      const b = cuda(t).buffer;
      if (b.pendingCopy !== undefined) {
        this.driver.streamWaitEvent(this.compute, b.pendingCopy);
        b.pendingCopy = undefined;
      }
    }
  }

  /** A pinned buffer of at least `bytes` for a read to the host; reads awaited together each get their own. */
  private takeScratch(bytes: number): CudaHostBuffer {
    const fit = this.scratches.findIndex((b) => b.bytes.byteLength >= bytes);
    if (fit >= 0) return this.scratches.splice(fit, 1)[0]!;
    const small = this.scratches.pop();
    if (small) this.freeHost(small);
    return this.allocHost(Math.max(bytes, 1 << 20)) as CudaHostBuffer;
  }

  /** Rows of t on the host, as they are in compute order at this call. */
  async readRows(t: Tensor, start: number, count: number): Promise<Uint8Array> {
    const c = cuda(t);
    const rowBytes = tensorBytes([c.shape[c.shape.length - 1]!], c.dtype);
    const h = this.takeScratch(count * rowBytes);
    try {
      await this.copyToHost(c, start * rowBytes, h, 0, count * rowBytes);
      return h.bytes.slice(0, count * rowBytes);
    } finally {
      this.scratches.push(h);
    }
  }

  async topK(x: Tensor, k: number): Promise<{ ids: Int32Array; values: Float32Array }> {
    const t = cuda(x);
    const [rows, cols] = t.shape as [number, number];
    if (k > topKMax) return topKRows(await this.read(t), rows, cols, k); // the kernel ranks at most topKMax in shared memory
    const out = this.alloc([2 * rows * k], "f32") as CudaTensor; // ids, then values
    try {
      const args = { outIds: out.ptr, outValues: out.ptr + BigInt(4 * rows * k), x: t.ptr, cols, k };
      this.launch({ signature: "top_k", grid: [rows, 1, 1], block: [1024, 1, 1], args, reads: [t] });
      const raw = await this.readRows(out, 0, 1);
      return { ids: new Int32Array(raw.buffer, raw.byteOffset, rows * k), values: new Float32Array(raw.buffer, raw.byteOffset + 4 * rows * k, rows * k) };
    } finally {
      this.free(out);
    }
  }

  async read(t: Tensor): Promise<Float32Array> {
    const c = cuda(t);
    const raw = await this.readRows(c, 0, c.shape.length === 1 ? 1 : numel(c.shape) / c.shape[c.shape.length - 1]!);
    if (c.dtype === "f32") return new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4);
    const table = c.dtype === "bf16" ? bf16ToF32Table() : f16ToF32Table();
    const u16 = new Uint16Array(raw.buffer, raw.byteOffset, raw.byteLength / 2);
    return Float32Array.from(u16, (v) => table[v]!);
  }

  /** GPU milliseconds per repetition of the work `enqueue` puts on the compute stream (benchmarks). */
  async timeMs(enqueue: () => void, reps: number): Promise<number> {
    const start = this.driver.eventCreate(true);
    const end = this.driver.eventCreate(true);
    try {
      this.driver.eventRecord(start, this.compute);
      for (let i = 0; i < reps; i++) enqueue();
      this.driver.eventRecord(end, this.compute);
      await this.driver.eventWait(end);
      return this.driver.elapsedMs(start, end) / reps;
    } finally {
      this.driver.eventDestroy(start);
      this.driver.eventDestroy(end);
    }
  }

  /** Waits for all compute and copies to the host enqueued so far. */
  async sync(): Promise<void> {
    const e = this.event();
    this.driver.eventRecord(e, this.compute);
    await this.waitFor("sync", e);
    const h = this.event();
    this.driver.eventRecord(h, this.toHost);
    await this.waitFor("sync", h);
  }

  /** Resolves once `event` has happened; while a profile runs, the wait is timed as a wait for `what`. */
  private waitFor(what: string, event: Handle): Promise<void> {
    return this.profile ? this.profile.hostWait(what, () => this.driver.eventWait(event)) : this.driver.eventWait(event);
  }

  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    await this.sync();
    for (const t of [...this.live]) this.free(t);
    for (const b of [...this.hostLive]) this.freeHost(b);
    this.pool.dispose();
    this.kernels.dispose();
    for (const e of this.events) this.driver.eventDestroy(e);
    this.uploads.dispose();
    this.driver.hostFree(this.uploadBase);
    this.driver.streamDestroy(this.compute);
    this.driver.streamDestroy(this.copy);
    this.driver.streamDestroy(this.prefetch);
    this.driver.streamDestroy(this.toHost);
    this.driver.eventDestroy(this.toHostDone);
    this.driver.releasePrimaryContext(this.device);
  }

  // ---- ops ----

  private out(shape: readonly number[]): CudaTensor {
    return this.scopes.add(this.alloc(shape, "f32") as CudaTensor);
  }

  /** Launches a kernel on the compute stream once the copies into what it reads have landed. */
  private launch<S extends KernelSignature>(spec: LaunchSpec<S>): void {
    const kernel = spec.kernel ?? spec.signature;
    const args = orderedArgs(spec.signature, kernel, spec.args);
    this.await(spec.reads);
    this.timed(kernel, () => this.kernels.launch(kernel, spec.grid, spec.block, spec.smem ?? 0, this.compute, args));
  }

  /** Enqueues work on the compute stream, between timing events while a profile runs. */
  private timed(name: string, enqueue: () => void): void {
    if (!this.inMatmul) this.dropCast(); // any other op may write the input the cast was made of
    if (this.profile) this.profile.time(name, enqueue);
    else enqueue();
  }

  /** Starts timing every kernel and copy on the compute stream (profiling runs; each op then costs two events). */
  startProfile(): void {
    this.profile ??= new StreamProfile(this.driver, this.compute);
  }

  /** Calls to the driver's allocator and frees so far (each free waits for the device), and waits for copies to the host before reusing memory. */
  get allocatorStats(): { readonly driverAllocs: number; readonly driverFrees: number; readonly copyWaits: number; readonly copyWaitMs: number; readonly arena?: DeviceArena["stats"] } {
    return { ...this.pool.stats, arena: this.pool.arenaStats && { ...this.pool.arenaStats } };
  }

  /** The pool at its largest overrun of the budget, if it ever went over (a profile prints it). */
  get allocatorOverrun(): DevicePool["overrun"] {
    return this.pool.overrun;
  }

  /** GPU time by kernel since startProfile (or the last report), and how long the compute stream sat idle. */
  async profileReport(): Promise<StreamReport> {
    if (!this.profile) throw new Error("profileReport: startProfile was not called");
    return this.profile.report();
  }

  /** Small host data (ids, positions, block lists) copied to a temporary device buffer in compute order, through pinned memory. */
  private small(data: ArrayBufferView): CudaTensor {
    const t = this.scopes.add(this.alloc([Math.ceil(data.byteLength / 4)], "f32") as CudaTensor);
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    if (bytes.byteLength === 0) return t;
    this.timed("copy small to device", () => {
      if (bytes.byteLength <= this.uploads.maxBytes) this.uploads.copy(t.ptr, bytes, this.compute);
      else this.driver.copyHtoDAsyncFrom(t.ptr, bytes, bytes.byteLength, this.compute);
    });
    return t;
  }

  /** Frees a temporary made outside any scope once the ops that use it are enqueued. */
  private done(...ts: CudaTensor[]): void {
    if (!this.scopes.open) for (const t of ts) this.free(t);
  }

  embed(table: Tensor, ids: Int32Array): Tensor {
    const tb = cuda(table);
    const hidden = tb.shape[1]!;
    for (const id of ids) if (id < 0 || id >= tb.shape[0]!) throw new RangeError(`embed: token id ${id} outside vocabulary of ${tb.shape[0]}`);
    const idBuf = this.small(ids);
    const out = this.out([ids.length, hidden]);
    const args = { out: out.ptr, table: tb.ptr, ids: idBuf.ptr, hidden };
    this.launch({ kernel: `embed_${tb.dtype}`, signature: "embed", grid: [ids.length, 1, 1], block: [threadsPerBlock, 1, 1], args, reads: [tb] });
    this.done(idBuf);
    return out;
  }

  /** Whether this GPU has the tensor-core GEMM of a tile (wgmma ones: Hopper only; the deep one: 110 KB of shared memory). */
  hasGemmTile(tile: GemmTile): boolean {
    return this.kernels.has(gemmKernel(tile, "bf16"));
  }

  /** The GEMM tile matmul takes for weights of a dtype: the chosen one where this GPU has it, else the next more portable one; MXFP4 has only the square one. */
  gemmTileFor(dtype: string): GemmTile {
    if (dtype === "mxfp4") return "square";
    return ([this.gemmTile, "deep", "square"] as const).find((t) => this.kernels.has(gemmKernel(t, dtype))) ?? "square";
  }

  /** The prefill attention tile for a KV dtype, head dim and longest prompt: the chosen one where it fits, else the next more portable one. */
  flashTileFor(kvDtype: string, headDim: number, maxQRows: number): FlashTile {
    const fits = (t: FlashTile) => maxQRows >= flashTiles[t].rows && this.kernels.has(flashKernel(t, kvDtype, headDim));
    return ([this.flashTile, "tall"] as const).find(fits) ?? "short";
  }

  matmul(x: Tensor, w: Tensor, bias?: Tensor): Tensor {
    this.inMatmul = true;
    try {
      return this.matmulNow(x, w, bias);
    } finally {
      this.inMatmul = false;
    }
  }

  /**
   * x in 16 bits for a tensor-core matmul. Matmuls of one input in a row (q, k and v; gate and up) share one cast: it
   * is kept until another op is enqueued or x is freed.
   */
  private castInput(x: CudaTensor, half: HalfType): CudaTensor {
    if (this.lastCast?.x === x && this.lastCast.half === half) return this.lastCast.xh;
    this.dropCast();
    const [m, k] = x.shape as [number, number];
    const xh = this.alloc([m, k], half) as CudaTensor;
    this.launch({ kernel: `cast_rows_${half}`, signature: "cast_rows", ...overElements(m * k), args: { out: xh.ptr, x: x.ptr, n: m * k }, reads: [x] });
    this.lastCast = { x, half, xh };
    this.lastCastHalf = half;
    return xh;
  }

  private dropCast(): void {
    if (!this.lastCast) return;
    const { xh } = this.lastCast;
    this.lastCast = undefined;
    this.free(xh);
  }

  private matmulNow(x: Tensor, w: Tensor, bias?: Tensor): Tensor {
    const xt = cuda(x);
    const wt = cuda(w);
    const [m, k] = xt.shape as [number, number];
    const [n, kw] = wt.shape as [number, number];
    if (k !== kw) throw new Error(`matmul: x has ${k} columns, w has ${kw}`);
    const out = this.out([m, n]);
    const b = bias && this.asF32(bias);
    const args = { y: out.ptr, x: xt.ptr, w: wt.ptr, bias: b ? b.ptr : 0n, M: m, N: n, K: k };
    const reads = [xt, wt, b];
    const half = tensorCoreInput(m, k, n, wt.dtype);
    const tile = this.gemmTileFor(wt.dtype);
    const mma = gemmKernel(tile, wt.dtype);
    // 5-64 rows of 16-bit weights: decode batches, on tensor cores with the weights read once (gemm_skinny in kernels/gemm.cu).
    const skinny = half !== undefined && half === wt.dtype && m <= 64;
    if (half && (skinny || this.kernels.has(mma))) {
      const xh = this.castInput(xt, half);
      const t = gemmTiles[tile];
      if (skinny) {
        const kernel = `gemm_skinny${m <= 16 ? 1 : m <= 32 ? 2 : 4}_${half}`;
        this.launch({ kernel, signature: "matmul", grid: [Math.ceil(n / 32), 1, 1], block: [threadsPerBlock, 1, 1], args: { ...args, x: xh.ptr }, reads: [wt, b] });
      } else if (t.tma) {
        const xMap = { dtype: half, ptr: xh.ptr, rows: m, cols: k, boxRows: t.rows };
        const wMap = { dtype: half, ptr: wt.ptr, rows: n, cols: k, boxRows: t.cols };
        const tmaArgs = { y: args.y, xMap, wMap, bias: args.bias, M: m, N: n, K: k };
        this.launch({ kernel: mma, signature: "gemm_tma", grid: [Math.ceil(n / t.cols), Math.ceil(m / t.rows), 1], block: [t.threads, 1, 1], args: tmaArgs, reads: [wt, b], smem: gemmSmem(tile) });
      } else {
        this.launch({ kernel: mma, signature: "matmul", grid: [Math.ceil(n / t.cols), Math.ceil(m / t.rows), 1], block: [t.threads, 1, 1], args: { ...args, x: xh.ptr }, reads: [wt, b], smem: gemmSmem(tile) });
      }
    } else if (m <= 16) {
      const rowsPerLaunch = m === 1 ? 1 : m <= 4 ? 4 : 16;
      const grid = [Math.ceil(n / (8 * gemvColumns(rowsPerLaunch, wt.dtype))), 1, 1] as const;
      this.launch({ kernel: `gemv${rowsPerLaunch}_${wt.dtype}`, signature: "matmul", grid, block: [threadsPerBlock, 1, 1], args, reads });
    } else if (wt.dtype === "mxfp4") {
      // Few outputs (a router) or no tensor-core GEMM here: the decode kernel, 16 rows at a time.
      for (let r = 0; r < m; r += 16) {
        const rows = { y: out.ptr + BigInt(r * n * 4), x: xt.ptr + BigInt(r * k * 4), M: Math.min(16, m - r) };
        this.launch({ kernel: "gemv16_mxfp4", signature: "matmul", grid: [Math.ceil(n / 8), 1, 1], block: [threadsPerBlock, 1, 1], args: { ...args, ...rows }, reads });
      }
    } else {
      this.launch({ kernel: `gemm_simt_${wt.dtype}`, signature: "matmul", grid: [Math.ceil(n / 64), Math.ceil(m / 64), 1], block: [threadsPerBlock, 1, 1], args, reads });
    }
    this.doneWithF32(b, bias);
    return out;
  }

  /** Frees what `asF32` made for `original` once the ops using it are enqueued (nothing when it was f32 already). */
  private doneWithF32(converted: CudaTensor | undefined, original: Tensor | undefined): void {
    if (converted && converted !== original) this.done(converted);
  }

  /** The tensor itself when it is f32, else an f32 copy (biases and sinks stored in 16 bits; kernels read f32). */
  private asF32(t: Tensor): CudaTensor {
    const c = cuda(t);
    if (c.dtype === "f32") return c;
    const n = numel(c.shape);
    const out = this.out(c.shape);
    this.launch({ kernel: `cast_f32_${c.dtype}`, signature: "cast_f32", ...overElements(n), args: { out: out.ptr, x: c.ptr, n }, reads: [c] });
    return out;
  }

  rmsNorm(x: Tensor, w: Tensor, o: { eps: number; offset?: number }): Tensor {
    const xt = cuda(x);
    const wt = cuda(w);
    const group = wt.shape[0]!;
    const groups = numel(xt.shape) / group;
    const out = this.out(xt.shape);
    const block = Math.min(1024, Math.max(32, Math.ceil(Math.min(group, threadsPerBlock) / 32) * 32));
    // Whole rows normed in the type the matmuls cast to (a 16-bit model's norm before q/k/v or gate/up): the kernel also
    // writes the 16-bit input castInput would make (a post-norm's goes unused: one more write of two bytes a value).
    const cols = xt.shape[xt.shape.length - 1]!;
    const half = group === cols && groups > 4 && wt.dtype === this.lastCastHalf ? this.lastCastHalf : undefined;
    const twin = half ? (this.alloc(xt.shape, half) as CudaTensor) : undefined;
    this.launch({
      kernel: `rms_norm_${wt.dtype}`,
      signature: "rms_norm",
      grid: [groups, 1, 1],
      block: [block, 1, 1],
      args: { out: out.ptr, x: xt.ptr, w: wt.ptr, group, eps: o.eps, offset: o.offset ?? 0, twin: twin?.ptr ?? 0n },
      reads: [xt, wt],
    });
    if (twin) this.lastCast = { x: out, half: half!, xh: twin };
    return out;
  }

  rope(x: Tensor, o: RopeOptions): Tensor {
    const xt = cuda(x);
    const [rows, cols] = xt.shape as [number, number];
    const heads = cols / o.headDim;
    const half = o.invFreq.length;
    const pos = this.small(o.positions);
    const freq = this.small(o.invFreq);
    const out = this.out(xt.shape);
    const args = { out: out.ptr, x: xt.ptr, positions: pos.ptr, invFreq: freq.ptr, rows, heads, headDim: o.headDim, half, scale: o.scale };
    this.launch({ signature: "rope", ...overElements(rows * heads * half), args, reads: [xt] });
    this.done(pos, freq);
    return out;
  }

  attention(q: Tensor, o: AttentionOptions): Tensor {
    return this.attend(q, o, false).out;
  }

  attentionPart(q: Tensor, o: AttentionOptions): AttentionPart {
    const { out, lse } = this.attend(q, o, true);
    return { out, lse: lse! };
  }

  private attend(q: Tensor, o: AttentionOptions, withLse: boolean): { out: CudaTensor; lse?: CudaTensor } {
    const qt = cuda(q);
    const rows = qt.shape[0]!;
    const { heads, kvHeads, headDim } = o;
    const out = this.out([rows, heads * headDim]);
    const lse = withLse ? this.out([rows, heads]) : undefined;
    if (!o.sinks && o.seqs.every((s) => s.blocks.length === 0 || s.qRows === 0)) {
      // No keys at all: zero output, and -Infinity log-sum-exps so a merge ignores this part.
      this.driver.memsetAsync(out.ptr, 0, out.byteLength, this.compute);
      if (lse) this.driver.copyHtoDAsyncFrom(lse.ptr, new Uint8Array(new Float32Array(rows * heads).fill(-Infinity).buffer), rows * heads * 4, this.compute);
      return { out, lse };
    }
    const blocks: KvBlock[] = o.seqs.flatMap((s) => s.blocks);
    const kvDtype = blocks[0]?.k.dtype ?? "bf16"; // no blocks: only the sinks count, any kernel does
    const sinks = o.sinks && this.asF32(o.sinks);
    const seqInfo = new Int32Array(o.seqs.length * 5);
    let begin = 0;
    o.seqs.forEach((s, i) => {
      seqInfo.set([s.qRow, s.qRows, s.qPos, begin, s.blocks.length], 5 * i);
      begin += s.blocks.length;
    });
    const ptrs = new BigUint64Array(blocks.length * 2);
    const pos = new Int32Array(blocks.length * 2);
    blocks.forEach((b, i) => {
      ptrs[2 * i] = cuda(b.k).ptr;
      ptrs[2 * i + 1] = cuda(b.v).ptr;
      pos[2 * i] = b.start;
      pos[2 * i + 1] = b.length;
    });
    const seqBuf = this.small(seqInfo);
    const ptrBuf = this.small(ptrs);
    const posBuf = this.small(pos);
    const reads = [qt, ...blocks.flatMap((b) => [b.k, b.v])];
    const keys = { seqs: seqBuf.ptr, blockPtrs: ptrBuf.ptr, blockPos: posBuf.ptr, heads, kvHeads, kvCols: kvHeads * headDim };
    const scores = { scale: o.scale, window: o.slidingWindow ?? 0, softcap: o.softcap ?? 0 };
    const maxQRows = Math.max(...o.seqs.map((s) => s.qRows));
    const tile = this.flashTileFor(kvDtype, headDim, maxQRows);
    const flash = flashKernel(tile, kvDtype, headDim);
    if (maxQRows >= 16 && this.kernels.has(flash)) {
      this.launch({
        kernel: flash,
        signature: "flash",
        grid: [Math.ceil(maxQRows / flashTiles[tile].rows), heads, o.seqs.length],
        block: [flashTiles[tile].threads, 1, 1],
        args: { out: out.ptr, lse: lse?.ptr ?? 0n, q: qt.ptr, sinks: sinks?.ptr ?? 0n, ...keys, ...scores },
        reads: [...reads, sinks],
        smem: flashSmem(headDim, tile),
      });
    } else {
      if (headDim > 256) throw new BackendError("CUDA_HEAD_DIM", `head_dim ${headDim} is larger than the 256 the CUDA kernels support`);
      const maxKeys = Math.max(1, ...o.seqs.map((s) => s.blocks.reduce((n, b) => n + b.length, 0)));
      const splits = Math.max(1, Math.min(Math.ceil(maxKeys / 128), Math.floor((4 * this.info.multiprocessors) / Math.max(1, heads * rows))));
      const partO = this.alloc([rows * heads * splits * headDim], "f32") as CudaTensor;
      const partMl = this.alloc([rows * heads * splits * 2], "f32") as CudaTensor;
      this.launch({
        kernel: `attn_simt_${kvDtype}`,
        signature: "attn_simt",
        grid: [splits, heads, rows],
        block: [128, 1, 1],
        args: { partO: partO.ptr, partMl: partMl.ptr, q: qt.ptr, nSeqs: o.seqs.length, headDim, splits, ...keys, ...scores },
        reads,
      });
      this.launch({
        signature: "attn_merge_splits",
        grid: [rows * heads, 1, 1],
        block: [Math.min(256, Math.ceil(headDim / 32) * 32), 1, 1],
        args: { out: out.ptr, lse: lse?.ptr ?? 0n, partO: partO.ptr, partMl: partMl.ptr, sinks: sinks?.ptr ?? 0n, heads, rowHeads: rows * heads, headDim, splits },
        reads: [sinks],
      });
      this.free(partO);
      this.free(partMl);
    }
    this.done(seqBuf, ptrBuf, posBuf);
    this.doneWithF32(sinks, o.sinks);
    return { out, lse };
  }

  mergeAttention(a: AttentionPart, b: AttentionPart): AttentionPart {
    const [ao, al, bo, bl] = [cuda(a.out), cuda(a.lse), cuda(b.out), cuda(b.lse)];
    const [rows, heads] = al.shape as [number, number];
    const headDim = ao.shape[1]! / heads;
    const out = this.out(ao.shape);
    const lse = this.out(al.shape);
    this.launch({
      signature: "merge_attention",
      grid: [rows * heads, 1, 1],
      block: [Math.min(256, Math.ceil(headDim / 32) * 32), 1, 1],
      args: { out: out.ptr, lse: lse.ptr, oa: ao.ptr, la: al.ptr, ob: bo.ptr, lb: bl.ptr, rowHeads: rows * heads, headDim },
      reads: [ao, al, bo, bl],
    });
    return { out, lse };
  }

  gatedActivation(gate: Tensor, up: Tensor, act: GateActivation): Tensor {
    const g = cuda(gate);
    const u = cuda(up);
    const n = numel(g.shape);
    const out = this.out(g.shape);
    // Rows that went through tensor cores (gate and up) go on to the down projection: the kernel also writes its 16-bit
    // input, which castInput then finds, as it finds one cast shared by q, k and v.
    const half = g.shape[0]! > 4 ? this.lastCastHalf : undefined;
    const twin = half ? (this.alloc(g.shape, half) as CudaTensor) : undefined;
    const twinKind = half === undefined ? 0 : half === "bf16" ? 1 : 2;
    const args = { out: out.ptr, gate: g.ptr, up: u.ptr, n, act: { silu: 0, gelu_tanh: 1, sigmoid: 2 }[act], twin: twin?.ptr ?? 0n, twinKind };
    this.launch({ signature: "gated_act", ...overElements(n), args, reads: [g, u] });
    if (twin) this.lastCast = { x: out, half: half!, xh: twin };
    return out;
  }

  add(a: Tensor, b: Tensor): Tensor {
    const x = cuda(a);
    const y = cuda(b);
    const n = numel(x.shape);
    if (n !== numel(y.shape)) throw new Error(`add: ${n} vs ${numel(y.shape)} values`);
    const out = this.out(x.shape);
    this.launch({ signature: "add_f32", ...overElements(n), args: { out: out.ptr, a: x.ptr, b: y.ptr, n }, reads: [x, y] });
    return out;
  }

  scale(x: Tensor, factor: number): Tensor {
    const t = cuda(x);
    const n = numel(t.shape);
    const out = this.out(t.shape);
    this.launch({ signature: "scale_f32", ...overElements(n), args: { out: out.ptr, x: t.ptr, s: factor, n }, reads: [t] });
    return out;
  }

  softcap(x: Tensor, cap: number): Tensor {
    const t = cuda(x);
    const n = numel(t.shape);
    const out = this.out(t.shape);
    this.launch({ signature: "softcap_f32", ...overElements(n), args: { out: out.ptr, x: t.ptr, cap, n }, reads: [t] });
    return out;
  }

  /** Row ranges and state pointers of the sequences of a recurrent op, as two small device buffers. */
  private recurrentSeqs(seqs: readonly RecurrentSeq[]): { info: CudaTensor; states: CudaTensor } {
    return { info: this.small(Int32Array.from(seqs.flatMap((s) => [s.row, s.rows]))), states: this.small(BigUint64Array.from(seqs.map((s) => cuda(s.state).ptr))) };
  }

  causalConv1d(x: Tensor, w: Tensor, seqs: readonly RecurrentSeq[]): Tensor {
    const xt = cuda(x);
    const wt = cuda(w);
    const [rows, channels] = xt.shape as [number, number];
    const kernel = wt.shape[wt.shape.length - 1]!;
    if (kernel !== 4) throw new BackendError("CUDA_CONV_KERNEL", `causal conv of width ${kernel}; the CUDA kernel is built for 4`, "use --backend cpu");
    const out = this.out([rows, channels]);
    const { info, states } = this.recurrentSeqs(seqs);
    this.launch({
      kernel: `causal_conv1d_4_${wt.dtype}`,
      signature: "causal_conv1d",
      grid: [Math.ceil(channels / threadsPerBlock), seqs.length, 1],
      block: [threadsPerBlock, 1, 1],
      args: { out: out.ptr, x: xt.ptr, w: wt.ptr, seqs: info.ptr, states: states.ptr, channels },
      reads: [xt, wt, ...seqs.map((s) => s.state)],
    });
    this.done(info, states);
    return out;
  }

  /**
   * Sequences of more than one row (prefill) take the chunked kernel, 32 rows at a time with their value columns split
   * across blocks; single rows (decode) the recurrent one.
   */
  gatedDeltaRule(qkv: Tensor, a: Tensor, b: Tensor, o: DeltaRuleOptions): Tensor {
    const x = cuda(qkv);
    const rows = x.shape[0]!;
    const recurrent = `gated_delta_rule_${o.kDim}`;
    const chunked = `gated_delta_chunked_${o.kDim}`;
    if (!this.kernels.has(recurrent) || o.vDim > 256) throw new BackendError("CUDA_DELTA_RULE_SHAPE", `gated delta rule with key head dim ${o.kDim} and value head dim ${o.vDim}; the CUDA kernel takes ${deltaRuleKeyDims.join(", ")} and at most 256`, "use --backend cpu");
    const out = this.out([rows, o.vHeads * o.vDim]);
    const aLog = this.asF32(o.aLog);
    const dtBias = this.asF32(o.dtBias);
    const useChunked = (s: RecurrentSeq) => s.rows > 1 && this.kernels.has(chunked);
    const launches = [
      { kernel: chunked, seqs: o.seqs.filter((s) => useChunked(s)), grid: [o.vHeads, Math.ceil(o.vDim / 32)], threads: 256, smem: deltaChunkSmem(o.kDim) },
      { kernel: recurrent, seqs: o.seqs.filter((s) => s.rows > 0 && !useChunked(s)), grid: [o.vHeads, 1], threads: Math.ceil(o.vDim / 32) * 32, smem: 0 },
    ] as const;
    for (const { kernel, seqs, grid, threads, smem } of launches) {
      if (seqs.length === 0) continue;
      const { info, states } = this.recurrentSeqs(seqs);
      this.launch({
        kernel,
        signature: "gated_delta_rule",
        grid: [grid[0], grid[1], seqs.length],
        block: [threads, 1, 1],
        args: { out: out.ptr, qkv: x.ptr, a: cuda(a).ptr, b: cuda(b).ptr, aLog: aLog.ptr, dtBias: dtBias.ptr, seqs: info.ptr, states: states.ptr, kHeads: o.kHeads, vHeads: o.vHeads, vDim: o.vDim },
        reads: [x, a, b, aLog, dtBias, ...seqs.map((s) => s.state)],
        smem,
      });
      this.done(info, states);
    }
    this.doneWithF32(aLog, o.aLog);
    this.doneWithF32(dtBias, o.dtBias);
    return out;
  }

  clampedSwiglu(gateUp: Tensor, o: { alpha: number; limit: number }): Tensor {
    const x = cuda(gateUp);
    const [rows, cols] = x.shape as [number, number];
    const n = (rows * cols) / 2;
    const out = this.out([rows, cols / 2]);
    this.launch({ signature: "clamped_swiglu", ...overElements(n), args: { out: out.ptr, x: x.ptr, n, alpha: o.alpha, limit: o.limit }, reads: [x] });
    return out;
  }

  zeros(shape: readonly number[]): Tensor {
    const out = this.out(shape);
    this.driver.memsetAsync(out.ptr, 0, out.byteLength, this.compute);
    return out;
  }

  penalize(x: Tensor, row: number, ids: Int32Array, factor: number): void {
    const t = cuda(x);
    const idBuf = this.small(ids);
    const args = { x: t.ptr + BigInt(4 * row * t.shape[1]!), ids: idBuf.ptr, n: ids.length, factor };
    this.launch({ signature: "penalize", ...overElements(ids.length), args, reads: [t] });
    this.done(idBuf);
  }

  gatherRows(x: Tensor, rows: Int32Array): Tensor {
    const t = cuda(x);
    const cols = t.shape[1]!;
    const ids = this.small(rows);
    const out = this.out([rows.length, cols]);
    const args = { out: out.ptr, x: t.ptr, rows: ids.ptr, n: rows.length, cols };
    this.launch({ signature: "gather_rows", ...overElements(rows.length * cols), args, reads: [t] });
    this.done(ids);
    return out;
  }

  accumulateRows(acc: Tensor, y: Tensor, rows: Int32Array, scales: Float32Array): void {
    const a = cuda(acc);
    const t = cuda(y);
    const cols = a.shape[1]!;
    const ids = this.small(rows);
    const sc = this.small(scales);
    const args = { acc: a.ptr, y: t.ptr, rows: ids.ptr, scales: sc.ptr, n: rows.length, cols };
    this.launch({ signature: "accumulate_rows", ...overElements(rows.length * cols), args, reads: [a, t] });
    this.done(ids, sc);
  }

  rows(x: Tensor, start: number, count: number): Tensor {
    const t = cuda(x);
    const cols = t.shape[1]!;
    const out = this.out([count, cols]);
    this.await([t]);
    this.driver.copyDtoDAsync(out.ptr, t.ptr + BigInt(start * cols * 4), count * cols * 4, this.compute);
    return out;
  }

  writeRows(dst: Tensor | readonly Tensor[], dstRow: number, src: Tensor, srcRow: number, count: number): void {
    const parts = rowRuns(dst, dstRow, count);
    if (parts.length === 0) return;
    const s = cuda(src);
    const { dtype, shape } = parts[0]!.dst;
    const cols = shape[shape.length - 1]!;
    const srcPtr = (done: number) => s.ptr + BigInt((srcRow + done) * cols * 4);
    this.await([s, ...parts.map((p) => p.dst)]);
    this.dropCast();
    if (dtype === "f32") {
      for (const p of parts) this.driver.copyDtoDAsync(cuda(p.dst).ptr + BigInt(p.row * cols * 4), srcPtr(p.done), p.rows * cols * 4, this.compute);
      return;
    }
    // One launch for up to maxRowBlocks tensors of the run (a chunk's rows across a KV cache's blocks).
    for (let g = 0; g < parts.length; g += maxRowBlocks) {
      const group = parts.slice(g, g + maxRowBlocks);
      const rows = group.reduce((n, p) => n + p.rows, 0);
      if (rows * cols >= 2 ** 31) throw new RangeError(`writeRows: ${rows} x ${cols} values are more than one launch writes`);
      const blocks = Array.from({ length: maxRowBlocks }, (_, i) => (group[i] ? cuda(group[i].dst).ptr : 0n));
      const args = { dst: blocks, first: group[0]!.row, blockRows: rowsOf(group[0]!.dst), src: srcPtr(group[0]!.done), rows, cols };
      this.launch({ kernel: `write_rows_${dtype}`, signature: "write_rows", ...overElements(rows * cols), args, reads: [] });
    }
  }
}

/** A promise-like that only starts waiting (on a worker thread) when someone awaits it. */
function lazy(start: () => Promise<void>): Promise<void> {
  let p: Promise<void> | undefined;
  const get = () => (p ??= start());
  return {
    then: (a, b) => get().then(a, b),
    catch: (b) => get().catch(b),
    finally: (f) => get().finally(f),
    [Symbol.toStringTag]: "LazyPromise",
  } as Promise<void>;
}

export async function createCudaBackend(): Promise<Backend> {
  return CudaBackend.create();
}
