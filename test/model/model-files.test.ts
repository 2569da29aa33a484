// Every JSON (and template) file of a model folder goes through one bounded loader: regular files only, size caps, clear errors.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { closeSync, constants, openSync } from "node:fs";
import { mkdir, readFile, rm, symlink, truncate, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { LayerwiseModel } from "../../src/engine/model.js";
import { CheckpointError } from "../../src/errors.js";
import { Checkpoint } from "../../src/model/checkpoint.js";
import { ChatTemplate } from "../../src/model/chat-template.js";
import { readGenerationDefaults } from "../../src/model/generation-config.js";
import { TextTokenizer } from "../../src/model/tokenizer.js";
import { rejectsWith, storiesCopy, tinyModel } from "../helpers.js";

const rejects = (p: Promise<unknown>, code: string, message: RegExp) => rejectsWith(p, code, message, CheckpointError);

/** Replaces `file` with a FIFO; a reader left blocked on it (a regression) is released when the test file ends. */
async function fifoInPlaceOf(file: string): Promise<void> {
  await rm(file, { recursive: true, force: true });
  execFileSync("mkfifo", [file]);
  after(() => {
    try {
      closeSync(openSync(file, constants.O_WRONLY | constants.O_NONBLOCK));
    } catch {
      // no reader waiting: nothing to release
    }
  });
}

const readers: [string, (dir: string) => Promise<unknown>][] = [
  ["config.json", (dir) => Checkpoint.open(dir)],
  ["tokenizer.json", (dir) => TextTokenizer.load(dir)],
  ["tokenizer_config.json", (dir) => TextTokenizer.load(dir)],
  ["generation_config.json", (dir) => readGenerationDefaults(dir, {})],
  ["chat_template.jinja", (dir) => ChatTemplate.load(dir, {})],
];

describe("model folder files", () => {
  for (const [name, read] of readers) {
    it(`${name} as a FIFO is refused at once, not waited on`, { timeout: 30_000 }, async () => {
      const dir = await storiesCopy();
      await fifoInPlaceOf(join(dir, name));
      await rejects(
        read(dir),
        "FILE_NOT_REGULAR",
        new RegExp(`${name.replace(".", "\\.")} is a FIFO \\(named pipe\\), not a regular file`),
      );
    });

    it(`${name} as a directory is refused, naming what it is`, async () => {
      const dir = await storiesCopy();
      await rm(join(dir, name), { force: true });
      await mkdir(join(dir, name));
      await rejects(read(dir), "FILE_NOT_REGULAR", /is a directory, not a regular file/);
    });
  }

  it("config.json linked to /dev/zero is refused without reading it", async () => {
    const dir = await storiesCopy();
    await rm(join(dir, "config.json"));
    await symlink("/dev/zero", join(dir, "config.json"));
    await rejects(Checkpoint.open(dir), "FILE_NOT_REGULAR", /config\.json is a character device, not a regular file/);
  });

  it("a symlink to a regular file is read (Hugging Face cache snapshots are links to blobs)", async () => {
    const dir = await storiesCopy();
    await writeFile(join(dir, "..", "config-blob"), await readFile(join(dir, "config.json")));
    await rm(join(dir, "config.json"));
    await symlink(join(dir, "..", "config-blob"), join(dir, "config.json"));
    const ckpt = await Checkpoint.open(dir);
    assert.equal(ckpt.rawConfig.model_type, "llama");
    await ckpt.close();
  });

  it("a huge file is refused by its size, before it is read", async () => {
    const dir = await storiesCopy();
    await truncate(join(dir, "config.json"), 2 ** 31); // sparse: no disk used
    await rejects(
      Checkpoint.open(dir),
      "FILE_TOO_LARGE",
      /config\.json is 2\.00 GiB; layerwise reads a config\.json of at most 16\.0 MiB/,
    );
    const tok = await storiesCopy();
    await truncate(join(tok, "tokenizer.json"), 2 ** 31);
    await rejects(
      TextTokenizer.load(tok),
      "FILE_TOO_LARGE",
      /tokenizer\.json is 2\.00 GiB; layerwise reads a tokenizer\.json of at most 256 MiB/,
    );
  });

  it("says what is wrong with a file that is not JSON, per file", async () => {
    const cases: [string, string, (dir: string) => Promise<unknown>][] = [
      ["config.json", "CONFIG_INVALID", (dir) => Checkpoint.open(dir)],
      ["tokenizer.json", "TOKENIZER_INVALID", (dir) => TextTokenizer.load(dir)],
      ["tokenizer_config.json", "TOKENIZER_CONFIG_INVALID", (dir) => TextTokenizer.load(dir)],
      ["generation_config.json", "GENERATION_CONFIG_INVALID", (dir) => readGenerationDefaults(dir, {})],
    ];
    for (const [name, code, read] of cases) {
      const dir = await storiesCopy();
      await writeFile(join(dir, name), "{ not json");
      await rejects(read(dir), code, new RegExp(`${name.replace(".", "\\.")} is not valid JSON`));
      await writeFile(join(dir, name), "[1, 2]");
      await rejects(read(dir), code, new RegExp(`${name.replace(".", "\\.")} is not a JSON object`));
    }
  });

  it("refuses JSON nested absurdly deep, even in a key nothing reads (the KV cache's fingerprint serializes config.json)", async () => {
    const dir = await storiesCopy();
    const config = await readFile(join(dir, "config.json"), "utf8");
    await writeFile(
      join(dir, "config.json"),
      config.replace(/\}\s*$/, `, "notes": ${"[".repeat(100_000)}${"]".repeat(100_000)}}`),
    );
    await rejects(
      LayerwiseModel.load(dir, { backend: "cpu", kvCache: join(dir, "..", "kv") }),
      "CONFIG_INVALID",
      /config\.json nests lists or objects more than 256 levels deep/,
    );
    await writeFile(
      join(dir, "config.json"),
      config.replace(/\}\s*$/, `, "notes": ${"[".repeat(200)}"[[[[{{{{"${"]".repeat(200)}}`),
    );
    const ckpt = await Checkpoint.open(dir); // 200 levels, and brackets inside a string do not count
    await ckpt.close();
  });

  it("refuses a file that is not UTF-8 text", async () => {
    const dir = await storiesCopy();
    await writeFile(join(dir, "chat_template.jinja"), Buffer.from([0x7b, 0x7b, 0xff, 0xfe, 0x7d, 0x7d]));
    await rejects(ChatTemplate.load(dir, {}), "CHAT_TEMPLATE_INVALID", /chat_template\.jinja is not UTF-8 text/);
  });

  it("a model.safetensors.index.json that is a FIFO is refused", { timeout: 30_000 }, async () => {
    const dir = await tinyModel({ preset: "tiny-llama", layers: 2, shardBytes: 200_000 });
    await fifoInPlaceOf(join(dir, "model.safetensors.index.json"));
    await rejects(Checkpoint.open(dir), "FILE_NOT_REGULAR", /model\.safetensors\.index\.json is a FIFO/);
  });

  it("a shard that is a FIFO is refused", { timeout: 30_000 }, async () => {
    const dir = await storiesCopy();
    await fifoInPlaceOf(join(dir, "model.safetensors"));
    await rejects(Checkpoint.open(dir), "FILE_NOT_REGULAR", /model\.safetensors is a FIFO/);
  });

  it("the model loads end to end through the loader", async () => {
    const m = await LayerwiseModel.load(await storiesCopy(), { backend: "cpu" });
    assert.equal(m.tokenizer.vocabSize, 512);
    await m.close();
  });
});
