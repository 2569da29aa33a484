// Property-based fuzz of the KV cache's JSON files: random and mutated manifests and markers written into a real cache
// folder never make a lookup throw anything but a LayerwiseError, and never serve bytes other than the ones saved.
import assert from "node:assert/strict";
import { mkdtemp, readFile, readdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import fc from "fast-check";
import { manifestMaxBytes } from "../../src/engine/kv-manifest.js";
import { KvStore, type BlockLayout } from "../../src/engine/kv-store.js";
import { LayerwiseError } from "../../src/errors.js";
import { tempDir } from "../helpers.js";

// Two KV layers and one recurrent layer (whose state may be stored or not): what a hybrid model's blocks hold.
const layout: BlockLayout = {
  fingerprint: "ab".repeat(32),
  dtype: "f32",
  blockTokens: 4,
  layerBytes: [32, 24, 0],
  stateBytes: [0, 0, 16],
};
const ids = [1, 17, 300, 4, 99, 5, 6, 2_000_000_000];
const block = (b: number) => ids.slice(b * 4, (b + 1) * 4);
const bytesOf = (b: number, l: number) =>
  Uint8Array.from({ length: l === 2 ? 16 : layout.layerBytes[l]! }, (_, i) => (b * 31 + l * 7 + i) & 255);
const known = new Set(["KV_CACHE_CORRUPT", "KV_CACHE_READ_FAILED", "KV_CACHE_NOT_OURS", "KV_CACHE_DISABLED"]);

/** A marked cache folder holding the two blocks of `ids`; the file of block `b`'s manifest. */
async function cacheWithTwoBlocks(root: string): Promise<{ dir: string; manifest: (b: number) => string }> {
  const dir = await mkdtemp(join(root, "kv-"));
  const store = await KvStore.open(dir);
  let parent: string | null = null;
  const hashes: string[] = [];
  for (const b of [0, 1]) {
    parent = await store.save(layout, parent, b, block(b), async (l) => bytesOf(b, l));
    hashes.push(parent);
  }
  return { dir, manifest: (b) => join(dir, layout.fingerprint.slice(0, 16), `${hashes[b]}.json`) };
}

/** Opens the cache and reads every layer of the longest cached prefix, as loadPrefix does; the blocks fully read. */
async function readPrefix(dir: string, warnings: string[]): Promise<number> {
  const store = await KvStore.open(dir, { events: { warn: (code) => warnings.push(code) } });
  const found = await store.lookup(layout, ids);
  let whole = 0;
  for (const [b, stored] of found.entries()) {
    const into = new Uint8Array(64);
    let ok = true;
    for (let l = 0; l < 3 && ok; l++) {
      const got = await store.readLayer(stored, l, into);
      if (!got) ok = false;
      else assert.deepEqual(got, bytesOf(b, l), "a block read whole holds exactly the bytes saved");
    }
    if (!ok) break;
    whole++;
  }
  return whole;
}

/** A JSON value with one field replaced, added or removed, at the top or (`deep`) inside `layers` / `token_ids`. */
function mutated(original: Record<string, unknown>, deep = true): fc.Arbitrary<unknown> {
  const keys = Object.keys(original);
  const value = fc.oneof(
    fc.jsonValue({ maxDepth: 3 }),
    fc.integer(),
    fc.constantFrom(-1, 0, 2 ** 31, 2 ** 53, 1e308, 0.5, "", null, [], {}),
  );
  const top = fc.tuple(fc.constantFrom(...keys, "extra"), fc.option(value, { nil: undefined })).map(([k, v]) => {
    const m = structuredClone(original);
    if (v === undefined) delete m[k];
    else m[k] = v;
    return m;
  });
  const layer = fc.tuple(fc.nat(3), fc.constantFrom("offset", "bytes", "crc32", "extra"), value).map(([i, k, v]) => {
    const m = structuredClone(original) as { layers: Record<string, unknown>[] };
    if (m.layers[i]) m.layers[i]![k] = v;
    else m.layers.push({ [k]: v });
    return m;
  });
  const token = fc.tuple(fc.nat(5), value).map(([i, v]) => {
    const m = structuredClone(original) as { token_ids: unknown[] };
    m.token_ids[i] = v;
    return m;
  });
  return deep ? fc.oneof(top, layer, token) : top;
}

describe("KV cache JSON files under fuzz", () => {
  it(
    "manifests: a hit when valid, else a clean recompute (reported, removed, stored again); never a crash",
    { timeout: 300_000 },
    async () => {
      const root = await tempDir("lw-kv-fuzz-");
      const original = JSON.parse(await readFile((await cacheWithTwoBlocks(root)).manifest(1), "utf8")) as Record<
        string,
        unknown
      >;
      const text = fc.oneof(
        { weight: 4, arbitrary: mutated(original).map((m) => JSON.stringify(m)) },
        { weight: 1, arbitrary: fc.jsonValue().map((v) => JSON.stringify(v)) },
        { weight: 1, arbitrary: fc.string({ maxLength: 200 }) },
        { weight: 1, arbitrary: fc.constant(JSON.stringify(original)) },
        { weight: 1, arbitrary: fc.nat({ max: 300_000 }).map((n) => " ".repeat(n) + JSON.stringify(original)) },
      );
      await fc.assert(
        fc.asyncProperty(fc.constantFrom(0, 1), text, async (b, json) => {
          const { dir, manifest } = await cacheWithTwoBlocks(root);
          const valid = JSON.stringify(JSON.parse(await readFile(manifest(b), "utf8")));
          await writeFile(manifest(b), json);
          const same =
            Buffer.byteLength(json) <= manifestMaxBytes(layout) &&
            (() => {
              try {
                return JSON.stringify(JSON.parse(json)) === valid;
              } catch {
                return false;
              }
            })();
          const warnings: string[] = [];
          let whole: number;
          try {
            whole = await readPrefix(dir, warnings);
          } catch (e) {
            assert.ok(e instanceof LayerwiseError, `not a LayerwiseError: ${(e as Error)?.stack}`);
            return;
          }
          assert.ok(
            warnings.every((w) => known.has(w)),
            warnings.join(),
          );
          if (same) return assert.equal(whole, 2);
          assert.equal(whole, b, `the manifest of block ${b} is ${json.slice(0, 200)}`);
          assert.deepEqual(warnings, ["KV_CACHE_CORRUPT"]);
          // Recomputed: saved again, then a hit; the malformed file is gone.
          const store = await KvStore.open(dir);
          let parent: string | null = null;
          for (const i of [0, 1]) parent = await store.save(layout, parent, i, block(i), async (l) => bytesOf(i, l));
          const again: string[] = [];
          assert.equal(await readPrefix(dir, again), 2);
          assert.deepEqual(again, []);
        }),
        { numRuns: 200, seed: 23 },
      );
    },
  );

  it(
    "markers: a valid one opens the cache, anything else turns it off or is refused, touching nothing",
    { timeout: 300_000 },
    async () => {
      const root = await tempDir("lw-kv-fuzz-");
      const marker = { tool: "layerwise", format: 1, note: "layerwise KV cache" };
      const text = fc.oneof(
        mutated(marker, false).map((m) => JSON.stringify(m)),
        fc.jsonValue().map((v) => JSON.stringify(v)),
        fc.string({ maxLength: 100 }),
        fc.nat({ max: 20_000 }).map((n) => JSON.stringify(marker) + " ".repeat(n)),
      );
      await fc.assert(
        fc.asyncProperty(text, async (json) => {
          const { dir } = await cacheWithTwoBlocks(root);
          await writeFile(join(dir, "layerwise-kv-cache.json"), json);
          const before = (await readdir(dir, { recursive: true })).sort();
          let parsed: unknown;
          try {
            parsed = JSON.parse(json);
          } catch {
            parsed = undefined;
          }
          const p = parsed as { tool?: unknown; format?: unknown } | null;
          const valid =
            Buffer.byteLength(json) <= 4096 &&
            typeof p === "object" &&
            p !== null &&
            !Array.isArray(p) &&
            p.tool === "layerwise" &&
            p.format === 1;
          const warnings: string[] = [];
          try {
            const whole = await readPrefix(dir, warnings);
            assert.equal(whole, valid ? 2 : 0);
            assert.deepEqual(warnings, valid ? [] : ["KV_CACHE_DISABLED"]);
          } catch (e) {
            assert.ok(e instanceof LayerwiseError, `not a LayerwiseError: ${(e as Error)?.stack}`);
          }
          assert.deepEqual((await readdir(dir, { recursive: true })).sort(), before);
        }),
        { numRuns: 150, seed: 23 },
      );
    },
  );
});
