// Where rows written into a run of tensors of one shape (a KV cache's blocks) land, for Backend.writeRows.
import type { Tensor } from "./ops.js";

export interface RowRun {
  /** The tensor, and the rows of it written (from `row`). */
  readonly dst: Tensor;
  readonly row: number;
  readonly rows: number;
  /** Rows written before this part (into the tensors before it). */
  readonly done: number;
}

/** Rows of `t`: its elements over its last dimension. */
export function rowsOf(t: Tensor): number {
  return t.shape.reduce((n, d) => n * d, 1) / t.shape[t.shape.length - 1]!;
}

/** `count` rows from row `dstRow` of `dst` (one tensor, or a run of tensors of one shape), split by tensor. */
export function rowRuns(dst: Tensor | readonly Tensor[], dstRow: number, count: number): RowRun[] {
  const run: readonly Tensor[] = Array.isArray(dst) ? dst : [dst as Tensor];
  const rowsEach = rowsOf(run[0]!);
  if (dstRow < 0 || dstRow + count > rowsEach * run.length)
    throw new RangeError(
      `writeRows: rows ${dstRow}..${dstRow + count} do not fit ${run.length} x [${run[0]!.shape.join(", ")}]`,
    );
  const parts: RowRun[] = [];
  for (let done = 0; done < count;) {
    const index = Math.floor((dstRow + done) / rowsEach);
    const row = (dstRow + done) % rowsEach;
    const rows = Math.min(count - done, rowsEach - row);
    parts.push({ dst: run[index]!, row, rows, done });
    done += rows;
  }
  return parts;
}
