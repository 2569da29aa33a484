// The persistent KV cache is a best effort: a full disk or any failing cache file turns it off (or recomputes a block)
// with a warning, and every answer is the one a run without the cache gives.
import assert from "node:assert/strict";
import { readdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { LayerwiseModel, type LoadOptions } from "../../src/engine/model.js";
import { Scheduler } from "../../src/engine/scheduler.js";
import type { StoreIo } from "../../src/engine/kv-store.js";
import { Random } from "../../src/util/random.js";
import { storiesCopy, tempDir } from "../helpers.js";
import { faultyStoreIo } from "./kv-faults.js";

function ids(n: number, seed: number): number[] {
  const r = new Random(seed);
  return [1, ...Array.from({ length: n - 1 }, () => 3 + Math.floor(r.next() * 490))];
}

// Spans of 32 tokens: a prompt's first blocks are saved while it is still being prefilled (as `serve` does).
const base: LoadOptions = { backend: "cpu", kvBlockTokens: 16, prefillChunk: 16, prefillSpan: 32 };

interface Warning {
  code: string;
  message: string;
}

async function withModel<T>(
  dir: string,
  o: LoadOptions,
  fn: (m: LayerwiseModel) => Promise<T>,
  warnings: Warning[] = [],
): Promise<T> {
  const m = await LayerwiseModel.load(dir, {
    ...base,
    ...o,
    onWarning: (code, message) => warnings.push({ code, message }),
  });
  try {
    return await fn(m);
  } finally {
    await m.close();
  }
}

const greedy = { maxTokens: 8, temperature: 0 };
const complete = (dir: string, prompt: number[], o: LoadOptions = {}, warnings: Warning[] = []) =>
  withModel(dir, o, (m) => m.complete({ ids: prompt }, greedy), warnings);

/** Every file under the cache folder that is not a whole block or the marker. */
async function strays(cache: string): Promise<string[]> {
  const all = (await readdir(cache, { recursive: true })).map(String);
  return all.filter(
    (n) => !/(^|\/)[0-9a-f]{16}$/.test(n) && !/\/[0-9a-f]{32}\.(kv|json)$/.test(n) && n !== "layerwise-kv-cache.json",
  );
}

function assertDisabled(warnings: Warning[], cache: string, cause: RegExp): void {
  assert.deepEqual(
    warnings.map((w) => w.code),
    ["KV_CACHE_DISABLED"],
  );
  const message = warnings[0]!.message;
  assert.ok(message.startsWith(`${cache}: `), message);
  assert.match(message, cause);
  assert.doesNotMatch(message, /\n\s+at /, "no stack");
}

describe("a failing cache disk never fails an answer", () => {
  for (const code of ["ENOSPC", "EDQUOT", "EIO", "EACCES", "EROFS"]) {
    it(`${code} while saving blocks: the cold run's answer, one warning, nothing half-written, no later write tried`, async () => {
      const dir = await storiesCopy();
      const cache = join(await tempDir(), "kv");
      await complete(dir, ids(20, 1), { kvCache: cache }); // the folder exists and is marked
      let creates = 0;
      const io = faultyStoreIo((op) => (op === "create" && creates++, op === "write" ? code : undefined));
      const warnings: Warning[] = [];
      const prompts = [ids(100, 2), ids(70, 3)];
      const answers = await withModel(
        dir,
        { kvCache: cache, storeIo: io },
        async (m) => [await m.complete({ ids: prompts[0]! }, greedy), await m.complete({ ids: prompts[1]! }, greedy)],
        warnings,
      );
      for (const [i, p] of prompts.entries()) assert.deepEqual(answers[i]!.tokens, (await complete(dir, p)).tokens);
      assertDisabled(warnings, cache, new RegExp(code));
      assert.equal(creates, 1, "saving stopped at the first failure, for the rest of the model's life");
      assert.deepEqual(await strays(cache), []);
    });
  }

  it("serve and batch: prompts saved span by span while they prefill all answer when the disk fills up", async () => {
    const dir = await storiesCopy();
    const cache = join(await tempDir(), "kv");
    let writes = 0;
    const io = faultyStoreIo((op) => (op === "write" && ++writes > 3 ? "ENOSPC" : undefined)); // the marker and one block fit
    const shared = ids(60, 4);
    const prompts = [0, 1, 2, 3].map((i) => [...shared, ...ids(40 + 7 * i, 10 + i).slice(1)]);
    const warnings: Warning[] = [];
    const results = await withModel(
      dir,
      { kvCache: cache, storeIo: io, batch: 2 },
      (m) => {
        const s = new Scheduler(m, { maxBatch: 2 });
        return Promise.all(prompts.map((p) => s.submit({ promptIds: p, options: greedy })));
      },
      warnings,
    );
    for (const [i, p] of prompts.entries()) assert.deepEqual(results[i]!.tokens, (await complete(dir, p)).tokens);
    assertDisabled(warnings, cache, /no space left on the device \(ENOSPC\)/);
    assert.deepEqual(await strays(cache), []);
  });

  it("batch's temporary cache in a full $TMPDIR (even its marker cannot be written): every job answers", async () => {
    const dir = await storiesCopy();
    const cache = join(await tempDir(), "layerwise-batch-kv-x");
    const io = faultyStoreIo((op) => (op === "create" ? "ENOSPC" : undefined));
    const shared = ids(50, 5);
    const prompts = Array.from({ length: 6 }, (_, i) => [...shared, ...ids(20 + i, 20 + i).slice(1)]);
    const warnings: Warning[] = [];
    const results = await withModel(
      dir,
      { kvCache: cache, storeIo: io, batch: 3 },
      (m) => {
        const s = new Scheduler(m, { maxBatch: 3 });
        return Promise.all(prompts.map((p) => s.submit({ promptIds: p, options: greedy })));
      },
      warnings,
    );
    assert.equal(results.length, 6);
    for (const [i, p] of prompts.entries()) assert.deepEqual(results[i]!.tokens, (await complete(dir, p)).tokens);
    assertDisabled(warnings, cache, /ENOSPC/);
    assert.deepEqual(await readdir(cache), []);
  });

  it("a cache folder that cannot be made: a warning, and the answer", async () => {
    const dir = await storiesCopy();
    const work = await tempDir();
    await writeFile(join(work, "a-file"), "mine");
    const cache = join(work, "a-file", "kv");
    const warnings: Warning[] = [];
    const r = await complete(dir, ids(40, 6), { kvCache: cache }, warnings);
    assert.deepEqual(r.tokens, (await complete(dir, ids(40, 6))).tokens);
    assertDisabled(warnings, cache, /ENOTDIR/);
  });

  for (const [what, target] of [
    ["a block's data", /\.kv$/],
    ["a block's manifest", /[0-9a-f]{32}\.json$/],
  ] as const) {
    it(`reading ${what} fails: recomputed, reported, and the block kept for later runs`, async () => {
      const dir = await storiesCopy();
      const cache = join(await tempDir(), "kv");
      const prompt = ids(50, 7);
      await complete(dir, prompt, { kvCache: cache });
      const io: StoreIo = faultyStoreIo((op, path) => (op === "read" && target.test(path) ? "EIO" : undefined));
      const warnings: Warning[] = [];
      const r = await complete(dir, prompt, { kvCache: cache, storeIo: io }, warnings);
      assert.deepEqual(r.tokens, (await complete(dir, prompt)).tokens);
      assert.equal(r.kvCacheHitTokens, 0);
      assert.deepEqual(
        warnings.map((w) => w.code),
        ["KV_CACHE_READ_FAILED"],
      );
      assert.match(warnings[0]!.message, /EIO/);
      assert.equal(
        (await complete(dir, prompt, { kvCache: cache })).kvCacheHitTokens,
        48,
        "an unreadable block is not a corrupt one: it stays",
      );
    });
  }
});
