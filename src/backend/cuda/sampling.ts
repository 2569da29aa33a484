// CUDA ops of sampling: the top k of each row (only those cross to the host) and the repetition penalty.
import { topKRows } from "../../util/top-k.js";
import type { Tensor } from "../ops.js";
import type { Allocations } from "./allocations.js";
import type { ComputeQueue } from "./compute-queue.js";
import type { HostReads } from "./host-reads.js";
import { overElements, topKMax } from "./kernels.js";
import { asCudaTensor } from "./tensor.js";

export interface SamplingParts {
  readonly queue: ComputeQueue;
  readonly allocations: Allocations;
  readonly reads: HostReads;
}

export class CudaSampling {
  constructor(private readonly parts: SamplingParts) {}

  async topK(x: Tensor, k: number): Promise<{ ids: Int32Array; values: Float32Array }> {
    const { queue, allocations, reads } = this.parts;
    const t = asCudaTensor(x);
    const [rows, cols] = t.shape as [number, number];
    if (k > topKMax) return topKRows(await reads.read(t), rows, cols, k); // the kernel ranks at most topKMax in shared memory
    const out = allocations.alloc([2 * rows * k], "f32"); // ids, then values
    try {
      const args = { outIds: out.ptr, outValues: out.ptr + BigInt(4 * rows * k), x: t.ptr, cols, k };
      queue.launch({ signature: "top_k", grid: [rows, 1, 1], block: [1024, 1, 1], args, reads: [t], cast: "forget" });
      const raw = await reads.readRows(out, 0, 1);
      return {
        ids: new Int32Array(raw.buffer, raw.byteOffset, rows * k),
        values: new Float32Array(raw.buffer, raw.byteOffset + 4 * rows * k, rows * k),
      };
    } finally {
      allocations.free(out);
    }
  }

  penalize(x: Tensor, row: number, ids: Int32Array, factor: number): void {
    const { queue, allocations } = this.parts;
    const t = asCudaTensor(x);
    const idBuf = queue.uploadSmall(ids, "forget");
    const args = { x: t.ptr + BigInt(4 * row * t.shape[1]!), ids: idBuf.ptr, n: ids.length, factor };
    queue.launch({ signature: "penalize", ...overElements(ids.length), args, reads: [t], cast: "forget" });
    allocations.freeAfterEnqueue(idBuf);
  }
}
