// Bad model folders get a clear error naming the problem: each case asserts the code and the message.
import assert from "node:assert/strict";
import { mkdir, open, readFile, rm, truncate, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { LayerwiseModel } from "../../src/engine/model.js";
import type { UsageError } from "../../src/errors.js";
import { Checkpoint } from "../../src/model/checkpoint.js";
import { readSafetensorsHeader } from "../../src/model/safetensors.js";
import { rejectsWith, storiesCopy, tinyModel } from "../helpers.js";

const rejects = rejectsWith;

const load = (dir: string) => LayerwiseModel.load(dir, { backend: "cpu" });

async function editJson(file: string, edit: (j: Record<string, unknown>) => void): Promise<void> {
  const json = JSON.parse(await readFile(file, "utf8"));
  edit(json);
  await writeFile(file, JSON.stringify(json));
}

describe("checkpoint errors", () => {
  it("missing config.json", async () => {
    const dir = await storiesCopy();
    await rm(join(dir, "config.json"));
    await rejects(load(dir), "CONFIG_MISSING", /config\.json does not exist/);
  });

  it("unknown model_type lists the supported ones", async () => {
    const dir = await storiesCopy();
    await editJson(join(dir, "config.json"), (j) => (j.model_type = "mamba"));
    await rejects(load(dir), "ARCH_UNSUPPORTED", /model_type "mamba" is not supported; supported: llama, qwen3/);
  });

  it("a config value of the wrong type names the field", async () => {
    const dir = await storiesCopy();
    await editJson(join(dir, "config.json"), (j) => (j.hidden_size = "sixty-four"));
    await rejects(load(dir), "CONFIG_INVALID", /hidden_size/);
  });

  it("truncated safetensors", async () => {
    const dir = await storiesCopy();
    const file = join(dir, "model.safetensors");
    await truncate(file, 500_000);
    await rejects(load(dir), "TENSOR_OUT_OF_BOUNDS", /model\.safetensors: .* ends at byte \d+, file has 500000/);
  });

  it("a file shorter than its header", async () => {
    const dir = await storiesCopy();
    await truncate(join(dir, "model.safetensors"), 100);
    await rejects(load(dir), "SAFETENSORS_TRUNCATED", /header says 4848 bytes but the file has only 92/);
  });

  it("header offsets out of bounds", async () => {
    const dir = await storiesCopy();
    const file = join(dir, "model.safetensors");
    const bytes = await readFile(file);
    const headerLen = Number(bytes.readBigUInt64LE(0));
    const header = JSON.parse(bytes.subarray(8, 8 + headerLen).toString("utf8"));
    const [begin, end] = header["model.norm.weight"].data_offsets;
    header["model.norm.weight"].data_offsets = [begin + 4_000_000, end + 4_000_000];
    const text = JSON.stringify(header).padEnd(headerLen, " ");
    assert.equal(Buffer.byteLength(text), headerLen);
    const fh = await open(file, "r+");
    await fh.write(text, 8);
    await fh.close();
    await rejects(load(dir), "TENSOR_OUT_OF_BOUNDS", /model\.norm\.weight ends at byte \d+, file has 1044984/);
  });

  it("overlapping tensors", async () => {
    const dir = await storiesCopy();
    const file = join(dir, "model.safetensors");
    const bytes = await readFile(file);
    const headerLen = Number(bytes.readBigUInt64LE(0));
    const header = JSON.parse(bytes.subarray(8, 8 + headerLen).toString("utf8"));
    header["model.norm.weight"].data_offsets = header["model.layers.0.input_layernorm.weight"].data_offsets;
    const fh = await open(file, "r+");
    await fh.write(JSON.stringify(header).padEnd(headerLen, " "), 8);
    await fh.close();
    await rejects(readSafetensorsHeader(file), "TENSOR_OVERLAP", /overlap/);
  });

  it("a corrupt header", async () => {
    const dir = await storiesCopy();
    const fh = await open(join(dir, "model.safetensors"), "r+");
    await fh.write("{ not json", 8);
    await fh.close();
    await rejects(load(dir), "SAFETENSORS_HEADER_INVALID", /header is not valid JSON/);
  });

  it("tensor shape not matching the config", async () => {
    const dir = await storiesCopy();
    await editJson(join(dir, "config.json"), (j) => (j.intermediate_size = 128));
    await rejects(
      load(dir),
      "TENSOR_SHAPE_MISMATCH",
      /model\.layers\.0\.mlp\.gate_proj\.weight has shape \[172, 64\], config\.json implies \[128, 64\]/,
    );
  });

  it("a tensor missing from the weights", async () => {
    const dir = await tinyModel({ preset: "tiny-llama", layers: 2 });
    await editJson(join(dir, "config.json"), (j) => (j.num_hidden_layers = 3));
    await rejects(load(dir), "TENSOR_MISSING", /no tensor named model\.layers\.2\./);
  });

  it("fewer layers in config.json than in the checkpoint: runs, with a warning", async () => {
    const dir = await tinyModel({ preset: "tiny-llama", layers: 3 });
    await editJson(join(dir, "config.json"), (j) => (j.num_hidden_layers = 2));
    const warnings: [string, string][] = [];
    const model = await LayerwiseModel.load(dir, {
      backend: "cpu",
      onWarning: (code, message) => warnings.push([code, message]),
    });
    await model.close();
    assert.deepEqual(
      warnings.map(([c]) => c),
      ["LAYERS_UNUSED"],
    );
    assert.match(
      warnings[0]![1],
      /config\.json's num_hidden_layers is 2, but the checkpoint has tensors of layer 2 \(model\.layers\.2\.input_layernorm\.weight\): only the first 2 layers run/,
    );
  });

  it("num_hidden_layers far beyond the checkpoint fails at the first missing layer", async () => {
    const dir = await tinyModel({ preset: "tiny-llama", layers: 2 });
    await editJson(join(dir, "config.json"), (j) => (j.num_hidden_layers = 4096));
    await rejects(load(dir), "TENSOR_MISSING", /no tensor named model\.layers\.2\./);
  });

  it("missing tokenizer", async () => {
    const dir = await storiesCopy();
    await rm(join(dir, "tokenizer.json"));
    await rejects(load(dir), "TOKENIZER_MISSING", /tokenizer\.json does not exist/);
  });

  it("no safetensors, only a pickle: refuses and says why", async () => {
    const dir = await storiesCopy();
    await rm(join(dir, "model.safetensors"));
    await writeFile(join(dir, "pytorch_model.bin"), "not read");
    await rejects(load(dir), "WEIGHTS_MISSING", /no \*\.safetensors files \(found pytorch_model\.bin\)/);
  });

  it("prompt longer than the model's context", async () => {
    const model = await load(await storiesCopy());
    try {
      await assert.rejects(
        model.complete({ ids: new Array(600).fill(403) }, { maxTokens: 5 }),
        (e: UsageError) =>
          e.code === "PROMPT_TOO_LONG" && /the prompt has 600 tokens; the model's context is 512/.test(e.message),
      );
    } finally {
      await model.close();
    }
  });
});

describe("sharded checkpoints", () => {
  it("reads tensors across shards through model.safetensors.index.json, same outputs as one file", async () => {
    const single = await tinyModel({ preset: "tiny-llama", layers: 2 });
    const sharded = await tinyModel({ preset: "tiny-llama", layers: 2, shardBytes: 200_000 });
    const ckpt = await Checkpoint.open(sharded);
    assert.ok(ckpt.files.length >= 3, `expected several shards, got ${ckpt.files.length}`);
    await ckpt.close();
    const outputs = [];
    for (const dir of [single, sharded]) {
      const m = await load(dir);
      outputs.push((await m.complete("Once upon a time", { maxTokens: 8, temperature: 0 })).tokens);
      await m.close();
    }
    assert.deepEqual(outputs[0], outputs[1]);
  });

  it("a shard listed in the index but missing is named", async () => {
    const dir = await tinyModel({ preset: "tiny-llama", layers: 2, shardBytes: 200_000 });
    await rm(join(dir, "model-00002-of-00004.safetensors"));
    await rejects(
      load(dir),
      "SHARD_MISSING",
      /model-00002-of-00004\.safetensors is listed in model\.safetensors\.index\.json but does not exist/,
    );
  });

  it("an unreadable shard is named", async () => {
    const dir = await tinyModel({ preset: "tiny-llama", layers: 2, shardBytes: 200_000 });
    // Permissions do not stop root (tests may run as root), but a folder in the shard's place cannot be read by anyone.
    await rm(join(dir, "model-00001-of-00004.safetensors"));
    await mkdir(join(dir, "model-00001-of-00004.safetensors"));
    await rejects(
      load(dir),
      "FILE_NOT_REGULAR",
      /model-00001-of-00004\.safetensors is a directory, not a regular file/,
    );
  });
});
