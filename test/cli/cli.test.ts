// The layerwise command end to end, in a child process, as a user runs it.
import assert from "node:assert/strict";
import { readFile, readdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { runCli, storiesCopy, tempDir, tinyModel } from "../helpers.js";

describe("layerwise CLI", () => {
  it("run prints a continuation of the prompt", async () => {
    const dir = await storiesCopy();
    const r = await runCli([
      "run",
      dir,
      "--prompt",
      "Once upon a time",
      "--max-tokens",
      "30",
      "--temperature",
      "0",
      "--backend",
      "cpu",
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(
      r.stdout.startsWith(", there was a little girl named Lily. She loved to play outside in the park."),
      r.stdout,
    );
    assert.match(r.stderr, /5 prompt tokens, 30 new, length/);
  });

  it("run --json prints one JSON line with the documented fields", async () => {
    const dir = await storiesCopy();
    const promptFile = join(await tempDir(), "prompt.txt");
    await writeFile(promptFile, "Once upon a time");
    const r = await runCli([
      "run",
      dir,
      "--prompt-file",
      promptFile,
      "--max-tokens",
      "12",
      "--temperature",
      "0",
      "--json",
    ]);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trim().split("\n");
    assert.equal(lines.length, 1);
    const j = JSON.parse(lines[0]!);
    for (const key of ["text", "tokens", "prompt_tokens", "ttft_s", "decode_s_per_token", "peak_ram_bytes"])
      assert.ok(key in j, `missing ${key}`);
    assert.equal(j.tokens, 12);
    assert.equal(j.prompt_tokens, 5);
    assert.ok(j.text.startsWith(", there was a little girl"));
    assert.ok(j.peak_ram_bytes > 10e6);
  });

  it("errors print a code, the message and a hint; --json prints them as JSON", async () => {
    const missing = join(await tempDir(), "no-such-model");
    const r = await runCli(["run", missing, "--prompt", "hi"]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^error \[MODEL_DIR_MISSING\]: .*no-such-model does not exist\n  hint: /);
    assert.doesNotMatch(r.stderr, /at .*\.js:\d+/, "no stack trace without --debug");
    const j = await runCli(["run", missing, "--prompt", "hi", "--json"]);
    assert.equal(JSON.parse(j.stdout).error.code, "MODEL_DIR_MISSING");
  });

  it("bad flags are refused before anything loads", async () => {
    const dir = await storiesCopy();
    const r = await runCli(["run", dir, "--prompt", "hi", "--temperature", "warm"]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /error \[BAD_FLAG\]: --temperature warm is not a number/);
    const b = await runCli(["run", dir, "--prompt", "hi", "--backend", "tpu"]);
    assert.match(b.stderr, /--backend tpu is not one of cpu, cuda, auto/);
    const n = await runCli(["run", dir]);
    assert.match(n.stderr, /error \[NO_PROMPT\]/);
  });

  it("inspect reports shapes and costs from the headers", async () => {
    const dir = await storiesCopy();
    const r = await runCli(["inspect", dir, "--json"]);
    assert.equal(r.code, 0, r.stderr);
    const j = JSON.parse(r.stdout);
    assert.equal(j.model_type, "llama");
    assert.equal(j.parameters, 260032);
    assert.equal(j.layers, 5);
    assert.equal(j.bytes_per_layer.length, 5);
    assert.equal(j.bytes_per_layer[0], 4 * (64 * 2 + 64 * 64 * 2 + 32 * 64 * 2 + 172 * 64 * 3));
    assert.equal(j.kv_bytes_per_token.bf16, 5 * 2 * 32 * 2);
    const text = await runCli(["inspect", dir]);
    assert.match(text.stdout, /architecture\s+llama/);
    assert.match(text.stdout, /KV per token\s+640 B \(bf16\)/);
  });

  it("make-test-model writes a loadable checkpoint and never overwrites a user's folder", async () => {
    const root = await tempDir();
    const out = join(root, "m");
    const r = await runCli([
      "make-test-model",
      "--arch",
      "qwen3",
      "--preset",
      "tiny-qwen3",
      "--dtype",
      "bf16",
      "--layers",
      "2",
      "--out",
      out,
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual((await readdir(out)).sort(), [
      ".layerwise-test-model.json",
      "config.json",
      "generation_config.json",
      "model.safetensors",
      "tokenizer.json",
      "tokenizer_config.json",
    ]);
    const again = await runCli(["make-test-model", "--preset", "tiny-qwen3", "--layers", "1", "--out", out]);
    assert.equal(again.code, 0, "a folder this tool wrote may be replaced");
    const user = join(root, "user");
    await runCli(["make-test-model", "--preset", "tiny-llama", "--out", join(user, "x")]);
    await writeFile(join(user, "notes.txt"), "mine");
    const refused = await runCli(["make-test-model", "--preset", "tiny-llama", "--out", user]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /OUT_NOT_EMPTY/);
    assert.equal(await readFile(join(user, "notes.txt"), "utf8"), "mine");
    const wrongArch = await runCli([
      "make-test-model",
      "--arch",
      "llama",
      "--preset",
      "tiny-qwen3",
      "--out",
      join(root, "w"),
    ]);
    assert.match(wrongArch.stderr, /preset tiny-qwen3 is a qwen3 model, not llama/);
  });

  it("chat answers each line through the chat template", async () => {
    const dir = await tinyModel({ preset: "tiny-llama", layers: 2 });
    const r = await runCli(["chat", dir, "--max-tokens", "5", "--temperature", "0", "--backend", "cpu"], {
      input: "Hello\nHow are you?\n/exit\n",
    });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.split("\n").filter((l) => l.length > 0).length, 2, JSON.stringify(r.stdout));
  });

  it("demo streams the bundled stories260K through a tiny budget and writes the story transformers writes", async () => {
    const r = await runCli([
      "demo",
      "--backend",
      "cpu",
      "--prompt",
      "Once upon a time",
      "--max-tokens",
      "36",
      "--json",
    ]);
    assert.equal(r.code, 0, r.stderr);
    const d = JSON.parse(r.stdout) as Record<string, unknown>;
    // The 40 greedy ids transformers gives from BOS start with "Once upon a time" (models/stories260K/README.md).
    assert.equal(
      d.text,
      ", there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, r",
    );
    assert.equal(d.resident_text_identical, true);
    const tiers = d.layer_tiers as string[];
    assert.ok(tiers.includes("ram") && tiers.includes("disk"), tiers.join());
    assert.ok((d.layer_slots as number) >= 2 && (d.layer_slots as number) < tiers.length);
    assert.ok((d.peak_vram_bytes as number) <= (d.vram_budget_bytes as number), "peak within the budget");
    assert.ok(
      (d.decode_h2d_bytes_per_token as number) > 0 && (d.decode_disk_read_bytes_per_token as number) > 0,
      "layers stream every token",
    );

    const text = await runCli(["demo", "--backend", "cpu"]);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /Once upon a time, there was a little dog named/);
    assert.match(text.stdout, /check: with every layer resident \(no budget\) the model wrote the same 120 tokens/);
  });

  it("every command has --help", async () => {
    for (const cmd of ["run", "chat", "inspect", "make-test-model", "demo"]) {
      const r = await runCli([cmd, "--help"]);
      assert.equal(r.code, 0);
      assert.match(r.stdout, new RegExp(`Usage: layerwise ${cmd}`));
    }
  });
});
