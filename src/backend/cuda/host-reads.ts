// Reads of device tensors by the host, through pinned buffers kept for reuse (a read takes one until its copy is done).
import { bf16ToF32Table, f16ToF32Table, tensorBytes } from "../dtype.js";
import { numel, type Tensor } from "../ops.js";
import type { Allocations } from "./allocations.js";
import type { Streams } from "./streams.js";
import { asCudaTensor, type CudaHostBuffer } from "./tensor.js";

export class HostReads {
  /** Pinned buffers for reads to the host, free ones. */
  private readonly readBuffers: CudaHostBuffer[] = [];

  constructor(
    private readonly streams: Streams,
    private readonly allocations: Allocations,
  ) {}

  /** Rows of t on the host, as they are in compute order at this call. */
  async readRows(t: Tensor, start: number, count: number): Promise<Uint8Array> {
    const c = asCudaTensor(t);
    const rowBytes = tensorBytes([c.shape[c.shape.length - 1]!], c.dtype);
    const h = this.takeReadBuffer(count * rowBytes);
    try {
      await this.streams.copyToHost(c, start * rowBytes, h, 0, count * rowBytes);
      return h.bytes.slice(0, count * rowBytes);
    } finally {
      this.readBuffers.push(h);
    }
  }

  /** Waits for t and returns its values as f32. */
  async read(t: Tensor): Promise<Float32Array> {
    const c = asCudaTensor(t);
    const raw = await this.readRows(c, 0, c.shape.length === 1 ? 1 : numel(c.shape) / c.shape[c.shape.length - 1]!);
    if (c.dtype === "f32") return new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4);
    const table = c.dtype === "bf16" ? bf16ToF32Table() : f16ToF32Table();
    const u16 = new Uint16Array(raw.buffer, raw.byteOffset, raw.byteLength / 2);
    return Float32Array.from(u16, (v) => table[v]!);
  }

  /** A pinned buffer of at least `bytes` for a read to the host; reads awaited together each get their own. */
  private takeReadBuffer(bytes: number): CudaHostBuffer {
    const fit = this.readBuffers.findIndex((b) => b.bytes.byteLength >= bytes);
    if (fit >= 0) return this.readBuffers.splice(fit, 1)[0]!;
    const small = this.readBuffers.pop();
    if (small) this.allocations.freeHost(small);
    return this.allocations.allocHost(Math.max(bytes, 1 << 20));
  }
}
