// The prefill chunk layerwise picks when none is given: the largest choice whose activations take at most a third of
// the VRAM budget, cut to the context, and a given one as it is.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { LayerwiseModel, withModel } from "../../src/engine/model.js";
import { workspaceBytes } from "../../src/engine/planner.js";
import { tinyModel } from "../helpers.js";

describe("prefill chunk", () => {
  it("takes the largest chunk whose activations fit a third of --vram, cut to the context; a given one stays", async () => {
    const dir = await tinyModel({ preset: "tiny-llama", layers: 2 });
    const chunkFor = (o: { vram: number; context: number; prefillChunk?: number }) => withModel(dir, { backend: "cpu", ram: 1e9, ...o }, async (m) => m.plan.input.prefillChunk);
    const shape = await withModel(dir, { backend: "cpu", context: 64 }, async (m) => m.plan.input.shape);
    const thirdFor = (rows: number) => 3 * workspaceBytes(shape, rows);
    assert.equal(await chunkFor({ vram: 1e12, context: 20000 }), 8192);
    assert.equal(await chunkFor({ vram: thirdFor(8192) - 1, context: 20000 }), 4096);
    assert.equal(await chunkFor({ vram: thirdFor(4096) - 1, context: 20000 }), 2048);
    assert.equal(await chunkFor({ vram: thirdFor(2048) - 1, context: 20000 }), 2048, "the smallest choice is the last resort");
    assert.equal(await chunkFor({ vram: 1e12, context: 3000 }), 3072, "no larger than the context, in whole KV blocks");
    assert.equal(await chunkFor({ vram: 1e12, context: 300 }), 512);
    assert.equal(await chunkFor({ vram: 1e12, context: 20000, prefillChunk: 300 }), 300);
  });

  it("a budget too small even for the smallest chunk says so, and what would fit", async () => {
    const dir = await tinyModel({ preset: "tiny-llama", layers: 2 });
    await assert.rejects(LayerwiseModel.load(dir, { backend: "cpu", vram: 1000, context: 20000 }), (e: Error & { code: string }) => {
      assert.equal(e.code, "VRAM_TOO_SMALL");
      assert.match(e.message, /needs/);
      return true;
    });
  });
});
