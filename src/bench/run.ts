// `layerwise bench`: random-weight checkpoints with real shapes, the links they stream over (measured in the same run),
// layerwise's prefill and decode at several contexts inside a VRAM budget, and the transformers + accelerate baseline.
// runBench runs the workloads in a fixed order (disk readings and page caches depend on what ran before them).
import type { Backend } from "../backend/ops.js";
import { presets } from "../testmodel/presets.js";
import { accelerateBaseline } from "./baseline.js";
import { ensureCheckpoint, removeCheckpoint } from "./checkpoints.js";
import { diskTier } from "./disk-tier.js";
import { measureLinks } from "./links.js";
import { batchedDecode, kvCacheSecondQuestion, noLimit, ramTier } from "./main-model.js";
import { longContext, otherModel, type LongContextEntry } from "./other-models.js";
import { ratios } from "./ratios.js";
import type { BenchResults, GoalRatios, LongContextRow, OtherModelFigures } from "./results.js";
import { goalContext, mainCheckpoint, type BenchSetup } from "./setup.js";

export interface BenchOptions {
  backend: Backend;
  presets: string[];
  contexts: number[];
  vramBytes: number;
  dir: string;
  decodeTokens: number;
  /** Workloads to leave out: main (every workload of the first preset but the links), disk, batch, kvcache, nolimit, baseline, torch, long. */
  skip: Set<string>;
  /**
   * Models run at a context of their own (RAM tier, and mixture-of-experts models from disk too); `layers`: fewer
   * layers than the real model (one too big for the disk), with the planner's prediction for all of them at `predictAt`.
   */
  long: LongContextEntry[];
  log: (line: string) => void;
  /** Called with the results so far after every workload (so an interrupted run keeps what it measured). */
  onResults?: (results: BenchResults) => void;
}

/** The workloads on the main checkpoint, which --skip main leaves out. */
const mainWorkloads = ["disk", "batch", "kvcache", "nolimit", "baseline"];

/**
 * Runs the workloads in their order and returns every figure with the goal ratios. The links, the main model's RAM tier
 * and the other models end the bench when they fail; any other workload's failure is recorded and the bench goes on.
 */
export async function runBench(o: BenchOptions): Promise<BenchResults & GoalRatios> {
  const { backend, log } = o;
  const date = new Date().toISOString();
  const main = await mainCheckpoint(o.presets[0]!, o.dir, log);
  const { links, limits } = await measureLinks(backend, main.shards, !o.skip.has("torch"), log);
  const results: BenchResults = {
    date,
    backend: backend.name,
    main_preset: o.presets[0],
    vram_budget_bytes: o.vramBytes,
    contexts: o.contexts,
    limits,
  };
  const bench: BenchSetup = {
    backend,
    vramBytes: o.vramBytes,
    decodeTokens: o.decodeTokens,
    dir: o.dir,
    main,
    links,
    goalContext: goalContext(o.contexts),
    log,
  };
  const skip = new Set([...o.skip, ...(o.skip.has("main") ? mainWorkloads : [])]);
  const saveSoFar = () => o.onResults?.(results);
  /**
   * Runs a workload the bench survives: its failure is recorded as <name>_error, and the results so far are saved. Such
   * workloads write their figures into the results as soon as they have them (before their model closes), so what they
   * measured stays beside the error of a later step.
   */
  const workload = async (name: string, run: () => Promise<void>) => {
    try {
      await run();
    } catch (e) {
      results[`${name}_error`] = (e as Error).message;
      log(`${name} failed: ${(e as Error).message}`);
    }
    saveSoFar();
  };

  if (skip.has("main")) results.ram_tier = [];
  else {
    const ram = await ramTier(bench, o.contexts);
    results.plan_ram_tier = ram.plan;
    results.ram_tier = ram.figures;
  }
  saveSoFar();
  if (!skip.has("disk")) await workload("disk", () => diskTier(bench, results));
  if (!skip.has("batch")) await workload("batch", () => batchedDecode(bench, results));
  if (!skip.has("kvcache")) await workload("kvcache", () => kvCacheSecondQuestion(bench, results));
  if (!skip.has("nolimit")) await workload("nolimit", () => noLimit(bench, results));

  const long: LongContextRow[] = [];
  for (const entry of skip.has("long") ? [] : o.long) {
    const cleanups: (() => Promise<void>)[] = []; // after the workload, failed or not, once its checkpoint was written
    await workload(`long_${entry.preset}`, async () => {
      const dir = await ensureCheckpoint(entry.preset, o.dir, log, entry.layers);
      cleanups.push(() => removeCheckpoint(dir, main.dir));
      await longContext(bench, dir, entry, long, saveSoFar);
    });
    for (const c of cleanups) await c();
  }
  results.long_context = long;

  const others: OtherModelFigures[] = [];
  for (const preset of o.presets.slice(1)) others.push(await otherModel(bench, preset));
  results.other_models = others;

  if (!skip.has("baseline")) results.baseline_accelerate = accelerateBaseline(bench, o.contexts);
  return Object.assign(results, ratios(results));
}

export const benchPresets = Object.keys(presets).filter((p) => !p.startsWith("tiny-"));
