// Every op of every available backend against plain reference formulas, on awkward shapes (1 row, odd sizes, GQA).
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { CpuBackend } from "../../src/backend/cpu/index.js";
import { fromF32, type FloatDType } from "../../src/backend/dtype.js";
import type { CudaBackend } from "../../src/backend/cuda/index.js";
import { flashTiles, gemmTiles, type FlashTile, type GemmTile } from "../../src/backend/cuda/kernels.js";
import type { Backend, KvBlock, Tensor } from "../../src/backend/ops.js";
import { Random } from "../../src/util/random.js";
import { backendCases, relErr, uploadValues } from "../helpers.js";

const random = new Random(1234);
const randn = (n: number, scale = 1) =>
  Float32Array.from({ length: n }, () => (random.next() * 2 - 1) * scale * Math.sqrt(3));

/** Rounds values through a 16-bit dtype, so references see exactly what the backend stores. */
function quantize(v: Float32Array, dtype: FloatDType): Float32Array {
  if (dtype === "f32") return v;
  const bits = new Uint16Array(fromF32(v, dtype).buffer);
  const cpu = new CpuBackend();
  const t = cpu.alloc([v.length], dtype);
  void cpu.upload(t, new Uint8Array(bits.buffer));
  return (t as unknown as { f32(): Float32Array }).f32();
}

const upload = uploadValues;

function matmulRef(
  x: Float32Array,
  w: Float32Array,
  rows: number,
  k: number,
  n: number,
  bias?: Float32Array,
): Float64Array {
  const out = new Float64Array(rows * n);
  for (let r = 0; r < rows; r++)
    for (let j = 0; j < n; j++) {
      let s = bias ? bias[j]! : 0;
      for (let i = 0; i < k; i++) s += x[r * k + i]! * w[j * k + i]!;
      out[r * n + j] = s;
    }
  return out;
}

interface AttnCase {
  heads: number;
  kvHeads: number;
  headDim: number;
  qRows: number;
  blocks: number[];
  blockCap: number;
  window?: number;
  softcap?: number;
  /** gpt-oss's attention sinks: one logit per head in every softmax's denominator. */
  sinks?: boolean;
}

const sinkValues = (heads: number) => Float32Array.from({ length: heads }, (_, h) => (h % 3) - 1 + 0.5 * h);

function attentionRef(
  q: Float32Array,
  ks: Float32Array[],
  vs: Float32Array[],
  c: AttnCase,
  qPos: number,
): Float64Array {
  const { heads, kvHeads, headDim: hd } = c;
  const keys: { pos: number; k: Float32Array; v: Float32Array; row: number }[] = [];
  let pos = 0;
  c.blocks.forEach((len, b) => {
    for (let j = 0; j < len; j++) keys.push({ pos: pos + j, k: ks[b]!, v: vs[b]!, row: j });
    pos += len;
  });
  const out = new Float64Array(c.qRows * heads * hd);
  for (let r = 0; r < c.qRows; r++) {
    const p = qPos + r;
    for (let h = 0; h < heads; h++) {
      const g = Math.floor(h / (heads / kvHeads));
      const visible = keys.filter((key) => key.pos <= p && (!c.window || key.pos > p - c.window));
      const scores = visible.map((key) => {
        let s = 0;
        for (let d = 0; d < hd; d++) s += q[(r * heads + h) * hd + d]! * key.k[(key.row * kvHeads + g) * hd + d]!;
        s /= Math.sqrt(hd);
        return c.softcap ? c.softcap * Math.tanh(s / c.softcap) : s;
      });
      const sink = c.sinks ? sinkValues(heads)[h]! : -Infinity;
      const m = Math.max(sink, ...scores);
      const e = scores.map((s) => Math.exp(s - m));
      const z = e.reduce((a, b) => a + b, 0) + Math.exp(sink - m);
      for (let d = 0; d < hd; d++)
        out[(r * heads + h) * hd + d] = visible.reduce(
          (acc, key, i) => acc + (e[i]! / z) * key.v[(key.row * kvHeads + g) * hd + d]!,
          0,
        );
    }
  }
  return out;
}

