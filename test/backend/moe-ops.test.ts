// The ops of the mixture-of-experts and hybrid architectures on every backend: MXFP4 matmul (decoded here independently
// of the backends), the clamped SwiGLU, the row gather / weighted scatter that route rows to experts, and the recurrent
// ops of linear attention (causal conv and gated delta rule) with state carried across calls and sequences.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { CpuBackend } from "../../src/backend/cpu/index.js";
import type { Backend, DeltaRuleOptions, RecurrentSeq } from "../../src/backend/ops.js";
import { Random } from "../../src/util/random.js";
import { backendCases, relErr, uploadValues } from "../helpers.js";

const random = new Random(99);
const randn = (n: number, scale = 1) =>
  Float32Array.from({ length: n }, () => (random.next() * 2 - 1) * scale * Math.sqrt(3));

/** e2m1 from its bits: sign, two exponent bits (bias 1), one mantissa bit; exponent 0 is subnormal (0 or 0.5). */
function e2m1(nibble: number): number {
  const sign = nibble & 8 ? -1 : 1;
  const e = (nibble >> 1) & 3;
  const m = nibble & 1;
  return sign * (e === 0 ? m * 0.5 : (1 + m / 2) * 2 ** (e - 1));
}

/** A random MXFP4 matrix [n, k] in the backends' layout (packed rows, then scales) and its values. */
function mxfp4Matrix(n: number, k: number): { bytes: Uint8Array; values: Float32Array } {
  const packed = n * (k / 2);
  const bytes = new Uint8Array(packed + n * (k / 32));
  for (let i = 0; i < packed; i++) bytes[i] = Math.floor(random.next() * 256);
  for (let i = packed; i < bytes.length; i++) bytes[i] = 120 + Math.floor(random.next() * 6);
  const values = new Float32Array(n * k);
  for (let r = 0; r < n; r++) {
    for (let c = 0; c < k; c++) {
      const byte = bytes[r * (k / 2) + (c >> 1)]!;
      values[r * k + c] = e2m1(c & 1 ? byte >> 4 : byte & 15) * 2 ** (bytes[packed + r * (k / 32) + (c >> 5)]! - 127);
    }
  }
  return { bytes, values };
}

const upload = uploadValues;

