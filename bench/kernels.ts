// Kernel benchmarks on the GPU machine: layerwise's CUDA kernels against torch on the same shapes, measured in the same run.
// Usage: node dist/bench/kernels.js [--out bench/results]   (needs an NVIDIA GPU; uses python3 + torch when present)
import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fromF32 } from "../src/backend/dtype.js";
import type { KvBlock, Tensor } from "../src/backend/ops.js";
import { CudaBackend } from "../src/backend/cuda/index.js";
import { flashTiles, gemmTiles, type FlashTile, type GemmTile } from "../src/backend/cuda/kernels.js";
import { Random } from "../src/util/random.js";

const outDir = process.argv.includes("--out") ? process.argv[process.argv.indexOf("--out") + 1]! : "bench/results";
const b = CudaBackend.create();
const random = new Random(7);

async function tensor(shape: number[], dtype: "f32" | "bf16", scale = 1): Promise<Tensor> {
  const n = shape.reduce((a, c) => a * c, 1);
  const values = new Float32Array(n);
  for (let i = 0; i < n; i++) values[i] = (random.next() * 2 - 1) * scale;
  const t = b.alloc(shape, dtype);
  await b.upload(t, fromF32(values, dtype));
  return t;
}

/** Median of `rounds` timings of `reps` repetitions each, after a warm-up. */
async function seconds(enqueue: () => void, reps = 10, rounds = 5): Promise<number> {
  const run = () => {
    b.pushScope();
    enqueue();
    b.popScope();
  };
  await b.timeMs(run, 2);
  const times: number[] = [];
  for (let i = 0; i < rounds; i++) times.push(await b.timeMs(run, reps));
  times.sort((x, y) => x - y);
  return times[Math.floor(times.length / 2)]! / 1000;
}

const results: Record<string, unknown> = {
  gpu: b.info.name,
  driver: b.info.driverVersion,
  date: new Date().toISOString(),
};

// GEMM 4096^3, bf16 weights, and a prefill chunk's MLP projection (2048 rows, 4096 -> 14336), with each tensor-core
// tile this GPU has (gemm_<tile>_*); the backend's default tile (the first this GPU has of its fallbacks) gives gemm_*.
const defaultTile = b.gemmTile;
for (const tile of Object.keys(gemmTiles) as GemmTile[]) {
  if (!b.hasGemmTile(tile)) continue;
  b.gemmTile = tile;
  for (const [m, k, n, key] of [
    [4096, 4096, 4096, "4096"],
    [2048, 4096, 14336, "prefill_mlp"],
  ] as const) {
    const x = await tensor([m, k], "f32");
    const w = await tensor([n, k], "bf16", 0.02);
    const s = await seconds(() => b.matmul(x, w), 5);
    results[`gemm_${tile}_${key}_tflops`] = (2 * m * k * n) / s / 1e12;
    b.free(x);
    b.free(w);
  }
}
b.gemmTile = defaultTile;
const usedTile = b.gemmTileFor("bf16");
results.gemm_tile = usedTile;
results.gemm_4096_tflops = results[`gemm_${usedTile}_4096_tflops`];
results.gemm_prefill_mlp_tflops = results[`gemm_${usedTile}_prefill_mlp_tflops`];

// Decode GEMV: 1, 4, 16 and 64 rows against a 14336 x 4096 bf16 weight (an 8B model's MLP projection).
for (const rows of [1, 4, 16, 64]) {
  const [n, k] = [14336, 4096];
  const x = await tensor([rows, k], "f32");
  const w = await tensor([n, k], "bf16", 0.02);
  const s = await seconds(() => b.matmul(x, w), 20);
  results[`gemv_${rows}_gbps`] = (n * k * 2) / s / 1e9;
}

