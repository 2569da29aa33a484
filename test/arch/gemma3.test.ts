// Gemma 3 text: against an independent NumPy forward (transformers fixtures come with the next GPU session), sliding
// windows that bound the KV cache, and the chat template.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { LayerwiseModel } from "../../src/engine/model.js";
import { fixturesDir, maxAbsDiff, tempDir, tinyModel } from "../helpers.js";

interface NumpyFixture {
  model: { preset: string; dtype: "f32"; sha256: Record<string, string> };
  ids: number[];
  logits: number[][];
}

describe("gemma3 (text)", () => {
  it("matches an independent NumPy forward at every position, in one chunk and in small chunks that free window KV", async () => {
    const f = JSON.parse(await readFile(join(fixturesDir, "numpy", "tiny-gemma3-f32.json"), "utf8")) as NumpyFixture;
    const dir = await tinyModel({ preset: f.model.preset, dtype: f.model.dtype });
    assert.equal(
      createHash("sha256")
        .update(await readFile(join(dir, "model.safetensors")))
        .digest("hex"),
      f.model.sha256["model.safetensors"],
    );
    for (const o of [{}, { prefillChunk: 7, kvBlockTokens: 16 }]) {
      const m = await LayerwiseModel.load(dir, { backend: "cpu", ...o });
      const logits = await m.forward(m.createSequence(), f.ids, "all");
      assert.ok(
        maxAbsDiff(logits, f.logits.flat()) < 1e-3,
        `${JSON.stringify(o)}: max |diff| ${maxAbsDiff(logits, f.logits.flat())}`,
      );
      await m.close();
    }
  });

  it("sliding-window layers keep only the blocks their window can see; outputs equal keeping everything", async () => {
    const dir = await tinyModel({ preset: "tiny-gemma3" });
    const ids = Array.from({ length: 90 }, (_, i) => 300 + ((i * 53) % 600));
    const run = async (kvCache?: string) => {
      const m = await LayerwiseModel.load(dir, {
        backend: "cpu",
        prefillChunk: 8,
        kvBlockTokens: 16,
        ...(kvCache ? { kvCache } : {}),
      });
      const seq = m.createSequence();
      const logits = await m.forward(seq, ids, "all");
      const blocks = m.arch.shape.kvLayers.map((_, l) => seq.cache.blocks(l).length);
      const r = await m.complete({ ids: [7] }, { maxTokens: 20, temperature: 0 }, seq);
      await m.close();
      return { logits, blocks, tokens: r.tokens };
    };
    const bounded = await run();
    const kept = await run(join(await tempDir(), "kv")); // the persistent cache needs every block, so nothing is freed
    assert.deepEqual(
      bounded.blocks,
      [2, 6, 2, 6],
      "window 16 needs at most two blocks of 16; global layers keep all 90 tokens",
    );
    assert.deepEqual(kept.blocks, [6, 6, 6, 6]);
    assert.ok(maxAbsDiff(bounded.logits, kept.logits) < 1e-5);
    assert.deepEqual(bounded.tokens, kept.tokens);
  });

  it("rewinding past freed window keys starts over instead of serving wrong attention", async () => {
    const m = await LayerwiseModel.load(await tinyModel({ preset: "tiny-gemma3" }), {
      backend: "cpu",
      prefillChunk: 8,
      kvBlockTokens: 16,
    });
    const seq = m.createSequence();
    await m.forward(
      seq,
      Array.from({ length: 80 }, (_, i) => 300 + i),
    );
    // After 80 tokens the next query (80) sees keys 65..79: the block holding 64..79 is all that is left of the window layers.
    assert.equal(await seq.rewind(79), 79, "a query at 79 needs keys 64..78: still there");
    assert.equal(await seq.rewind(70), 0, "a query at 70 needs keys from 55, which were freed");
    assert.equal(seq.length, 0);
    await m.close();
  });

  it("renders Gemma's chat template and stops at <end_of_turn>", async () => {
    const m = await LayerwiseModel.load(await tinyModel({ preset: "tiny-gemma3" }), { backend: "cpu" });
    const ids = await m.encodePrompt({ messages: [{ role: "user", content: "Hi" }] });
    assert.equal(m.tokenizer.decode(ids, false), "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n");
    assert.ok(m.defaults.eosTokenIds.includes(m.tokenizer.tokenId("<end_of_turn>")!));
    await m.close();
  });
});
