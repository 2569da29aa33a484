// CUDA ops of recurrent layers (Qwen3-Next): the short causal convolution and the gated delta rule, each sequence
// updating its state in place.
import { BackendError } from "../../errors.js";
import type { DeltaRuleOptions, RecurrentSeq, Tensor } from "../ops.js";
import type { Allocations } from "./allocations.js";
import type { ComputeQueue } from "./compute-queue.js";
import { deltaChunkSmem, deltaRuleKeyDims, threadsPerBlock, type Kernels } from "./kernels.js";
import { asCudaTensor, type CudaTensor } from "./tensor.js";

export interface RecurrentParts {
  readonly queue: ComputeQueue;
  readonly allocations: Allocations;
  readonly kernels: Pick<Kernels, "has">;
}

export class CudaRecurrent {
  constructor(private readonly parts: RecurrentParts) {}

  causalConv1d(x: Tensor, w: Tensor, seqs: readonly RecurrentSeq[]): CudaTensor {
    const { queue, allocations } = this.parts;
    const xt = asCudaTensor(x);
    const wt = asCudaTensor(w);
    const [rows, channels] = xt.shape as [number, number];
    const kernel = wt.shape[wt.shape.length - 1]!;
    if (kernel !== 4)
      throw new BackendError(
        "CUDA_CONV_KERNEL",
        `causal conv of width ${kernel}; the CUDA kernel is built for 4`,
        "use --backend cpu",
      );
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
    const { queue, allocations, kernels } = this.parts;
    const x = asCudaTensor(qkv);
    const rows = x.shape[0]!;
    const recurrent = `gated_delta_rule_${o.kDim}`;
    const chunked = `gated_delta_chunked_${o.kDim}`;
    if (!kernels.has(recurrent) || o.vDim > 256)
      throw new BackendError(
        "CUDA_DELTA_RULE_SHAPE",
        `gated delta rule with key head dim ${o.kDim} and value head dim ${o.vDim}; the CUDA kernel takes ${deltaRuleKeyDims.join(", ")} and at most 256`,
        "use --backend cpu",
      );
    const out = allocations.allocOutput([rows, o.vHeads * o.vDim]);
    const aLog = queue.asF32(o.aLog, "forget");
    const dtBias = queue.asF32(o.dtBias, "forget");
    const useChunked = (s: RecurrentSeq) => s.rows > 1 && kernels.has(chunked);
    const launches = [
      {
        kernel: chunked,
        seqs: o.seqs.filter((s) => useChunked(s)),
        grid: [o.vHeads, Math.ceil(o.vDim / 32)],
        threads: 256,
        smem: deltaChunkSmem(o.kDim),
      },
      {
        kernel: recurrent,
        seqs: o.seqs.filter((s) => s.rows > 0 && !useChunked(s)),
        grid: [o.vHeads, 1],
        threads: Math.ceil(o.vDim / 32) * 32,
        smem: 0,
      },
    ] as const;
    for (const { kernel, seqs, grid, threads, smem } of launches) {
      if (seqs.length === 0) continue;
      const { info, states } = this.uploadSeqs(seqs);
      queue.launch({
        kernel,
        signature: "gated_delta_rule",
        grid: [grid[0], grid[1], seqs.length],
        block: [threads, 1, 1],
        args: {
          out: out.ptr,
          qkv: x.ptr,
          a: asCudaTensor(a).ptr,
          b: asCudaTensor(b).ptr,
          aLog: aLog.ptr,
          dtBias: dtBias.ptr,
          seqs: info.ptr,
          states: states.ptr,
          kHeads: o.kHeads,
          vHeads: o.vHeads,
          vDim: o.vDim,
        },
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
    const { queue } = this.parts;
    return {
      info: queue.uploadSmall(Int32Array.from(seqs.flatMap((s) => [s.row, s.rows])), "forget"),
      states: queue.uploadSmall(BigUint64Array.from(seqs.map((s) => asCudaTensor(s.state).ptr)), "forget"),
    };
  }
}
