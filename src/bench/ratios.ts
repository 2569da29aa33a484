// The ratios the bench's goals are stated in, worked out from a run's figures (also again for a saved or merged run).
import type { BaselineFigures, BenchResults, GoalRatios, RunFigures } from "./results.js";

/** The runs the 32k goals are judged on: the RAM tier and the baseline at the disk run's context (else 32k, else the middle one). */
export function goalRuns(r: BenchResults): { warm?: RunFigures; disk?: RunFigures; baseline?: BaselineFigures } {
  const ram = r.ram_tier ?? [];
  const disk = r.disk_tier;
  const baseline = Array.isArray(r.baseline_accelerate) ? r.baseline_accelerate : [];
  const contexts = ram.map((w) => w.context);
  const mid = disk?.context ?? (contexts.includes(32000) ? 32000 : contexts[Math.floor(contexts.length / 2)]);
  return { warm: ram.find((w) => w.context === mid), disk, baseline: baseline.find((b) => b.context === mid) };
}

export function ratios(r: BenchResults): GoalRatios {
  const warm = r.ram_tier ?? [];
  const { warm: w32, disk, baseline: b32 } = goalRuns(r);
  const batch = r.batch;
  const contexts = warm.map((w) => w.context);
  const at = (ctx: number | undefined) => warm.find((w) => w.context === ctx);
  const tokens = (n: number) => batch?.find((b) => b.batch === n)?.tokensPerS;
  return {
    decode_ram_floor_ratio_32k: w32 ? w32.floorDecodeS! / w32.decodeSPerToken : null,
    decode_disk_floor_ratio_32k: disk ? disk.floorDecodeS! / disk.decodeSPerToken : null,
    prefill_floor_ratio_32k_warm: w32 ? w32.floorPrefillS! / w32.ttftS : null,
    prefill_floor_ratio_32k_cold: disk ? disk.floorPrefillS! / disk.ttftS : null,
    peak_vram_over_budget_max: warm.length ? Math.max(...warm.map((w) => w.peakVramBytes)) / r.vram_budget_bytes : null,
    vram_growth_8k_to_100k:
      warm.length > 1 ? at(Math.max(...contexts))!.peakVramBytes / at(Math.min(...contexts))!.peakVramBytes : null,
    decode_speedup_vs_accelerate_32k: w32 && b32 ? b32.decode_s_per_token / w32.decodeSPerToken : null,
    batch16_over_batch1: tokens(16) && tokens(1) ? tokens(16)! / tokens(1)! : null,
  };
}
