// The CPU reference backend: every op as plain TypeScript; the twin every GPU kernel is tested against.
import type { DType } from "../dtype.js";
import { f32ToBf16, f32ToF16, fromF32, tensorBytes, tensorCoreInput } from "../dtype.js";
import type {
  AttentionOptions,
  AttentionPart,
  Backend,
  DeltaRuleOptions,
  Fence,
  GateActivation,
  HostBuffer,
  MemoryStats,
  RecurrentSeq,
  RopeOptions,
  Tensor,
} from "../ops.js";
import { topKRows } from "../../util/top-k.js";
import { rowRuns } from "../row-runs.js";
import { ScopeStack, runScoped } from "../scope.js";
import * as math from "./math.js";
import { CpuTensor, cpu, cpuView, f32Tensor } from "./tensor.js";

export class CpuBackend implements Backend {
  readonly name = "cpu" as const;
  readonly caps = { directIo: false };
  readonly memory: MemoryStats = { deviceBytes: 0, deviceBytesPeak: 0, hostBytes: 0, hostBytesPeak: 0, h2dBytes: 0 };
  private readonly live = new Set<CpuTensor>();
  private readonly hostLive = new Set<HostBuffer>();
  private readonly scopes = new ScopeStack<CpuTensor>((t) => this.free(t));
  private fences = 0;

  readonly deviceOverheadBytes = 0;

  /** With `emulateTensorCores`, matmuls round their activations as the CUDA backend's tensor cores do (to check it). */
  constructor(private readonly o: { emulateTensorCores?: boolean } = {}) {}

  /** The CPU backend's "device" is RAM: no budget unless the user sets one. */
  async defaultDeviceBudget(): Promise<number> {
    return Infinity;
  }

  setDeviceBudget(_bytes: number): void {}
  releaseSmallCache(): void {}

  deviceBytesFor(bytes: number): number {
    return bytes;
  }

  readonly workspaceSlack: number = 0;

  resetPeaks(): void {
    this.memory.deviceBytesPeak = this.memory.deviceBytes;
    this.memory.hostBytesPeak = this.memory.hostBytes;
  }

  alloc(shape: readonly number[], dtype: DType): Tensor {
    return this.track(new CpuTensor(shape, dtype));
  }

  view(base: Tensor, byteOffset: number, shape: readonly number[], dtype: DType): Tensor {
    return cpuView(cpu(base), byteOffset, shape, dtype);
  }

  async upload(t: Tensor, bytes: Uint8Array, offset = 0): Promise<void> {
    const dst = cpu(t);
    new Uint8Array(dst.data.buffer, dst.data.byteOffset + offset, bytes.byteLength).set(bytes);
    this.memory.h2dBytes += bytes.byteLength;
  }

  allocHost(byteLength: number): HostBuffer {
    const b = { bytes: new Uint8Array(byteLength) };
    this.hostLive.add(b);
    this.memory.hostBytes += byteLength;
    this.memory.hostBytesPeak = Math.max(this.memory.hostBytesPeak, this.memory.hostBytes);
    return b;
  }

  freeHost(b: HostBuffer): void {
    if (this.hostLive.delete(b)) this.memory.hostBytes -= b.bytes.byteLength;
  }

  async copyToDevice(
    dst: Tensor,
    dstOffset: number,
    src: HostBuffer,
    srcOffset: number,
    length: number,
  ): Promise<void> {
    await this.upload(dst, src.bytes.subarray(srcOffset, srcOffset + length), dstOffset);
  }

  async copyToHost(src: Tensor, srcOffset: number, dst: HostBuffer, dstOffset: number, length: number): Promise<void> {
    const s = cpu(src);
    dst.bytes.set(new Uint8Array(s.data.buffer, s.data.byteOffset + srcOffset, length), dstOffset);
  }

  fence(): Fence {
    return { id: ++this.fences };
  }

  writeRows(dst: Tensor | readonly Tensor[], dstRow: number, src: Tensor, srcRow: number, count: number): void {
    for (const part of rowRuns(dst, dstRow, count)) {
      const d = cpu(part.dst);
      const cols = d.shape[d.shape.length - 1]!;
      const values = cpu(src)
        .f32()
        .subarray((srcRow + part.done) * cols, (srcRow + part.done + part.rows) * cols);
      const base = part.row * cols;
      if (d.data instanceof Float32Array) {
        d.data.set(values, base);
      } else {
        const convert = d.dtype === "bf16" ? f32ToBf16 : f32ToF16;
        for (let i = 0; i < values.length; i++) d.data[base + i] = convert(values[i]!);
      }
    }
  }

  async read(t: Tensor): Promise<Float32Array> {
    return Float32Array.from(cpu(t).f32());
  }

  async topK(x: Tensor, k: number): Promise<{ ids: Int32Array; values: Float32Array }> {
    const c = cpu(x);
    return topKRows(c.f32(), c.shape[0]!, c.shape[1]!, k);
  }

  async readRows(t: Tensor, start: number, count: number): Promise<Uint8Array> {
    const c = cpu(t);
    const rowBytes = tensorBytes([c.shape[c.shape.length - 1]!], c.dtype);
    return new Uint8Array(c.data.buffer, c.data.byteOffset + start * rowBytes, count * rowBytes).slice();
  }

