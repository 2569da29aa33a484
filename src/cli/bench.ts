// `layerwise bench`: runs the benchmark, writes bench/results/<date>-<gpu>.json and regenerates docs/benchmarks.md.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { Command } from "commander";
import { createBackend } from "../backend/index.js";
import { benchGoals, chartSvg, markdownTable, measured, missedGoals, withKeptText, writeFileMkdir } from "../bench/report.js";
import { readFile } from "node:fs/promises";
import { benchPresets, mergeResults, ratios, runBench, type RunFigures } from "../bench/run.js";
import { UsageError } from "../errors.js";
import { parseBytes, parseCount } from "../util/bytes.js";
import { backendName, numberFlag } from "./options.js";

interface BenchFlags {
  presets: string;
  contexts: string;
  vram: string;
  dir: string;
  decodeTokens: string;
  skip?: string;
  long: string;
  out: string;
  docs: string;
  backend: string;
  report?: string;
}

export function registerBench(program: Command): void {
  program
    .command("bench")
    .description("benchmark layerwise against the physical limits of this machine and against transformers + accelerate")
    .option("--presets <names>", `models to benchmark, the first in full (${benchPresets.join(", ")})`, "llama-3.1-8b,llama-3.2-1b,qwen3-8b")
    .option("--contexts <list>", "contexts for prefill and decode", "8k,32k,100k")
    .option("--vram <size>", "VRAM budget", "8GB")
    .option("--dir <dir>", "where the random-weight checkpoints are written (and reused)", "/tmp/layerwise-bench")
    .option("--decode-tokens <n>", "tokens decoded per measurement", "16")
    .option("--skip <list>", "workloads to leave out: main (all of the first preset's but the links, which still read its checkpoint: put a small preset first), disk, batch, kvcache, nolimit, baseline, torch, long")
    .option("--long <list>", "models run at a context of their own, as preset@context, or preset@context/layers>context (fewer layers, with the plan for all at the second context)", "gpt-oss-20b@32k,gemma-3-12b@50k,qwen3-next-80b-a3b@8k/8>50k")
    .option("--out <dir>", "folder for the JSON results", "bench/results")
    .option("--docs <file>", "markdown report to regenerate", "docs/benchmarks.md")
    .option("--backend <name>", "cpu, cuda or auto", "auto")
    .option("--report <json>", "only regenerate the report (and the goal ratios) from a saved results file; from several (a,b: runs split with --skip), merged into a-merged.json first")
    .option("--debug", "print stack traces of errors")
    .action(async (flags: BenchFlags) => {
      const presets = flags.presets.split(",").map((s) => s.trim());
      if (flags.report) {
        const files = flags.report.split(",").map((f) => f.trim()).filter(Boolean);
        const runs = await Promise.all(files.map(async (f) => JSON.parse(await readFile(f, "utf8")) as Record<string, unknown>));
        const saved = runs.length === 1 ? { ...runs[0]!, ...ratios(runs[0]!) } : mergeResults(runs);
        const file = runs.length === 1 ? files[0]! : files[0]!.replace(/(\.json)?$/, "-merged.json");
        writeFileMkdir(file, JSON.stringify(saved, null, 2) + "\n");
        writeReport(flags.docs, saved, String(saved.main_preset ?? presets[0]), file);
        process.stdout.write(`wrote ${file} and ${flags.docs}\n`);
        return;
      }
      for (const p of presets) if (!benchPresets.includes(p) && !p.startsWith("tiny-")) throw new UsageError("UNKNOWN_PRESET", `no preset "${p}"`, `presets: ${benchPresets.join(", ")}`);
      const { backend } = await createBackend(backendName(flags));
      try {
        const results = await runBench({
          backend,
          presets,
          contexts: flags.contexts.split(",").map((c) => parseCount(c, "--contexts")),
          vramBytes: parseBytes(flags.vram, "--vram"),
          dir: flags.dir,
          decodeTokens: numberFlag(flags.decodeTokens, "--decode-tokens", { integer: true })!,
          skip: new Set((flags.skip ?? "").split(",").filter(Boolean)),
          long: flags.long.split(",").filter(Boolean).map((entry) => {
            // preset@context, or preset@context/layers>prediction-context for a model cut to fewer layers
            const m = /^([^@]+)@([^/]+)(?:\/(\d+)>(.+))?$/.exec(entry);
            if (!m || !(benchPresets.includes(m[1]!) || m[1]!.startsWith("tiny-"))) throw new UsageError("BAD_FLAG", `--long ${entry} is not preset@context[/layers>context] with a preset of ${benchPresets.join(", ")}`);
            return { preset: m[1]!, context: parseCount(m[2]!, "--long"), ...(m[3] ? { layers: Number(m[3]), predictAt: parseCount(m[4]!, "--long") } : {}) };
          }),
          log: (line) => process.stderr.write(`${line}\n`),
          onResults: (r) => writeFileMkdir(join(flags.out, "partial.json"), JSON.stringify(r, null, 2) + "\n"),
        });
        const gpu = (backend as { info?: { name: string } }).info?.name ?? backend.name;
        results.gpu = gpu;
        const slug = `${new Date().toISOString().slice(0, 10)}-${gpu.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "")}`;
        const file = join(flags.out, `${slug}.json`);
        writeFileMkdir(file, JSON.stringify(results, null, 2) + "\n");
        writeReport(flags.docs, results, presets[0]!, file);
        process.stdout.write(`${JSON.stringify(Object.fromEntries(Object.entries(results).filter(([, v]) => typeof v === "number" || v === null)))}\nwrote ${file} and ${flags.docs}\n`);
      } finally {
        await backend.dispose();
      }
    });
}

