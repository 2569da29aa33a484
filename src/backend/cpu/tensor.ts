// The CPU backend's tensor: a typed array holding f32 values or raw 16-bit floats.
import type { DType } from "../dtype.js";
import { dtypeBytes, bf16ToF32Table, f16ToF32Table } from "../dtype.js";
import type { Tensor } from "../ops.js";
import { numel } from "../ops.js";

export class CpuTensor implements Tensor {
  readonly data: Float32Array | Uint16Array;

  constructor(
    readonly shape: readonly number[],
    readonly dtype: DType,
    data?: Float32Array | Uint16Array,
  ) {
    const n = numel(shape);
    this.data = data ?? (dtype === "f32" ? new Float32Array(n) : new Uint16Array(n));
    if (this.data.length !== n) throw new Error(`CpuTensor: ${this.data.length} values for shape [${shape.join(", ")}]`);
  }

  get byteLength(): number {
    return this.data.length * dtypeBytes[this.dtype];
  }

  /** Values as f32 (no copy for f32 tensors). */
  f32(): Float32Array {
    if (this.data instanceof Float32Array) return this.data;
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
  const start = base.data.byteOffset + byteOffset;
  if (byteOffset < 0 || byteOffset + n * dtypeBytes[dtype] > base.data.byteLength) throw new RangeError(`view of ${n} ${dtype} at byte ${byteOffset} overruns a ${base.data.byteLength}-byte tensor`);
  const data = dtype === "f32" ? new Float32Array(base.data.buffer, start, n) : new Uint16Array(base.data.buffer, start, n);
  return new CpuTensor(shape, dtype, data);
}

export function f32Tensor(shape: readonly number[], data?: Float32Array): CpuTensor {
  return new CpuTensor(shape, "f32", data);
}
