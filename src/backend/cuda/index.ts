// The CUDA backend: the op interface on an NVIDIA GPU through the driver API. This class wires its parts, streams.ts
// (streams, events, copies and the waits between them), allocations.ts (tensors, scopes, host buffers), compute-queue.ts
// (launches with named arguments), cast-cache.ts (the 16-bit matmul input kept between ops), tiles.ts and
// host-reads.ts, and implements the ops on them.
import { BackendError } from "../../errors.js";
import { topKRows } from "../../util/top-k.js";
import { tensorCoreInput, type DType } from "../dtype.js";
import { numel, type AttentionOptions, type AttentionPart, type Backend, type CopyQueue, type DeltaRuleOptions, type Fence, type GateActivation, type HostBuffer, type KvBlock, type MemoryStats, type RecurrentSeq, type RopeOptions, type Tensor } from "../ops.js";
import { rowRuns, rowsOf } from "../row-runs.js";
import { runScoped } from "../scope.js";
import { Allocations } from "./allocations.js";
import { DeviceArena } from "./arena.js";
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
import { HostReads } from "./host-reads.js";
import { maxRowBlocks } from "./kernel-params.js";
import {
  Kernels,
  deltaChunkSmem,
  deltaRuleKeyDims,
  flashKernel,
  flashSmem,
  flashTiles,
  gemmKernel,
  gemmSmem,
  gemmTiles,
  gemvColumns,
  overElements,
  threadsPerBlock,
  topKMax,
  type FlashTile,
  type GemmTile,
} from "./kernels.js";
import { DevicePool, plannedBytes } from "./memory.js";
import type { StreamReport } from "./stream-profile.js";
import { Streams } from "./streams.js";
import { asCudaTensor, type CudaHostBuffer, type CudaTensor, type HalfType } from "./tensor.js";
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
  private disposed = false;

  private constructor(
    private readonly driver: Driver,
    private readonly device: number,
    readonly info: DeviceInfo,
  ) {
    this.pool = new DevicePool(driver, this.arenaFor(driver, device));
    this.kernels = new Kernels(driver, driver.attribute(device, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN), info.computeCapability === "9.0");
    this.streams = new Streams(driver, this.kernels);
    const { pool, kernels, streams, memory } = this;
    const casts = (this.casts = new CastCache((xh) => this.allocations.free(xh)));
    const allocations = (this.allocations = new Allocations({ driver, pool, streams, casts, memory, contextBytes: () => info.contextBytes }));
    this.queue = new ComputeQueue({ kernels, streams, allocations, casts });
    this.tiles = new TileChoice(kernels);
    this.reads = new HostReads(streams, allocations);
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
    return new DeviceArena(driver, device, driver.memGranularity(device), 2 * driver.memInfo().total, () => this.streams.drain());
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
  get allocatorStats(): { readonly driverAllocs: number; readonly driverFrees: number; readonly copyWaits: number; readonly copyWaitMs: number; readonly arena?: DeviceArena["stats"] } {
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
    this.queue.enqueue("upload", "forget", () => this.driver.copyHtoDAsyncFrom(c.ptr + BigInt(offset), bytes, bytes.byteLength, this.streams.compute));
    this.memory.h2dBytes += bytes.byteLength;
  }

  copyToDevice(dst: Tensor, dstOffset: number, src: HostBuffer, srcOffset: number, length: number, after?: Fence, queue: CopyQueue = "needed"): Promise<void> {
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

  // ---- ops ----

  matmul(x: Tensor, w: Tensor, bias?: Tensor): CudaTensor {
    const { queue, allocations, tiles, kernels } = this;
    const xt = asCudaTensor(x);
    const wt = asCudaTensor(w);
    const [m, k] = xt.shape as [number, number];
    const [n, kw] = wt.shape as [number, number];
    if (k !== kw) throw new Error(`matmul: x has ${k} columns, w has ${kw}`);
    const out = allocations.allocOutput([m, n]);
    const b = bias && queue.asF32(bias, "keep");
    const args = { y: out.ptr, x: xt.ptr, w: wt.ptr, bias: b ? b.ptr : 0n, M: m, N: n, K: k };
    const reads = [xt, wt, b];
    const half = tensorCoreInput(m, k, n, wt.dtype);
    const tile = tiles.gemmTileFor(wt.dtype);
    const mma = gemmKernel(tile, wt.dtype);
    // 5-64 rows of 16-bit weights: decode batches, on tensor cores with the weights read once (gemm_skinny in kernels/gemm.cu).
    const skinny = half !== undefined && half === wt.dtype && m <= 64;
    if (half && (skinny || kernels.has(mma))) {
      const xh = this.inputInHalf(xt, half);
      const t = gemmTiles[tile];
      if (skinny) {
        const kernel = `gemm_skinny${m <= 16 ? 1 : m <= 32 ? 2 : 4}_${half}`;
        queue.launch({ kernel, signature: "matmul", grid: [Math.ceil(n / 32), 1, 1], block: [threadsPerBlock, 1, 1], args: { ...args, x: xh.ptr }, reads: [wt, b], cast: "keep" });
      } else if (t.tma) {
        const xMap = { dtype: half, ptr: xh.ptr, rows: m, cols: k, boxRows: t.rows };
        const wMap = { dtype: half, ptr: wt.ptr, rows: n, cols: k, boxRows: t.cols };
        const tmaArgs = { y: args.y, xMap, wMap, bias: args.bias, M: m, N: n, K: k };
        queue.launch({ kernel: mma, signature: "gemm_tma", grid: [Math.ceil(n / t.cols), Math.ceil(m / t.rows), 1], block: [t.threads, 1, 1], args: tmaArgs, reads: [wt, b], smem: gemmSmem(tile), cast: "keep" });
      } else {
        queue.launch({ kernel: mma, signature: "matmul", grid: [Math.ceil(n / t.cols), Math.ceil(m / t.rows), 1], block: [t.threads, 1, 1], args: { ...args, x: xh.ptr }, reads: [wt, b], smem: gemmSmem(tile), cast: "keep" });
      }
    } else if (m <= 16) {
      const rowsPerLaunch = m === 1 ? 1 : m <= 4 ? 4 : 16;
      const grid = [Math.ceil(n / (8 * gemvColumns(rowsPerLaunch, wt.dtype))), 1, 1] as const;
      queue.launch({ kernel: `gemv${rowsPerLaunch}_${wt.dtype}`, signature: "matmul", grid, block: [threadsPerBlock, 1, 1], args, reads, cast: "keep" });
    } else if (wt.dtype === "mxfp4") {
      // Few outputs (a router) or no tensor-core GEMM here: the decode kernel, 16 rows at a time.
      for (let r = 0; r < m; r += 16) {
        const rows = { y: out.ptr + BigInt(r * n * 4), x: xt.ptr + BigInt(r * k * 4), M: Math.min(16, m - r) };
        queue.launch({ kernel: "gemv16_mxfp4", signature: "matmul", grid: [Math.ceil(n / 8), 1, 1], block: [threadsPerBlock, 1, 1], args: { ...args, ...rows }, reads, cast: "keep" });
      }
    } else {
      queue.launch({ kernel: `gemm_simt_${wt.dtype}`, signature: "matmul", grid: [Math.ceil(n / 64), Math.ceil(m / 64), 1], block: [threadsPerBlock, 1, 1], args, reads, cast: "keep" });
    }
    queue.freeF32Copy(b, bias);
    return out;
  }

  /**
   * x in 16 bits for a tensor-core matmul: the kept cast when it is x's in this type (q, k and v, or gate and up, share
   * one; RMSNorm and the gated activation leave one as a twin), else a new one, kept in place of the old.
   */
  private inputInHalf(x: CudaTensor, half: HalfType): CudaTensor {
    const { queue, allocations, casts } = this;
    const kept = casts.find(x, half);
    if (kept) return kept;
    casts.forget();
    const [m, k] = x.shape as [number, number];
    const xh = allocations.alloc([m, k], half);
    queue.launch({ kernel: `cast_rows_${half}`, signature: "cast_rows", ...overElements(m * k), args: { out: xh.ptr, x: x.ptr, n: m * k }, reads: [x], cast: "keep" });
    casts.remember(x, half, xh);
    return xh;
  }


  attention(q: Tensor, o: AttentionOptions): Tensor {
    return this.attend(q, o, false).out;
  }

  attentionPart(q: Tensor, o: AttentionOptions): AttentionPart {
    const { out, lse } = this.attend(q, o, true);
    return { out, lse: lse! };
  }

  /** Attention of q over the blocks of o.seqs: the output, and each row's log-sum-exp per head when `withLse`. */
  private attend(q: Tensor, o: AttentionOptions, withLse: boolean): { out: CudaTensor; lse?: CudaTensor } {
    const { queue, allocations, tiles, kernels, driver, streams } = this;
    const qt = asCudaTensor(q);
    const rows = qt.shape[0]!;
    const { heads, kvHeads, headDim } = o;
    const out = allocations.allocOutput([rows, heads * headDim]);
    const lse = withLse ? allocations.allocOutput([rows, heads]) : undefined;
    if (!o.sinks && o.seqs.every((s) => s.blocks.length === 0 || s.qRows === 0)) {
      // No keys at all: zero output, and -Infinity log-sum-exps so a merge ignores this part.
      driver.memsetAsync(out.ptr, 0, out.byteLength, streams.compute);
      if (lse) driver.copyHtoDAsyncFrom(lse.ptr, new Uint8Array(new Float32Array(rows * heads).fill(-Infinity).buffer), rows * heads * 4, streams.compute);
      return { out, lse };
    }
    const blocks: KvBlock[] = o.seqs.flatMap((s) => s.blocks);
    const kvDtype = blocks[0]?.k.dtype ?? "bf16"; // no blocks: only the sinks count, any kernel does
    const sinks = o.sinks && queue.asF32(o.sinks, "forget");
    const seqInfo = new Int32Array(o.seqs.length * 5);
    let begin = 0;
    o.seqs.forEach((s, i) => {
      seqInfo.set([s.qRow, s.qRows, s.qPos, begin, s.blocks.length], 5 * i);
      begin += s.blocks.length;
    });
    const ptrs = new BigUint64Array(blocks.length * 2);
    const pos = new Int32Array(blocks.length * 2);
    blocks.forEach((b, i) => {
      ptrs[2 * i] = asCudaTensor(b.k).ptr;
      ptrs[2 * i + 1] = asCudaTensor(b.v).ptr;
      pos[2 * i] = b.start;
      pos[2 * i + 1] = b.length;
    });
    const seqBuf = queue.uploadSmall(seqInfo, "forget");
    const ptrBuf = queue.uploadSmall(ptrs, "forget");
    const posBuf = queue.uploadSmall(pos, "forget");
    const reads = [qt, ...blocks.flatMap((b) => [b.k, b.v])];
    const keys = { seqs: seqBuf.ptr, blockPtrs: ptrBuf.ptr, blockPos: posBuf.ptr, heads, kvHeads, kvCols: kvHeads * headDim };
    const scores = { scale: o.scale, window: o.slidingWindow ?? 0, softcap: o.softcap ?? 0 };
    const maxQRows = Math.max(...o.seqs.map((s) => s.qRows));
    const tile = tiles.flashTileFor(kvDtype, headDim, maxQRows);
    const flash = flashKernel(tile, kvDtype, headDim);
    if (maxQRows >= 16 && kernels.has(flash)) {
      queue.launch({
        kernel: flash,
        signature: "flash",
        grid: [Math.ceil(maxQRows / flashTiles[tile].rows), heads, o.seqs.length],
        block: [flashTiles[tile].threads, 1, 1],
        args: { out: out.ptr, lse: lse?.ptr ?? 0n, q: qt.ptr, sinks: sinks?.ptr ?? 0n, ...keys, ...scores },
        reads: [...reads, sinks],
        smem: flashSmem(headDim, tile),
        cast: "forget",
      });
    } else {
      if (headDim > 256) throw new BackendError("CUDA_HEAD_DIM", `head_dim ${headDim} is larger than the 256 the CUDA kernels support`);
      const maxKeys = Math.max(1, ...o.seqs.map((s) => s.blocks.reduce((n, b) => n + b.length, 0)));
      const splits = Math.max(1, Math.min(Math.ceil(maxKeys / 128), Math.floor((4 * this.info.multiprocessors) / Math.max(1, heads * rows))));
      const partO = allocations.alloc([rows * heads * splits * headDim], "f32");
      const partMl = allocations.alloc([rows * heads * splits * 2], "f32");
      queue.launch({
        kernel: `attn_simt_${kvDtype}`,
        signature: "attn_simt",
        grid: [splits, heads, rows],
        block: [128, 1, 1],
        args: { partO: partO.ptr, partMl: partMl.ptr, q: qt.ptr, nSeqs: o.seqs.length, headDim, splits, ...keys, ...scores },
        reads,
        cast: "forget",
      });
      queue.launch({
        signature: "attn_merge_splits",
        grid: [rows * heads, 1, 1],
        block: [Math.min(256, Math.ceil(headDim / 32) * 32), 1, 1],
        args: { out: out.ptr, lse: lse?.ptr ?? 0n, partO: partO.ptr, partMl: partMl.ptr, sinks: sinks?.ptr ?? 0n, heads, rowHeads: rows * heads, headDim, splits },
        reads: [sinks],
        cast: "forget",
      });
      allocations.free(partO);
      allocations.free(partMl);
    }
    allocations.freeAfterEnqueue(seqBuf, ptrBuf, posBuf);
    queue.freeF32Copy(sinks, o.sinks);
    return { out, lse };
  }

  mergeAttention(a: AttentionPart, b: AttentionPart): AttentionPart {
    const { queue, allocations } = this;
    const [ao, al, bo, bl] = [asCudaTensor(a.out), asCudaTensor(a.lse), asCudaTensor(b.out), asCudaTensor(b.lse)];
    const [rows, heads] = al.shape as [number, number];
    const headDim = ao.shape[1]! / heads;
    const out = allocations.allocOutput(ao.shape);
    const lse = allocations.allocOutput(al.shape);
    queue.launch({
      signature: "merge_attention",
      grid: [rows * heads, 1, 1],
      block: [Math.min(256, Math.ceil(headDim / 32) * 32), 1, 1],
      args: { out: out.ptr, lse: lse.ptr, oa: ao.ptr, la: al.ptr, ob: bo.ptr, lb: bl.ptr, rowHeads: rows * heads, headDim },
      reads: [ao, al, bo, bl],
      cast: "forget",
    });
    return { out, lse };
  }


  rmsNorm(x: Tensor, w: Tensor, o: { eps: number; offset?: number }): CudaTensor {
    const { queue, allocations, casts } = this;
    const xt = asCudaTensor(x);
    const wt = asCudaTensor(w);
    const group = wt.shape[0]!;
    const groups = numel(xt.shape) / group;
    const out = allocations.allocOutput(xt.shape);
    const block = Math.min(1024, Math.max(32, Math.ceil(Math.min(group, threadsPerBlock) / 32) * 32));
    // Whole rows normed in the type the matmuls cast to (a 16-bit model's norm before q/k/v or gate/up): the kernel also
    // writes the 16-bit input the matmul would cast (a post-norm's goes unused: one more write of two bytes a value).
    const cols = xt.shape[xt.shape.length - 1]!;
    const half = group === cols && groups > 4 && wt.dtype === casts.lastHalf ? casts.lastHalf : undefined;
    const twin = half ? allocations.alloc(xt.shape, half) : undefined;
    queue.launch({
      kernel: `rms_norm_${wt.dtype}`,
      signature: "rms_norm",
      grid: [groups, 1, 1],
      block: [block, 1, 1],
      args: { out: out.ptr, x: xt.ptr, w: wt.ptr, group, eps: o.eps, offset: o.offset ?? 0, twin: twin?.ptr ?? 0n },
      reads: [xt, wt],
      cast: "forget",
    });
    if (twin) casts.remember(out, half!, twin);
    return out;
  }

  gatedActivation(gate: Tensor, up: Tensor, act: GateActivation): CudaTensor {
    const { queue, allocations, casts } = this;
    const g = asCudaTensor(gate);
    const u = asCudaTensor(up);
    const n = numel(g.shape);
    const out = allocations.allocOutput(g.shape);
    // Rows that went through tensor cores (gate and up) go on to the down projection: the kernel also writes its 16-bit
    // input, which the matmul then finds, as it finds one cast shared by q, k and v.
    const half = g.shape[0]! > 4 ? casts.lastHalf : undefined;
    const twin = half ? allocations.alloc(g.shape, half) : undefined;
    const twinKind = half === undefined ? 0 : half === "bf16" ? 1 : 2;
    const args = { out: out.ptr, gate: g.ptr, up: u.ptr, n, act: { silu: 0, gelu_tanh: 1, sigmoid: 2 }[act], twin: twin?.ptr ?? 0n, twinKind };
    queue.launch({ signature: "gated_act", ...overElements(n), args, reads: [g, u], cast: "forget" });
    if (twin) casts.remember(out, half!, twin);
    return out;
  }

  rope(x: Tensor, o: RopeOptions): CudaTensor {
    const { queue, allocations } = this;
    const xt = asCudaTensor(x);
    const [rows, cols] = xt.shape as [number, number];
    const heads = cols / o.headDim;
    const half = o.invFreq.length;
    const pos = queue.uploadSmall(o.positions, "forget");
    const freq = queue.uploadSmall(o.invFreq, "forget");
    const out = allocations.allocOutput(xt.shape);
    const args = { out: out.ptr, x: xt.ptr, positions: pos.ptr, invFreq: freq.ptr, rows, heads, headDim: o.headDim, half, scale: o.scale };
    queue.launch({ signature: "rope", ...overElements(rows * heads * half), args, reads: [xt], cast: "forget" });
    allocations.freeAfterEnqueue(pos, freq);
    return out;
  }

  add(a: Tensor, b: Tensor): CudaTensor {
    const x = asCudaTensor(a);
    const y = asCudaTensor(b);
    const n = numel(x.shape);
    if (n !== numel(y.shape)) throw new Error(`add: ${n} vs ${numel(y.shape)} values`);
    const out = this.allocations.allocOutput(x.shape);
    this.queue.launch({ signature: "add_f32", ...overElements(n), args: { out: out.ptr, a: x.ptr, b: y.ptr, n }, reads: [x, y], cast: "forget" });
    return out;
  }

  scale(x: Tensor, factor: number): CudaTensor {
    const t = asCudaTensor(x);
    const n = numel(t.shape);
    const out = this.allocations.allocOutput(t.shape);
    this.queue.launch({ signature: "scale_f32", ...overElements(n), args: { out: out.ptr, x: t.ptr, s: factor, n }, reads: [t], cast: "forget" });
    return out;
  }

  softcap(x: Tensor, cap: number): CudaTensor {
    const t = asCudaTensor(x);
    const n = numel(t.shape);
    const out = this.allocations.allocOutput(t.shape);
    this.queue.launch({ signature: "softcap_f32", ...overElements(n), args: { out: out.ptr, x: t.ptr, cap, n }, reads: [t], cast: "forget" });
    return out;
  }

  clampedSwiglu(gateUp: Tensor, o: { alpha: number; limit: number }): CudaTensor {
    const x = asCudaTensor(gateUp);
    const [rows, cols] = x.shape as [number, number];
    const n = (rows * cols) / 2;
    const out = this.allocations.allocOutput([rows, cols / 2]);
    this.queue.launch({ signature: "clamped_swiglu", ...overElements(n), args: { out: out.ptr, x: x.ptr, n, alpha: o.alpha, limit: o.limit }, reads: [x], cast: "forget" });
    return out;
  }

  /** f32 zeros, by a memset on the compute stream (which leaves the kept cast alone). */
  zeros(shape: readonly number[]): CudaTensor {
    const out = this.allocations.allocOutput(shape);
    this.driver.memsetAsync(out.ptr, 0, out.byteLength, this.streams.compute);
    return out;
  }


  embed(table: Tensor, ids: Int32Array): CudaTensor {
    const { queue, allocations } = this;
    const tb = asCudaTensor(table);
    const hidden = tb.shape[1]!;
    for (const id of ids) if (id < 0 || id >= tb.shape[0]!) throw new RangeError(`embed: token id ${id} outside vocabulary of ${tb.shape[0]}`);
    const idBuf = queue.uploadSmall(ids, "forget");
    const out = allocations.allocOutput([ids.length, hidden]);
    const args = { out: out.ptr, table: tb.ptr, ids: idBuf.ptr, hidden };
    queue.launch({ kernel: `embed_${tb.dtype}`, signature: "embed", grid: [ids.length, 1, 1], block: [threadsPerBlock, 1, 1], args, reads: [tb], cast: "forget" });
    allocations.freeAfterEnqueue(idBuf);
    return out;
  }

  gatherRows(x: Tensor, rows: Int32Array): CudaTensor {
    const { queue, allocations } = this;
    const t = asCudaTensor(x);
    const cols = t.shape[1]!;
    const ids = queue.uploadSmall(rows, "forget");
    const out = allocations.allocOutput([rows.length, cols]);
    const args = { out: out.ptr, x: t.ptr, rows: ids.ptr, n: rows.length, cols };
    queue.launch({ signature: "gather_rows", ...overElements(rows.length * cols), args, reads: [t], cast: "forget" });
    allocations.freeAfterEnqueue(ids);
    return out;
  }

  accumulateRows(acc: Tensor, y: Tensor, rows: Int32Array, scales: Float32Array): void {
    const { queue, allocations } = this;
    const a = asCudaTensor(acc);
    const t = asCudaTensor(y);
    const cols = a.shape[1]!;
    const ids = queue.uploadSmall(rows, "forget");
    const sc = queue.uploadSmall(scales, "forget");
    const args = { acc: a.ptr, y: t.ptr, rows: ids.ptr, scales: sc.ptr, n: rows.length, cols };
    queue.launch({ signature: "accumulate_rows", ...overElements(rows.length * cols), args, reads: [a, t], cast: "forget" });
    allocations.freeAfterEnqueue(ids, sc);
  }

  /** A copy of rows start .. start + count - 1 of x (f32), by the copy engine on the compute stream (the kept cast stays). */
  rows(x: Tensor, start: number, count: number): CudaTensor {
    const { allocations, driver, streams } = this;
    const t = asCudaTensor(x);
    const cols = t.shape[1]!;
    const out = allocations.allocOutput([count, cols]);
    streams.waitForCopiesInto([t]);
    driver.copyDtoDAsync(out.ptr, t.ptr + BigInt(start * cols * 4), count * cols * 4, streams.compute);
    return out;
  }

  writeRows(dst: Tensor | readonly Tensor[], dstRow: number, src: Tensor, srcRow: number, count: number): void {
    const { queue, casts, driver, streams } = this;
    const parts = rowRuns(dst, dstRow, count);
    if (parts.length === 0) return;
    const s = asCudaTensor(src);
    const { dtype, shape } = parts[0]!.dst;
    const cols = shape[shape.length - 1]!;
    const srcPtr = (done: number) => s.ptr + BigInt((srcRow + done) * cols * 4);
    streams.waitForCopiesInto([s, ...parts.map((p) => p.dst)]);
    casts.forget();
    if (dtype === "f32") {
      for (const p of parts) driver.copyDtoDAsync(asCudaTensor(p.dst).ptr + BigInt(p.row * cols * 4), srcPtr(p.done), p.rows * cols * 4, streams.compute);
      return;
    }
    // One launch for up to maxRowBlocks tensors of the run (a chunk's rows across a KV cache's blocks).
    for (let g = 0; g < parts.length; g += maxRowBlocks) {
      const group = parts.slice(g, g + maxRowBlocks);
      const rows = group.reduce((n, p) => n + p.rows, 0);
      if (rows * cols >= 2 ** 31) throw new RangeError(`writeRows: ${rows} x ${cols} values are more than one launch writes`);
      const blocks = Array.from({ length: maxRowBlocks }, (_, i) => (group[i] ? asCudaTensor(group[i].dst).ptr : 0n));
      const args = { dst: blocks, first: group[0]!.row, blockRows: rowsOf(group[0]!.dst), src: srcPtr(group[0]!.done), rows, cols };
      queue.launch({ kernel: `write_rows_${dtype}`, signature: "write_rows", ...overElements(rows * cols), args, reads: [], cast: "forget" });
    }
  }


  causalConv1d(x: Tensor, w: Tensor, seqs: readonly RecurrentSeq[]): CudaTensor {
    const { queue, allocations } = this;
    const xt = asCudaTensor(x);
    const wt = asCudaTensor(w);
    const [rows, channels] = xt.shape as [number, number];
    const kernel = wt.shape[wt.shape.length - 1]!;
    if (kernel !== 4) throw new BackendError("CUDA_CONV_KERNEL", `causal conv of width ${kernel}; the CUDA kernel is built for 4`, "use --backend cpu");
    const out = allocations.allocOutput([rows, channels]);
    const { info, states } = this.uploadSeqs(seqs);
    queue.launch({
      kernel: `causal_conv1d_4_${wt.dtype}`,
      signature: "causal_conv1d",
      grid: [Math.ceil(channels / threadsPerBlock), seqs.length, 1],
      block: [threadsPerBlock, 1, 1],
      args: { out: out.ptr, x: xt.ptr, w: wt.ptr, seqs: info.ptr, states: states.ptr, channels },
      reads: [xt, wt, ...seqs.map((s) => s.state)],
      cast: "forget",
    });
    allocations.freeAfterEnqueue(info, states);
    return out;
  }

  /**
   * Sequences of more than one row (prefill) take the chunked kernel, 32 rows at a time with their value columns split
   * across blocks; single rows (decode) the recurrent one.
   */
  gatedDeltaRule(qkv: Tensor, a: Tensor, b: Tensor, o: DeltaRuleOptions): CudaTensor {
    const { queue, allocations, kernels } = this;
    const x = asCudaTensor(qkv);
    const rows = x.shape[0]!;
    const recurrent = `gated_delta_rule_${o.kDim}`;
    const chunked = `gated_delta_chunked_${o.kDim}`;
    if (!kernels.has(recurrent) || o.vDim > 256) throw new BackendError("CUDA_DELTA_RULE_SHAPE", `gated delta rule with key head dim ${o.kDim} and value head dim ${o.vDim}; the CUDA kernel takes ${deltaRuleKeyDims.join(", ")} and at most 256`, "use --backend cpu");
    const out = allocations.allocOutput([rows, o.vHeads * o.vDim]);
    const aLog = queue.asF32(o.aLog, "forget");
    const dtBias = queue.asF32(o.dtBias, "forget");
    const useChunked = (s: RecurrentSeq) => s.rows > 1 && kernels.has(chunked);
    const launches = [
      { kernel: chunked, seqs: o.seqs.filter((s) => useChunked(s)), grid: [o.vHeads, Math.ceil(o.vDim / 32)], threads: 256, smem: deltaChunkSmem(o.kDim) },
      { kernel: recurrent, seqs: o.seqs.filter((s) => s.rows > 0 && !useChunked(s)), grid: [o.vHeads, 1], threads: Math.ceil(o.vDim / 32) * 32, smem: 0 },
    ] as const;
    for (const { kernel, seqs, grid, threads, smem } of launches) {
      if (seqs.length === 0) continue;
      const { info, states } = this.uploadSeqs(seqs);
      queue.launch({
        kernel,
        signature: "gated_delta_rule",
        grid: [grid[0], grid[1], seqs.length],
        block: [threads, 1, 1],
        args: { out: out.ptr, qkv: x.ptr, a: asCudaTensor(a).ptr, b: asCudaTensor(b).ptr, aLog: aLog.ptr, dtBias: dtBias.ptr, seqs: info.ptr, states: states.ptr, kHeads: o.kHeads, vHeads: o.vHeads, vDim: o.vDim },
        reads: [x, a, b, aLog, dtBias, ...seqs.map((s) => s.state)],
        smem,
        cast: "forget",
      });
      allocations.freeAfterEnqueue(info, states);
    }
    queue.freeF32Copy(aLog, o.aLog);
    queue.freeF32Copy(dtBias, o.dtBias);
    return out;
  }

  /** Row ranges and state pointers of the sequences of a recurrent op, as two small device buffers. */
  private uploadSeqs(seqs: readonly RecurrentSeq[]): { info: CudaTensor; states: CudaTensor } {
    const { queue } = this;
    return { info: queue.uploadSmall(Int32Array.from(seqs.flatMap((s) => [s.row, s.rows])), "forget"), states: queue.uploadSmall(BigUint64Array.from(seqs.map((s) => asCudaTensor(s.state).ptr)), "forget") };
  }


  async topK(x: Tensor, k: number): Promise<{ ids: Int32Array; values: Float32Array }> {
    const { queue, allocations, reads } = this;
    const t = asCudaTensor(x);
    const [rows, cols] = t.shape as [number, number];
    if (k > topKMax) return topKRows(await reads.read(t), rows, cols, k); // the kernel ranks at most topKMax in shared memory
    const out = allocations.alloc([2 * rows * k], "f32"); // ids, then values
    try {
      const args = { outIds: out.ptr, outValues: out.ptr + BigInt(4 * rows * k), x: t.ptr, cols, k };
      queue.launch({ signature: "top_k", grid: [rows, 1, 1], block: [1024, 1, 1], args, reads: [t], cast: "forget" });
      const raw = await reads.readRows(out, 0, 1);
      return { ids: new Int32Array(raw.buffer, raw.byteOffset, rows * k), values: new Float32Array(raw.buffer, raw.byteOffset + 4 * rows * k, rows * k) };
    } finally {
      allocations.free(out);
    }
  }

  penalize(x: Tensor, row: number, ids: Int32Array, factor: number): void {
    const { queue, allocations } = this;
    const t = asCudaTensor(x);
    const idBuf = queue.uploadSmall(ids, "forget");
    const args = { x: t.ptr + BigInt(4 * row * t.shape[1]!), ids: idBuf.ptr, n: ids.length, factor };
    queue.launch({ signature: "penalize", ...overElements(ids.length), args, reads: [t], cast: "forget" });
    allocations.freeAfterEnqueue(idBuf);
  }
}

export async function createCudaBackend(): Promise<Backend> {
  return CudaBackend.create();
}
