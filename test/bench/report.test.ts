// The benchmark report says, for each goal a run misses, by how much and whether that part of the run waited on I/O or computed.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { missedGoals } from "../../src/bench/goals.js";
import { keptMarker, withKeptText } from "../../src/bench/report.js";
import { mergeResults } from "../../src/bench/merge.js";
import { ratios } from "../../src/bench/ratios.js";
import type { BenchResults, DiskTierFigures, RunFigures } from "../../src/bench/results.js";

const run = (o: Partial<RunFigures>): RunFigures => ({
  context: 32000,
  ttftS: 1,
  prefillTokensPerS: 32000,
  decodeSPerToken: 0.3,
  peakVramBytes: 7.9e9,
  ...o,
});
const diskRun = (o: Partial<RunFigures>): DiskTierFigures => ({
  ...run(o),
  page_cache_dropped: true,
  disk_read_bytes: 0,
});
/** A run's results with only the keys a test needs. */
const results = (o: Partial<BenchResults>) => o as BenchResults;

describe("bench report", () => {
  it("lists missed goals with their ratio and where the time went, and leaves met ones out", () => {
    const r = results({
      vram_budget_bytes: 8e9,
      // Prefill compute-bound and short of its floor; decode at its floor.
      ram_tier: [
        run({
          ttftS: 5.96,
          floorPrefillS: 1.1,
          prefillIoWaitS: 0.01,
          prefillComputeS: 5.9,
          decodeSPerToken: 0.29,
          floorDecodeS: 0.29,
          decodeIoWaitSPerToken: 0.2,
          decodeComputeSPerToken: 0.09,
        }),
      ],
      // From disk: decode waits on reads.
      disk_tier: diskRun({
        ttftS: 10,
        floorPrefillS: 7,
        prefillIoWaitS: 6,
        prefillComputeS: 4,
        prefillDiskBusyS: 7.5,
        decodeSPerToken: 10,
        floorDecodeS: 7,
        decodeIoWaitSPerToken: 9,
        decodeComputeSPerToken: 1,
        decodeDiskBusySPerToken: 9.9,
      }),
      batch: [
        { batch: 1, tokensPerS: 4 },
        { batch: 16, tokensPerS: 20 },
      ],
    });
    Object.assign(r, ratios(r));
    const lines = missedGoals(r);
    const line = (name: string) => lines.find((l) => l.startsWith(`- ${name}:`));
    assert.match(
      line("prefill at 32k vs floor, warm") ?? "",
      /: 0\.185, target >= 0\.5\. First token 5\.960 s at 32000 tokens: I\/O wait 0\.010, compute 5\.900 \(compute-bound/,
    );
    assert.match(
      line("decode at 32k, --ram 0, vs disk floor") ?? "",
      /: 0\.700, target >= 0\.85\. Decode 10\.000 s a token .*\(I\/O-bound.*\)\. The disk was reading for 9\.900 s a token of it \(99%\)\.$/,
    );
    assert.match(
      line("prefill at 32k vs floor, cold") ?? "",
      /: 0\.700, target >= 0\.8\. First token 10\.000 s .*I\/O wait 6\.000, compute 4\.000 \(I\/O-bound.*\)\. The disk was reading for 7\.500 s of it \(75%\)\.$/,
    );
    assert.match(line("batch 16 / batch 1 decode throughput") ?? "", /: 5\.000, target >= 10\. No time profile/);
    assert.equal(line("decode at 32k, RAM tier, vs host->GPU floor"), undefined, "a met goal is not listed");
    assert.equal(line("decode speed-up vs accelerate at 32k"), undefined, "a goal that was not run is not listed");
    assert.equal(lines.length, 4);
  });

  it("a missed memory goal lists the peak at each context instead of a time split", () => {
    const r = results({
      vram_budget_bytes: 8e9,
      ram_tier: [run({ context: 8000, peakVramBytes: 7.5e9 }), run({ context: 100000, peakVramBytes: 8e9 })],
    });
    Object.assign(r, ratios(r));
    const line = missedGoals(r).find((l) => l.startsWith("- peak VRAM 100k / 8k:"));
    assert.equal(
      line,
      "- peak VRAM 100k / 8k: 1.067, target within 5%. Peak VRAM by context (RAM tier): 8000 tokens 7.50 GB, 100000 tokens 8.00 GB; budget 8.00 GB.",
    );
  });

  it("merges runs split over calls: later figures win key by key and context by context, lists join, ratios are redone", () => {
    const qwen = { preset: "qwen3-8b", ...run({}) };
    const gptOss = { preset: "gpt-oss-20b", context: 32000 };
    const first = results({
      date: "2026-12-03T01:00:00Z",
      vram_budget_bytes: 8e9,
      contexts: [8000, 32000],
      ram_tier: [
        run({ context: 8000, peakVramBytes: 7.8e9 }),
        run({ context: 32000, ttftS: 2, floorPrefillS: 1.2, decodeSPerToken: 0.3, floorDecodeS: 0.27 }),
      ],
      disk_tier: diskRun({ ttftS: 10, floorPrefillS: 8.5, decodeSPerToken: 9, floorDecodeS: 8.6 }),
      long_context: [],
      other_models: [qwen],
    });
    const second = results({
      date: "2026-12-03T01:20:00Z",
      vram_budget_bytes: 8e9,
      contexts: [8000],
      ram_tier: [run({ context: 8000, peakVramBytes: 7.9e9 })],
      batch: [
        { batch: 1, tokensPerS: 4 },
        { batch: 16, tokensPerS: 48 },
      ],
      long_context: [gptOss],
      other_models: [],
    });
    const m = mergeResults([first, second]);
    assert.equal(m.date, first.date);
    assert.deepEqual(m.run_dates, [first.date, second.date]);
    assert.deepEqual(m.contexts, [8000, 32000]);
    assert.deepEqual(
      m.ram_tier!.map((f) => [f.context, f.peakVramBytes]),
      [
        [8000, 7.9e9],
        [32000, 7.9e9],
      ],
    );
    assert.deepEqual(m.long_context, [gptOss]);
    assert.deepEqual(m.other_models, [qwen]);
    assert.equal(m.batch16_over_batch1, 12, "from the second run");
    assert.equal(m.prefill_floor_ratio_32k_warm, 0.6, "from the first");
    assert.equal(m.prefill_floor_ratio_32k_cold, 0.85);
  });

  it("says so when a saved run has no time split", () => {
    const r = results({ vram_budget_bytes: 8e9, ram_tier: [run({ ttftS: 4, floorPrefillS: 1 })] });
    Object.assign(r, ratios(r));
    assert.deepEqual(missedGoals(r), [
      "- prefill at 32k vs floor, warm: 0.250, target >= 0.5. prefill 4.000 s (this run recorded no I/O wait / compute split).",
    ]);
  });

  it("a regenerated report keeps the old one's text from the kept marker on", () => {
    const old = `# Benchmarks\n\nold table\n\n${keptMarker}\n\n## Re-runs\n\nwritten by hand\n`;
    assert.equal(
      withKeptText("# Benchmarks\n\nnew table\n", old),
      `# Benchmarks\n\nnew table\n\n${keptMarker}\n\n## Re-runs\n\nwritten by hand\n`,
    );
    assert.equal(
      withKeptText("# Benchmarks\n\nnew table\n", "# Benchmarks\n\nold table\n"),
      "# Benchmarks\n\nnew table\n",
      "no marker: nothing kept",
    );
    assert.equal(withKeptText("new\n", undefined), "new\n");
  });
});
