// Writes the benchmark's results: JSON with every figure, and docs/benchmarks.md with a table and an SVG chart.
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { goalRuns, type RunFigures } from "./run.js";

export interface Goal {
  name: string;
  target: string;
  /** The results key that holds the measured ratio. */
  key: string;
  met: (v: number) => boolean;
  /** The part of a run the figure comes from, whose time the report splits into I/O wait and compute when missed. */
  phase?: { run: "warm" | "disk"; part: "prefill" | "decode" };
  /** A memory goal: when missed, the report lists the peak at each context instead. */
  memory?: true;
}

export const benchGoals: readonly Goal[] = [
  { name: "decode at 32k, RAM tier, vs host->GPU floor", target: ">= 0.8", key: "decode_ram_floor_ratio_32k", met: (v) => v >= 0.8, phase: { run: "warm", part: "decode" } },
  { name: "decode at 32k, --ram 0, vs disk floor", target: ">= 0.85", key: "decode_disk_floor_ratio_32k", met: (v) => v >= 0.85, phase: { run: "disk", part: "decode" } },
  { name: "decode speed-up vs accelerate at 32k", target: ">= 3", key: "decode_speedup_vs_accelerate_32k", met: (v) => v >= 3, phase: { run: "warm", part: "decode" } },
  { name: "prefill at 32k vs floor, warm", target: ">= 0.5", key: "prefill_floor_ratio_32k_warm", met: (v) => v >= 0.5, phase: { run: "warm", part: "prefill" } },
  { name: "prefill at 32k vs floor, cold", target: ">= 0.8", key: "prefill_floor_ratio_32k_cold", met: (v) => v >= 0.8, phase: { run: "disk", part: "prefill" } },
  { name: "peak VRAM / budget, worst context", target: "<= 1", key: "peak_vram_over_budget_max", met: (v) => v <= 1, memory: true },
  { name: "peak VRAM 100k / 8k", target: "within 5%", key: "vram_growth_8k_to_100k", met: (v) => Math.abs(v - 1) <= 0.05, memory: true },
  { name: "batch 16 / batch 1 decode throughput", target: ">= 10", key: "batch16_over_batch1", met: (v) => v >= 10 },
];

/** A goal's measured ratio, or undefined where the run did not measure it. */
export function measured(r: Record<string, unknown>, g: Goal): number | undefined {
  const v = r[g.key];
  return typeof v === "number" && Number.isFinite(v) ? v : undefined;
}

/** A line per goal the results miss: by how much, and where the time of that part of its run went. */
export function missedGoals(r: Record<string, unknown>): string[] {
  const runs = goalRuns(r);
  return benchGoals.flatMap((g) => {
    const v = measured(r, g);
    if (v === undefined || g.met(v)) return [];
    const run = g.phase && runs[g.phase.run];
    const why = g.memory ? peaks(r) : run && g.phase ? profile(run, g.phase.part) : "No time profile for this goal.";
    return [`- ${g.name}: ${v.toFixed(3)}, target ${g.target}. ${why}`];
  });
}

function peaks(r: Record<string, unknown>): string {
  const warm = (r.ram_tier ?? []) as RunFigures[];
  const gb = (bytes: number) => `${(bytes / 1e9).toFixed(2)} GB`;
  const budget = typeof r.vram_budget_bytes === "number" ? `; budget ${gb(r.vram_budget_bytes)}` : "";
  return `Peak VRAM by context (RAM tier): ${warm.map((w) => `${w.context} tokens ${gb(w.peakVramBytes)}`).join(", ")}${budget}.`;
}

function profile(f: RunFigures, part: "prefill" | "decode"): string {
  const [total, wait, compute, unit] =
    part === "prefill" ? [f.ttftS, f.prefillIoWaitS, f.prefillComputeS, "s"] : [f.decodeSPerToken, f.decodeIoWaitSPerToken, f.decodeComputeSPerToken, "s a token"];
  if (wait === undefined || compute === undefined) return `${part} ${total.toFixed(3)} ${unit} (this run recorded no I/O wait / compute split).`;
  const bound = wait > compute ? "I/O-bound: waiting for weights or KV to arrive" : "compute-bound: kernels and the host's work between them, not the links";
  // How long the weight reader was busy tells a disk left idle between reads from a slow one.
  const busy = part === "prefill" ? f.prefillDiskBusyS : f.decodeDiskBusySPerToken;
  const disk = busy ? ` The disk was reading for ${busy.toFixed(3)} ${unit} of it (${((100 * busy) / total).toFixed(0)}%).` : "";
  return `${part === "prefill" ? "First token" : "Decode"} ${total.toFixed(3)} ${unit} at ${f.context} tokens: I/O wait ${wait.toFixed(3)}, compute ${compute.toFixed(3)} (${bound}).${disk}`;
}

