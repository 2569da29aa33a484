// How ops put work on the CUDA backend's compute stream: a kernel launch with named arguments, after the copies into
// what it reads; small host data uploaded in compute order; 16-bit tensors read as f32. Each enqueue says what it does
// to the kept 16-bit cast (CastCache): an op that may write any tensor forgets it, a matmul's own work keeps it.
import { numel, type Tensor } from "../ops.js";
import type { Allocations } from "./allocations.js";
import type { CastCache } from "./cast-cache.js";
import { orderedArgs, type KernelArgs, type KernelSignature } from "./kernel-params.js";
import { overElements, type Dim3, type Kernels } from "./kernels.js";
import type { Streams } from "./streams.js";
import { asCudaTensor, type CudaTensor } from "./tensor.js";

/**
 * What an enqueue does to the kept cast, at the point it is enqueued (after the op's allocations so far, as ever):
 * "forget" for every op but a matmul (it may write the tensor the cast was made from), "keep" for a matmul's own.
 */
export type CastEffect = "forget" | "keep";

export interface LaunchSpec<S extends KernelSignature> {
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
  readonly cast: CastEffect;
}

export interface ComputeQueueParts {
  readonly kernels: Kernels;
  readonly streams: Streams;
  readonly allocations: Allocations;
  readonly casts: CastCache;
}

export class ComputeQueue {
  constructor(private readonly parts: ComputeQueueParts) {}

  /** Launches a kernel on the compute stream once the copies into what it reads have landed, after doing `spec.cast`. */
  launch<S extends KernelSignature>(spec: LaunchSpec<S>): void {
    const kernel = spec.kernel ?? spec.signature;
    const args = orderedArgs(spec.signature, kernel, spec.args);
    this.parts.streams.waitForCopiesInto(spec.reads);
    this.enqueue(kernel, spec.cast, () =>
      this.parts.kernels.launch(kernel, spec.grid, spec.block, spec.smem ?? 0, this.parts.streams.compute, args),
    );
  }

  /** Enqueues `work` on the compute stream (timed as `name` while a profile runs), after doing `cast` to the kept cast. */
  enqueue(name: string, cast: CastEffect, work: () => void): void {
    if (cast === "forget") this.parts.casts.forget();
    this.parts.streams.enqueue(name, work);
  }

  /**
   * Small host data (ids, positions, block lists) in a temporary device buffer, copied in compute order through pinned
   * memory; an op's result (scoped), else the op frees it with freeAfterEnqueue.
   */
  uploadSmall(data: ArrayBufferView, cast: CastEffect): CudaTensor {
    const t = this.parts.allocations.allocOutput([Math.ceil(data.byteLength / 4)]);
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    if (bytes.byteLength === 0) return t;
    this.enqueue("copy small to device", cast, () => this.parts.streams.uploadSmall(t.ptr, bytes));
    return t;
  }

  /** The tensor itself when it is f32, else an f32 copy (biases and sinks stored in 16 bits; kernels read f32). */
  asF32(t: Tensor, cast: CastEffect): CudaTensor {
    const c = asCudaTensor(t);
    if (c.dtype === "f32") return c;
    const n = numel(c.shape);
    const out = this.parts.allocations.allocOutput(c.shape);
    this.launch({
      kernel: `cast_f32_${c.dtype}`,
      signature: "cast_f32",
      ...overElements(n),
      args: { out: out.ptr, x: c.ptr, n },
      reads: [c],
      cast,
    });
    return out;
  }

  /** Frees what `asF32` made for `original` once the ops using it are enqueued (nothing when it was f32 already). */
  freeF32Copy(converted: CudaTensor | undefined, original: Tensor | undefined): void {
    if (converted && converted !== original) this.parts.allocations.freeAfterEnqueue(converted);
  }
}