  free(t: Tensor): void {
    const c = cpu(t);
    if (this.live.delete(c)) this.memory.deviceBytes -= c.byteLength;
  }

  pushScope(): void {
    this.scopes.push();
  }

  popScope(keep: readonly Tensor[] = []): void {
    this.scopes.pop(keep);
  }

  async sync(): Promise<void> {}

  async dispose(): Promise<void> {
    for (const t of [...this.live]) this.free(t);
    for (const b of [...this.hostLive]) this.freeHost(b);
  }

  embed(table: Tensor, ids: Int32Array): Tensor {
    return this.result(math.embed(cpu(table), ids));
  }
  matmul(x: Tensor, w: Tensor, bias?: Tensor): Tensor {
    let xc = cpu(x);
    const half = this.o.emulateTensorCores
      ? tensorCoreInput(xc.shape[0]!, xc.shape[1]!, w.shape[0]!, w.dtype)
      : undefined;
    if (half) xc = new CpuTensor(xc.shape, half, new Uint16Array(fromF32(xc.f32(), half).buffer));
    return this.result(math.matmul(xc, cpu(w), bias && cpu(bias)));
  }
  rmsNorm(x: Tensor, w: Tensor, o: { eps: number; offset?: number }): Tensor {
    return this.result(math.rmsNorm(cpu(x), cpu(w), o.eps, o.offset ?? 0));
  }
  rope(x: Tensor, o: RopeOptions): Tensor {
    return this.result(math.rope(cpu(x), o));
  }
  attention(q: Tensor, o: AttentionOptions): Tensor {
    return this.result(math.attention(cpu(q), o).out);
  }
  attentionPart(q: Tensor, o: AttentionOptions): AttentionPart {
    const { out, lse } = math.attention(cpu(q), o);
    return { out: this.result(out), lse: this.result(lse) };
  }
  mergeAttention(a: AttentionPart, b: AttentionPart): AttentionPart {
    const { out, lse } = math.mergeAttention(
      { out: cpu(a.out), lse: cpu(a.lse) },
      { out: cpu(b.out), lse: cpu(b.lse) },
    );
    return { out: this.result(out), lse: this.result(lse) };
  }
  gatedActivation(gate: Tensor, up: Tensor, act: GateActivation): Tensor {
    return this.result(math.gatedActivation(cpu(gate), cpu(up), act));
  }
  add(a: Tensor, b: Tensor): Tensor {
    return this.result(math.add(cpu(a), cpu(b)));
  }
  scale(x: Tensor, factor: number): Tensor {
    return this.result(math.scale(cpu(x), factor));
  }
  softcap(x: Tensor, cap: number): Tensor {
    return this.result(math.softcap(cpu(x), cap));
  }
  causalConv1d(x: Tensor, w: Tensor, seqs: readonly RecurrentSeq[]): Tensor {
    return this.result(math.causalConv1d(cpu(x), cpu(w), seqs));
  }
  gatedDeltaRule(qkv: Tensor, a: Tensor, b: Tensor, o: DeltaRuleOptions): Tensor {
    return this.result(math.gatedDeltaRule(cpu(qkv), cpu(a), cpu(b), o));
  }
  clampedSwiglu(gateUp: Tensor, o: { alpha: number; limit: number }): Tensor {
    return this.result(math.clampedSwiglu(cpu(gateUp), o.alpha, o.limit));
  }
  zeros(shape: readonly number[]): Tensor {
    return this.result(f32Tensor(shape));
  }
  gatherRows(x: Tensor, rows: Int32Array): Tensor {
    return this.result(math.gatherRows(cpu(x), rows));
  }
  penalize(x: Tensor, row: number, ids: Int32Array, factor: number): void {
    const c = cpu(x);
    const at = row * c.shape[1]!;
    const values = c.data as Float32Array;
    const f = Math.fround(factor); // as the GPU kernel gets it
    for (const id of ids) values[at + id] = values[at + id]! < 0 ? values[at + id]! * f : values[at + id]! / f;
  }
  accumulateRows(acc: Tensor, y: Tensor, rows: Int32Array, scales: Float32Array): void {
    math.accumulateRows(cpu(acc), cpu(y), rows, scales);
  }
  rows(x: Tensor, start: number, count: number): Tensor {
    const c = cpu(x);
    const cols = c.shape[1]!;
    return this.result(
      f32Tensor([count, cols], Float32Array.from(c.f32().subarray(start * cols, (start + count) * cols))),
    );
  }

  scoped<T extends Tensor | Promise<Tensor>>(fn: () => T): T {
    return runScoped(this, fn);
  }

  protected track(t: CpuTensor): CpuTensor {
    this.live.add(t);
    this.memory.deviceBytes += t.byteLength;
    this.memory.deviceBytesPeak = Math.max(this.memory.deviceBytesPeak, this.memory.deviceBytes);
    return t;
  }

  private result(t: CpuTensor): CpuTensor {
    return this.scopes.add(this.track(t));
  }
}
