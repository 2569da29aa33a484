// Fuzz: config.json through the architecture schemas, the bounds and the checks against a checkpoint's tensors gives a
// model or a clean LayerwiseError, never another exception, and never builds anything sized by a hostile number.
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import fc from "fast-check";
import { architectures, createArchModel } from "../../src/arch/index.js";
import { configLimits } from "../../src/arch/limits.js";
import { validateWeights } from "../../src/engine/weights.js";
import { Checkpoint } from "../../src/model/checkpoint.js";
import { presets } from "../../src/testmodel/presets.js";
import { storiesDir, tinyModel } from "../helpers.js";
import { assertHeapBounded, awkwardJson, cleanOutcome, fuzz, real } from "../model/fuzz-values.js";

/** Every key any schema reads, so mutations hit fields that matter and not only ones that are ignored. */
const schemaKeys = [
  ...new Set([
    ...Object.values(presets).flatMap((p) => Object.keys(p.config)),
    ...[
      "head_dim",
      "layer_types",
      "rope_parameters",
      "rope_scaling",
      "partial_rotary_factor",
      "mlp_only_layers",
      "sliding_window_pattern",
      "full_attention_interval",
      "decoder_sparse_step",
      "text_config",
      "model_type",
    ],
  ]),
];

/** Values for the keys that hold structure: layer kinds of any length, rope settings of any type. */
const structured = fc.oneof(
  fc.array(fc.constantFrom("sliding_attention", "full_attention", "linear_attention", "chunked_attention"), {
    maxLength: 70,
  }),
  fc.record(
    {
      rope_type: fc.constantFrom("default", "linear", "llama3", "yarn", "dynamic", "constructor"),
      factor: awkwardJson,
      partial_rotary_factor: awkwardJson,
      original_max_position_embeddings: awkwardJson,
    },
    { requiredKeys: ["rope_type"] },
  ),
  fc.record(
    { full_attention: fc.record({ rope_type: fc.constantFrom("default", "linear") }), sliding_attention: awkwardJson },
    { requiredKeys: [] },
  ),
  fc.constantFrom(...architectures.keys()),
);

const edit = fc.record({
  key: fc.oneof(fc.constantFrom(...schemaKeys), fc.string({ maxLength: 8 })),
  value: fc.oneof(awkwardJson, structured),
  remove: fc.boolean(),
});

function applyEdits(
  base: Record<string, unknown>,
  edits: readonly { key: string; value: unknown; remove: boolean }[],
): Record<string, unknown> {
  const config: Record<string, unknown> = structuredClone(base);
  for (const e of edits) {
    if (e.remove) delete config[e.key];
    else config[e.key] = real(e.value);
  }
  return config;
}

/** Tiny checkpoints of every architecture, to check mutated configs against real tensors (made at the top level, so their folders last). */
const checkpoints = new Map<string, Checkpoint>();
const bases: { name: string; config: Record<string, unknown> }[] = [];
const stories = await Checkpoint.open(storiesDir);
checkpoints.set("llama", stories);
bases.push({ name: "stories260K", config: stories.rawConfig });
for (const preset of ["tiny-qwen3", "tiny-gemma3", "tiny-gpt-oss", "tiny-qwen3-next"]) {
  const ckpt = await Checkpoint.open(await tinyModel({ preset, layers: 2 }));
  checkpoints.set(ckpt.rawConfig.model_type as string, ckpt);
  bases.push({ name: preset, config: ckpt.rawConfig });
}
// The real models' shapes too (no checkpoint: the schemas and bounds alone), and Gemma 3's multimodal wrapping.
for (const [name, p] of Object.entries(presets))
  if (!name.startsWith("tiny-")) bases.push({ name, config: { ...p.config } });
bases.push({
  name: "gemma3 multimodal",
  config: { model_type: "gemma3", text_config: { ...presets["gemma-3-12b"]!.config, model_type: "gemma3_text" } },
});

describe("fuzz: config.json", () => {
  it("real configs with fields changed, removed or added", { timeout: 300_000 }, async () => {
    await fuzz(
      fc.asyncProperty(
        fc.nat(),
        fc.array(edit, { minLength: 1, maxLength: 4 }),
        fc.boolean(),
        async (pick, edits, inText) => {
          const base = bases[pick % bases.length]!;
          const config = applyEdits(base.config, edits);
          // Gemma 3's multimodal config keeps its numbers under text_config: edit those half the time.
          if (inText && typeof config.text_config === "object" && config.text_config !== null)
            config.text_config = applyEdits(config.text_config as Record<string, unknown>, edits);
          const built = await cleanOutcome(() => createArchModel(config, `${base.name} config.json`));
          if (!built) return;
          const shape = built.model.shape;
          assert.ok(shape.numLayers >= 1 && shape.numLayers <= configLimits.layers, `numLayers ${shape.numLayers}`);
          assert.equal(shape.kvLayers.length, shape.numLayers);
          assert.ok(shape.maxPositions <= configLimits.positions);
          if (shape.moe) assert.ok(shape.moe.topK <= shape.moe.experts && shape.moe.experts <= configLimits.experts);
          const ckpt = checkpoints.get(config.model_type as string);
          if (ckpt) await cleanOutcome(() => validateWeights(ckpt, built.model, () => {}));
        },
      ),
    );
    assertHeapBounded();
  });

  it("generated configs of random fields", { timeout: 300_000 }, async () => {
    const field = fc.tuple(fc.constantFrom(...schemaKeys), fc.oneof(awkwardJson, structured));
    await fuzz(
      fc.asyncProperty(
        fc.constantFrom(...architectures.keys()),
        fc.array(field, { maxLength: 30 }),
        async (modelType, fields) => {
          const config: Record<string, unknown> = Object.fromEntries(fields.map(([k, v]) => [k, real(v)]));
          config.model_type = modelType;
          const built = await cleanOutcome(() => createArchModel(config));
          const ckpt = checkpoints.get(modelType);
          if (built && ckpt) await cleanOutcome(() => validateWeights(ckpt, built.model, () => {}));
        },
      ),
    );
    assertHeapBounded();
  });

  after(async () => {
    for (const c of checkpoints.values()) await c.close();
  });
});
