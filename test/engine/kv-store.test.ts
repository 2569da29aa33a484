// The persistent KV cache: prefix reuse across runs, and faults (kill mid-prefill, flipped byte, full disk) lose nothing.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { open, readFile, readdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { LayerwiseModel, type LoadOptions } from "../../src/engine/model.js";
import { CacheError } from "../../src/errors.js";
import { Random } from "../../src/util/random.js";
import { cliPath, fileIoWithRead, runCli, storiesCopy, tempDir, tinyModel } from "../helpers.js";
import { faultyStoreIo } from "./kv-faults.js";

function ids(n: number, seed: number): number[] {
  const r = new Random(seed);
  return [1, ...Array.from({ length: n - 1 }, () => 3 + Math.floor(r.next() * 490))];
}

async function generate(dir: string, prompt: number[], o: LoadOptions = {}, warnings: string[] = []) {
  const m = await LayerwiseModel.load(dir, {
    backend: "cpu",
    kvBlockTokens: 16,
    prefillChunk: 16,
    ...o,
    onWarning: (code) => warnings.push(code),
  });
  try {
    return await m.complete({ ids: prompt }, { maxTokens: 8, temperature: 0 });
  } finally {
    await m.close();
  }
}

async function manifests(cache: string): Promise<{ file: string; index: number }[]> {
  const out: { file: string; index: number }[] = [];
  for (const sub of await readdir(cache, { withFileTypes: true })) {
    if (!sub.isDirectory()) continue;
    for (const name of await readdir(join(cache, sub.name))) {
      if (name.endsWith(".json"))
        out.push({
          file: join(cache, sub.name, name),
          index: JSON.parse(await readFile(join(cache, sub.name, name), "utf8")).index,
        });
    }
  }
  return out.sort((a, b) => a.index - b.index);
}

