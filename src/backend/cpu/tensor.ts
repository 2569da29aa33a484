// The CPU backend's tensor: a typed array holding f32 values or raw 16-bit floats.
import type { DType } from "../dtype.js";
import { bf16ToF32Table, f16ToF32Table, mxfp4Row, tensorBytes } from "../dtype.js";
import type { Tensor } from "../ops.js";
import { numel } from "../ops.js";

type CpuData = Float32Array | Uint16Array | Uint8Array;

function allocData(shape: readonly number[], dtype: DType): CpuData {
  if (dtype === "f32") return new Float32Array(numel(shape));
  if (dtype === "mxfp4") return new Uint8Array(tensorBytes(shape, dtype));
  return new Uint16Array(numel(shape));
}

export class CpuTensor implements Tensor {
  readonly data: CpuData;

  constructor(
    readonly shape: readonly number[],
    readonly dtype: DType,
    data?: CpuData,
  ) {
    this.data = data ?? allocData(shape, dtype);
    if (this.data.byteLength !== tensorBytes(shape, dtype))
      throw new Error(`CpuTensor: ${this.data.byteLength} bytes for ${dtype} [${shape.join(", ")}]`);
  }

  get byteLength(): number {
    return this.data.byteLength;
  }

  /** Values as f32 (no copy for f32 tensors). */
  f32(): Float32Array {
    if (this.data instanceof Float32Array) return this.data;
    if (this.dtype === "mxfp4") {
      const [rows, cols] = this.shape as [number, number];
      const out = new Float32Array(rows * cols);
      for (let r = 0; r < rows; r++) this.rowF32(r, out.subarray(r * cols, (r + 1) * cols));
      return out;
    }
    const table = this.dtype === "bf16" ? bf16ToF32Table() : f16ToF32Table();
    const out = new Float32Array(this.data.length);
    for (let i = 0; i < out.length; i++) out[i] = table[this.data[i]!]!;
    return out;
  }

  /** Writes row `r` (length = last dim) as f32 into `out`. */
  rowF32(r: number, out: Float32Array): Float32Array {
    const cols = this.shape[this.shape.length - 1]!;
    const base = r * cols;
    if (this.data instanceof Float32Array) return this.data.subarray(base, base + cols);
    if (this.data instanceof Uint8Array) return mxfp4Row(this.data, this.shape[0]!, cols, r, out);
    const table = this.dtype === "bf16" ? bf16ToF32Table() : f16ToF32Table();
    const src = this.data;
    for (let i = 0; i < cols; i++) out[i] = table[src[base + i]!]!;
    return out;
  }
}

export function cpu(t: Tensor): CpuTensor {
  if (!(t instanceof CpuTensor)) throw new Error("cpu backend was given a tensor of another backend");
  return t;
}

/** A tensor over part of another's memory (no copy). */
export function cpuView(base: CpuTensor, byteOffset: number, shape: readonly number[], dtype: DType): CpuTensor {
  const n = numel(shape);
  const bytes = tensorBytes(shape, dtype);
  const start = base.data.byteOffset + byteOffset;
  if (byteOffset < 0 || byteOffset + bytes > base.data.byteLength)
    throw new RangeError(
      `view of ${bytes} bytes of ${dtype} at byte ${byteOffset} overruns a ${base.data.byteLength}-byte tensor`,
    );
  const data =
    dtype === "f32"
      ? new Float32Array(base.data.buffer, start, n)
      : dtype === "mxfp4"
        ? new Uint8Array(base.data.buffer, start, bytes)
        : new Uint16Array(base.data.buffer, start, n);
  return new CpuTensor(shape, dtype, data);
}

export function f32Tensor(shape: readonly number[], data?: Float32Array): CpuTensor {
  return new CpuTensor(shape, "f32", data);
}
