// `layerwise bench`: runs the benchmark, writes bench/results/<date>-<gpu>.json and regenerates docs/benchmarks.md.
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import type { Command } from "commander";
import { createBackend } from "../backend/index.js";
import { reportedResults } from "../bench/merge.js";
import { writeFileMkdir, writeReport } from "../bench/report.js";
import type { BenchResults } from "../bench/results.js";
import { benchPresets, runBench } from "../bench/run.js";
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
    .description(
      "benchmark layerwise against the physical limits of this machine and against transformers + accelerate",
    )
    .option(
      "--presets <names>",
      `models to benchmark, the first in full (${benchPresets.join(", ")})`,
      "llama-3.1-8b,llama-3.2-1b,qwen3-8b",
    )
    .option("--contexts <list>", "contexts for prefill and decode", "8k,32k,100k")
    .option("--vram <size>", "VRAM budget", "8GB")
    .option("--dir <dir>", "where the random-weight checkpoints are written (and reused)", "/tmp/layerwise-bench")
    .option("--decode-tokens <n>", "tokens decoded per measurement", "16")
    .option(
      "--skip <list>",
      "workloads to leave out: main (all of the first preset's but the links, which still read its checkpoint: put a small preset first), disk, batch, kvcache, nolimit, baseline, torch, long",
    )
    .option(
      "--long <list>",
      "models run at a context of their own, as preset@context, or preset@context/layers>context (fewer layers, with the plan for all at the second context)",
      "gpt-oss-20b@32k,gemma-3-12b@50k,qwen3-next-80b-a3b@8k/8>50k",
    )
    .option("--out <dir>", "folder for the JSON results", "bench/results")
    .option("--docs <file>", "markdown report to regenerate", "docs/benchmarks.md")
    .option("--backend <name>", "cpu, cuda or auto", "auto")
    .option(
      "--report <json>",
      "only regenerate the report (and the goal ratios) from a saved results file; from several (a,b: runs split with --skip), merged into a-merged.json first",
    )
    .option("--debug", "print stack traces of errors")
    .action(async (flags: BenchFlags) => {
      const presets = flags.presets.split(",").map((s) => s.trim());
      if (flags.report) {
        const files = flags.report
          .split(",")
          .map((f) => f.trim())
          .filter(Boolean);
        const runs = await Promise.all(files.map(async (f) => JSON.parse(await readFile(f, "utf8")) as BenchResults));
        const saved = reportedResults(runs);
        const file = runs.length === 1 ? files[0]! : files[0]!.replace(/(\.json)?$/, "-merged.json");
        writeFileMkdir(file, JSON.stringify(saved, null, 2) + "\n");
        writeReport(flags.docs, saved, String(saved.main_preset ?? presets[0]), file);
        process.stdout.write(`wrote ${file} and ${flags.docs}\n`);
        return;
      }
      for (const p of presets)
        if (!benchPresets.includes(p) && !p.startsWith("tiny-"))
          throw new UsageError("UNKNOWN_PRESET", `no preset "${p}"`, `presets: ${benchPresets.join(", ")}`);
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
          long: flags.long
            .split(",")
            .filter(Boolean)
            .map((entry) => {
              // preset@context, or preset@context/layers>prediction-context for a model cut to fewer layers
              const m = /^([^@]+)@([^/]+)(?:\/(\d+)>(.+))?$/.exec(entry);
              if (!m || !(benchPresets.includes(m[1]!) || m[1]!.startsWith("tiny-")))
                throw new UsageError(
                  "BAD_FLAG",
                  `--long ${entry} is not preset@context[/layers>context] with a preset of ${benchPresets.join(", ")}`,
                );
              return {
                preset: m[1]!,
                context: parseCount(m[2]!, "--long"),
                ...(m[3] ? { layers: Number(m[3]), predictAt: parseCount(m[4]!, "--long") } : {}),
              };
            }),
          log: (line) => process.stderr.write(`${line}\n`),
          onResults: (r) => writeFileMkdir(join(flags.out, "partial.json"), JSON.stringify(r, null, 2) + "\n"),
        });
        const gpu = (backend as { info?: { name: string } }).info?.name ?? backend.name;
        results.gpu = gpu;
        const slug = `${new Date().toISOString().slice(0, 10)}-${gpu
          .toLowerCase()
          .replace(/[^a-z0-9]+/g, "-")
          .replace(/^-|-$/g, "")}`;
        const file = join(flags.out, `${slug}.json`);
        writeFileMkdir(file, JSON.stringify(results, null, 2) + "\n");
        writeReport(flags.docs, results, presets[0]!, file);
        process.stdout.write(
          `${JSON.stringify(Object.fromEntries(Object.entries(results).filter(([, v]) => typeof v === "number" || v === null)))}\nwrote ${file} and ${flags.docs}\n`,
        );
      } finally {
        await backend.dispose();
      }
    });
}
