// CUDA ops over activations value by value or row by row: RMSNorm and the gated activation (which also write the next
// matmul's 16-bit input, kept in the CastCache), RoPE, add, scale, soft-capping, gpt-oss's clamped SwiGLU, zeros.
import { numel, type GateActivation, type RopeOptions, type Tensor } from "../ops.js";
import type { Allocations } from "./allocations.js";
import type { CastCache } from "./cast-cache.js";
import type { ComputeQueue } from "./compute-queue.js";
import type { Driver } from "./driver.js";
import { overElements, threadsPerBlock } from "./kernels.js";
import type { Streams } from "./streams.js";
import { asCudaTensor, type CudaTensor } from "./tensor.js";

export interface ElementwiseParts {
  readonly queue: ComputeQueue;
  readonly allocations: Allocations;
  /** RMSNorm and the gated activation keep their 16-bit twins here, in the type the latest matmul cast to. */
  readonly casts: CastCache;
  /** zeros: a memset on the compute stream. */
  readonly driver: Driver;
  readonly streams: Streams;
}

export class CudaElementwise {
  constructor(private readonly parts: ElementwiseParts) {}

  rmsNorm(x: Tensor, w: Tensor, o: { eps: number; offset?: number }): CudaTensor {
    const { queue, allocations, casts } = this.parts;
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
    const { queue, allocations, casts } = this.parts;
    const g = asCudaTensor(gate);
    const u = asCudaTensor(up);
    const n = numel(g.shape);
    const out = allocations.allocOutput(g.shape);
    // Rows that went through tensor cores (gate and up) go on to the down projection: the kernel also writes its 16-bit
    // input, which the matmul then finds, as it finds one cast shared by q, k and v.
    const half = g.shape[0]! > 4 ? casts.lastHalf : undefined;
    const twin = half ? allocations.alloc(g.shape, half) : undefined;
    const twinKind = half === undefined ? 0 : half === "bf16" ? 1 : 2;
    const args = {
      out: out.ptr,
      gate: g.ptr,
      up: u.ptr,
      n,
      act: { silu: 0, gelu_tanh: 1, sigmoid: 2 }[act],
      twin: twin?.ptr ?? 0n,
      twinKind,
    };
    queue.launch({ signature: "gated_act", ...overElements(n), args, reads: [g, u], cast: "forget" });
    if (twin) casts.remember(out, half!, twin);
    return out;
  }

  rope(x: Tensor, o: RopeOptions): CudaTensor {
    const { queue, allocations } = this.parts;
    const xt = asCudaTensor(x);
    const [rows, cols] = xt.shape as [number, number];
    const heads = cols / o.headDim;
    const half = o.invFreq.length;
    const pos = queue.uploadSmall(o.positions, "forget");
    const freq = queue.uploadSmall(o.invFreq, "forget");
    const out = allocations.allocOutput(xt.shape);
    const args = {
      out: out.ptr,
      x: xt.ptr,
      positions: pos.ptr,
      invFreq: freq.ptr,
      rows,
      heads,
      headDim: o.headDim,
      half,
      scale: o.scale,
    };
    queue.launch({ signature: "rope", ...overElements(rows * heads * half), args, reads: [xt], cast: "forget" });
    allocations.freeAfterEnqueue(pos, freq);
    return out;
  }

  add(a: Tensor, b: Tensor): CudaTensor {
    const x = asCudaTensor(a);
    const y = asCudaTensor(b);
    const n = numel(x.shape);
    if (n !== numel(y.shape)) throw new Error(`add: ${n} vs ${numel(y.shape)} values`);
    const out = this.parts.allocations.allocOutput(x.shape);
    this.parts.queue.launch({
      signature: "add_f32",
      ...overElements(n),
      args: { out: out.ptr, a: x.ptr, b: y.ptr, n },
      reads: [x, y],
      cast: "forget",
    });
    return out;
  }

  scale(x: Tensor, factor: number): CudaTensor {
    const t = asCudaTensor(x);
    const n = numel(t.shape);
    const out = this.parts.allocations.allocOutput(t.shape);
    this.parts.queue.launch({
      signature: "scale_f32",
      ...overElements(n),
      args: { out: out.ptr, x: t.ptr, s: factor, n },
      reads: [t],
      cast: "forget",
    });
    return out;
  }

  softcap(x: Tensor, cap: number): CudaTensor {
    const t = asCudaTensor(x);
    const n = numel(t.shape);
    const out = this.parts.allocations.allocOutput(t.shape);
    this.parts.queue.launch({
      signature: "softcap_f32",
      ...overElements(n),
      args: { out: out.ptr, x: t.ptr, cap, n },
      reads: [t],
      cast: "forget",
    });
    return out;
  }

  clampedSwiglu(gateUp: Tensor, o: { alpha: number; limit: number }): CudaTensor {
    const x = asCudaTensor(gateUp);
    const [rows, cols] = x.shape as [number, number];
    const n = (rows * cols) / 2;
    const out = this.parts.allocations.allocOutput([rows, cols / 2]);
    this.parts.queue.launch({
      signature: "clamped_swiglu",
      ...overElements(n),
      args: { out: out.ptr, x: x.ptr, n, alpha: o.alpha, limit: o.limit },
      reads: [x],
      cast: "forget",
    });
    return out;
  }

  /** f32 zeros, by a memset on the compute stream (which leaves the kept cast alone). */
  zeros(shape: readonly number[]): CudaTensor {
    const out = this.parts.allocations.allocOutput(shape);
    this.parts.driver.memsetAsync(out.ptr, 0, out.byteLength, this.parts.streams.compute);
    return out;
  }
}
