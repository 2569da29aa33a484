// What every workload of the bench gets: the backend and VRAM budget, the main checkpoint, the links measured at the start.
import { createArchModel } from "../arch/index.js";
import type { ArchModel } from "../arch/types.js";
import type { Backend } from "../backend/ops.js";
import type { ModelLayout } from "../engine/layout.js";
import { findShards } from "../model/checkpoint.js";
import { ensureCheckpoint, readConfig } from "./checkpoints.js";
import { layerWeightBytes, prefillFlops, prefillFloorS, type Links } from "./floors.js";

/** The first preset's checkpoint: the links are measured reading it, and the main workloads run on it. */
export interface MainCheckpoint {
  dir: string;
  shards: string[];
  arch: ArchModel;
  /** From its config: what the prefill floor's attention FLOPs and the prompts need. */
  heads: number;
  headDim: number;
  vocab: number;
}

export interface BenchSetup {
  backend: Backend;
  vramBytes: number;
  /** Tokens decoded per measurement. */
  decodeTokens: number;
  /** Where the checkpoints (and the --kv-cache workload's cache) are written. */
  dir: string;
  main: MainCheckpoint;
  links: Links;
  /** The context of the workloads run at one context, and of the 32k goals: 32768 where measured, else the middle one. */
  goalContext: number;
  log: (line: string) => void;
}

/** The load options of a run inside the VRAM budget. */
export const withinBudget = (bench: BenchSetup) => ({ backend: bench.backend, vram: bench.vramBytes });

/** The main model's prefill floor at `context`, its layers' weights coming over a link of `linkGbps` GB/s. */
export function mainPrefillFloorS(bench: BenchSetup, layout: ModelLayout, context: number, linkGbps: number): number {
  const { main } = bench;
  return prefillFloorS(
    prefillFlops(layout, main.arch, context, main.heads, main.headDim),
    layerWeightBytes(layout),
    linkGbps,
    bench.links,
  );
}

export function goalContext(contexts: readonly number[]): number {
  return contexts.includes(32768) ? 32768 : contexts[Math.floor(contexts.length / 2)]!;
}

/** The main checkpoint of `preset` under `dir` (written first where it is not there yet). */
export async function mainCheckpoint(preset: string, dir: string, log: (l: string) => void): Promise<MainCheckpoint> {
  const main = await ensureCheckpoint(preset, dir, log);
  const config = await readConfig(main);
  const { model: arch } = createArchModel(config);
  const heads = config.num_attention_heads!;
  const headDim = config.head_dim ?? config.hidden_size! / heads;
  const { files: shards } = await findShards(main);
  return { dir: main, shards, arch, heads, headDim, vocab: config.vocab_size! };
}
