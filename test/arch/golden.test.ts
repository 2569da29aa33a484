// Logits and greedy ids against Hugging Face transformers (fixtures from tools/golden on the GPU machine).
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFile, readdir } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { CpuBackend } from "../../src/backend/cpu/index.js";
import { LayerwiseModel } from "../../src/engine/model.js";
import { f32MatmulRows, type FloatDType } from "../../src/backend/dtype.js";
import { backendCases, fixturesDir, maxAbsDiff, storiesCopy, storiesGolden, tinyModel } from "../helpers.js";

const tolerance = 1e-3;
// On CUDA, prompts of more than 4 tokens (f32MatmulRows) go through tensor-core matmuls that round activations to the
// weights' 16-bit type (see tensorCoreInput), so their logits are checked against the CPU backend rounding the same
// activations (whose exact math matches transformers to 1e-3): within 1e-2, since a last-bit difference in an f32 sum can
// flip one activation's bf16 rounding. That rounding alone moves the tiny models' logits up to about 0.15 from
// transformers' f32 math (bounded below by 0.3). Decode steps of one sequence use exact f32 dot products and match to 1e-3.
const sameRoundingTolerance = 1e-2;
const bf16RoundingBound = 0.3;

for (const bc of backendCases) {
  // Every backend keeps the KV cache in f32 here so the comparison is of the math, not of the cache's rounding.
  const loadOptions = { kvDtype: "f32" as const };

  describe(`stories260K (a real trained Llama) against transformers, ${bc.name}`, () => {
    it("matches transformers' logits at every position and its 40 greedy ids", async () => {
      const golden = JSON.parse(await readFile(storiesGolden, "utf8")) as {
        prompts: { ids: number[]; logits: number[][] }[];
      };
      const model = await LayerwiseModel.load(await storiesCopy(), { backend: await bc.create(), ...loadOptions });
      try {
        for (const p of golden.prompts) {
          const seq = model.createSequence();
          const logits = await model.forward(seq, p.ids, "all");
          assert.ok(
            maxAbsDiff(logits, p.logits.flat()) <= tolerance,
            `max |diff| ${maxAbsDiff(logits, p.logits.flat())} for prompt ${p.ids}`,
          );
          seq.dispose();
        }
        const expected =
          "403 407 261 378 432 383 286 261 376 298 315 421 395 317 426 338 401 396 267 337 410 408 419 292 411 322 265 282 295 433 426 385 328 432 358 394 261 370 432 352";
        const r = await model.complete({ ids: [1] }, { maxTokens: 40, temperature: 0 });
        assert.equal(r.tokens.join(" "), expected);
        assert.ok(r.text.startsWith("Once upon a time, there was a little girl named Lily."), r.text);
        assert.equal(
          r.text,
          "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, r",
        );
      } finally {
        await model.close();
        await model.backend.dispose();
      }
    });
  });
}

interface Fixture {
  format: number;
  model: {
    preset: string;
    model_type: string;
    dtype: FloatDType;
    seed: number;
    layers: number;
    sha256: Record<string, string>;
  };
  short: { ids: number[]; logits: number[][] };
  long: { ids: number[]; last: number; logits: number[][] };
  greedy: { ids: number[]; new_ids: number[] };
}

// Every fixture tools/golden/make_goldens.py wrote (one per preset and dtype).
const fixtures = (await readdir(join(fixturesDir, "golden")))
  .filter((f) => f.endsWith(".json"))
  .map((f) => f.slice(0, -5))
  .sort();

for (const bc of backendCases) {
  describe(`random-weight checkpoints against transformers, ${bc.name}`, () => {
    for (const name of fixtures) {
      it(`${name}: same weights, logits within ${tolerance}, same greedy ids`, async () => {
        const f = JSON.parse(await readFile(join(fixturesDir, "golden", `${name}.json`), "utf8")) as Fixture;
        assert.equal(f.format, 1);
        const dir = await tinyModel({
          preset: f.model.preset,
          dtype: f.model.dtype,
          seed: f.model.seed,
          layers: f.model.layers,
        });
        for (const [file, sha] of Object.entries(f.model.sha256)) {
          assert.equal(
            createHash("sha256")
              .update(await readFile(join(dir, file)))
              .digest("hex"),
            sha,
            `${file} differs from the checkpoint the fixture was made from`,
          );
        }
        const model = await LayerwiseModel.load(dir, { backend: await bc.create(), kvDtype: "f32" });
        const tensorCores = bc.name === "cuda" && (f.model.dtype !== "f32" || f.model.model_type === "gpt_oss");
        // With rounded activations (a prompt of more than f32MatmulRows tokens on tensor cores), the reference is the CPU
        // rounding the same way.
        const rounded = (ids: readonly number[]) => tensorCores && ids.length > f32MatmulRows.other;
        const same = tensorCores
          ? await LayerwiseModel.load(dir, { backend: new CpuBackend({ emulateTensorCores: true }), kvDtype: "f32" })
          : undefined;
        // The last positions' logits of a prompt against transformers', directly or through the CPU rounding the same way.
        const check = async (label: string, ids: number[], golden: number[]) => {
          const all = await model.forward(model.createSequence(), ids, "all");
          const got = all.subarray(all.length - golden.length);
          if (same && rounded(ids)) {
            const sameAll = await same.forward(same.createSequence(), ids, "all");
            const sameTail = sameAll.subarray(sameAll.length - golden.length);
            assert.ok(
              maxAbsDiff(got, sameTail) <= sameRoundingTolerance,
              `${label}: max |diff| ${maxAbsDiff(got, sameTail)} from the CPU with the same rounding`,
            );
            assert.ok(
              maxAbsDiff(sameTail, golden) <= bf16RoundingBound,
              `${label} with bf16 activations: max |diff| ${maxAbsDiff(sameTail, golden)} from transformers`,
            );
          } else assert.ok(maxAbsDiff(got, golden) <= tolerance, `${label}: max |diff| ${maxAbsDiff(got, golden)}`);
        };
        try {
          await check("short prompt", f.short.ids, f.short.logits.flat());
          await check("300-token prompt", f.long.ids, f.long.logits.flat());
          // Greedy ids: transformers', or with rounded activations in the prefill those of the CPU rounding the same way
          // (random weights make near ties, which a 0.1 change of the logits flips; the CPU run above checks transformers').
          const greedy = { ids: f.greedy.ids };
          const settings = { maxTokens: f.greedy.new_ids.length, temperature: 0, ignoreEos: true };
          const r = await model.complete(greedy, settings);
          if (same && rounded(f.greedy.ids)) assert.deepEqual(r.tokens, (await same.complete(greedy, settings)).tokens);
          else assert.deepEqual(r.tokens, f.greedy.new_ids);
        } finally {
          await same?.close();
          await same?.backend.dispose();
          await model.close();
          await model.backend.dispose();
        }
      });
    }
  });
}
