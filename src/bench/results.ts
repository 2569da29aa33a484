// The results JSON of `layerwise bench` (bench/results/*.json): what runBench writes, `bench --report` merges and the
// report reads. Keys are those of the files since the first runs: snake_case, and camelCase inside one generation's
// figures. Files of older builds lack some keys (optional here) and may carry notes written by hand (`command`,
// `limits_gemma_run`...) that this type does not name: mergeResults copies those as they are, the report ignores them.
// A figure that came out NaN (a prefill floor without torch's speeds to divide by) is written as null.
import type { Plan } from "../engine/planner.js";

/** One generation: a prompt prefilled on a fresh sequence, then greedy decode (measureGeneration). Times in seconds. */
export interface GenerationFigures {
  ttftS: number;
  prefillTokensPerS: number;
  decodeSPerToken: number;
  /** The first decode step alone (part of decodeSPerToken): after a prompt it brings decode's share of the KV back from RAM. */
  decodeFirstStepS?: number;
  peakVramBytes: number;
  /** Where the time went (the model's stats): waiting for weights and KV to arrive, and the rest; decode per token. */
  prefillIoWaitS?: number;
  prefillComputeS?: number;
  /** Seconds of the prefill the weight reader had a read in flight. */
  prefillDiskBusyS?: number;
  decodeIoWaitSPerToken?: number;
  decodeComputeSPerToken?: number;
  /** Seconds of a decode step the weight reader had a read in flight: near the step's time, the disk never idled. */
  decodeDiskBusySPerToken?: number;
  /** Bytes read from disk and copied host -> device per decoded token; experts loaded and cache hits per token (MoE only). */
  decodeDiskBytesPerToken?: number;
  decodeH2dBytesPerToken?: number;
  decodeExpertLoadsPerToken?: number;
  decodeExpertHitsPerToken?: number;
}

/** A generation at a context, with the floors of the links measured in the same run where the workload works them out. */
export interface RunFigures extends GenerationFigures {
  context: number;
  floorDecodeS?: number;
  floorPrefillS?: number;
}

/** tools/bench/torch_limits.py's figures for this GPU. */
export interface TorchLimits {
  gpu: string;
  torch: string;
  matmul_bf16_tflops: number;
  copy_gbps: number;
  sdpa_8k_tflops: number;
  sdpa_8k_s: number;
  sdpa_32k_tflops: number;
  sdpa_32k_s: number;
  h2d_pinned_gbps: number;
  h2d_pageable_gbps: number;
}

/** The links, measured at the start of the run. */
export interface LinkLimits {
  disk_gbps: number;
  /** How the disk was read (O_DIRECT or buffered), and ", page cache dropped" where it was. */
  disk_method: string;
  /** Reads in flight in the best disk reading. */
  disk_queue_depth?: number;
  h2d_pinned_gbps: number;
  /** null without torch, or with --skip torch. */
  torch: TorchLimits | null;
}

/** A plan as the results show it: each layer's tier (comma-separated) and the planned bytes. */
export interface PlanFigures {
  layer_tiers: string;
  device_bytes: Plan["deviceBytes"];
  host_bytes: Plan["hostBytes"];
}

/** The main model's plan for the RAM-tier runs. */
export interface RamTierPlan extends PlanFigures {
  kv_device_tokens: number;
  kv_device_tokens_decode?: number;
}

/** Weights from disk every token (--ram 0), cold prefill: the figures, and the disk readings its floors take. */
export interface DiskTierFigures extends RunFigures {
  /** GB/s read just before the prefill, and between the prefill and the decode and after the decode. */
  disk_gbps_before_prefill?: number;
  disk_gbps_around_decode?: number[];
  page_cache_dropped: boolean;
  /** null where the page cache's size cannot be read (not Linux). */
  page_cache_growth_bytes?: number | null;
  kv_spill_bytes_per_token?: number;
  /** The page cache grew by at least the KV a token reads back: the disk floor leaves those reads out. */
  kv_spill_from_page_cache?: boolean;
  disk_read_bytes: number;
}

export interface BatchFigures {
  batch: number;
  tokensPerS: number;
}

/** A second question about the same document with the persistent KV cache. */
export interface KvCacheFigures {
  context: number;
  first_ttft_s: number;
  second_ttft_s: number;
  /** Prompt tokens the second question took from the cache (absent when none). */
  hit_tokens?: number;
  cache_bytes: number;
}

/** No VRAM limit, for contrast. */
export interface NoLimitFigures extends RunFigures {
  tiers: string;
}

export interface LongContextPlan extends PlanFigures {
  experts: Plan["experts"];
}

/** A model at a context of its own: the RAM tier, and for mixture-of-experts models weights from disk too. */
export interface LongContextRow {
  preset: string;
  context: number;
  /** Layers of the checkpoint, where fewer than the real model's. */
  layers?: number;
  ram_tier?: GenerationFigures & { floorDecodeS?: number; plan: LongContextPlan };
  /** The planner's plan for the real depth (a checkpoint cut to fewer layers). */
  prediction?: FullModelPrediction;
  disk_tier?: RunFigures;
}

export interface FullModelPrediction {
  layers: number;
  context: number;
  checkpoint_bytes: number;
  vram_planned_bytes: number;
  ram_planned_bytes: number;
  experts: Plan["experts"];
  per_token_h2d_bytes: number;
  per_token_disk_bytes: number;
  floor_decode_s: number;
}

/** Another model, RAM tier at the goal context. */
export interface OtherModelFigures extends RunFigures {
  preset: string;
}

/** tools/bench/accelerate_baseline.py's figures at one context. */
export interface BaselineFigures {
  context: number;
  ttft_s: number;
  decode_s_per_token: number;
  peak_vram_bytes: number;
  load_s?: number;
  vram_cap?: string;
  transformers?: string;
}

/** The ratios the goals are stated in (null where the run did not measure what a ratio needs). */
export interface GoalRatios {
  decode_ram_floor_ratio_32k: number | null;
  decode_disk_floor_ratio_32k: number | null;
  prefill_floor_ratio_32k_warm: number | null;
  prefill_floor_ratio_32k_cold: number | null;
  peak_vram_over_budget_max: number | null;
  vram_growth_8k_to_100k: number | null;
  decode_speedup_vs_accelerate_32k: number | null;
  batch16_over_batch1: number | null;
}

/** A bench run's results, in the order runBench writes the keys; the ratios come last, then the GPU (the CLI's). */
export interface BenchResults extends Partial<GoalRatios> {
  /** When the run started; merged results keep the first run's, and every run's in run_dates. */
  date: string;
  run_dates?: string[];
  backend: string;
  main_preset?: string;
  vram_budget_bytes: number;
  contexts?: number[];
  limits: LinkLimits;
  plan_ram_tier?: RamTierPlan;
  ram_tier?: RunFigures[];
  disk_tier?: DiskTierFigures;
  batch?: BatchFigures[];
  kv_cache?: KvCacheFigures;
  no_limit?: NoLimitFigures;
  long_context?: LongContextRow[];
  other_models?: OtherModelFigures[];
  baseline_accelerate?: BaselineFigures[] | { error: string };
  gpu?: string;
  /** A workload that failed (disk_error, long_gpt-oss-20b_error...): its message. The bench went on without it. */
  [workloadError: `${string}_error`]: string;
}
