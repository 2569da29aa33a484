// The ops sampling uses on the backend: the repetition penalty in place and the k best of each row, which must rank
// exactly as a stable descending sort (the same ids on every backend, ties and NaN included).
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Random } from "../../src/util/random.js";
import { backendCases, uploadValues } from "../helpers.js";

const random = new Random(77);

/** Rows with ties among the best (values on a coarse grid), a NaN and an -Infinity. */
function logitRows(rows: number, cols: number): Float32Array {
  const v = Float32Array.from({ length: rows * cols }, () => Math.round((random.next() * 2 - 1) * 400) / 16);
  v[5] = NaN;
  v[7] = -Infinity;
  v[cols + 2] = 1e30;
  return v;
}

function sortedIds(row: Float32Array): number[] {
  const key = (i: number) => (Number.isNaN(row[i]!) ? -Infinity : row[i]!);
  return Array.from(row.keys()).sort((a, b) => key(b) - key(a) || a - b);
}

for (const bc of backendCases) {
  describe(`sampling ops on ${bc.name}`, () => {
    for (const [rows, cols, k] of [
      [1, 10, 10],
      [3, 5000, 1],
      [2, 32003, 50],
      [8, 32003, 2048],
      [2, 6000, 2500],
    ] as const) {
      it(`top-k of ${rows} rows of ${cols}, k ${k}: a stable descending sort's first k, values exact`, async () => {
        const b = await bc.create();
        const values = logitRows(rows, cols);
        const x = await uploadValues(b, [rows, cols], values);
        const got = await b.topK(x, k);
        for (let r = 0; r < rows; r++) {
          const row = values.subarray(r * cols, (r + 1) * cols);
          const want = sortedIds(row).slice(0, k);
          assert.deepEqual(Array.from(got.ids.subarray(r * k, (r + 1) * k)), want, `row ${r}`);
          assert.deepEqual(
            Array.from(got.values.subarray(r * k, (r + 1) * k)),
            want.map((id) => row[id]!),
            `row ${r}`,
          );
        }
        await b.dispose();
      });
    }

    it("penalize divides positive and multiplies negative values of the listed ids of one row, in f32 arithmetic", async () => {
      const b = await bc.create();
      const cols = 700;
      const values = logitRows(3, cols);
      const x = await uploadValues(b, [3, cols], values);
      const ids = Int32Array.from([0, 3, 9, 100, 699]);
      b.penalize(x, 1, ids, 1.3);
      const got = await b.read(x);
      const want = Float32Array.from(values);
      const factor = Math.fround(1.3); // kernels take f32 arguments
      for (const id of ids)
        want[cols + id] = want[cols + id]! < 0 ? want[cols + id]! * factor : want[cols + id]! / factor;
      assert.deepEqual(Array.from(got), Array.from(want));
      await b.dispose();
    });
  });
}
