// The goals a bench run is judged on, and for each one it misses, by how much and whether that part of the run waited
// on I/O or computed.
import { goalRuns } from "./ratios.js";
import type { BenchResults, GoalRatios, RunFigures } from "./results.js";

export interface Goal {
  name: string;
  target: string;
  /** The results key that holds the measured ratio. */
  key: keyof GoalRatios;
  met: (v: number) => boolean;
  /** The part of a run the figure comes from, whose time the report splits into I/O wait and compute when missed. */
  phase?: { run: "warm" | "disk"; part: "prefill" | "decode" };
  /** A memory goal: when missed, the report lists the peak at each context instead. */
  memory?: true;
}

export const benchGoals: readonly Goal[] = [
  {
    name: "decode at 32k, RAM tier, vs host->GPU floor",
    target: ">= 0.8",
    key: "decode_ram_floor_ratio_32k",
    met: (v) => v >= 0.8,
    phase: { run: "warm", part: "decode" },
  },
  {
    name: "decode at 32k, --ram 0, vs disk floor",
    target: ">= 0.85",
    key: "decode_disk_floor_ratio_32k",
    met: (v) => v >= 0.85,
    phase: { run: "disk", part: "decode" },
  },
  {
    name: "decode speed-up vs accelerate at 32k",
    target: ">= 3",
    key: "decode_speedup_vs_accelerate_32k",
    met: (v) => v >= 3,
    phase: { run: "warm", part: "decode" },
  },
  {
    name: "prefill at 32k vs floor, warm",
    target: ">= 0.5",
    key: "prefill_floor_ratio_32k_warm",
    met: (v) => v >= 0.5,
    phase: { run: "warm", part: "prefill" },
  },
  {
    name: "prefill at 32k vs floor, cold",
    target: ">= 0.8",
    key: "prefill_floor_ratio_32k_cold",
    met: (v) => v >= 0.8,
    phase: { run: "disk", part: "prefill" },
  },
  {
    name: "peak VRAM / budget, worst context",
    target: "<= 1",
    key: "peak_vram_over_budget_max",
    met: (v) => v <= 1,
    memory: true,
  },
  {
    name: "peak VRAM 100k / 8k",
    target: "within 5%",
    key: "vram_growth_8k_to_100k",
    met: (v) => Math.abs(v - 1) <= 0.05,
    memory: true,
  },
  { name: "batch 16 / batch 1 decode throughput", target: ">= 10", key: "batch16_over_batch1", met: (v) => v >= 10 },
];

/** A goal's measured ratio, or undefined where the run did not measure it. */
export function measured(r: BenchResults, g: Goal): number | undefined {
  const v = r[g.key];
  return typeof v === "number" && Number.isFinite(v) ? v : undefined;
}

/** A line per goal the results miss: by how much, and where the time of that part of its run went. */
export function missedGoals(r: BenchResults): string[] {
  const runs = goalRuns(r);
  return benchGoals.flatMap((g) => {
    const v = measured(r, g);
    if (v === undefined || g.met(v)) return [];
    const run = g.phase && runs[g.phase.run];
    const why = g.memory ? peaks(r) : run && g.phase ? profile(run, g.phase.part) : "No time profile for this goal.";
    return [`- ${g.name}: ${v.toFixed(3)}, target ${g.target}. ${why}`];
  });
}

function peaks(r: BenchResults): string {
  const warm = r.ram_tier ?? [];
  const gb = (bytes: number) => `${(bytes / 1e9).toFixed(2)} GB`;
  const budget = typeof r.vram_budget_bytes === "number" ? `; budget ${gb(r.vram_budget_bytes)}` : "";
  return `Peak VRAM by context (RAM tier): ${warm.map((w) => `${w.context} tokens ${gb(w.peakVramBytes)}`).join(", ")}${budget}.`;
}

function profile(f: RunFigures, part: "prefill" | "decode"): string {
  const [total, wait, compute, unit] =
    part === "prefill"
      ? [f.ttftS, f.prefillIoWaitS, f.prefillComputeS, "s"]
      : [f.decodeSPerToken, f.decodeIoWaitSPerToken, f.decodeComputeSPerToken, "s a token"];
  if (wait === undefined || compute === undefined)
    return `${part} ${total.toFixed(3)} ${unit} (this run recorded no I/O wait / compute split).`;
  const bound =
    wait > compute
      ? "I/O-bound: waiting for weights or KV to arrive"
      : "compute-bound: kernels and the host's work between them, not the links";
  // How long the weight reader was busy tells a disk left idle between reads from a slow one.
  const busy = part === "prefill" ? f.prefillDiskBusyS : f.decodeDiskBusySPerToken;
  const disk = busy
    ? ` The disk was reading for ${busy.toFixed(3)} ${unit} of it (${((100 * busy) / total).toFixed(0)}%).`
    : "";
  return `${part === "prefill" ? "First token" : "Decode"} ${total.toFixed(3)} ${unit} at ${f.context} tokens: I/O wait ${wait.toFixed(3)}, compute ${compute.toFixed(3)} (${bound}).${disk}`;
}