/** The disk readings the --ram 0 run took next to its prefill and decode, where it took them. */
function diskReadings(diskTier: unknown): string {
  const t = diskTier as { disk_gbps_before_prefill?: number; disk_gbps_around_decode?: number[] };
  const all = [t.disk_gbps_before_prefill, ...(t.disk_gbps_around_decode ?? [])];
  return all.some((g) => g !== undefined) ? all.map((g) => (g === undefined ? "-" : g.toFixed(2))).join(", ") : "-";
}

/** How much of the prefill and of a decode step the weight reader had a read in flight. */
function busyShare(f: RunFigures): string {
  const pct = (busy: number | undefined, total: number) => (busy ? `${((100 * busy) / total).toFixed(0)}%` : "-");
  return `${pct(f.prefillDiskBusyS, f.ttftS)} / ${pct(f.decodeDiskBusySPerToken, f.decodeSPerToken)}`;
}

function writeReport(docs: string, r: Record<string, unknown>, preset: string, jsonFile: string): void {
  const ram = (r.ram_tier ?? []) as RunFigures[];
  const disk = r.disk_tier as RunFigures | undefined;
  const base = (Array.isArray(r.baseline_accelerate) ? r.baseline_accelerate : []) as { context: number; ttft_s: number; decode_s_per_token: number; peak_vram_bytes: number }[];
  const limits = r.limits as { disk_gbps: number; disk_method: string; h2d_pinned_gbps: number; torch: Record<string, number> | null };
  const gb = (b: number) => (b / 1e9).toFixed(2);
  const num = (v: unknown) => (typeof v === "number" ? v : NaN);
  const svgFile = docs.replace(/\.md$/, ".svg");
  const series = [
    { name: "layerwise, RAM tier", color: "#1f77b4", points: ram.map((w) => ({ context: w.context, sPerToken: w.decodeSPerToken })) },
    { name: "host->GPU floor", color: "#1f77b4", dashed: true, points: ram.map((w) => ({ context: w.context, sPerToken: w.floorDecodeS ?? 0 })) },
    { name: "accelerate offload", color: "#d62728", points: base.map((b) => ({ context: b.context, sPerToken: b.decode_s_per_token })) },
    ...(disk ? [{ name: "layerwise, --ram 0", color: "#2ca02c", points: [{ context: disk.context, sPerToken: disk.decodeSPerToken }] }, { name: "disk floor", color: "#2ca02c", dashed: true, points: [{ context: disk.context, sPerToken: disk.floorDecodeS ?? 0 }] }] : []),
  ];
  writeFileMkdir(svgFile, chartSvg(series, `${preset}, decode s/token, VRAM budget ${gb(num(r.vram_budget_bytes))} GB`));
  const missed = missedGoals(r);
  const md = [
    "# Benchmarks",
    "",
    `Generated by \`npx layerwise bench\` on ${String(r.gpu)} (${String(r.date)}); raw figures in \`${jsonFile}\`.`,
    `Checkpoints are random-weight bf16 with the real shapes (\`make-test-model\`); the main model is \`${preset}\`,`,
    `run with \`--vram ${gb(num(r.vram_budget_bytes))}GB\`. Every ratio is against a limit measured in the same run:`,
    "bytes per token over the measured link for decode; for prefill the larger of FLOPs over torch's measured matmul",
    "and SDPA speed and weight bytes over the link they come from. Timings exclude loading the model.",
    "",
    "## Goals",
    "",
    markdownTable([["goal", "target", "measured", "met"], ...benchGoals.map((g) => {
      const v = measured(r, g);
      return [g.name, g.target, v ?? "not run", v === undefined ? "-" : g.met(v) ? "yes" : "no"];
    })]),
    ...(missed.length ? ["Missed, by how much and where the time went:", "", ...missed, ""] : []),
    "## Limits measured in this run",
    "",
    markdownTable([
      ["link", "speed"],
      ["disk read", `${limits.disk_gbps.toFixed(2)} GB/s (${limits.disk_method})`],
      ["pinned host->GPU", `${limits.h2d_pinned_gbps.toFixed(1)} GB/s`],
      ["torch bf16 matmul", limits.torch ? `${limits.torch.matmul_bf16_tflops!.toFixed(0)} TFLOP/s` : "no torch"],
      ["torch SDPA 32k", limits.torch ? `${limits.torch.sdpa_32k_tflops!.toFixed(0)} TFLOP/s` : "no torch"],
    ]),
    "## Decode and prefill, RAM tier",
    "",
    "![decode s/token vs context](" + svgFile.split("/").pop() + ")",
    "",
    markdownTable([
      ["context", "first token s", "prefill tok/s", "prefill floor s", "decode s/token", "decode floor s", "floor ratio", "peak VRAM GB"],
      ...ram.map((w) => [w.context, w.ttftS, w.prefillTokensPerS, w.floorPrefillS ?? NaN, w.decodeSPerToken, w.floorDecodeS ?? NaN, (w.floorDecodeS ?? NaN) / w.decodeSPerToken, gb(w.peakVramBytes)]),
    ]),
    ...(disk ? ["## Weights from disk every token (`--ram 0`, page cache dropped first)", "", markdownTable([["context", "first token s (cold)", "prefill floor s", "decode s/token", "decode floor s", "disk GB/s before prefill, before and after decode", "disk reading, % of prefill / decode", "peak VRAM GB"], [disk.context, disk.ttftS, disk.floorPrefillS ?? NaN, disk.decodeSPerToken, disk.floorDecodeS ?? NaN, diskReadings(r.disk_tier), busyShare(disk), gb(disk.peakVramBytes)]]), "Each floor takes the better disk reading just before and after its phase, where the run took them (the disk's speed drifts; \"-\": the start-of-run reading above).", ""] : []),
    ...(base.length ? ["## Baseline: transformers + accelerate, `device_map=\"auto\"`, same VRAM cap", "", markdownTable([["context", "first token s", "decode s/token", "peak VRAM GB"], ...base.map((b) => [b.context, b.ttft_s, b.decode_s_per_token, gb(b.peak_vram_bytes)])])] : []),
    ...(r.batch ? ["## Batched decode", "", markdownTable([["batch", "tokens/s"], ...(r.batch as { batch: number; tokensPerS: number }[]).map((b) => [b.batch, b.tokensPerS])])] : []),
    ...(r.kv_cache ? ["## Second question on the same document (`--kv-cache`)", "", "```json", JSON.stringify(r.kv_cache, null, 2), "```", ""] : []),
    ...(r.no_limit ? ["## No VRAM limit (everything resident), for contrast", "", "```json", JSON.stringify(r.no_limit, null, 2), "```", ""] : []),
    ...((r.other_models as unknown[])?.length ? ["## Other models, RAM tier", "", "```json", JSON.stringify(r.other_models, null, 2), "```", ""] : []),
    ...longContextSection(r, gb),
  ].join("\n");
  writeFileMkdir(docs, withKeptText(md, existsSync(docs) ? readFileSync(docs, "utf8") : undefined));
}

