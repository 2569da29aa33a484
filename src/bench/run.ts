// `layerwise bench`: random-weight checkpoints with real shapes, the links they stream over (measured in the same run),
// layerwise's prefill and decode at several contexts inside a VRAM budget, and the transformers + accelerate baseline.
import { execFileSync } from "node:child_process";
import { readFile, readdir, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { createArchModel } from "../arch/index.js";
import type { Backend } from "../backend/ops.js";
import { measureDisk, measureHostToDevice } from "./bandwidth.js";
import { withModel, type LayerwiseModel, type Sequence } from "../engine/model.js";
import { argmax } from "../engine/sampling.js";
import { findShards } from "../model/checkpoint.js";
import { presets } from "../testmodel/presets.js";
import { makeTestModel, testModelMarker } from "../testmodel/write.js";
import { Random } from "../util/random.js";
import { decodeBytesAt, plan } from "../engine/planner.js";
import { prefillFlops, prefillFloorS, type Links } from "./floors.js";
import { ratios } from "./ratios.js";
import type { BaselineFigures, BatchFigures, BenchResults, FullModelPrediction, GenerationFigures, GoalRatios, LongContextRow, OtherModelFigures, RunFigures, TorchLimits } from "./results.js";

export interface BenchOptions {
  backend: Backend;
  presets: string[];
  contexts: number[];
  vramBytes: number;
  dir: string;
  decodeTokens: number;
  /** Workloads to leave out: main (every workload of the first preset but the links), disk, batch, kvcache, nolimit, baseline, long. */
  skip: Set<string>;
  /**
   * Models run at a context of their own (RAM tier, and mixture-of-experts models from disk too); `layers`: fewer
   * layers than the real model (one too big for the disk), with the planner's prediction for all of them at `predictAt`.
   */
  long: { preset: string; context: number; layers?: number; predictAt?: number }[];
  log: (line: string) => void;
  /** Called with the results so far after every workload (so an interrupted run keeps what it measured). */
  onResults?: (results: BenchResults) => void;
}

/** Decode steps of the --ram 0 run: each reads the whole model from disk (about 8 s for Llama-3.1-8B there). */
const diskDecodeTokens = 4;

const tool = (name: string) => new URL(`../../../tools/bench/${name}`, import.meta.url).pathname;

/** Bytes in the page cache (Linux), or undefined: a run from disk with O_DIRECT should leave it as it was. */
async function pageCacheBytes(): Promise<number | undefined> {
  const info = await readFile("/proc/meminfo", "utf8").catch(() => "");
  const kb = /^Cached:\s+(\d+) kB/m.exec(info)?.[1];
  return kb === undefined ? undefined : Number(kb) * 1024;
}

/** Drops the page cache (root on Linux) so reads really come from the disk; false where that is not allowed. */
export async function dropCaches(): Promise<boolean> {
  try {
    execFileSync("sync");
    await writeFile("/proc/sys/vm/drop_caches", "3");
    return true;
  } catch {
    return false;
  }
}

async function ensureModel(preset: string, dir: string, log: (l: string) => void, layers?: number): Promise<string> {
  const out = join(dir, layers ? `${preset}-${layers}l` : preset);
  const marker = await readFile(join(out, testModelMarker), "utf8").then((t) => JSON.parse(t) as { preset: string; dtype: string; complete?: boolean }, () => undefined);
  if (marker?.preset === preset && marker.dtype === "bf16" && marker.complete !== false) return out;
  const t0 = performance.now();
  await makeTestModel({ preset, dtype: "bf16", out, ...(layers ? { layers } : {}) });
  log(`wrote ${preset} to ${out} in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  return out;
}

/**
 * Removes a checkpoint this benchmark wrote once its workloads are done, except the main one (later workloads use it):
 * every model kept would not fit the disks these runs get (64 GB on the GPU machine).
 */
async function removeModel(dir: string, main: string): Promise<void> {
  if (dir === main) return;
  const ours = await readFile(join(dir, testModelMarker), "utf8").then(() => true, () => false);
  if (ours) await rm(dir, { recursive: true, force: true });
}

function promptIds(n: number, vocab: number, seed: number): number[] {
  const r = new Random(seed);
  return Array.from({ length: n }, () => 256 + Math.floor(r.next() * (vocab - 1024)));
}

/** Feeds each sequence its ids and picks each one's greedy next token as generation does (the backend ranks the logits). */
async function greedyStep(m: LayerwiseModel, seqs: readonly Sequence[], ids: readonly (readonly number[])[]): Promise<number[][]> {
  const out = await m.forwardBatch(seqs.map((seq, i) => ({ seq, ids: ids[i]! })), seqs.map(() => ({ top: 1 })));
  return out.map((l) => [l instanceof Float32Array ? argmax(l) : l.ids[0]!]);
}

/**
 * Prefill `ids` on a fresh sequence, then greedy decode; times, tokens/s and the peak device memory of this run.
 * `betweenPhases` runs after the prefill and before the decode, outside both timings.
 */
async function generation(m: LayerwiseModel, ids: number[], decodeTokens: number, betweenPhases?: () => Promise<void>): Promise<GenerationFigures> {
  const s = m.createSequence();
  m.backend.resetPeaks();
  try {
    const start = m.stats();
    const t0 = performance.now();
    let next = await greedyStep(m, [s], [ids]);
    const ttftS = (performance.now() - t0) / 1000;
    const prefilled = m.stats();
    await betweenPhases?.();
    const before = m.stats();
    const t1 = performance.now();
    let decodeFirstStepS = 0;
    for (let i = 0; i < decodeTokens; i++) {
      next = await greedyStep(m, [s], next);
      if (i === 0) decodeFirstStepS = (performance.now() - t1) / 1000;
    }
    const decodeSPerToken = decodeTokens ? (performance.now() - t1) / 1000 / decodeTokens : 0;
    const after = m.stats();
    const perToken = (k: "diskReadBytes" | "h2dBytes" | "expertLoads" | "expertHits" | "ioWaitS" | "computeS" | "diskBusyS") => (decodeTokens ? (after[k] - before[k]) / decodeTokens : 0);
    return {
      ttftS,
      prefillTokensPerS: ids.length / ttftS,
      decodeSPerToken,
      decodeFirstStepS,
      peakVramBytes: m.backend.memory.deviceBytesPeak,
      prefillIoWaitS: prefilled.ioWaitS - start.ioWaitS,
      prefillComputeS: prefilled.computeS - start.computeS,
      prefillDiskBusyS: prefilled.diskBusyS - start.diskBusyS,
      decodeIoWaitSPerToken: perToken("ioWaitS"),
      decodeComputeSPerToken: perToken("computeS"),
      decodeDiskBusySPerToken: perToken("diskBusyS"),
      decodeDiskBytesPerToken: perToken("diskReadBytes"),
      decodeH2dBytesPerToken: perToken("h2dBytes"),
      ...(m.arch.shape.moe ? { decodeExpertLoadsPerToken: perToken("expertLoads"), decodeExpertHitsPerToken: perToken("expertHits") } : {}),
    };
  } finally {
    s.dispose();
  }
}

function python(script: string, args: string[]): string | undefined {
  try {
    return execFileSync("python3", [tool(script), ...args], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], maxBuffer: 16 << 20 });
  } catch {
    return undefined;
  }
}

/** Runs one workload; a failure is recorded in the results and the benchmark goes on. */
async function workload(name: string, results: BenchResults, log: (l: string) => void, fn: () => Promise<void>, onResults?: (r: BenchResults) => void): Promise<void> {
  try {
    await fn();
  } catch (e) {
    results[`${name}_error`] = (e as Error).message;
    log(`${name} failed: ${(e as Error).message}`);
  }
  onResults?.(results);
}

export async function runBench(o: BenchOptions): Promise<BenchResults & GoalRatios> {
  const { backend, log } = o;
  const date = new Date().toISOString();
  const main = await ensureModel(o.presets[0]!, o.dir, log);
  const config = JSON.parse(await readFile(join(main, "config.json"), "utf8")) as Record<string, number>;
  const { model: arch } = createArchModel(config);
  const heads = config.num_attention_heads!;
  const headDim = config.head_dim ?? config.hidden_size! / heads;
  const vocab = config.vocab_size!;

  // ---- links, measured in this run ----
  const { files: shards } = await findShards(main);
  const cold = await dropCaches();
  const disk = await measureDisk(backend, shards, 2 ** 33);
  const h2d = await measureHostToDevice(backend, 256 << 20, 8);
  const torch = o.skip.has("torch") ? undefined : python("torch_limits.py", []);
  const torchLimits = torch ? (JSON.parse(torch.trim().split("\n").pop()!) as TorchLimits) : undefined;
  const links: Links = {
    diskGbps: disk.gbps,
    h2dGbps: h2d.gbps,
    matmulTflops: torchLimits?.matmul_bf16_tflops ?? NaN,
    attentionTflops: torchLimits?.sdpa_32k_tflops ?? NaN,
  };
  const limits = { disk_gbps: disk.gbps, disk_method: cold ? `${disk.method}, page cache dropped` : disk.method, disk_queue_depth: disk.depth, h2d_pinned_gbps: h2d.gbps, torch: torchLimits ?? null };
  const results: BenchResults = { date, backend: backend.name, main_preset: o.presets[0], vram_budget_bytes: o.vramBytes, contexts: o.contexts, limits };
  log(`links: disk ${disk.gbps.toFixed(2)} GB/s (${disk.method}, ${disk.depth} reads in flight), host->GPU ${h2d.gbps.toFixed(1)} GB/s, torch matmul ${links.matmulTflops.toFixed(0)} TFLOP/s, SDPA ${links.attentionTflops.toFixed(0)} TFLOP/s`);

  const maxCtx = Math.max(...o.contexts);
  const budget = { backend, vram: o.vramBytes };
  const ctx32 = o.contexts.includes(32768) ? 32768 : o.contexts[Math.floor(o.contexts.length / 2)]!;

  // ---- RAM tier: prefill and decode at each context, with the peak device memory of each ----
  const warm: RunFigures[] = [];
  if (o.skip.has("main")) for (const w of ["disk", "batch", "kvcache", "nolimit", "baseline"]) o.skip.add(w);
  else await withModel(main, { ...budget, context: maxCtx + o.decodeTokens + 64 }, async (m) => {
    results.plan_ram_tier = { layer_tiers: m.plan.layerTier.join(","), kv_device_tokens: m.plan.kvDeviceTokens, kv_device_tokens_decode: m.plan.kvDeviceTokensDecode, device_bytes: m.plan.deviceBytes, host_bytes: m.plan.hostBytes };
    const weightBytes = m.layout.layers.reduce((n, l) => n + l.dataBytes, 0);
    for (const ctx of o.contexts) {
      const f = await generation(m, promptIds(ctx, vocab, ctx), o.decodeTokens);
      const bytes = decodeBytesAt(m.plan, ctx);
      const fig: RunFigures = { context: ctx, ...f, floorDecodeS: bytes.h2dBytes / (links.h2dGbps * 1e9), floorPrefillS: prefillFloorS(prefillFlops(m.layout, arch, ctx, heads, headDim), weightBytes, links.h2dGbps, links) };
      warm.push(fig);
      log(`RAM tier ${ctx} tokens: first token ${f.ttftS.toFixed(2)} s (${f.prefillTokensPerS.toFixed(0)} tok/s), decode ${f.decodeSPerToken.toFixed(3)} s/token (floor ${fig.floorDecodeS!.toFixed(3)}), peak VRAM ${(f.peakVramBytes / 1e9).toFixed(2)} GB`);
    }
  });
  results.ram_tier = warm;
  o.onResults?.(results);

  // ---- weights from disk every token (--ram 0), cold prefill ----
  let diskRun: RunFigures | undefined;
  if (!o.skip.has("disk")) {
    await workload("disk", results, log, async () => {
      await withModel(main, { ...budget, ram: 0, context: ctx32 + 64 }, async (m) => {
        const dropped = await dropCaches();
        const cachedBefore = await pageCacheBytes();
        const weightBytes = m.layout.layers.reduce((n, l) => n + l.dataBytes, 0);
        // The disk's speed drifts by 10-30% over minutes on the GPU machine: the cold prefill's and the decode's floors
        // each take the better of the readings just before and just after them (O_DIRECT: the page cache stays as it is).
        // A forward ends by reading the next token's first layers ahead: they land first, so as not to share the disk.
        const readDisk = async () => {
          await m.parts.streamer.readsAheadSettled();
          return (await measureDisk(backend, shards, 2 ** 33)).gbps;
        };
        const beforePrefill = await readDisk();
        const aroundDecode: number[] = [];
        const f = await generation(m, promptIds(ctx32, vocab, 7), diskDecodeTokens, async () => void aroundDecode.push(await readDisk()));
        const cachedAfter = await pageCacheBytes();
        aroundDecode.push(await readDisk());
        const prefillDiskGbps = Math.max(beforePrefill, aroundDecode[0]!);
        const decodeDiskGbps = Math.max(...aroundDecode);
        const bytes = decodeBytesAt(m.plan, ctx32);
        // The KV spill file is written through the page cache: where the cache grew by at least the KV a token reads
        // back, those reads came from RAM, not the disk, and the disk floor leaves them out (the host->GPU one has them).
        const pageCacheGrowth = cachedBefore !== undefined && cachedAfter !== undefined ? cachedAfter - cachedBefore : null;
        const kvFromPageCache = pageCacheGrowth !== null && bytes.kvDiskBytes > 0 && pageCacheGrowth >= bytes.kvDiskBytes;
        const diskFloorBytes = bytes.diskBytes - (kvFromPageCache ? bytes.kvDiskBytes : 0);
        diskRun = { context: ctx32, ...f, floorDecodeS: Math.max(diskFloorBytes / (decodeDiskGbps * 1e9), bytes.h2dBytes / (links.h2dGbps * 1e9)), floorPrefillS: prefillFloorS(prefillFlops(m.layout, arch, ctx32, heads, headDim), weightBytes, prefillDiskGbps, links) };
        results.disk_tier = { ...diskRun, disk_gbps_before_prefill: beforePrefill, disk_gbps_around_decode: aroundDecode, page_cache_dropped: dropped, page_cache_growth_bytes: pageCacheGrowth, kv_spill_bytes_per_token: bytes.kvDiskBytes, kv_spill_from_page_cache: kvFromPageCache, disk_read_bytes: m.stats().diskReadBytes };
        log(`--ram 0 ${ctx32} tokens: first token ${f.ttftS.toFixed(2)} s (cold; floor ${diskRun.floorPrefillS!.toFixed(2)} at ${prefillDiskGbps.toFixed(2)} GB/s), decode ${f.decodeSPerToken.toFixed(2)} s/token (floor ${diskRun.floorDecodeS!.toFixed(2)} at ${decodeDiskGbps.toFixed(2)} GB/s, the better of ${aroundDecode.map((g) => g.toFixed(2)).join(" and ")}), ${(f.decodeDiskBytesPerToken! / f.decodeSPerToken / 1e9).toFixed(2)} GB/s from disk, reading ${((100 * f.decodeDiskBusySPerToken!) / f.decodeSPerToken).toFixed(0)}% of the time, page cache grew ${pageCacheGrowth === null ? "?" : (pageCacheGrowth / 1e9).toFixed(2)} GB`);
      });
    }, o.onResults);
  }

  // ---- batched decode: every streamed layer serves the whole batch ----
  if (!o.skip.has("batch")) {
    await workload("batch", results, log, async () => {
      const batches = [1, 4, 16, 64];
      const perBatch: BatchFigures[] = [];
      await withModel(main, { ...budget, context: 1024, batch: 64 }, async (m) => {
        for (const n of batches) {
          const seqs = Array.from({ length: n }, () => m.createSequence());
          let next = await greedyStep(m, seqs, seqs.map((_, i) => promptIds(256, vocab, 100 + i))); // all prompts in one weight pass
          const steps = 8;
          const t0 = performance.now();
          for (let s = 0; s < steps; s++) next = await greedyStep(m, seqs, next);
          const tokensPerS = (n * steps) / ((performance.now() - t0) / 1000);
          perBatch.push({ batch: n, tokensPerS });
          log(`batch ${n}: ${tokensPerS.toFixed(1)} tokens/s`);
          seqs.forEach((s) => s.dispose());
        }
      });
      results.batch = perBatch;
    }, o.onResults);
  }

  // ---- a second question about the same document, with the persistent KV cache ----
  if (!o.skip.has("kvcache")) {
    await workload("kvcache", results, log, async () => {
      const cache = join(o.dir, `kv-cache-${Date.now()}`);
      await withModel(main, { ...budget, context: ctx32 + 128, kvCache: cache }, async (m) => {
        const doc = promptIds(ctx32 - 64, vocab, 11);
        const first = await m.complete({ ids: [...doc, ...promptIds(32, vocab, 12)] }, { maxTokens: 1, temperature: 0 });
        const second = await m.complete({ ids: [...doc, ...promptIds(32, vocab, 13)] }, { maxTokens: 1, temperature: 0 });
        results.kv_cache = { context: ctx32, first_ttft_s: first.ttftS, second_ttft_s: second.ttftS, hit_tokens: second.kvCacheHitTokens, cache_bytes: (await dirBytes(cache)) };
        log(`second question with --kv-cache: first token ${second.ttftS.toFixed(2)} s (cold ${first.ttftS.toFixed(2)} s), ${second.kvCacheHitTokens} tokens from the cache`);
      });
    }, o.onResults);
  }

  // ---- no VRAM limit, for contrast ----
  if (!o.skip.has("nolimit")) {
    await workload("nolimit", results, log, async () => {
      await withModel(main, { backend, context: ctx32 + 64 }, async (m) => {
        const f = await generation(m, promptIds(ctx32, vocab, 5), o.decodeTokens);
        results.no_limit = { context: ctx32, ...f, tiers: m.plan.layerTier.join(",") };
        log(`no VRAM limit ${ctx32} tokens: first token ${f.ttftS.toFixed(2)} s, decode ${f.decodeSPerToken.toFixed(4)} s/token, peak VRAM ${(f.peakVramBytes / 1e9).toFixed(1)} GB`);
      });
    }, o.onResults);
  }

  // ---- models at a context of their own: RAM tier; mixture-of-experts models also from disk (routed experts only) ----
  const long: LongContextRow[] = [];
  if (!o.skip.has("long")) {
    for (const { preset, context, layers, predictAt } of o.long) {
      const cleanups: (() => Promise<void>)[] = [];
      await workload(`long_${preset}`, results, log, async () => {
        const dir = await ensureModel(preset, o.dir, log, layers);
        cleanups.push(() => removeModel(dir, main));
        const cfg = JSON.parse(await readFile(join(dir, "config.json"), "utf8")) as Record<string, number>;
        const row: LongContextRow = { preset, context, ...(layers ? { layers } : {}) };
        long.push(row);
        let moe = false;
        await withModel(dir, { ...budget, context: context + o.decodeTokens + 64 }, async (m) => {
          moe = m.arch.shape.moe !== undefined;
          const f = await generation(m, promptIds(context, cfg.vocab_size!, 21), o.decodeTokens);
          const floor = decodeBytesAt(m.plan, context).h2dBytes / (links.h2dGbps * 1e9);
          row.ram_tier = { ...f, floorDecodeS: floor, plan: { layer_tiers: m.plan.layerTier.join(","), experts: m.plan.experts, device_bytes: m.plan.deviceBytes, host_bytes: m.plan.hostBytes } };
          if (layers && predictAt) row.prediction = predictFullModel(m, presets[preset]!.config, predictAt, links);
          log(`${preset} ${context} tokens: first token ${f.ttftS.toFixed(1)} s, decode ${f.decodeSPerToken.toFixed(3)} s/token (uniform-routing floor ${floor.toFixed(3)}), peak VRAM ${(f.peakVramBytes / 1e9).toFixed(2)} GB, ${(f.decodeH2dBytesPerToken! / 1e6).toFixed(0)} MB/token host->GPU`);
        });
        o.onResults?.(results);
        if (!moe) return;
        // From disk: a short prompt (a long one from disk re-reads every expert per chunk), then decode.
        await withModel(dir, { ...budget, ram: 0, context: 2048 + o.decodeTokens + 64 }, async (m) => {
          await dropCaches();
          const f = await generation(m, promptIds(2048, cfg.vocab_size!, 22), Math.min(o.decodeTokens, 8));
          row.disk_tier = { ...f, context: 2048, floorDecodeS: Math.max(f.decodeDiskBytesPerToken! / (links.diskGbps * 1e9), f.decodeH2dBytesPerToken! / (links.h2dGbps * 1e9)) };
          log(`${preset} --ram 0 (2048-token prompt): decode ${f.decodeSPerToken.toFixed(2)} s/token, ${(f.decodeDiskBytesPerToken! / 1e6).toFixed(0)} MB/token from disk, ${f.decodeExpertLoadsPerToken!.toFixed(1)} experts loaded/token`);
        });
      }, o.onResults);
      for (const c of cleanups) await c();
    }
  }
  results.long_context = long;

  // ---- other models: RAM tier at the middle context ----
  const others: OtherModelFigures[] = [];
  for (const preset of o.presets.slice(1)) {
    const dir = await ensureModel(preset, o.dir, log);
    const cfg = JSON.parse(await readFile(join(dir, "config.json"), "utf8")) as Record<string, number>;
    await withModel(dir, { ...budget, context: ctx32 + o.decodeTokens + 64 }, async (m) => {
      const f = await generation(m, promptIds(ctx32, cfg.vocab_size!, 3), o.decodeTokens);
      const floor = decodeBytesAt(m.plan, ctx32).h2dBytes / (links.h2dGbps * 1e9);
      others.push({ preset, context: ctx32, ...f, floorDecodeS: floor });
      log(`${preset} ${ctx32} tokens: first token ${f.ttftS.toFixed(2)} s, decode ${f.decodeSPerToken.toFixed(3)} s/token (floor ${floor.toFixed(3)}), peak VRAM ${(f.peakVramBytes / 1e9).toFixed(2)} GB`);
    }).finally(() => removeModel(dir, main));
  }
  results.other_models = others;

  // ---- baseline: transformers + accelerate offload on the same checkpoint ----
  let baseline: BaselineFigures[] = [];
  if (!o.skip.has("baseline")) {
    const contexts = o.contexts.filter((c) => c <= 32768);
    const out = python("accelerate_baseline.py", [main, ...contexts.map(String), "--vram", `${Math.floor(o.vramBytes / 2 ** 30)}GiB`, "--tokens", "4"]);
    baseline = (out ?? "").trim().split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l) as BaselineFigures);
    results.baseline_accelerate = baseline.length ? baseline : { error: "python3 with torch, transformers and accelerate is needed for the baseline" };
    for (const b of baseline) log(`accelerate ${b.context} tokens: first token ${b.ttft_s.toFixed(2)} s, decode ${b.decode_s_per_token.toFixed(3)} s/token, peak VRAM ${(b.peak_vram_bytes / 1e9).toFixed(1)} GB`);
  }

  return Object.assign(results, ratios(results));
}

/**
 * The planner's plan for the real depth of a model benchmarked with fewer layers: its layer (and expert) layouts repeat
 * the measured ones, the budgets stay; per-token bytes over the links measured in this run give the floor.
 */
export function predictFullModel(m: LayerwiseModel, realConfig: Record<string, unknown>, context: number, links: Links): FullModelPrediction {
  const { model: real } = createArchModel({ ...realConfig, num_hidden_layers: realConfig.num_hidden_layers });
  const layers = real.shape.numLayers;
  const measured = m.layout.layers.length;
  const layout = {
    ...m.layout,
    layers: Array.from({ length: layers }, (_, i) => m.layout.layers[i % measured]!),
    experts: Array.from({ length: layers }, (_, i) => m.layout.experts[i % measured]!),
  };
  const p = plan({ ...m.plan.input, layout, shape: real.shape, contextTokens: context });
  const bytes = decodeBytesAt(p, context);
  const weights = layout.globals.dataBytes + layout.layers.reduce((n, l) => n + l.dataBytes, 0) + layout.experts.flat().reduce((n, g) => n + g.dataBytes, 0);
  return {
    layers,
    context,
    checkpoint_bytes: weights,
    vram_planned_bytes: p.deviceBytes.total + m.backend.deviceOverheadBytes,
    ram_planned_bytes: p.hostBytes.total,
    experts: p.experts,
    per_token_h2d_bytes: bytes.h2dBytes,
    per_token_disk_bytes: bytes.diskBytes,
    floor_decode_s: Math.max(bytes.h2dBytes / (links.h2dGbps * 1e9), bytes.diskBytes / (links.diskGbps * 1e9)),
  };
}

async function dirBytes(dir: string): Promise<number> {
  let n = 0;
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) if (e.isFile()) n += (await stat(join(e.parentPath ?? (e as unknown as { path: string }).path, e.name))).size;
  return n;
}

export const benchPresets = Object.keys(presets).filter((p) => !p.startsWith("tiny-"));
