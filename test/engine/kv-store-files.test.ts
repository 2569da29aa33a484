// The persistent KV cache's files: it writes, reads and deletes only its own regular files in its own marked folder
// (never through a planted symlink), treats a malformed manifest as a corrupt block, and tidies itself when opened.
import assert from "node:assert/strict";
import { lstat, mkdir, readFile, readdir, readlink, symlink, utimes, writeFile } from "node:fs/promises";
import { basename, join } from "node:path";
import { describe, it } from "node:test";
import { LayerwiseModel, type LoadOptions } from "../../src/engine/model.js";
import { KvStore } from "../../src/engine/kv-store.js";
import { Random } from "../../src/util/random.js";
import { storiesCopy, tempDir } from "../helpers.js";

function ids(n: number, seed: number): number[] {
  const r = new Random(seed);
  return [1, ...Array.from({ length: n - 1 }, () => 3 + Math.floor(r.next() * 490))];
}

const base: LoadOptions = { backend: "cpu", kvBlockTokens: 16, prefillChunk: 16 };

async function generate(dir: string, prompt: number[], o: LoadOptions = {}, warnings: string[] = []) {
  const m = await LayerwiseModel.load(dir, { ...base, ...o, onWarning: (code) => warnings.push(code) });
  try {
    return await m.complete({ ids: prompt }, { maxTokens: 8, temperature: 0 });
  } finally {
    await m.close();
  }
}

/** The model's cache subfolder and the file base of the first block of `prompt`. */
async function firstBlock(dir: string, cache: string, prompt: number[]): Promise<{ sub: string; hash: string }> {
  const m = await LayerwiseModel.load(dir, { ...base, kvCache: cache });
  try {
    const layout = m.kvBlockLayout!;
    return {
      sub: join(cache, layout.fingerprint.slice(0, 16)),
      hash: KvStore.blockHash(null, prompt.slice(0, 16), layout),
    };
  } finally {
    await m.close();
  }
}

const hour = 3600;
async function age(path: string, seconds: number): Promise<void> {
  const t = Date.now() / 1000 - seconds;
  await utimes(path, t, t);
}

describe("KV cache files: only its own, never through a link", () => {
  it("a symlink planted at a block's file names is left alone and its target is never written", async () => {
    const dir = await storiesCopy();
    const work = await tempDir();
    const cache = join(work, "kv");
    const prompt = ids(40, 1);
    const { sub, hash } = await firstBlock(dir, cache, prompt);
    await mkdir(sub, { recursive: true });
    const victims: string[] = [];
    for (const name of [`${hash}.kv.partial`, `${hash}.json.partial`, `${hash}.kv`, `${hash}.json`]) {
      const victim = join(work, `victim-${name}`);
      await writeFile(victim, `the user's ${name}\n`);
      await symlink(victim, join(sub, name));
      victims.push(victim);
    }
    const warnings: string[] = [];
    const r = await generate(dir, prompt, { kvCache: cache }, warnings);
    assert.deepEqual(r.tokens, (await generate(dir, prompt)).tokens);
    for (const victim of victims) {
      const name = victim.slice(victim.indexOf("victim-") + 7);
      assert.equal(await readFile(victim, "utf8"), `the user's ${name}\n`, `${name}'s target is untouched`);
      assert.equal(await readlink(join(sub, name)), victim, `${name} is still the user's link`);
    }
    assert.equal(r.kvCacheHitTokens, 0);
  });

  it("a model subfolder that is a symlink is not written into, and the cache goes on without it", async () => {
    const dir = await storiesCopy();
    const work = await tempDir();
    const cache = join(work, "kv");
    const elsewhere = join(work, "elsewhere");
    await mkdir(elsewhere);
    await writeFile(join(elsewhere, "keep.txt"), "mine");
    const prompt = ids(40, 2);
    const { sub } = await firstBlock(dir, cache, prompt);
    await symlink(elsewhere, sub);
    const warnings: string[] = [];
    const r = await generate(dir, prompt, { kvCache: cache, kvCacheMax: 1 }, warnings);
    assert.deepEqual(r.tokens, (await generate(dir, prompt)).tokens);
    assert.deepEqual(await readdir(elsewhere), ["keep.txt"]);
    assert.ok((await lstat(sub)).isSymbolicLink());
    assert.ok(warnings.includes("KV_CACHE_DISABLED"), warnings.join());
  });
});