// Prefill attention: 32 query heads, 8 KV heads, head_dim 128, causal, KV in blocks of 256 tokens, with each tile
// (attn_<tile>_*); the backend's default tile gives attn_*.
const defaultFlash = b.flashTile;
for (const tile of Object.keys(flashTiles) as FlashTile[]) {
  b.flashTile = tile;
  for (const t of [8192, 32768]) {
    const heads = 32;
    const kvHeads = 8;
    const hd = 128;
    const q = await tensor([t, heads * hd], "f32");
    const blocks: KvBlock[] = [];
    for (let s0 = 0; s0 < t; s0 += 256)
      blocks.push({
        k: await tensor([256, kvHeads * hd], "bf16"),
        v: await tensor([256, kvHeads * hd], "bf16"),
        start: s0,
        length: 256,
      });
    const o = { heads, kvHeads, headDim: hd, scale: 1 / Math.sqrt(hd), seqs: [{ qRow: 0, qRows: t, qPos: 0, blocks }] };
    const s = await seconds(() => b.attention(q, o), 1, 3);
    results[`attn_${tile}_${t / 1024}k_tflops`] = (((4 * (t * t)) / 2) * heads * hd) / s / 1e12;
    b.free(q);
    for (const blk of blocks) (b.free(blk.k), b.free(blk.v));
  }
}
b.flashTile = defaultFlash;
const usedFlash = b.flashTileFor("bf16", 128, 8192);
results.attn_tile = usedFlash;
for (const t of ["8k", "32k"]) results[`attn_${t}_tflops`] = results[`attn_${usedFlash}_${t}_tflops`];

// Pinned host -> device copy of 1 GiB.
{
  const bytes = 1 << 30;
  const host = b.allocHost(bytes);
  const dev = b.alloc([bytes / 4], "f32");
  await b.copyToDevice(dev, 0, host, 0, bytes);
  const t0 = performance.now();
  for (let i = 0; i < 5; i++) await b.copyToDevice(dev, 0, host, 0, bytes);
  results.h2d_pinned_gbps = (5 * bytes) / ((performance.now() - t0) / 1000) / 1e9;
  b.freeHost(host);
  b.free(dev);
}

let torch: Record<string, number> | undefined;
try {
  torch = JSON.parse(
    execFileSync("python3", [new URL("../../tools/bench/torch_limits.py", import.meta.url).pathname], {
      encoding: "utf8",
    })
      .trim()
      .split("\n")
      .pop()!,
  );
  results.torch = torch;
} catch (e) {
  results.torch_error = (e as Error).message.split("\n")[0];
}
if (torch) {
  const r = results as Record<string, number>;
  results.gemm_vs_torch = r.gemm_4096_tflops! / torch.matmul_bf16_tflops!;
  for (const tile of Object.keys(gemmTiles))
    if (r[`gemm_${tile}_4096_tflops`])
      results[`gemm_${tile}_vs_torch`] = r[`gemm_${tile}_4096_tflops`]! / torch.matmul_bf16_tflops!;
  results.gemv_vs_torch_copy = r.gemv_1_gbps! / torch.copy_gbps!;
  results.attn_8k_vs_sdpa = r.attn_8k_tflops! / torch.sdpa_8k_tflops!;
  results.attn_32k_vs_sdpa = r.attn_32k_tflops! / torch.sdpa_32k_tflops!;
  for (const tile of Object.keys(flashTiles))
    for (const t of ["8k", "32k"])
      results[`attn_${tile}_${t}_vs_sdpa`] = r[`attn_${tile}_${t}_tflops`]! / torch[`sdpa_${t}_tflops`]!;
  results.h2d_vs_torch_pinned = r.h2d_pinned_gbps! / torch.h2d_pinned_gbps!;
}
await b.dispose();
mkdirSync(outDir, { recursive: true });
const slug = String(results.gpu)
  .toLowerCase()
  .replace(/[^a-z0-9]+/g, "-")
  .replace(/^-|-$/g, "");
const file = join(outDir, `kernels-${slug}.json`);
writeFileSync(file, JSON.stringify(results, null, 2) + "\n");
const fmt = (v: unknown) => (typeof v === "number" ? v.toFixed(3) : String(v));
for (const [k, v] of Object.entries(results)) if (typeof v !== "object") console.log(`${k.padEnd(24)} ${fmt(v)}`);
console.log(`wrote ${file}`);
