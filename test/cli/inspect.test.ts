// `inspect` and `run` on hostile or broken model folders: what really happened is said, nothing crashes.
import assert from "node:assert/strict";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { runCli, storiesCopy, tinyModel } from "../helpers.js";

async function editJson(file: string, edit: (j: Record<string, unknown>) => void): Promise<void> {
  const json = JSON.parse(await readFile(file, "utf8"));
  edit(json);
  await writeFile(file, JSON.stringify(json));
}

/** A small heap: a config that makes layerwise build per-layer arrays of its size would abort it at once. */
const smallHeap = { env: { NODE_OPTIONS: "--max-old-space-size=192" } };

describe("inspect and run on hostile model folders", () => {
  for (const cmd of ["inspect", "run"]) {
    it(
      `${cmd}: num_hidden_layers 1e9 is a clean CONFIG_INVALID, not an out-of-memory abort`,
      { timeout: 120_000 },
      async () => {
        const dir = await storiesCopy();
        await editJson(join(dir, "config.json"), (j) => (j.num_hidden_layers = 1e9));
        const r = await runCli(
          cmd === "run" ? ["run", dir, "--prompt", "hi", "--backend", "cpu"] : ["inspect", dir],
          smallHeap,
        );
        assert.equal(r.code, 1, r.stderr);
        assert.match(
          r.stderr,
          /error \[CONFIG_INVALID\]: .*num_hidden_layers: 1000000000 is more than the 4096 layers layerwise reads/,
        );
      },
    );
  }

  it("inspect says what is wrong with a tokenizer instead of calling it missing", async () => {
    const dir = await storiesCopy();
    await writeFile(join(dir, "tokenizer.json"), "garbage");
    const text = await runCli(["inspect", dir]);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /tokenizer\s+unusable: .*tokenizer\.json is not valid JSON/);
    const json = JSON.parse((await runCli(["inspect", dir, "--json"])).stdout);
    assert.equal(json.tokenizer_error.code, "TOKENIZER_INVALID");
    assert.equal(json.tokenizer_vocab, undefined);

    await rm(join(dir, "tokenizer.json"));
    await mkdir(join(dir, "tokenizer.json"));
    assert.match(
      (await runCli(["inspect", dir])).stdout,
      /tokenizer\s+unusable: .*tokenizer\.json is a directory, not a regular file/,
    );

    await rm(join(dir, "tokenizer.json"), { recursive: true });
    assert.match((await runCli(["inspect", dir])).stdout, /tokenizer\s+missing \(tokenizer\.json\)/);
  });

  it("inspect reports a config.json that cannot be read as what it is, not as missing", async () => {
    const dir = await storiesCopy();
    await rm(join(dir, "config.json"));
    await mkdir(join(dir, "config.json"));
    const r = await runCli(["inspect", dir]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /error \[FILE_NOT_REGULAR\]: .*config\.json is a directory, not a regular file/);
  });

  it("inspect warns when config.json uses fewer layers than the checkpoint has", async () => {
    const dir = await tinyModel({ preset: "tiny-llama", layers: 3 });
    await editJson(join(dir, "config.json"), (j) => (j.num_hidden_layers = 2));
    const r = await runCli(["inspect", dir]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stdout,
      /warning\s+\[LAYERS_UNUSED\] .*num_hidden_layers is 2, but the checkpoint has tensors of layer 2/,
    );
    const json = JSON.parse((await runCli(["inspect", dir, "--json"])).stdout);
    assert.deepEqual(
      json.warnings.map((w: { code: string }) => w.code),
      ["LAYERS_UNUSED"],
    );
  });
});
