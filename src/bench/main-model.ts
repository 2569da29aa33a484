// The workloads on the main checkpoint (weights from disk aside: disk-tier.ts): prefill and decode at each context in
// the VRAM budget (RAM tier), batched decode, a second question with the persistent KV cache, and no VRAM limit.
import { join } from "node:path";
import { withModel } from "../engine/model.js";
import { decodeBytesAt } from "../engine/planner.js";
import { transferS } from "./floors.js";
import { greedyStep, measureGeneration, promptIds } from "./generation.js";
import { dirBytes } from "./machine.js";
import type { BatchFigures, BenchResults, RamTierPlan, RunFigures } from "./results.js";
import { mainPrefillFloorS, withinBudget, type BenchSetup } from "./setup.js";

/** Prefill and decode at each context, layers from RAM, with the peak device memory of each and the links' floors. */
export async function ramTier(
  bench: BenchSetup,
  contexts: readonly number[],
): Promise<{ plan: RamTierPlan; figures: RunFigures[] }> {
  const { main, links } = bench;
  return withModel(
    main.dir,
    { ...withinBudget(bench), context: Math.max(...contexts) + bench.decodeTokens + 64 },
    async (m) => {
      const plan = {
        layer_tiers: m.plan.layerTier.join(","),
        kv_device_tokens: m.plan.kvDeviceTokens,
        kv_device_tokens_decode: m.plan.kvDeviceTokensDecode,
        device_bytes: m.plan.deviceBytes,
        host_bytes: m.plan.hostBytes,
      };
      const figures: RunFigures[] = [];
      for (const ctx of contexts) {
        const f = await measureGeneration(m, promptIds(ctx, main.vocab, ctx), bench.decodeTokens);
        const bytes = decodeBytesAt(m.plan, ctx);
        const fig: RunFigures = {
          context: ctx,
          ...f,
          floorDecodeS: transferS(bytes.h2dBytes, links.h2dGbps),
          floorPrefillS: mainPrefillFloorS(bench, m.layout, ctx, links.h2dGbps),
        };
        figures.push(fig);
        bench.log(
          `RAM tier ${ctx} tokens: first token ${f.ttftS.toFixed(2)} s (${f.prefillTokensPerS.toFixed(0)} tok/s), decode ${f.decodeSPerToken.toFixed(3)} s/token (floor ${fig.floorDecodeS!.toFixed(3)}), peak VRAM ${(f.peakVramBytes / 1e9).toFixed(2)} GB`,
        );
      }
      return { plan, figures };
    },
  );
}

/** Decode throughput at batch 1, 4, 16 and 64: every streamed layer serves the whole batch. */
export async function batchedDecode(bench: BenchSetup, results: Pick<BenchResults, "batch">): Promise<void> {
  const batches = [1, 4, 16, 64];
  const perBatch: BatchFigures[] = [];
  await withModel(bench.main.dir, { ...withinBudget(bench), context: 1024, batch: 64 }, async (m) => {
    for (const n of batches) {
      const seqs = Array.from({ length: n }, () => m.createSequence());
      let next = await greedyStep(
        m,
        seqs,
        seqs.map((_, i) => promptIds(256, bench.main.vocab, 100 + i)),
      ); // all prompts in one weight pass
      const steps = 8;
      const t0 = performance.now();
      for (let step = 0; step < steps; step++) next = await greedyStep(m, seqs, next);
      const tokensPerS = (n * steps) / ((performance.now() - t0) / 1000);
      perBatch.push({ batch: n, tokensPerS });
      bench.log(`batch ${n}: ${tokensPerS.toFixed(1)} tokens/s`);
      seqs.forEach((seq) => seq.dispose());
    }
  });
  results.batch = perBatch;
}

/** A second question about the same document at the goal context, with the persistent KV cache (a new one, kept in `dir`). */
export async function kvCacheSecondQuestion(bench: BenchSetup, results: Pick<BenchResults, "kv_cache">): Promise<void> {
  const { goalContext: ctx, main } = bench;
  const cache = join(bench.dir, `kv-cache-${Date.now()}`);
  await withModel(main.dir, { ...withinBudget(bench), context: ctx + 128, kvCache: cache }, async (m) => {
    const doc = promptIds(ctx - 64, main.vocab, 11);
    const first = await m.complete(
      { ids: [...doc, ...promptIds(32, main.vocab, 12)] },
      { maxTokens: 1, temperature: 0 },
    );
    const second = await m.complete(
      { ids: [...doc, ...promptIds(32, main.vocab, 13)] },
      { maxTokens: 1, temperature: 0 },
    );
    results.kv_cache = {
      context: ctx,
      first_ttft_s: first.ttftS,
      second_ttft_s: second.ttftS,
      hit_tokens: second.kvCacheHitTokens,
      cache_bytes: await dirBytes(cache),
    };
    bench.log(
      `second question with --kv-cache: first token ${second.ttftS.toFixed(2)} s (cold ${first.ttftS.toFixed(2)} s), ${second.kvCacheHitTokens} tokens from the cache`,
    );
  });
}

/** The goal context without a VRAM limit (every layer resident), for contrast. */
export async function noLimit(bench: BenchSetup, results: Pick<BenchResults, "no_limit">): Promise<void> {
  const { goalContext: ctx } = bench;
  await withModel(bench.main.dir, { backend: bench.backend, context: ctx + 64 }, async (m) => {
    const f = await measureGeneration(m, promptIds(ctx, bench.main.vocab, 5), bench.decodeTokens);
    results.no_limit = { context: ctx, ...f, tiers: m.plan.layerTier.join(",") };
    bench.log(
      `no VRAM limit ${ctx} tokens: first token ${f.ttftS.toFixed(2)} s, decode ${f.decodeSPerToken.toFixed(4)} s/token, peak VRAM ${(f.peakVramBytes / 1e9).toFixed(1)} GB`,
    );
  });
}