/** Models at a context of their own: the RAM tier, and for mixture-of-experts models weights from disk too. */
function longContextSection(r: Record<string, unknown>, gb: (b: number) => string): string[] {
  const rows = (r.long_context ?? []) as { preset: string; context: number; ram_tier?: RunFigures; disk_tier?: RunFigures }[];
  if (!rows.length) return [];
  const mb = (b: number | undefined) => (b === undefined ? "-" : (b / 1e6).toFixed(0));
  const line = (preset: string, tier: string, f: RunFigures) => [
    preset,
    tier,
    f.context,
    f.ttftS,
    f.decodeSPerToken,
    f.floorDecodeS ?? NaN,
    gb(f.peakVramBytes),
    mb(f.decodeH2dBytesPerToken),
    mb(f.decodeDiskBytesPerToken),
    f.decodeExpertLoadsPerToken === undefined ? "-" : `${f.decodeExpertLoadsPerToken.toFixed(1)} / ${(f.decodeExpertHitsPerToken ?? 0).toFixed(1)}`,
  ];
  const predictions = rows.flatMap((x) => {
    const p = (x as { prediction?: Record<string, number> & { experts: { total: number; deviceSlots: number; ram: number } } }).prediction;
    if (!p) return [];
    return [
      `- ${x.preset}, measured with ${(x as { layers?: number }).layers} layers: the plan for all ${p.layers} at ${p.context} tokens (layers and experts laid out as the measured ones): ` +
        `checkpoint ${gb(p.checkpoint_bytes)} GB, VRAM ${gb(p.vram_planned_bytes)} GB, RAM ${gb(p.ram_planned_bytes)} GB, experts ${p.experts.deviceSlots === p.experts.total ? "all on the GPU" : `${p.experts.deviceSlots} cached on the GPU, ${p.experts.ram} in RAM, ${p.experts.total - p.experts.ram} read from disk when routed, of ${p.experts.total}`}; ` +
        `per token ${(p.per_token_h2d_bytes / 1e9).toFixed(2)} GB host->GPU and ${(p.per_token_disk_bytes / 1e9).toFixed(2)} GB from disk, floor ${p.floor_decode_s.toFixed(2)} s/token.`,
    ];
  });
  return [
    "## Long contexts of other architectures",
    "",
    "Floors count routed experts as if routing spread evenly over the experts (random weights route about so).",
    "",
    markdownTable([
      ["model", "weights", "context", "first token s", "decode s/token", "decode floor s", "peak VRAM GB", "host->GPU MB/token", "disk MB/token", "experts loaded / hit per token"],
      ...rows.flatMap((x) => [...(x.ram_tier ? [line(x.preset, "RAM tier", { ...x.ram_tier, context: x.context })] : []), ...(x.disk_tier ? [line(x.preset, "--ram 0", x.disk_tier)] : [])]),
    ]),
    ...(predictions.length ? [...predictions, ""] : []),
  ];
}
