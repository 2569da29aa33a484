// CUDA ops that move whole rows: embedding lookup, gathering and accumulating rows (mixture-of-experts), copying a
// range of rows, and writing f32 rows into a run of tensors in their dtype (a KV cache's blocks).
import type { Tensor } from "../ops.js";
import { rowRuns, rowsOf } from "../row-runs.js";
import type { Allocations } from "./allocations.js";
import type { CastCache } from "./cast-cache.js";
import type { ComputeQueue } from "./compute-queue.js";
import type { Driver } from "./driver.js";
import { maxRowBlocks } from "./kernel-params.js";
import { overElements, threadsPerBlock } from "./kernels.js";
import type { Streams } from "./streams.js";
import { asCudaTensor, type CudaTensor } from "./tensor.js";

export interface RowsParts {
  readonly queue: ComputeQueue;
  readonly allocations: Allocations;
  /** writeRows forgets the kept cast before its copies, which do not go through the queue. */
  readonly casts: CastCache;
  /** Copies of f32 rows, on the compute stream, after the copies into their tensors. */
  readonly driver: Driver;
  readonly streams: Streams;
}

export class CudaRows {
  constructor(private readonly parts: RowsParts) {}

  embed(table: Tensor, ids: Int32Array): CudaTensor {
    const { queue, allocations } = this.parts;
    const tb = asCudaTensor(table);
    const hidden = tb.shape[1]!;
    for (const id of ids)
      if (id < 0 || id >= tb.shape[0]!)
        throw new RangeError(`embed: token id ${id} outside vocabulary of ${tb.shape[0]}`);
    const idBuf = queue.uploadSmall(ids, "forget");
    const out = allocations.allocOutput([ids.length, hidden]);
    const args = { out: out.ptr, table: tb.ptr, ids: idBuf.ptr, hidden };
    queue.launch({
      kernel: `embed_${tb.dtype}`,
      signature: "embed",
      grid: [ids.length, 1, 1],
      block: [threadsPerBlock, 1, 1],
      args,
      reads: [tb],
      cast: "forget",
    });
    allocations.freeAfterEnqueue(idBuf);
    return out;
  }

  gatherRows(x: Tensor, rows: Int32Array): CudaTensor {
    const { queue, allocations } = this.parts;
    const t = asCudaTensor(x);
    const cols = t.shape[1]!;
    const ids = queue.uploadSmall(rows, "forget");
    const out = allocations.allocOutput([rows.length, cols]);
    const args = { out: out.ptr, x: t.ptr, rows: ids.ptr, n: rows.length, cols };
    queue.launch({ signature: "gather_rows", ...overElements(rows.length * cols), args, reads: [t], cast: "forget" });
    allocations.freeAfterEnqueue(ids);
    return out;
  }

  accumulateRows(acc: Tensor, y: Tensor, rows: Int32Array, scales: Float32Array): void {
    const { queue, allocations } = this.parts;
    const a = asCudaTensor(acc);
    const t = asCudaTensor(y);
    const cols = a.shape[1]!;
    const ids = queue.uploadSmall(rows, "forget");
    const sc = queue.uploadSmall(scales, "forget");
    const args = { acc: a.ptr, y: t.ptr, rows: ids.ptr, scales: sc.ptr, n: rows.length, cols };
    queue.launch({
      signature: "accumulate_rows",
      ...overElements(rows.length * cols),
      args,
      reads: [a, t],
      cast: "forget",
    });
    allocations.freeAfterEnqueue(ids, sc);
  }

  /** A copy of rows start .. start + count - 1 of x (f32), by the copy engine on the compute stream (the kept cast stays). */
  rows(x: Tensor, start: number, count: number): CudaTensor {
    const { allocations, driver, streams } = this.parts;
    const t = asCudaTensor(x);
    const cols = t.shape[1]!;
    const out = allocations.allocOutput([count, cols]);
    streams.waitForCopiesInto([t]);
    driver.copyDtoDAsync(out.ptr, t.ptr + BigInt(start * cols * 4), count * cols * 4, streams.compute);
    return out;
  }

  writeRows(dst: Tensor | readonly Tensor[], dstRow: number, src: Tensor, srcRow: number, count: number): void {
    const { queue, casts, driver, streams } = this.parts;
    const parts = rowRuns(dst, dstRow, count);
    if (parts.length === 0) return;
    const s = asCudaTensor(src);
    const { dtype, shape } = parts[0]!.dst;
    const cols = shape[shape.length - 1]!;
    const srcPtr = (done: number) => s.ptr + BigInt((srcRow + done) * cols * 4);
    streams.waitForCopiesInto([s, ...parts.map((p) => p.dst)]);
    casts.forget();
    if (dtype === "f32") {
      for (const p of parts)
        driver.copyDtoDAsync(
          asCudaTensor(p.dst).ptr + BigInt(p.row * cols * 4),
          srcPtr(p.done),
          p.rows * cols * 4,
          streams.compute,
        );
      return;
    }
    // One launch for up to maxRowBlocks tensors of the run (a chunk's rows across a KV cache's blocks).
    for (let g = 0; g < parts.length; g += maxRowBlocks) {
      const group = parts.slice(g, g + maxRowBlocks);
      const rows = group.reduce((n, p) => n + p.rows, 0);
      if (rows * cols >= 2 ** 31)
        throw new RangeError(`writeRows: ${rows} x ${cols} values are more than one launch writes`);
      const blocks = Array.from({ length: maxRowBlocks }, (_, i) => (group[i] ? asCudaTensor(group[i].dst).ptr : 0n));
      const args = {
        dst: blocks,
        first: group[0]!.row,
        blockRows: rowsOf(group[0]!.dst),
        src: srcPtr(group[0]!.done),
        rows,
        cols,
      };
      queue.launch({
        kernel: `write_rows_${dtype}`,
        signature: "write_rows",
        ...overElements(rows * cols),
        args,
        reads: [],
        cast: "forget",
      });
    }
  }
}