export interface SeriesPoint {
  context: number;
  sPerToken: number;
}

export interface ChartSeries {
  name: string;
  color: string;
  points: SeriesPoint[];
  dashed?: boolean;
}

/** s/token against context, log scale on y so disk and RAM fit together. */
export function chartSvg(series: readonly ChartSeries[], title: string): string {
  const w = 640;
  const h = 360;
  const pad = { l: 64, r: 180, t: 32, b: 44 };
  const xs = series.flatMap((s) => s.points.map((p) => p.context));
  const ys = series.flatMap((s) => s.points.map((p) => p.sPerToken)).filter((y) => y > 0);
  if (xs.length === 0 || ys.length === 0) return `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}"></svg>\n`;
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  const [ly0, ly1] = [Math.floor(Math.log10(Math.min(...ys))), Math.ceil(Math.log10(Math.max(...ys)))];
  const px = (x: number) => pad.l + (x1 === x0 ? 0.5 : (x - x0) / (x1 - x0)) * (w - pad.l - pad.r);
  const py = (y: number) => h - pad.b - ((Math.log10(y) - ly0) / Math.max(1, ly1 - ly0)) * (h - pad.t - pad.b);
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" font-family="sans-serif" font-size="12">`,
    `<rect width="${w}" height="${h}" fill="white"/>`,
    `<text x="${pad.l}" y="20" font-size="14">${title}</text>`,
  ];
  for (let e = ly0; e <= ly1; e++) {
    const y = py(10 ** e);
    out.push(`<line x1="${pad.l}" x2="${w - pad.r}" y1="${y}" y2="${y}" stroke="#ddd"/><text x="${pad.l - 8}" y="${y + 4}" text-anchor="end">${10 ** e} s</text>`);
  }
  for (const x of [...new Set(xs)].sort((a, b) => a - b)) {
    out.push(`<text x="${px(x)}" y="${h - pad.b + 18}" text-anchor="middle">${x >= 1000 ? `${Math.round(x / 1000)}k` : x}</text>`);
  }
  out.push(`<text x="${(pad.l + w - pad.r) / 2}" y="${h - 6}" text-anchor="middle">context (tokens)</text>`);
  series.forEach((s, i) => {
    const pts = s.points.filter((p) => p.sPerToken > 0).sort((a, b) => a.context - b.context);
    const d = pts.map((p) => `${px(p.context).toFixed(1)},${py(p.sPerToken).toFixed(1)}`).join(" ");
    out.push(`<polyline points="${d}" fill="none" stroke="${s.color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ""}/>`);
    for (const p of pts) out.push(`<circle cx="${px(p.context).toFixed(1)}" cy="${py(p.sPerToken).toFixed(1)}" r="3" fill="${s.color}"/>`);
    out.push(`<line x1="${w - pad.r + 12}" x2="${w - pad.r + 36}" y1="${pad.t + 16 * i}" y2="${pad.t + 16 * i}" stroke="${s.color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ""}/><text x="${w - pad.r + 42}" y="${pad.t + 16 * i + 4}">${s.name}</text>`);
  });
  out.push("</svg>");
  return out.join("\n") + "\n";
}

/** The line after which a report keeps what people wrote (other runs, profiles): the bench regenerates only what is above it. */
export const keptMarker = "<!-- Below this line the bench keeps the text as it is: sections written by hand from other runs. -->";

/** The new report, followed by the old one's text from the kept marker on (if it has one). */
export function withKeptText(generated: string, previous: string | undefined): string {
  const at = previous?.indexOf(keptMarker) ?? -1;
  return at < 0 ? generated : `${generated.trimEnd()}\n\n${previous!.slice(at)}`;
}

export function writeFileMkdir(file: string, text: string): void {
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, text);
}

export function markdownTable(rows: readonly (readonly (string | number)[])[]): string {
  const fmt = (v: string | number) => (typeof v === "number" ? (Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 1 ? v.toFixed(2) : v.toFixed(3)) : v);
  const [head, ...body] = rows;
  return [`| ${head!.map(fmt).join(" | ")} |`, `|${head!.map(() => "---").join("|")}|`, ...body.map((r) => `| ${r.map(fmt).join(" | ")} |`)].join("\n") + "\n";
}
