// `inspect` and `run` on hostile or broken model folders: what really happened is said, nothing crashes.
import assert from "node:assert/strict";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { runCli, storiesCopy } from "../helpers.js";

async function editJson(file: string, edit: (j: Record<string, unknown>) => void): Promise<void> {
  const json = JSON.parse(await readFile(file, "utf8"));
  edit(json);
  await writeFile(file, JSON.stringify(json));
}

/** A small heap: a config that makes layerwise build per-layer arrays of its size would abort it at once. */
const smallHeap = { env: { NODE_OPTIONS: "--max-old-space-size=192" } };

describe("inspect and run on hostile model folders", () => {
  for (const cmd of ["inspect", "run"]) {
    it(`${cmd}: num_hidden_layers 1e9 is a clean CONFIG_INVALID, not an out-of-memory abort`, { timeout: 120_000 }, async () => {
      const dir = await storiesCopy();
      await editJson(join(dir, "config.json"), (j) => (j.num_hidden_layers = 1e9));
      const r = await runCli(cmd === "run" ? ["run", dir, "--prompt", "hi", "--backend", "cpu"] : ["inspect", dir], smallHeap);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /error \[CONFIG_INVALID\]: .*num_hidden_layers: 1000000000 is more than the 4096 layers layerwise reads/);
    });
  }
});
