// The committed results files still make the report they made: docs/benchmarks.md and its chart are, byte for byte,
// what the bench writes from the results file the page names, and merging the runs that file came from gives it again.
import assert from "node:assert/strict";
import { copyFile, readFile, readdir } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { mergeResults, reportedResults } from "../../src/bench/merge.js";
import { writeReport } from "../../src/bench/report.js";
import type { BenchResults } from "../../src/bench/results.js";
import { repoRoot, tempDir } from "../helpers.js";

const resultsDir = join(repoRoot, "bench", "results");
const readRun = async (file: string) => JSON.parse(await readFile(join(repoRoot, file), "utf8")) as BenchResults;
const asWritten = (r: unknown) => JSON.stringify(r, null, 2) + "\n";

describe("saved bench results", () => {
  it("docs/benchmarks.md and its chart are what `bench --report` writes from the results file the page names", async () => {
    const docs = await readFile(join(repoRoot, "docs", "benchmarks.md"), "utf8");
    const jsonFile = /raw figures in `([^`]+\.json)`/.exec(docs)?.[1];
    assert.ok(jsonFile, "the page names its results file");
    const saved = reportedResults([await readRun(jsonFile)]);
    assert.equal(
      asWritten(saved),
      await readFile(join(repoRoot, jsonFile), "utf8"),
      "--report writes the file back unchanged",
    );
    const dir = await tempDir("lw-bench-report-");
    await copyFile(join(repoRoot, "docs", "benchmarks.md"), join(dir, "benchmarks.md")); // the text below the kept marker stays
    writeReport(join(dir, "benchmarks.md"), saved, String(saved.main_preset), jsonFile);
    assert.equal(await readFile(join(dir, "benchmarks.md"), "utf8"), docs);
    assert.equal(
      await readFile(join(dir, "benchmarks.svg"), "utf8"),
      await readFile(join(repoRoot, "docs", "benchmarks.svg"), "utf8"),
    );
  });

  it("merging the five runs of 2026-12-02 in the order docs/benchmarks.md gives reproduces their merged file", async () => {
    const parts = ["183cc37-part2", "183cc37-part3", "183cc37-part4", "183cc37-part1", "f639496-part1"];
    const runs = await Promise.all(parts.map((p) => readRun(`bench/results/2026-12-02-nvidia-h200-${p}.json`)));
    assert.equal(
      asWritten(mergeResults(runs)),
      await readFile(join(resultsDir, "2026-12-02-nvidia-h200-f639496-merged.json"), "utf8"),
    );
  });

  it("every saved results file, older layouts included, still makes a report", async () => {
    const dir = await tempDir("lw-bench-report-");
    const files = (await readdir(resultsDir)).filter((f) => /^\d{4}-\d\d-\d\d-.*\.json$/.test(f));
    assert.ok(files.length >= 10);
    for (const f of files) {
      const saved = reportedResults([await readRun(join("bench", "results", f))]);
      writeReport(join(dir, `${f}.md`), saved, String(saved.main_preset ?? "llama-3.1-8b"), f);
      assert.match(
        await readFile(join(dir, `${f}.md`), "utf8"),
        /^# Benchmarks\n[^]*## Limits measured in this run/,
        f,
      );
    }
  });
});
