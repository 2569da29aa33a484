// make-test-model: never deletes or overwrites a file it did not write, and refuses an --out that is a file.
import assert from "node:assert/strict";
import { readdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { UsageError } from "../../src/errors.js";
import { makeTestModel, testModelMarker } from "../../src/testmodel/write.js";
import { runCli, tempDir } from "../helpers.js";

const make = (out: string, o: { shardBytes?: number; layers?: number } = {}) =>
  makeTestModel({ preset: "tiny-llama", dtype: "f32", layers: o.layers ?? 1, out, ...o });

async function refused(p: Promise<unknown>, code: string, message: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof UsageError, `not a UsageError: ${(e as Error)?.stack ?? e}`);
    assert.equal(e.code, code, e.message);
    assert.match(e.message, message);
    return true;
  });
}

describe("make-test-model output folder", () => {
  it("--out an existing file: a clear error, the file untouched", async () => {
    const file = join(await tempDir(), "notes.txt");
    await writeFile(file, "mine");
    await refused(make(file), "OUT_NOT_FOLDER", /notes\.txt is a file, not a folder/);
    assert.equal(await readFile(file, "utf8"), "mine");
    const r = await runCli(["make-test-model", "--preset", "tiny-llama", "--layers", "1", "--out", file]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /error \[OUT_NOT_FOLDER\]/);
    assert.equal(await readFile(file, "utf8"), "mine");
  });

  it("the marker lists the files written, and a rewrite replaces only those", async () => {
    const out = join(await tempDir(), "m");
    await make(out, { layers: 2, shardBytes: 60_000 });
    const marker = JSON.parse(await readFile(join(out, testModelMarker), "utf8"));
    assert.deepEqual([...marker.files].sort(), (await readdir(out)).filter((n) => n !== testModelMarker).sort());
    assert.ok(marker.files.includes("model.safetensors.index.json"));
    await make(out, { layers: 1 }); // one shard now: the old shards and index go
    assert.deepEqual((await readdir(out)).sort(), [
      testModelMarker,
      "config.json",
      "generation_config.json",
      "model.safetensors",
      "tokenizer.json",
      "tokenizer_config.json",
    ]);
  });

  it("a user's *.json in a marked folder is never deleted: the rewrite is refused", async () => {
    const out = join(await tempDir(), "m");
    await make(out);
    await writeFile(join(out, "my-settings.json"), '{"mine": true}');
    await refused(make(out), "OUT_NOT_EMPTY", /holds my-settings\.json, which make-test-model did not write/);
    assert.equal(await readFile(join(out, "my-settings.json"), "utf8"), '{"mine": true}');
    assert.ok((await readdir(out)).includes("config.json"), "nothing was deleted before refusing");
  });

  it("a marker listing paths outside the folder deletes nothing", async () => {
    const root = await tempDir();
    const out = join(root, "m");
    await make(out);
    await writeFile(join(root, "outside.json"), "keep");
    await writeFile(
      join(out, testModelMarker),
      JSON.stringify({ preset: "tiny-llama", files: ["../outside.json", "config.json"] }),
    );
    await refused(make(out), "OUT_NOT_EMPTY", /marker .* lists \.\.\/outside\.json/);
    assert.equal(await readFile(join(root, "outside.json"), "utf8"), "keep");
    assert.ok((await readdir(out)).includes("config.json"));
  });

  it("a marker of an older version (no file list): only the names make-test-model writes count as its own", async () => {
    const out = join(await tempDir(), "m");
    await make(out);
    await writeFile(join(out, testModelMarker), JSON.stringify({ preset: "tiny-llama", dtype: "f32", complete: true }));
    await writeFile(join(out, "results.json"), "mine");
    await refused(make(out), "OUT_NOT_EMPTY", /holds results\.json, which make-test-model did not write/);
    assert.equal(await readFile(join(out, "results.json"), "utf8"), "mine");
    await rm(join(out, "results.json"));
    await make(out); // now only its own names are there: replaced
    assert.ok(JSON.parse(await readFile(join(out, testModelMarker), "utf8")).files.includes("config.json"));
  });
});
