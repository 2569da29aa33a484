// NaN or infinite weights: generation stops with a clear error instead of sampling around NaN logits.
import assert from "node:assert/strict";
import { open, readdir } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { LayerwiseModel } from "../../src/engine/model.js";
import type { LayerwiseError } from "../../src/errors.js";
import { readSafetensorsHeader } from "../../src/model/safetensors.js";
import { backendCases, tinyModel } from "../helpers.js";

/** Overwrites every value of tensor `name` with `value` (an f32 checkpoint). */
async function fillTensor(dir: string, name: string, value: number): Promise<void> {
  for (const f of (await readdir(dir)).filter((f) => f.endsWith(".safetensors"))) {
    const t = (await readSafetensorsHeader(join(dir, f))).tensors.find((x) => x.name === name);
    if (!t) continue;
    const fh = await open(join(dir, f), "r+");
    await fh.write(new Uint8Array(new Float32Array(t.byteLength / 4).fill(value).buffer), 0, t.byteLength, t.start);
    await fh.close();
    return;
  }
  throw new Error(`no tensor ${name}`);
}

for (const bc of backendCases) {
  describe(`non-finite weights (${bc.name})`, () => {
    for (const value of [NaN, Infinity]) {
      it(`a final norm of ${value} ends greedy and sampled generation with NON_FINITE_LOGITS`, async () => {
        const dir = await tinyModel({ preset: "tiny-llama", layers: 2 });
        await fillTensor(dir, "model.norm.weight", value);
        const m = await LayerwiseModel.load(dir, { backend: await bc.create(), context: 64 });
        try {
          for (const o of [
            { temperature: 0 },
            { temperature: 0.8, topK: 5, seed: 1 },
            { temperature: 0.8, topP: 0.9, seed: 1 },
          ]) {
            await assert.rejects(
              m.complete("hello", { ...o, maxTokens: 4 }),
              (e: LayerwiseError) => e.code === "NON_FINITE_LOGITS",
              JSON.stringify(o),
            );
          }
        } finally {
          await m.close();
          await m.backend.dispose();
        }
      });
    }
  });
}
