// The prefill chunk layerwise picks when none is given: the largest choice (cut to the context) whose plan moves no
// more bytes per decoded token than the smallest choice's, with as many layer slots, so a bigger chunk never slows
// decode; a given one as it is.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { LayerwiseModel, withModel, type LoadOptions } from "../../src/engine/model.js";
import type { Plan } from "../../src/engine/planner.js";
import { tinyModel } from "../helpers.js";

describe("prefill chunk", () => {
  it("takes the largest chunk that costs decode nothing, cut to the context; a given one stays", async () => {
    const dir = await tinyModel({ preset: "tiny-llama", layers: 2 });
    const planOf = (o: LoadOptions) => withModel(dir, { backend: "cpu", ram: 1e9, context: 16000, ...o }, async (m) => m.plan);
    const tryPlan = (o: LoadOptions) => planOf(o).catch((e: { code?: string }) => e.code);
    const decodeBytes = (p: Plan | string | undefined) => (typeof p === "object" ? p.perToken.h2dBytes + p.perToken.diskBytes : Infinity);

    assert.equal((await planOf({ vram: 1e12 })).input.prefillChunk, 8192, "everything fits: the largest");
    for (const vram of [4e7, 2e7]) {
      const chosen = await planOf({ vram });
      const chunk = chosen.input.prefillChunk;
      assert.ok(chunk < 8192, `${vram}: a tighter budget takes a smaller chunk (${chunk})`);
      const base = await planOf({ vram, prefillChunk: 2048 });
      assert.ok(decodeBytes(chosen) <= 1.01 * decodeBytes(base) && chosen.slots >= base.slots, `${vram}: decode moves what it would with 2048`);
      const twice = await tryPlan({ vram, prefillChunk: 2 * chunk });
      assert.ok(typeof twice !== "object" || decodeBytes(twice) > 1.01 * decodeBytes(base) || twice.slots < base.slots, `${vram}: twice ${chunk} would cost decode (or not fit)`);
    }
    // With no RAM for KV, a bigger chunk here would push some of the prompt's KV to disk: the smaller one stays.
    assert.ok((await planOf({ vram: 2.5e7, ram: 0, prefillChunk: 4096 })).kvDiskBytes > 0, "4096 rows would spill KV to disk");
    const noRam = await planOf({ vram: 2.5e7, ram: 0 });
    assert.deepEqual([noRam.input.prefillChunk, noRam.kvDiskBytes], [2048, 0]);
    assert.equal((await planOf({ vram: 1e12, context: 3000 })).input.prefillChunk, 3072, "no larger than the context, in whole KV blocks");
    assert.equal((await planOf({ vram: 1e12, context: 300 })).input.prefillChunk, 512);
    assert.equal((await planOf({ vram: 1e12, prefillChunk: 300 })).input.prefillChunk, 300);
  });

  it("a budget too small even for the smallest chunk says so, and what would fit", async () => {
    const dir = await tinyModel({ preset: "tiny-llama", layers: 2 });
    await assert.rejects(LayerwiseModel.load(dir, { backend: "cpu", vram: 1000, context: 16000 }), (e: Error & { code: string }) => {
      assert.equal(e.code, "VRAM_TOO_SMALL");
      assert.match(e.message, /needs/);
      return true;
    });
  });
});
