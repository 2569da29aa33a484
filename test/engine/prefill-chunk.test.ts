// The prefill chunk and span layerwise picks when none is given: the largest choices (cut to the context) whose plan
// moves no more bytes per decoded token than the smallest choices', with as many layer slots, so a bigger chunk or
// span never slows decode; given ones as they are.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { LayerwiseModel, withModel, type LoadOptions } from "../../src/engine/model.js";
import { planPrefill, type Plan } from "../../src/engine/planner.js";
import { tinyModel } from "../helpers.js";

describe("prefill chunk", () => {
  it("takes the largest chunk that costs decode nothing, cut to the context; a given one stays", async () => {
    const dir = await tinyModel({ preset: "tiny-llama", layers: 2 });
    const planOf = (o: LoadOptions) =>
      withModel(dir, { backend: "cpu", ram: 1e9, context: 16000, ...o }, async (m) => m.plan);
    const tryPlan = (o: LoadOptions) => planOf(o).catch((e: { code?: string }) => e.code);
    const decodeBytes = (p: Plan | string | undefined) =>
      typeof p === "object" ? p.perToken.h2dBytes + p.perToken.diskBytes : Infinity;

    assert.equal((await planOf({ vram: 1e12 })).input.prefillChunk, 8192, "everything fits: the largest");
    for (const vram of [4e7, 2e7]) {
      const chosen = await planOf({ vram });
      const chunk = chosen.input.prefillChunk;
      assert.ok(chunk < 8192, `${vram}: a tighter budget takes a smaller chunk (${chunk})`);
      const base = await planOf({ vram, prefillChunk: 2048 });
      assert.ok(
        decodeBytes(chosen) <= 1.01 * decodeBytes(base) && chosen.slots >= base.slots,
        `${vram}: decode moves what it would with 2048`,
      );
      const twice = await tryPlan({ vram, prefillChunk: 2 * chunk });
      assert.ok(
        typeof twice !== "object" || decodeBytes(twice) > 1.01 * decodeBytes(base) || twice.slots < base.slots,
        `${vram}: twice ${chunk} would cost decode (or not fit)`,
      );
    }
    // With no RAM for KV, a bigger chunk here would push some of the prompt's KV to disk: the smaller one stays.
    assert.ok(
      (await planOf({ vram: 2.7e7, ram: 0, prefillChunk: 4096 })).kvDiskBytes > 0,
      "4096 rows would spill KV to disk",
    );
    const noRam = await planOf({ vram: 2.7e7, ram: 0 });
    assert.deepEqual([noRam.input.prefillChunk, noRam.kvDiskBytes], [2048, 0]);
    assert.equal(
      (await planOf({ vram: 1e12, context: 3000 })).input.prefillChunk,
      3072,
      "no larger than the context, in whole KV blocks",
    );
    assert.equal((await planOf({ vram: 1e12, context: 300 })).input.prefillChunk, 512);
    assert.equal((await planOf({ vram: 1e12, prefillChunk: 300 })).input.prefillChunk, 300);
  });

  it("takes the whole context as one span where that costs decode nothing, else 32768 rows; a given one stays", async () => {
    const dir = await tinyModel({ preset: "tiny-llama", layers: 2 });
    const input = await withModel(
      dir,
      { backend: "cpu", ram: 1e9, context: 16000, vram: 1e12 },
      async (m) => m.plan.input,
    );
    // 100k tokens (past what this model was made for; the planner only counts bytes).
    const planAt = (vramBytes: number, o: { prefillChunk?: number; prefillSpan?: number } = {}) => {
      try {
        return planPrefill({
          ...input,
          contextTokens: 100000,
          prefillChunk: undefined,
          prefillSpan: undefined,
          vramBytes,
          ...o,
        });
      } catch (e) {
        return (e as { code?: string }).code;
      }
    };
    const decodeBytes = (p: Plan | string | undefined) =>
      typeof p === "object" ? p.perToken.h2dBytes + p.perToken.diskBytes : Infinity;
    const whole = Math.ceil(100000 / 256) * 256;
    assert.equal((planAt(1e12) as Plan).input.prefillSpan, whole, "everything fits: one span");
    let tookWhole = false;
    for (const vram of [7e7, 5e7, 4e7]) {
      const chosen = planAt(vram) as Plan;
      const { prefillChunk, prefillSpan } = chosen.input;
      const base = planAt(vram, { prefillChunk, prefillSpan: 32768 }) as Plan;
      assert.ok(
        decodeBytes(chosen) <= 1.01 * decodeBytes(base) && chosen.slots >= base.slots,
        `${vram}: decode moves what it would with 32k spans`,
      );
      if (prefillSpan === whole) {
        tookWhole = true;
        assert.ok(
          chosen.kvDeviceTokens < base.kvDeviceTokens,
          "the span's KV in transit comes out of the prefill share",
        );
        assert.equal(chosen.kvDeviceTokensDecode, base.kvDeviceTokensDecode, "and decode gets it back");
      } else {
        const wholeSpan = planAt(vram, { prefillChunk, prefillSpan: whole });
        assert.ok(
          typeof wholeSpan !== "object" ||
            decodeBytes(wholeSpan) > 1.01 * decodeBytes(base) ||
            wholeSpan.slots < base.slots ||
            wholeSpan.kvDiskBytes > base.kvDiskBytes,
          `${vram}: one span would cost decode`,
        );
      }
    }
    assert.ok(tookWhole, "some budget between takes the whole context as one span");
    assert.equal((planAt(1e12, { prefillSpan: 4096 }) as Plan).input.prefillSpan, 4096, "a given span stays");
  });

  it("a budget too small even for the smallest chunk says so, and what would fit", async () => {
    const dir = await tinyModel({ preset: "tiny-llama", layers: 2 });
    await assert.rejects(
      LayerwiseModel.load(dir, { backend: "cpu", vram: 1000, context: 16000 }),
      (e: Error & { code: string }) => {
        assert.equal(e.code, "VRAM_TOO_SMALL");
        assert.match(e.message, /needs/);
        return true;
      },
    );
  });
});
