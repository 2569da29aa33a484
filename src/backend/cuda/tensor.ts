// The CUDA backend's handles: a tensor in a pooled device buffer, a pinned host buffer, and the 16-bit matmul input types.
import { tensorBytes, type DType } from "../dtype.js";
import type { HostBuffer, Tensor } from "../ops.js";
import type { Handle } from "./driver.js";
import type { DeviceBuffer } from "./memory.js";

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

/** `t` as a CUDA tensor; throws for a tensor of another backend. */
export function asCudaTensor(t: Tensor): CudaTensor {
  if (!(t instanceof CudaTensor)) throw new Error("cuda backend was given a tensor of another backend");
  return t;
}

/** Page-locked host memory (cuMemHostAlloc) and its address. */
export interface CudaHostBuffer extends HostBuffer {
  readonly ptr: Handle;
}

/** The 16-bit types tensor-core matmuls take their input in (tensorCoreInput). */
export type HalfType = "bf16" | "f16";
