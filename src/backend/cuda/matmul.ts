// The CUDA matmul: which kernel takes x [m, k] times w [n, k]^T. Rows that pay for tensor cores go in 16 bits (a cast
// kept in the CastCache, shared by the matmuls of one input): 5-64 rows of 16-bit weights on the skinny kernel, more on
// the tiled GEMM; otherwise f32 rows on the GEMV (up to 16 rows) or the SIMT GEMM.
import { tensorCoreInput } from "../dtype.js";
import type { Tensor } from "../ops.js";
import type { Allocations } from "./allocations.js";
import type { CastCache } from "./cast-cache.js";
import type { ComputeQueue } from "./compute-queue.js";
import {
  gemmKernel,
  gemmSmem,
  gemmTiles,
  gemvColumns,
  overElements,
  threadsPerBlock,
  type Kernels,
} from "./kernels.js";
import { asCudaTensor, type CudaTensor, type HalfType } from "./tensor.js";
import type { TileChoice } from "./tiles.js";

export interface MatmulParts {
  readonly queue: ComputeQueue;
  readonly allocations: Allocations;
  /** Where the 16-bit input is found or kept: every enqueue of a matmul keeps the cast. */
  readonly casts: CastCache;
  readonly tiles: TileChoice;
  readonly kernels: Pick<Kernels, "has">;
}

export class CudaMatmul {
  constructor(private readonly parts: MatmulParts) {}

  matmul(x: Tensor, w: Tensor, bias?: Tensor): CudaTensor {
    const { queue, allocations, tiles, kernels } = this.parts;
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
        queue.launch({
          kernel,
          signature: "matmul",
          grid: [Math.ceil(n / 32), 1, 1],
          block: [threadsPerBlock, 1, 1],
          args: { ...args, x: xh.ptr },
          reads: [wt, b],
          cast: "keep",
        });
      } else if (t.tma) {
        const xMap = { dtype: half, ptr: xh.ptr, rows: m, cols: k, boxRows: t.rows };
        const wMap = { dtype: half, ptr: wt.ptr, rows: n, cols: k, boxRows: t.cols };
        const tmaArgs = { y: args.y, xMap, wMap, bias: args.bias, M: m, N: n, K: k };
        queue.launch({
          kernel: mma,
          signature: "gemm_tma",
          grid: [Math.ceil(n / t.cols), Math.ceil(m / t.rows), 1],
          block: [t.threads, 1, 1],
          args: tmaArgs,
          reads: [wt, b],
          smem: gemmSmem(tile),
          cast: "keep",
        });
      } else {
        queue.launch({
          kernel: mma,
          signature: "matmul",
          grid: [Math.ceil(n / t.cols), Math.ceil(m / t.rows), 1],
          block: [t.threads, 1, 1],
          args: { ...args, x: xh.ptr },
          reads: [wt, b],
          smem: gemmSmem(tile),
          cast: "keep",
        });
      }
    } else if (m <= 16) {
      const rowsPerLaunch = m === 1 ? 1 : m <= 4 ? 4 : 16;
      const grid = [Math.ceil(n / (8 * gemvColumns(rowsPerLaunch, wt.dtype))), 1, 1] as const;
      queue.launch({
        kernel: `gemv${rowsPerLaunch}_${wt.dtype}`,
        signature: "matmul",
        grid,
        block: [threadsPerBlock, 1, 1],
        args,
        reads,
        cast: "keep",
      });
    } else if (wt.dtype === "mxfp4") {
      // Few outputs (a router) or no tensor-core GEMM here: the decode kernel, 16 rows at a time.
      for (let r = 0; r < m; r += 16) {
        const rows = { y: out.ptr + BigInt(r * n * 4), x: xt.ptr + BigInt(r * k * 4), M: Math.min(16, m - r) };
        queue.launch({
          kernel: "gemv16_mxfp4",
          signature: "matmul",
          grid: [Math.ceil(n / 8), 1, 1],
          block: [threadsPerBlock, 1, 1],
          args: { ...args, ...rows },
          reads,
          cast: "keep",
        });
      }
    } else {
      queue.launch({
        kernel: `gemm_simt_${wt.dtype}`,
        signature: "matmul",
        grid: [Math.ceil(n / 64), Math.ceil(m / 64), 1],
        block: [threadsPerBlock, 1, 1],
        args,
        reads,
        cast: "keep",
      });
    }
    queue.freeF32Copy(b, bias);
    return out;
  }

  /**
   * x in 16 bits for a tensor-core matmul: the kept cast when it is x's in this type (q, k and v, or gate and up, share
   * one; RMSNorm and the gated activation leave one as a twin), else a new one, kept in place of the old.
   */
  private inputInHalf(x: CudaTensor, half: HalfType): CudaTensor {
    const { queue, allocations, casts } = this.parts;
    const kept = casts.find(x, half);
    if (kept) return kept;
    casts.forget();
    const [m, k] = x.shape as [number, number];
    const xh = allocations.alloc([m, k], half);
    queue.launch({
      kernel: `cast_rows_${half}`,
      signature: "cast_rows",
      ...overElements(m * k),
      args: { out: xh.ptr, x: x.ptr, n: m * k },
      reads: [x],
      cast: "keep",
    });
    casts.remember(x, half, xh);
    return xh;
  }
}