for (const bc of backendCases) {
  describe(`mixture-of-experts ops on ${bc.name}`, () => {
    // 1-16 rows: the decode kernel; more: the tensor-core GEMM that decodes MXFP4 tiles in shared memory.
    for (const [rows, k, n] of [
      [1, 64, 48],
      [5, 96, 130],
      [16, 64, 40],
      [40, 128, 96],
      [300, 256, 260],
    ] as const) {
      it(`matmul [${rows}, ${k}] x MXFP4 [${n}, ${k}]^T with a bf16 bias`, async () => {
        const b = await bc.create();
        const x = randn(rows * k);
        const w = mxfp4Matrix(n, k);
        const bias = randn(n);
        const wt = b.alloc([n, k], "mxfp4");
        await b.upload(wt, w.bytes);
        const biasT = await upload(b, [n], bias, "bf16");
        const got = await b.read(b.matmul(await upload(b, [rows, k], x), wt, biasT));
        const biasBf16 = await b.read(biasT);
        const want = new Float64Array(rows * n);
        for (let r = 0; r < rows; r++)
          for (let j = 0; j < n; j++) {
            let s = biasBf16[j]!;
            for (let i = 0; i < k; i++) s += x[r * k + i]! * w.values[j * k + i]!;
            want[r * n + j] = s;
          }
        // Many rows go through tensor cores with bf16 activations.
        assert.ok(relErr(got, want) < (rows > 16 ? bc.tol16 : bc.tolF32 * 10));
        await b.dispose();
      });
    }

    it("clamped SwiGLU on interleaved gate/up columns", async () => {
      const b = await bc.create();
      const x = randn(3 * 2 * 21, 6); // beyond the limit on both sides
      const got = await b.read(b.clampedSwiglu(await upload(b, [3, 42], x), { alpha: 1.702, limit: 7 }));
      const want = Array.from({ length: 63 }, (_, i) => {
        const g = Math.min(x[2 * i]!, 7);
        const u = Math.min(Math.max(x[2 * i + 1]!, -7), 7);
        return (u + 1) * g * (1 / (1 + Math.exp(-1.702 * g)));
      });
      assert.ok(relErr(got, want) < bc.tolF32);
      await b.dispose();
    });

    it("gatherRows, zeros and accumulateRows route rows to an expert and back", async () => {
      const b = await bc.create();
      const x = randn(6 * 10);
      const xt = await upload(b, [6, 10], x);
      const rows = Int32Array.from([4, 1, 5]);
      const gathered = await b.read(b.gatherRows(xt, rows));
      assert.deepEqual(
        Array.from(gathered),
        Array.from(rows).flatMap((r) => Array.from(x.subarray(r * 10, r * 10 + 10))),
      );
      const acc = b.zeros([6, 10]);
      const y = randn(3 * 10);
      b.accumulateRows(acc, await upload(b, [3, 10], y), rows, Float32Array.from([0.5, 2, -1]));
      b.accumulateRows(acc, await upload(b, [3, 10], y), Int32Array.from([0, 1, 2]), Float32Array.from([1, 1, 1]));
      const want = new Float32Array(60);
      [0.5, 2, -1].forEach((s, i) => {
        for (let c = 0; c < 10; c++) want[rows[i]! * 10 + c]! += s * y[i * 10 + c]!;
      });
      [0, 1, 2].forEach((r, i) => {
        for (let c = 0; c < 10; c++) want[r * 10 + c]! += y[i * 10 + c]!;
      });
      assert.ok(relErr(await b.read(acc), want) < bc.tolF32);
      await b.dispose();
    });

    // Two sequences of 7 and 70 rows in one call (CUDA: the chunked kernel, 32 rows a chunk, the last one partial), then
    // 5 more rows each in a second call, and the same one row per call (CUDA: the recurrent kernel), against the CPU
    // backend run one sequence and one row at a time (on the CPU itself: batching and splitting must not change the result).
    for (const [kHeads, vHeads, kDim, vDim] of [
      [2, 4, 16, 16],
      [1, 2, 32, 24],
      [2, 2, 128, 128],
    ] as const) {
      it(`causal conv and gated delta rule, ${kHeads} key / ${vHeads} value heads of ${kDim} / ${vDim}: state carried across calls and kept per sequence`, async () => {
        const b = await bc.create();
        const ref = new CpuBackend();
        const channels = 2 * kHeads * kDim + vHeads * vDim;
        const rows = [7, 70];
        const inputs = rows.map((n) => ({
          x: randn((n + 5) * channels),
          a: randn((n + 5) * vHeads),
          beta: randn((n + 5) * vHeads),
        }));
        const w = randn(channels * 4, 0.5);
        const aLog = randn(vHeads);
        const dtBias = Float32Array.from(randn(vHeads), (v) => 1 + 0.3 * v);
        const run = async (be: Backend, parts: { seq: number; from: number; count: number }[][]) => {
          const conv = rows.map(() => be.alloc([channels, 3], "f32"));
          const ssm = rows.map(() => be.alloc([vHeads, kDim, vDim], "f32"));
          for (const t of [...conv, ...ssm]) await be.upload(t, new Uint8Array(t.shape.reduce((p, q) => p * q, 4)));
          const wt = await upload(be, [channels, 1, 4], w, "bf16");
          const opts = async (seqs: RecurrentSeq[]): Promise<DeltaRuleOptions> => ({
            kHeads,
            vHeads,
            kDim,
            vDim,
            aLog: await upload(be, [vHeads], aLog),
            dtBias: await upload(be, [vHeads], dtBias),
            seqs,
          });
          const out: Float32Array[] = rows.map((n) => new Float32Array((n + 5) * vHeads * vDim));
          for (const call of parts) {
            const pick = (src: "x" | "a" | "beta", cols: number) =>
              Float32Array.from(
                call.flatMap((p) => Array.from(inputs[p.seq]![src].subarray(p.from * cols, (p.from + p.count) * cols))),
              );
            let row = 0;
            const seqs = call.map((p) => ((row += p.count), { row: row - p.count, rows: p.count, seq: p.seq }));
            const n = row;
            const conved = be.causalConv1d(
              await upload(be, [n, channels], pick("x", channels)),
              wt,
              seqs.map((q) => ({ row: q.row, rows: q.rows, state: conv[q.seq]! })),
            );
            const y = await be.read(
              be.gatedDeltaRule(
                conved,
                await upload(be, [n, vHeads], pick("a", vHeads)),
                await upload(be, [n, vHeads], pick("beta", vHeads)),
                await opts(seqs.map((q) => ({ row: q.row, rows: q.rows, state: ssm[q.seq]! }))),
              ),
            );
            call.forEach((p, i) =>
              out[p.seq]!.set(
                y.subarray(seqs[i]!.row * vHeads * vDim, (seqs[i]!.row + p.count) * vHeads * vDim),
                p.from * vHeads * vDim,
              ),
            );
          }
          return out;
        };
        const got = await run(b, [
          rows.map((n, seq) => ({ seq, from: 0, count: n })),
          rows.map((n, seq) => ({ seq, from: n, count: 5 })),
        ]);
        const oneByOne = rows.flatMap((n, seq) =>
          Array.from({ length: n + 5 }, (_, r) => [{ seq, from: r, count: 1 }]),
        );
        const want = await run(ref, oneByOne);
        const gotOneByOne = await run(b, oneByOne);
        for (let s = 0; s < rows.length; s++) {
          const tol = bc.name === "cpu" ? 1e-6 : bc.tolF32;
          assert.ok(relErr(got[s]!, want[s]!) < tol, `sequence ${s}, batched: ${relErr(got[s]!, want[s]!)}`);
          assert.ok(
            relErr(gotOneByOne[s]!, want[s]!) < tol,
            `sequence ${s}, a row per call: ${relErr(gotOneByOne[s]!, want[s]!)}`,
          );
        }
        await b.dispose();
      });
    }
  });
}