for (const bc of backendCases) {
  describe(`ops on ${bc.name}`, () => {
    // 1-4 rows, or up to 16 where tensor cores do not apply: the decode kernel (several rows: 4 output columns a warp,
    // some past N); 5-64 rows of 16-bit weights: the skinny tensor-core kernel (columns past N, K past the last 32-deep
    // step); more rows: tensor cores (K % 8 == 0, 16-bit weights) or exact FMA tiles.
    // CUDA: each tensor-core GEMM tile (the wgmma ones on Hopper, elsewhere falling back to the deep one; the deep one;
    // the square one smaller GPUs and MXFP4 take).
    const tiles = bc.name === "cuda" ? (Object.keys(gemmTiles) as GemmTile[]) : ([undefined] as const);
    for (const [rows, k, n, dtype] of [
      [1, 64, 48, "f32"],
      [3, 64, 50, "bf16"],
      [16, 128, 37, "f16"],
      [7, 67, 33, "bf16"],
      [33, 128, 96, "f16"],
      [130, 256, 160, "bf16"],
      [300, 520, 260, "bf16"],
      [20, 67, 40, "bf16"],
      [40, 64, 70, "f32"],
      [8, 256, 160, "bf16"],
      [24, 136, 200, "f16"],
      [50, 264, 130, "bf16"],
    ] as const)
      for (const tile of tiles) {
        it(`matmul [${rows}, ${k}] x [${n}, ${k}]^T ${dtype} with bias${tile ? `, ${tile} GEMM tile` : ""}`, async () => {
          const b = await bc.create();
          if (tile) (b as CudaBackend).gemmTile = tile;
          const x = randn(rows * k);
          const w = quantize(randn(n * k, 0.1), dtype);
          const bias = randn(n);
          const got = await b.read(
            b.matmul(await upload(b, [rows, k], x), await upload(b, [n, k], w, dtype), await upload(b, [n], bias)),
          );
          assert.ok(relErr(got, matmulRef(x, w, rows, k, n, bias)) < (dtype === "f32" ? bc.tolF32 : bc.tol16));
          await b.dispose();
        });
      }

    it("the CPU backend can round matmul activations as tensor cores do (to check the GPU against)", async () => {
      const cpu = new CpuBackend({ emulateTensorCores: true });
      const [rows, k, n] = [40, 64, 128];
      const x = randn(rows * k);
      const w = quantize(randn(n * k, 0.1), "bf16");
      const got = await cpu.read(cpu.matmul(await upload(cpu, [rows, k], x), await upload(cpu, [n, k], w, "bf16")));
      assert.ok(relErr(got, matmulRef(quantize(x, "bf16"), w, rows, k, n)) < 1e-6);
      assert.ok(relErr(got, matmulRef(x, w, rows, k, n)) > 1e-4, "activations were rounded");
      const router = await cpu.read(
        cpu.matmul(await upload(cpu, [rows, k], x), await upload(cpu, [32, k], w.subarray(0, 32 * k), "bf16")),
      );
      assert.ok(relErr(router, matmulRef(x, w, rows, k, 32)) < 1e-6, "fewer than 128 outputs stay exact");
    });

    it("embed gathers rows of a bf16 table", async () => {
      const b = await bc.create();
      const table = quantize(randn(50 * 24), "bf16");
      const ids = Int32Array.from([3, 0, 49, 3]);
      const got = await b.read(b.embed(await upload(b, [50, 24], table, "bf16"), ids));
      const want = Array.from(ids).flatMap((id) => Array.from(table.subarray(id * 24, id * 24 + 24)));
      assert.ok(relErr(got, want) < bc.tolF32);
      await b.dispose();
    });

    for (const [rows, cols, group, offset] of [
      [1, 64, 64, 0],
      [5, 96, 32, 0],
      [3, 80, 80, 1],
    ] as const) {
      it(`rmsNorm rows ${rows}, groups of ${group}, offset ${offset}`, async () => {
        const b = await bc.create();
        const x = randn(rows * cols);
        const w = randn(group);
        const got = await b.read(
          b.rmsNorm(await upload(b, [rows, cols], x), await upload(b, [group], w), { eps: 1e-6, offset }),
        );
        const want = new Float64Array(x.length);
        for (let s = 0; s < x.length; s += group) {
          let ss = 0;
          for (let i = 0; i < group; i++) ss += x[s + i]! ** 2;
          for (let i = 0; i < group; i++) want[s + i] = (x[s + i]! / Math.sqrt(ss / group + 1e-6)) * (offset + w[i]!);
        }
        assert.ok(relErr(got, want) < bc.tolF32);
        await b.dispose();
      });
    }

    for (const [headDim, rotary] of [
      [64, 64],
      [128, 128],
      [256, 64],
    ] as const) {
      it(`rope head_dim ${headDim}, rotary dims ${rotary}, far positions`, async () => {
        const b = await bc.create();
        const heads = 3;
        const rows = 4;
        const x = randn(rows * heads * headDim);
        const positions = Int32Array.from([0, 1, 4097, 100000]);
        const invFreq = Float32Array.from({ length: rotary / 2 }, (_, i) => 1 / 10000 ** ((2 * i) / rotary));
        const got = await b.read(
          b.rope(await upload(b, [rows, heads * headDim], x), { positions, invFreq, headDim, scale: 1.25 }),
        );
        const want = Float64Array.from(x);
        const half = rotary / 2;
        for (let r = 0; r < rows; r++)
          for (let h = 0; h < heads; h++)
            for (let i = 0; i < half; i++) {
              const base = (r * heads + h) * headDim;
              const a = Math.fround(positions[r]! * invFreq[i]!);
              const [c, s] = [Math.cos(a) * 1.25, Math.sin(a) * 1.25];
              want[base + i] = x[base + i]! * c - x[base + i + half]! * s;
              want[base + i + half] = x[base + i + half]! * c + x[base + i]! * s;
            }
        assert.ok(relErr(got, want) < bc.tolF32 * 10);
        await b.dispose();
      });
    }

    // Cases with 16 or more query rows and head_dim 64/128/256 take the CUDA tensor-core path; the others the general one.
    const attnCases: AttnCase[] = [
      { heads: 8, kvHeads: 2, headDim: 128, qRows: 40, blocks: [64, 64, 30], blockCap: 64 },
      { heads: 4, kvHeads: 4, headDim: 64, qRows: 70, blocks: [64, 64], blockCap: 64, window: 33 },
      { heads: 2, kvHeads: 1, headDim: 256, qRows: 17, blocks: [32, 32, 32, 7], blockCap: 32, softcap: 30 },
      { heads: 4, kvHeads: 4, headDim: 64, qRows: 1, blocks: [5], blockCap: 8 },
      { heads: 4, kvHeads: 2, headDim: 8, qRows: 6, blocks: [3, 8], blockCap: 8 },
      { heads: 8, kvHeads: 2, headDim: 128, qRows: 13, blocks: [16, 16, 3], blockCap: 16 },
      { heads: 4, kvHeads: 1, headDim: 256, qRows: 9, blocks: [7, 2], blockCap: 7, window: 5 },
      { heads: 2, kvHeads: 1, headDim: 64, qRows: 3, blocks: [4, 4], blockCap: 4, softcap: 2 },
      { heads: 4, kvHeads: 2, headDim: 64, qRows: 20, blocks: [16, 16, 5], blockCap: 16, window: 8, sinks: true },
      { heads: 4, kvHeads: 2, headDim: 64, qRows: 1, blocks: [16, 16, 5], blockCap: 16, sinks: true },
      { heads: 4, kvHeads: 2, headDim: 16, qRows: 5, blocks: [8, 3], blockCap: 8, window: 4, sinks: true },
      // Several query tiles; key tiles wholly visible (inside the window, before the diagonal) beside masked ones.
      { heads: 4, kvHeads: 2, headDim: 128, qRows: 200, blocks: [64, 64, 64, 64], blockCap: 64, window: 150 },
      { heads: 2, kvHeads: 1, headDim: 64, qRows: 130, blocks: [128, 16], blockCap: 128, sinks: true },
    ];
    // CUDA: each prefill attention tile (128-row ones fall back to the short one for head_dim 256 and fewer rows).
    const flashTileNames = bc.name === "cuda" ? (Object.keys(flashTiles) as FlashTile[]) : ([undefined] as const);
    for (const c of attnCases)
      for (const tile of flashTileNames) {
        for (const kvDtype of ["f32", "bf16"] as const) {
          it(`attention ${c.heads}/${c.kvHeads} heads, head_dim ${c.headDim}, ${c.qRows} queries over blocks [${c.blocks}]${c.window ? `, window ${c.window}` : ""}${c.softcap ? `, softcap ${c.softcap}` : ""}${c.sinks ? ", sinks" : ""}, KV ${kvDtype}${tile ? `, ${tile} tile` : ""}`, async () => {
            const b = await bc.create();
            if (tile) (b as CudaBackend).flashTile = tile;
            const kvCols = c.kvHeads * c.headDim;
            const total = c.blocks.reduce((a, x) => a + x, 0);
            const qPos = total - c.qRows;
            const q = randn(c.qRows * c.heads * c.headDim);
            const ks = c.blocks.map(() => quantize(randn(c.blockCap * kvCols), kvDtype));
            const vs = c.blocks.map(() => quantize(randn(c.blockCap * kvCols), kvDtype));
            let start = 0;
            const blocks: KvBlock[] = [];
            for (let i = 0; i < c.blocks.length; i++) {
              blocks.push({
                k: await upload(b, [c.blockCap, kvCols], ks[i]!, kvDtype),
                v: await upload(b, [c.blockCap, kvCols], vs[i]!, kvDtype),
                start,
                length: c.blocks[i]!,
              });
              start += c.blocks[i]!;
            }
            const out = b.attention(await upload(b, [c.qRows, c.heads * c.headDim], q), {
              heads: c.heads,
              kvHeads: c.kvHeads,
              headDim: c.headDim,
              scale: 1 / Math.sqrt(c.headDim),
              slidingWindow: c.window,
              softcap: c.softcap,
              sinks: c.sinks ? await upload(b, [c.heads], sinkValues(c.heads), "bf16") : undefined,
              seqs: [{ qRow: 0, qRows: c.qRows, qPos, blocks }],
            });
            const tol = kvDtype === "f32" ? bc.tolF32 * 10 : bc.tol16;
            assert.ok(relErr(await b.read(out), attentionRef(q, ks, vs, c, qPos)) < tol);
            await b.dispose();
          });
        }
      }

    it("attention parts over disjoint blocks merge into attention over all of them", async () => {
      const b = await bc.create();
      const c = { heads: 4, kvHeads: 2, headDim: 64 };
      const kvCols = c.kvHeads * c.headDim;
      const mk = async (start: number, len: number) => ({
        k: await upload(b, [len, kvCols], randn(len * kvCols)),
        v: await upload(b, [len, kvCols], randn(len * kvCols)),
        start,
        length: len,
      });
      const blocks = [await mk(0, 16), await mk(16, 16), await mk(32, 9)];
      const rows = 20;
      const qt = await upload(b, [rows, c.heads * c.headDim], randn(rows * c.heads * c.headDim));
      const seq = (bs: KvBlock[]) => ({ ...c, scale: 0.125, seqs: [{ qRow: 0, qRows: rows, qPos: 21, blocks: bs }] });
      const whole = await b.read(b.attention(qt, seq(blocks)));
      const merged = b.mergeAttention(
        b.attentionPart(qt, seq([blocks[0]!, blocks[2]!])),
        b.attentionPart(qt, seq([blocks[1]!])),
      );
      assert.ok(relErr(await b.read(merged.out), whole) < bc.tolF32 * 10);
      const empty = b.attentionPart(qt, seq([]));
      assert.ok(
        relErr(await b.read(b.mergeAttention(empty, b.attentionPart(qt, seq(blocks))).out), whole) < bc.tolF32 * 10,
      );
      // Sinks in one part only (the first, even with no keys of its own) count once in the merge.
      const sinks = await upload(b, [c.heads], sinkValues(c.heads));
      const wholeSinks = await b.read(b.attention(qt, { ...seq(blocks), sinks }));
      const sinkPart = b.attentionPart(qt, { ...seq([]), sinks });
      assert.ok(
        relErr(await b.read(b.mergeAttention(sinkPart, b.attentionPart(qt, seq(blocks))).out), wholeSinks) <
          bc.tolF32 * 10,
      );
      assert.ok(relErr(wholeSinks, whole) > 1e-3, "the sinks changed the output");
      await b.dispose();
    });

    it("attention of two sequences in one batch equals each alone", async () => {
      const b = await bc.create();
      const c = { heads: 4, kvHeads: 2, headDim: 64 };
      const kvCols = c.kvHeads * c.headDim;
      const mk = async (len: number) => ({
        k: await upload(b, [len, kvCols], randn(len * kvCols)),
        v: await upload(b, [len, kvCols], randn(len * kvCols)),
        start: 0,
        length: len,
      });
      const [a1, a2] = [await mk(6), await mk(9)];
      const q = randn(3 * c.heads * c.headDim);
      const qt = await upload(b, [3, c.heads * c.headDim], q);
      const both = await b.read(
        b.attention(qt, {
          ...c,
          scale: 0.125,
          seqs: [
            { qRow: 0, qRows: 1, qPos: 5, blocks: [a1] },
            { qRow: 1, qRows: 2, qPos: 7, blocks: [a2] },
          ],
        }),
      );
      const one = await b.read(
        b.attention(await upload(b, [1, c.heads * c.headDim], q.subarray(0, c.heads * c.headDim)), {
          ...c,
          scale: 0.125,
          seqs: [{ qRow: 0, qRows: 1, qPos: 5, blocks: [a1] }],
        }),
      );
      const two = await b.read(
        b.attention(await upload(b, [2, c.heads * c.headDim], q.subarray(c.heads * c.headDim)), {
          ...c,
          scale: 0.125,
          seqs: [{ qRow: 0, qRows: 2, qPos: 7, blocks: [a2] }],
        }),
      );
      assert.ok(relErr(both, [...one, ...two]) < bc.tolF32);
      await b.dispose();
    });

    for (const act of ["silu", "gelu_tanh"] as const) {
      it(`gated activation ${act}, add, scale, rows`, async () => {
        const b = await bc.create();
        const g = randn(3 * 37, 3);
        const u = randn(3 * 37);
        const gt = await upload(b, [3, 37], g);
        const ut = await upload(b, [3, 37], u);
        const f =
          act === "silu"
            ? (x: number) => x / (1 + Math.exp(-x))
            : (x: number) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));
        assert.ok(
          relErr(
            await b.read(b.gatedActivation(gt, ut, act)),
            Array.from(g, (x, i) => f(x) * u[i]!),
          ) < bc.tolF32,
        );
        assert.ok(
          relErr(
            await b.read(b.add(gt, ut)),
            Array.from(g, (x, i) => x + u[i]!),
          ) < bc.tolF32,
        );
        assert.ok(
          relErr(
            await b.read(b.scale(gt, -0.5)),
            Array.from(g, (x) => -0.5 * x),
          ) < bc.tolF32,
        );
        assert.ok(
          relErr(
            await b.read(b.softcap(gt, 2)),
            Array.from(g, (x) => 2 * Math.tanh(x / 2)),
          ) < bc.tolF32,
        );
        assert.ok(relErr(await b.read(b.rows(gt, 1, 2)), g.subarray(37)) === 0);
        await b.dispose();
      });
    }

    it("writeRows converts into a bf16 cache and readRows returns the raw bytes", async () => {
      const b = await bc.create();
      const src = randn(5 * 16);
      const dst = b.alloc([8, 16], "bf16");
      b.writeRows(dst, 3, await upload(b, [5, 16], src), 1, 4);
      const raw = await b.readRows(dst, 3, 4);
      assert.deepEqual(raw, fromF32(src.subarray(16, 80), "bf16"));
      await b.dispose();
    });

    it("writeRows spreads rows over a run of blocks from a row of the first, in more than one launch's worth of blocks", async () => {
      const b = await bc.create();
      for (const dtype of ["bf16", "f32"] as const) {
        for (const { blocks, rowsEach, first, count } of [
          { blocks: 3, rowsEach: 8, first: 5, count: 17 }, // the end of the first, all of the second, most of the third
          { blocks: 70, rowsEach: 2, first: 1, count: 137 }, // past the 64 tensors one CUDA launch takes
        ]) {
          const src = randn((count + 2) * 16);
          const run = Array.from({ length: blocks }, () => b.alloc([rowsEach, 16], dtype));
          b.writeRows(run, first, await upload(b, [count + 2, 16], src), 2, count);
          const parts: Uint8Array[] = [];
          for (let row = first; row < first + count; row++)
            parts.push(await b.readRows(run[Math.floor(row / rowsEach)]!, row % rowsEach, 1));
          const got = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
          parts.reduce((at, p) => (got.set(p, at), at + p.length), 0);
          assert.deepEqual(got, fromF32(src.subarray(2 * 16, (2 + count) * 16), dtype), `${dtype}, ${blocks} blocks`);
          assert.throws(() => b.writeRows(run, first, run[0]!, 0, blocks * rowsEach), RangeError);
        }
      }
      await b.dispose();
    });

    it("scopes free what ops made and keep what is asked", async () => {
      const b = await bc.create();
      const x = await upload(b, [4, 4], randn(16));
      const before = b.memory.deviceBytes;
      b.pushScope();
      const y = b.add(x, x);
      const z = b.add(y, x);
      b.popScope([z]);
      assert.equal(b.memory.deviceBytes, before + 64);
      b.free(z);
      assert.equal(b.memory.deviceBytes, before);
      await b.dispose();
    });
  });
}
