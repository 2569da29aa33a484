// The CUDA backend: the op interface on an NVIDIA GPU through the driver API. This class wires the parts and delegates:
// streams.ts (streams, events, copies and the waits between them), allocations.ts (tensors, scopes, host buffers),
// compute-queue.ts (launches with named arguments), cast-cache.ts (the 16-bit matmul input kept between ops), tiles.ts,
// and one module per family of ops (matmul, attention, elementwise, rows, recurrent, sampling).
import { BackendError } from "../../errors.js";
import type { DType } from "../dtype.js";
import type {
  AttentionOptions,
  AttentionPart,
  Backend,
  CopyQueue,
  DeltaRuleOptions,
  Fence,
  GateActivation,
  HostBuffer,
  MemoryStats,
  RecurrentSeq,
  RopeOptions,
  Tensor,
} from "../ops.js";
import { runScoped } from "../scope.js";
import { Allocations } from "./allocations.js";
import { DeviceArena } from "./arena.js";
import { CudaAttention } from "./attention.js";
import { CastCache } from "./cast-cache.js";
import { ComputeQueue } from "./compute-queue.js";
import {
  CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
  CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
  CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
  CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
  CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED,
  Driver,
  minDriverVersion,
} from "./driver.js";
import { CudaElementwise } from "./elementwise.js";
import { HostReads } from "./host-reads.js";
import { Kernels, type FlashTile, type GemmTile } from "./kernels.js";
import { CudaMatmul } from "./matmul.js";
import { DevicePool, plannedBytes } from "./memory.js";
import { CudaRecurrent } from "./recurrent.js";
import { CudaRows } from "./rows.js";
import { CudaSampling } from "./sampling.js";
import type { StreamReport } from "./stream-profile.js";
import { Streams } from "./streams.js";
import { asCudaTensor, type CudaHostBuffer } from "./tensor.js";
import { TileChoice } from "./tiles.js";