describe("persistent KV cache", () => {
  it("a prompt that extends a cached one reuses its whole blocks and gives the cold run's output", async () => {
    const dir = await storiesCopy();
    const cache = join(await tempDir(), "kv");
    const p1 = ids(50, 1);
    const p2 = [...p1, ...ids(31, 2).slice(1)];
    const first = await generate(dir, p1, { kvCache: cache });
    assert.equal(first.kvCacheHitTokens, 0);
    const warm = await generate(dir, p2, { kvCache: cache });
    const cold = await generate(dir, p2);
    assert.equal(warm.kvCacheHitTokens, 48, "three whole blocks of 16 are shared");
    assert.deepEqual(warm.tokens, cold.tokens);
    const again = await generate(dir, p1.slice(0, 48), { kvCache: cache });
    assert.equal(again.kvCacheHitTokens, 47, "a fully cached prompt still runs its last token");
    assert.deepEqual(again.tokens, (await generate(dir, p1.slice(0, 48))).tokens);
  });

  it("another model's cache entries are never used", async () => {
    const cache = join(await tempDir(), "kv");
    const a = await tinyModel({ preset: "tiny-llama", layers: 2 });
    const b = await tinyModel({ preset: "tiny-llama", layers: 2, seed: 5 });
    const prompt = ids(40, 3).map((x) => x + 256);
    await generate(a, prompt, { kvCache: cache });
    assert.equal((await generate(b, prompt, { kvCache: cache })).kvCacheHitTokens, 0);
    assert.equal((await generate(a, prompt, { kvCache: cache })).kvCacheHitTokens, 32);
  });

  it("a non-empty folder that is not a layerwise cache is refused and left alone", async () => {
    const folder = await tempDir();
    await writeFile(join(folder, "thesis.tex"), "mine");
    await assert.rejects(
      generate(await storiesCopy(), ids(20, 1), { kvCache: folder }),
      (e: CacheError) => e.code === "KV_CACHE_DIR_FOREIGN",
    );
    assert.deepEqual(await readdir(folder), ["thesis.tex"]);
  });

  it("--kv-cache-max evicts least recently used blocks", async () => {
    const dir = await storiesCopy();
    const cache = join(await tempDir(), "kv");
    const blockFile = 5 * 2 * 16 * 32 * 4; // layers x (K, V) x tokens x kv columns x f32
    await generate(dir, ids(80, 1), { kvCache: cache, kvCacheMax: 6 * (blockFile + 1000) });
    await generate(dir, ids(80, 2), { kvCache: cache, kvCacheMax: 6 * (blockFile + 1000) });
    const left = await manifests(cache);
    assert.ok(left.length <= 6, `${left.length} blocks left`);
    assert.equal(
      (await generate(dir, ids(80, 2), { kvCache: cache })).kvCacheHitTokens,
      79,
      "the newest prompt's blocks survive",
    );
    assert.equal(
      (await generate(dir, ids(80, 1), { kvCache: cache })).kvCacheHitTokens,
      0,
      "the oldest prompt's first block went first",
    );
  });

  it("a flipped byte is detected by its checksum, recomputed and reported", async () => {
    const dir = await storiesCopy();
    const cache = join(await tempDir(), "kv");
    const prompt = ids(100, 4);
    await generate(dir, prompt, { kvCache: cache });
    const third = (await manifests(cache)).find((m) => m.index === 2)!;
    const kvFile = third.file.replace(/\.json$/, ".kv");
    const fh = await open(kvFile, "r+");
    const byte = Buffer.alloc(1);
    await fh.read(byte, 0, 1, 1000);
    byte[0]! ^= 0x40;
    await fh.write(byte, 0, 1, 1000);
    await fh.close();
    const warnings: string[] = [];
    const r = await generate(dir, prompt, { kvCache: cache }, warnings);
    assert.deepEqual(warnings, ["KV_CACHE_CORRUPT"]);
    assert.equal(r.kvCacheHitTokens, 32, "blocks before the corrupt one are used");
    assert.deepEqual(r.tokens, (await generate(dir, prompt)).tokens);
    assert.equal(
      (await generate(dir, prompt, { kvCache: cache })).kvCacheHitTokens,
      96,
      "the recomputed block was stored again",
    );
  });

  it("a full disk turns the cache off with a warning: the answer is the cold run's and the earlier cache stays intact", async () => {
    const dir = await storiesCopy();
    const cache = join(await tempDir(), "kv");
    const p1 = ids(40, 5);
    await generate(dir, p1, { kvCache: cache });
    const before = await manifests(cache);
    let writes = 0;
    const fullDisk = faultyStoreIo((op) => (op === "write" && ++writes > 1 ? "ENOSPC" : undefined));
    const p2 = [...p1, ...ids(60, 6).slice(1)];
    const warnings: string[] = [];
    const r = await generate(dir, p2, { kvCache: cache, storeIo: fullDisk }, warnings);
    assert.deepEqual(r.tokens, (await generate(dir, p2)).tokens);
    assert.equal(r.kvCacheHitTokens, 32);
    assert.deepEqual(warnings, ["KV_CACHE_DISABLED"]);
    assert.equal(writes, 2, "no write is tried after the disk was found full");
    const after = await manifests(cache);
    assert.deepEqual(
      after.map((m) => m.file),
      before.map((m) => m.file),
    );
    assert.ok(
      !(
        await readdir(
          join(
            cache,
            (await readdir(cache)).find((n) => !n.endsWith(".json"))!,
          ),
        )
      ).some((n) => n.endsWith(".partial") || n.endsWith(".tmp")),
      "no partial files left",
    );
    assert.equal((await generate(dir, p1, { kvCache: cache })).kvCacheHitTokens, 32);
  });

  it("a run killed during prefill leaves a valid cache whose completed blocks the next run reuses", async () => {
    const dir = await tinyModel({ preset: "tiny-llama", layers: 4 });
    const work = await tempDir();
    const cache = join(work, "kv");
    const promptFile = join(work, "prompt.txt");
    const words = new Random(9);
    await writeFile(
      promptFile,
      Array.from(
        { length: 1200 },
        () => ["the", "model", "reads", "a", "long", "document", "and", "answers"][Math.floor(words.next() * 8)],
      ).join(" "),
    );
    const args = [
      "run",
      dir,
      "--prompt-file",
      promptFile,
      "--max-tokens",
      "4",
      "--temperature",
      "0",
      "--backend",
      "cpu",
      "--kv-block",
      "64",
      "--prefill-chunk",
      "128",
      "--prefill-span",
      "512",
      "--json",
    ];
    const child = spawn(process.execPath, [cliPath, ...args, "--kv-cache", cache], { stdio: "ignore" });
    const exited = new Promise<NodeJS.Signals | null>((resolve) =>
      child.on("exit", (_code, signal) => resolve(signal)),
    );
    for (;;) {
      const done = await Promise.race([
        exited.then(() => true),
        new Promise<false>((r) => setTimeout(() => r(false), 20)),
      ]);
      assert.ok(!done, "the run finished before it could be killed: make the prompt longer");
      if ((await manifests(cache).catch(() => [])).length > 0) break;
    }
    child.kill("SIGKILL");
    assert.equal(await exited, "SIGKILL");
    const kept = (await manifests(cache)).length;
    const warm = await runCli([...args, "--kv-cache", cache]);
    const cold = await runCli(args);
    assert.equal(warm.code, 0, warm.stderr);
    const w = JSON.parse(warm.stdout);
    const c = JSON.parse(cold.stdout);
    assert.ok(
      w.kv_cache_hit_tokens >= kept * 64 && w.kv_cache_hit_tokens < w.prompt_tokens,
      `hit ${w.kv_cache_hit_tokens} of ${w.prompt_tokens}, ${kept} blocks kept`,
    );
    assert.equal(w.text, c.text);
    assert.equal(c.kv_cache_hit_tokens, 0);
  });
});

describe("weight files failing while streaming", () => {
  const streamFromDisk = {
    backend: "cpu" as const,
    vram: 1.5e6,
    ram: 0,
    prefillChunk: 64,
    prefillSpan: 128,
    kvBlockTokens: 64,
  };

  it("a shard deleted after loading is named in the error", async () => {
    const dir = await tinyModel({ preset: "tiny-llama", layers: 2, shardBytes: 200_000 });
    const m = await LayerwiseModel.load(dir, streamFromDisk);
    try {
      assert.ok(m.plan.layerTier.every((t) => t === "disk"));
      const shard = (await readdir(dir)).filter((n) => n.startsWith("model-0000")).sort()[1]!;
      await (await import("node:fs/promises")).rm(join(dir, shard));
      await assert.rejects(
        m.complete("hello", { maxTokens: 2 }),
        (e: Error & { code: string }) => e.code === "FILE_MISSING" && e.message.includes(shard),
      );
    } finally {
      await m.close();
    }
  });

  it("a read error names the file and the offset", async () => {
    const dir = await tinyModel({ preset: "tiny-llama", layers: 2 });
    let armed = false;
    const m = await LayerwiseModel.load(dir, {
      ...streamFromDisk,
      fileIo: fileIoWithRead(async (read, args) => {
        if (armed) throw Object.assign(new Error("EIO: i/o error, read"), { code: "EIO" });
        return read(...args);
      }),
    });
    try {
      armed = true;
      await assert.rejects(
        m.complete("hello", { maxTokens: 2 }),
        (e: Error & { code: string }) =>
          e.code === "READ_FAILED" && /model\.safetensors: read of \d+ bytes at \d+ failed: EIO/.test(e.message),
      );
    } finally {
      await m.close();
    }
  });
});
