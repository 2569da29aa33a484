// config.json numbers are checked against documented bounds and each other before anything is sized from them.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { createArchModel } from "../../src/arch/index.js";
import { CheckpointError } from "../../src/errors.js";
import { presets } from "../../src/testmodel/presets.js";

const configOf = (preset: string, changes: Record<string, unknown> = {}): Record<string, unknown> => ({
  ...presets[preset]!.config,
  ...changes,
});

function refused(config: Record<string, unknown>, message: RegExp, code = "CONFIG_INVALID"): void {
  assert.throws(
    () => createArchModel(config, "config.json"),
    (e: unknown) => {
      assert.ok(e instanceof CheckpointError, `not a CheckpointError: ${(e as Error)?.stack ?? e}`);
      assert.equal(e.code, code, e.message);
      assert.match(e.message, message);
      return true;
    },
  );
}

describe("config bounds", () => {
  it("the real models' configs pass", () => {
    for (const [name, p] of Object.entries(presets)) {
      const { model } = createArchModel({ ...p.config }, name);
      assert.equal(model.shape.numLayers, p.config.num_hidden_layers);
    }
  });

  it("num_hidden_layers: 1e9 is refused before any per-layer array is built", () => {
    for (const preset of ["tiny-llama", "tiny-qwen3", "tiny-gemma3", "tiny-qwen3-next"]) {
      refused(
        configOf(preset, { num_hidden_layers: 1e9 }),
        /num_hidden_layers: 1000000000 is more than the 4096 layers layerwise reads/,
      );
    }
    refused(
      configOf("tiny-gpt-oss", { num_hidden_layers: 1e9, layer_types: null }),
      /num_hidden_layers: 1000000000 is more than the 4096 layers/,
    );
  });

  it("max_position_embeddings is capped at 2^24", () => {
    refused(
      configOf("tiny-llama", { max_position_embeddings: 1e9 }),
      /max_position_embeddings: 1000000000 is more than the 16777216 positions \(2\^24\) layerwise plans for/,
    );
    createArchModel(configOf("tiny-llama", { max_position_embeddings: 2 ** 24 }));
  });

  it("huge head_dim, hidden sizes, heads and expert counts are refused", () => {
    refused(configOf("tiny-qwen3", { head_dim: 1e9 }), /head_dim: 1000000000 is more than 65536/);
    refused(configOf("tiny-llama", { hidden_size: 2 ** 40 }), /hidden_size: 1099511627776 is more than 16777216/);
    refused(configOf("tiny-llama", { num_attention_heads: 1e9 }), /num_attention_heads: 1000000000 is more than 65536/);
    refused(configOf("tiny-gpt-oss", { num_local_experts: 1e9 }), /num_local_experts: 1000000000 is more than 65536/);
    refused(configOf("tiny-qwen3-next", { num_experts: 1e9 }), /num_experts: 1000000000 is more than 65536/);
  });

  it("num_experts_per_tok above the number of experts is refused", () => {
    refused(
      configOf("tiny-gpt-oss", { num_experts_per_tok: 1e9 }),
      /num_experts_per_tok: 1000000000 is more than num_local_experts \(8\)/,
    );
    refused(
      configOf("tiny-gpt-oss", { num_experts_per_tok: 9 }),
      /num_experts_per_tok: 9 is more than num_local_experts \(8\)/,
    );
    refused(
      configOf("tiny-qwen3-next", { num_experts_per_tok: 9 }),
      /num_experts_per_tok: 9 is more than num_experts \(8\)/,
    );
  });

  it("layer_types must have one entry per layer", () => {
    refused(
      configOf("tiny-gemma3", { layer_types: ["sliding_attention"] }),
      /layer_types: has 1 entries, num_hidden_layers is 4/,
    );
    refused(
      configOf("tiny-gpt-oss", { layer_types: ["sliding_attention", "full_attention"] }),
      /layer_types: has 2 entries, num_hidden_layers is 4/,
    );
    refused(
      configOf("tiny-gpt-oss", { layer_types: new Array(5).fill("full_attention") }),
      /layer_types: has 5 entries, num_hidden_layers is 4/,
    );
    refused(
      configOf("tiny-qwen3-next", { layer_types: ["linear_attention"] }),
      /layer_types: has 1 entries, num_hidden_layers is 4/,
    );
    const g = createArchModel({ ...configOf("gemma-3-12b"), layer_types: undefined });
    assert.equal(g.model.shape.kvLayers.length, 48);
  });

  it("attention shapes must divide evenly", () => {
    refused(
      configOf("tiny-llama", { head_dim: null, hidden_size: 66 }),
      /hidden_size 66 is not a multiple of num_attention_heads 4/,
    );
    refused(
      configOf("tiny-llama", { num_key_value_heads: 3 }),
      /num_attention_heads 4 is not a multiple of num_key_value_heads 3/,
    );
    refused(configOf("tiny-qwen3", { head_dim: 33 }), /head_dim 33 is odd: RoPE rotates pairs of dimensions/);
    refused(
      configOf("tiny-qwen3-next", { linear_num_value_heads: 3 }),
      /linear_num_value_heads 3 is not a multiple of linear_num_key_heads 2/,
    );
    refused(
      configOf("tiny-qwen3-next", { partial_rotary_factor: 0.01 }),
      /partial_rotary_factor 0\.01 of head_dim 32 rotates no dimensions|rotary/,
    );
  });

  it("a rope factor that is not a number is a clean error", () => {
    refused(
      configOf("tiny-qwen3-next", { rope_parameters: { rope_type: "default", partial_rotary_factor: -1 } }),
      /partial_rotary_factor/,
    );
  });
});
