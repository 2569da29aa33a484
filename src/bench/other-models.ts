// The workloads on models other than the main one: at the goal context in the VRAM budget, and at a context of their
// own (--long), mixture-of-experts models from disk too.
import { withModel } from "../engine/model.js";
import { decodeBytesAt } from "../engine/planner.js";
import { presets } from "../testmodel/presets.js";
import { ensureCheckpoint, readConfig, removeCheckpoint } from "./checkpoints.js";
import { transferS } from "./floors.js";
import { measureGeneration, promptIds } from "./generation.js";
import { dropCaches } from "./machine.js";
import { predictFullModel } from "./prediction.js";
import type { LongContextRow, OtherModelFigures } from "./results.js";
import { withinBudget, type BenchSetup } from "./setup.js";

/** Another preset at the goal context, layers from RAM; its checkpoint is written first and removed after. */
export async function otherModel(bench: BenchSetup, preset: string): Promise<OtherModelFigures> {
  const { goalContext: ctx } = bench;
  const dir = await ensureCheckpoint(preset, bench.dir, bench.log);
  const vocab = (await readConfig(dir)).vocab_size!;
  return withModel(dir, { ...withinBudget(bench), context: ctx + bench.decodeTokens + 64 }, async (m) => {
    const f = await measureGeneration(m, promptIds(ctx, vocab, 3), bench.decodeTokens);
    const floor = transferS(decodeBytesAt(m.plan, ctx).h2dBytes, bench.links.h2dGbps);
    bench.log(
      `${preset} ${ctx} tokens: first token ${f.ttftS.toFixed(2)} s, decode ${f.decodeSPerToken.toFixed(3)} s/token (floor ${floor.toFixed(3)}), peak VRAM ${(f.peakVramBytes / 1e9).toFixed(2)} GB`,
    );
    return { preset, context: ctx, ...f, floorDecodeS: floor };
  }).finally(() => removeCheckpoint(dir, bench.main.dir));
}

/** A --long entry: a preset at a context of its own; `layers`: fewer than the real model's, whose plan is predicted at `predictAt`. */
export interface LongContextEntry {
  preset: string;
  context: number;
  layers?: number;
  predictAt?: number;
}

/**
 * A model at a context of its own, from its checkpoint `dir`: the RAM tier, and for a mixture-of-experts model weights
 * from disk too. Its row joins `rows` before anything is measured and is filled as figures come, so a failure keeps
 * what came before it; `saveSoFar` hands on the results between the two runs.
 */
export async function longContext(
  bench: BenchSetup,
  dir: string,
  entry: LongContextEntry,
  rows: LongContextRow[],
  saveSoFar: () => void,
): Promise<void> {
  const vocab = (await readConfig(dir)).vocab_size!;
  const row: LongContextRow = {
    preset: entry.preset,
    context: entry.context,
    ...(entry.layers ? { layers: entry.layers } : {}),
  };
  rows.push(row);
  const moe = await longContextRamTier(bench, dir, entry, vocab, row);
  saveSoFar();
  if (moe) await longContextFromDisk(bench, dir, entry.preset, vocab, row);
}

/** The RAM tier at the entry's context (and the full model's plan where cut to fewer layers); true for an MoE model. */
async function longContextRamTier(
  bench: BenchSetup,
  dir: string,
  entry: LongContextEntry,
  vocab: number,
  row: LongContextRow,
): Promise<boolean> {
  const { preset, context, layers, predictAt } = entry;
  return withModel(dir, { ...withinBudget(bench), context: context + bench.decodeTokens + 64 }, async (m) => {
    const f = await measureGeneration(m, promptIds(context, vocab, 21), bench.decodeTokens);
    const floor = transferS(decodeBytesAt(m.plan, context).h2dBytes, bench.links.h2dGbps);
    row.ram_tier = {
      ...f,
      floorDecodeS: floor,
      plan: {
        layer_tiers: m.plan.layerTier.join(","),
        experts: m.plan.experts,
        device_bytes: m.plan.deviceBytes,
        host_bytes: m.plan.hostBytes,
      },
    };
    if (layers && predictAt) row.prediction = predictFullModel(m, presets[preset]!.config, predictAt, bench.links);
    bench.log(
      `${preset} ${context} tokens: first token ${f.ttftS.toFixed(1)} s, decode ${f.decodeSPerToken.toFixed(3)} s/token (uniform-routing floor ${floor.toFixed(3)}), peak VRAM ${(f.peakVramBytes / 1e9).toFixed(2)} GB, ${(f.decodeH2dBytesPerToken! / 1e6).toFixed(0)} MB/token host->GPU`,
    );
    return m.arch.shape.moe !== undefined;
  });
}

/** Routed experts from disk (--ram 0): a short prompt (a long one from disk re-reads every expert per chunk), then decode. */
async function longContextFromDisk(
  bench: BenchSetup,
  dir: string,
  preset: string,
  vocab: number,
  row: LongContextRow,
): Promise<void> {
  const { links } = bench;
  await withModel(dir, { ...withinBudget(bench), ram: 0, context: 2048 + bench.decodeTokens + 64 }, async (m) => {
    await dropCaches();
    const f = await measureGeneration(m, promptIds(2048, vocab, 22), Math.min(bench.decodeTokens, 8));
    row.disk_tier = {
      ...f,
      context: 2048,
      floorDecodeS: Math.max(
        transferS(f.decodeDiskBytesPerToken!, links.diskGbps),
        transferS(f.decodeH2dBytesPerToken!, links.h2dGbps),
      ),
    };
    bench.log(
      `${preset} --ram 0 (2048-token prompt): decode ${f.decodeSPerToken.toFixed(2)} s/token, ${(f.decodeDiskBytesPerToken! / 1e6).toFixed(0)} MB/token from disk, ${f.decodeExpertLoadsPerToken!.toFixed(1)} experts loaded/token`,
    );
  });
}