describe("KV cache manifests: a malformed one is a corrupt block", () => {
  for (const [what, mutate] of [
    ["layers empty", (m: Record<string, unknown>) => (m.layers = [])],
    ["layers of the wrong shape", (m: Record<string, unknown>) => (m.layers = [{ offset: "0" }])],
    ["token_ids not a list", (m: Record<string, unknown>) => (m.token_ids = 7)],
    [
      "a layer far past the file's end",
      (m: Record<string, unknown>) => ((m.layers as { bytes: number }[])[0]!.bytes = 2 ** 40),
    ],
    ["not an object", (m: Record<string, unknown>) => Object.keys(m).forEach((k) => delete m[k])],
  ] as const) {
    it(`${what}: warned, recomputed, removed and stored again`, async () => {
      const dir = await storiesCopy();
      const cache = join(await tempDir(), "kv");
      const prompt = ids(40, 3);
      await generate(dir, prompt, { kvCache: cache });
      const { sub, hash } = await firstBlock(dir, cache, prompt);
      const file = join(sub, `${hash}.json`);
      const m = JSON.parse(await readFile(file, "utf8"));
      mutate(m);
      await writeFile(file, JSON.stringify(m));
      const warnings: string[] = [];
      const r = await generate(dir, prompt, { kvCache: cache }, warnings);
      assert.deepEqual(warnings, ["KV_CACHE_CORRUPT"]);
      assert.equal(r.kvCacheHitTokens, 0);
      assert.deepEqual(r.tokens, (await generate(dir, prompt)).tokens);
      assert.equal(
        (await generate(dir, prompt, { kvCache: cache })).kvCacheHitTokens,
        32,
        "the block was stored again",
      );
    });
  }

  it("a marker that is not this tool's JSON turns the cache off for the run, with a warning, touching nothing", async () => {
    const dir = await storiesCopy();
    const cache = join(await tempDir(), "kv");
    const prompt = ids(40, 4);
    await generate(dir, prompt, { kvCache: cache });
    const before = await readdir(cache, { recursive: true });
    for (const marker of [
      '{"tool":"layerwise","format":"1"}',
      "[1,2",
      "null",
      JSON.stringify({ tool: "other", format: 1 }),
      "x".repeat(1 << 20),
    ]) {
      await writeFile(join(cache, "layerwise-kv-cache.json"), marker);
      const warnings: string[] = [];
      const r = await generate(dir, prompt, { kvCache: cache, kvCacheMax: 1 }, warnings);
      assert.deepEqual(warnings, ["KV_CACHE_DISABLED"], marker.slice(0, 40));
      assert.equal(r.kvCacheHitTokens, 0);
      assert.deepEqual((await readdir(cache, { recursive: true })).sort(), [...before].sort());
    }
  });
});

describe("KV cache upkeep when opened", () => {
  it("--kv-cache-max is enforced when the cache is opened, not only when a block is written", async () => {
    const dir = await storiesCopy();
    const cache = join(await tempDir(), "kv");
    await generate(dir, ids(80, 5), { kvCache: cache });
    const blockFile = 5 * 2 * 16 * 32 * 4;
    const m = await LayerwiseModel.load(dir, { ...base, kvCache: cache, kvCacheMax: 2 * (blockFile + 1000) });
    await m.close();
    const sub = (await readdir(cache)).find((n) => !n.endsWith(".json"))!;
    assert.ok((await readdir(join(cache, sub))).filter((n) => n.endsWith(".json")).length <= 2);
  });

  it("its own leftovers of killed runs are removed once old; everything else stays", async () => {
    const dir = await storiesCopy();
    const cache = join(await tempDir(), "kv");
    await generate(dir, ids(40, 6), { kvCache: cache });
    const sub = join(
      cache,
      (await readdir(cache)).find((n) => !n.endsWith(".json"))!,
    );
    const hex = (c: string) => c.repeat(32);
    const stale = [
      `${hex("a")}.kv.partial`,
      `${hex("b")}.json.partial`,
      `${hex("c")}.kv`,
      `${hex("d")}.kv.4242-0123abcd.tmp`,
      `${hex("e")}.json`,
    ];
    const fresh = [`${hex("f")}.kv.4243-89abcdef.tmp`];
    const foreign = ["notes.txt", `${hex("1")}.kv.bak`];
    for (const name of [...stale, ...fresh, ...foreign]) await writeFile(join(sub, name), "x");
    for (const name of [...stale, ...foreign]) await age(join(sub, name), hour);
    for (const name of ["user-file.txt", "layerwise-kv-cache.json.4242-0123abcd.tmp"]) {
      await writeFile(join(cache, name), "x");
      await age(join(cache, name), hour);
    }
    const keptBlocks = (await readdir(sub)).filter((n) => /^[0-9a-f]{32}\.(kv|json)$/.test(n) && !stale.includes(n));
    const m = await LayerwiseModel.load(dir, { ...base, kvCache: cache });
    await m.close();
    assert.deepEqual((await readdir(sub)).sort(), [...keptBlocks, ...fresh, ...foreign].sort());
    assert.deepEqual((await readdir(cache)).sort(), [basename(sub), "layerwise-kv-cache.json", "user-file.txt"].sort());
  });
});