export { CudaTensor } from "./tensor.js";

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
  private readonly streams: Streams;
  private readonly casts: CastCache;
  private readonly allocations: Allocations;
  private readonly queue: ComputeQueue;
  private readonly tiles: TileChoice;
  private readonly reads: HostReads;
  private readonly matmulOps: CudaMatmul;
  private readonly attentionOps: CudaAttention;
  private readonly elementwiseOps: CudaElementwise;
  private readonly rowOps: CudaRows;
  private readonly recurrentOps: CudaRecurrent;
  private readonly samplingOps: CudaSampling;
  private disposed = false;

  private constructor(
    private readonly driver: Driver,
    private readonly device: number,
    readonly info: DeviceInfo,
  ) {
    // Only the pool (its arena), the kernels and the streams call the driver here, in that order; the rest is wiring.
    // The cast cache frees a forgotten cast through the allocations, which forget the cast of a tensor being freed.
    this.pool = new DevicePool(driver, this.arenaFor(driver, device));
    this.kernels = new Kernels(
      driver,
      driver.attribute(device, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN),
      info.computeCapability === "9.0",
    );
    this.streams = new Streams(driver, this.kernels);
    const { pool, kernels, streams, memory } = this;
    const casts = (this.casts = new CastCache((xh) => this.allocations.free(xh)));
    const allocations = (this.allocations = new Allocations({
      driver,
      pool,
      streams,
      casts,
      memory,
      contextBytes: () => info.contextBytes,
    }));
    const queue = (this.queue = new ComputeQueue({ kernels, streams, allocations, casts }));
    const tiles = (this.tiles = new TileChoice(kernels));
    this.reads = new HostReads(streams, allocations);
    this.matmulOps = new CudaMatmul({ queue, allocations, casts, tiles, kernels });
    this.attentionOps = new CudaAttention({
      queue,
      allocations,
      tiles,
      kernels,
      driver,
      streams,
      multiprocessors: info.multiprocessors,
    });
    this.elementwiseOps = new CudaElementwise({ queue, allocations, casts, driver, streams });
    this.rowOps = new CudaRows({ queue, allocations, casts, driver, streams });
    this.recurrentOps = new CudaRecurrent({ queue, allocations, kernels });
    this.samplingOps = new CudaSampling({ queue, allocations, reads: this.reads });
    const { free, total } = driver.memInfo();
    info.contextBytes = total - free;
    info.totalBytes = total;
  }

  static create(ordinal = 0): CudaBackend {
    const driver = Driver.load();
    driver.init();
    const version = driver.driverVersion();
    if (version < minDriverVersion) {
      throw new BackendError(
        "CUDA_DRIVER_TOO_OLD",
        `the NVIDIA driver supports CUDA ${version / 1000}, layerwise's kernels need ${minDriverVersion / 1000} or newer`,
        "update the NVIDIA driver to R580 or newer, or use --backend cpu",
      );
    }
    if (driver.deviceCount() <= ordinal)
      throw new BackendError("CUDA_NO_DEVICE", "the NVIDIA driver found no GPU", "use --backend cpu");
    const device = driver.device(ordinal);
    const major = driver.attribute(device, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR);
    const minor = driver.attribute(device, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR);
    if (major < 8)
      throw new BackendError(
        "CUDA_GPU_TOO_OLD",
        `${driver.deviceName(device)} has compute capability ${major}.${minor}; layerwise needs 8.0 (Ampere) or newer`,
        "use --backend cpu",
      );
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
    return new DeviceArena(driver, device, driver.memGranularity(device), 2 * driver.memInfo().total, () =>
      this.streams.drain(),
    );
  }

  get deviceOverheadBytes(): number {
    return this.info.contextBytes;
  }

  async defaultDeviceBudget(): Promise<number> {
    const { free } = this.driver.memInfo();
    return Math.max(0, free - Math.max(512 << 20, free * 0.05));
  }

  /** The pool never holds more than this. */
  setDeviceBudget(bytes: number): void {
    this.pool.trim();
    this.pool.limit = Math.max(0, bytes);
  }

  releaseSmallCache(): void {
    this.pool.trimSmallSegments();
  }

  deviceBytesFor(bytes: number): number {
    return plannedBytes(bytes);
  }

  /**
   * The allocator's fragmentation measured on a long prefill with plain segments, with a margin (docs/benchmarks.md,
   * "Figures behind defaults"); past the slack, the arena keeps to the budget by unmapping, which drains the GPU.
   */
  readonly workspaceSlack = 0.2;

  resetPeaks(): void {
    this.pool.reservedPeak = this.pool.reserved;
    this.memory.deviceBytesPeak = this.info.contextBytes + this.pool.reserved;
    this.memory.hostBytesPeak = this.memory.hostBytes;
  }

  // ---- settings benchmarks and tests change ----

  /** The tensor-core GEMM tile matmuls take where this GPU has it (TileChoice.gemmTile). */
  get gemmTile(): GemmTile {
    return this.tiles.gemmTile;
  }
  set gemmTile(tile: GemmTile) {
    this.tiles.gemmTile = tile;
  }

  /** The prefill attention tile taken where it fits (TileChoice.flashTile). */
  get flashTile(): FlashTile {
    return this.tiles.flashTile;
  }
  set flashTile(tile: FlashTile) {
    this.tiles.flashTile = tile;
  }

  /** How small uploads reach the device (Streams.smallUploads). */
  get smallUploads(): Streams["smallUploads"] {
    return this.streams.smallUploads;
  }
  set smallUploads(way: Streams["smallUploads"]) {
    this.streams.smallUploads = way;
  }

  /** Whether prefetch copies take a stream of their own (Streams.prefetchStream). */
  get prefetchStream(): Streams["prefetchStream"] {
    return this.streams.prefetchStream;
  }
  set prefetchStream(which: Streams["prefetchStream"]) {
    this.streams.prefetchStream = which;
  }

  hasGemmTile(tile: GemmTile): boolean {
    return this.tiles.hasGemmTile(tile);
  }

  gemmTileFor(dtype: string): GemmTile {
    return this.tiles.gemmTileFor(dtype);
  }

  flashTileFor(kvDtype: string, headDim: number, maxQRows: number): FlashTile {
    return this.tiles.flashTileFor(kvDtype, headDim, maxQRows);
  }

  // ---- memory ----

  alloc(shape: readonly number[], dtype: DType): Tensor {
    return this.allocations.alloc(shape, dtype);
  }

  view(base: Tensor, byteOffset: number, shape: readonly number[], dtype: DType): Tensor {
    return this.allocations.view(base, byteOffset, shape, dtype);
  }

  free(t: Tensor): void {
    this.allocations.free(t);
  }

  pushScope(): void {
    this.allocations.pushScope();
  }

  popScope(keep: readonly Tensor[] = []): void {
    this.allocations.popScope(keep);
  }

  scoped<T extends Tensor | Promise<Tensor>>(fn: () => T): T {
    return runScoped(this, fn);
  }

  allocHost(byteLength: number): HostBuffer {
    return this.allocations.allocHost(byteLength);
  }

  freeHost(b: HostBuffer): void {
    this.allocations.freeHost(b);
  }

  /** Calls to the driver's allocator and frees so far (each free waits for the device), and waits for copies to the host before reusing memory. */
  get allocatorStats(): {
    readonly driverAllocs: number;
    readonly driverFrees: number;
    readonly copyWaits: number;
    readonly copyWaitMs: number;
    readonly arena?: DeviceArena["stats"];
  } {
    return { ...this.pool.stats, arena: this.pool.arenaStats && { ...this.pool.arenaStats } };
  }

  /** The pool at its largest overrun of the budget, if it ever went over (a profile prints it). */
  get allocatorOverrun(): DevicePool["overrun"] {
    return this.pool.overrun;
  }

  // ---- copies and ordering (streams.ts has the rules) ----

  fence(): Fence {
    return this.streams.fence();
  }

  /** A copy on the compute stream, in op order: like an op's enqueue, it forgets the kept cast. */
  async upload(t: Tensor, bytes: Uint8Array, offset = 0): Promise<void> {
    const c = asCudaTensor(t);
    this.queue.enqueue("upload", "forget", () =>
      this.driver.copyHtoDAsyncFrom(c.ptr + BigInt(offset), bytes, bytes.byteLength, this.streams.compute),
    );
    this.memory.h2dBytes += bytes.byteLength;
  }

  copyToDevice(
    dst: Tensor,
    dstOffset: number,
    src: HostBuffer,
    srcOffset: number,
    length: number,
    after?: Fence,
    queue: CopyQueue = "needed",
  ): Promise<void> {
    const d = asCudaTensor(dst);
    this.casts.forgetIfIn(d.buffer);
    const copied = this.streams.copyToDevice(d, dstOffset, src as CudaHostBuffer, srcOffset, length, after, queue);
    this.memory.h2dBytes += length;
    return copied;
  }

  copyToHost(src: Tensor, srcOffset: number, dst: HostBuffer, dstOffset: number, length: number): Promise<void> {
    return this.streams.copyToHost(asCudaTensor(src), srcOffset, dst as CudaHostBuffer, dstOffset, length);
  }

  readRows(t: Tensor, start: number, count: number): Promise<Uint8Array> {
    return this.reads.readRows(t, start, count);
  }

  read(t: Tensor): Promise<Float32Array> {
    return this.reads.read(t);
  }

  topK(x: Tensor, k: number): Promise<{ ids: Int32Array; values: Float32Array }> {
    return this.samplingOps.topK(x, k);
  }

  /** GPU milliseconds per repetition of the work `enqueue` puts on the compute stream (benchmarks). */
  timeMs(enqueue: () => void, reps: number): Promise<number> {
    return this.streams.timeMs(enqueue, reps);
  }

  /** Waits for all compute and copies to the host enqueued so far. */
  sync(): Promise<void> {
    return this.streams.sync();
  }

  /** Starts timing every kernel and copy on the compute stream (profiling runs; each op then costs two events). */
  startProfile(): void {
    this.streams.startProfile();
  }

  /** GPU time by kernel since startProfile (or the last report), and how long the compute stream sat idle. */
  profileReport(): Promise<StreamReport> {
    return this.streams.profileReport();
  }

  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    await this.streams.sync();
    this.allocations.freeAll();
    this.pool.dispose();
    this.kernels.dispose();
    this.streams.dispose();
    this.driver.releasePrimaryContext(this.device);
  }

  // ---- ops (one module per family) ----

  embed(table: Tensor, ids: Int32Array): Tensor {
    return this.rowOps.embed(table, ids);
  }

  matmul(x: Tensor, w: Tensor, bias?: Tensor): Tensor {
    return this.matmulOps.matmul(x, w, bias);
  }

  rmsNorm(x: Tensor, w: Tensor, o: { eps: number; offset?: number }): Tensor {
    return this.elementwiseOps.rmsNorm(x, w, o);
  }

  rope(x: Tensor, o: RopeOptions): Tensor {
    return this.elementwiseOps.rope(x, o);
  }

  attention(q: Tensor, o: AttentionOptions): Tensor {
    return this.attentionOps.attend(q, o, false).out;
  }

  attentionPart(q: Tensor, o: AttentionOptions): AttentionPart {
    const { out, lse } = this.attentionOps.attend(q, o, true);
    return { out, lse: lse! };
  }

  mergeAttention(a: AttentionPart, b: AttentionPart): AttentionPart {
    return this.attentionOps.mergeAttention(a, b);
  }

  gatedActivation(gate: Tensor, up: Tensor, act: GateActivation): Tensor {
    return this.elementwiseOps.gatedActivation(gate, up, act);
  }

  add(a: Tensor, b: Tensor): Tensor {
    return this.elementwiseOps.add(a, b);
  }

  scale(x: Tensor, factor: number): Tensor {
    return this.elementwiseOps.scale(x, factor);
  }

  softcap(x: Tensor, cap: number): Tensor {
    return this.elementwiseOps.softcap(x, cap);
  }

  causalConv1d(x: Tensor, w: Tensor, seqs: readonly RecurrentSeq[]): Tensor {
    return this.recurrentOps.causalConv1d(x, w, seqs);
  }

  gatedDeltaRule(qkv: Tensor, a: Tensor, b: Tensor, o: DeltaRuleOptions): Tensor {
    return this.recurrentOps.gatedDeltaRule(qkv, a, b, o);
  }

  clampedSwiglu(gateUp: Tensor, o: { alpha: number; limit: number }): Tensor {
    return this.elementwiseOps.clampedSwiglu(gateUp, o);
  }

  zeros(shape: readonly number[]): Tensor {
    return this.elementwiseOps.zeros(shape);
  }

  penalize(x: Tensor, row: number, ids: Int32Array, factor: number): void {
    this.samplingOps.penalize(x, row, ids, factor);
  }

  gatherRows(x: Tensor, rows: Int32Array): Tensor {
    return this.rowOps.gatherRows(x, rows);
  }

  accumulateRows(acc: Tensor, y: Tensor, rows: Int32Array, scales: Float32Array): void {
    this.rowOps.accumulateRows(acc, y, rows, scales);
  }

  rows(x: Tensor, start: number, count: number): Tensor {
    return this.rowOps.rows(x, start, count);
  }

  writeRows(dst: Tensor | readonly Tensor[], dstRow: number, src: Tensor, srcRow: number, count: number): void {
    this.rowOps.writeRows(dst, dstRow, src, srcRow, count);
  }
}

export async function createCudaBackend(): Promise<Backend> {
  return CudaBackend.create();
}
