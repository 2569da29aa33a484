// The persistent KV cache (--kv-cache DIR): complete blocks of KV keyed by the token ids before and in them, reused by later runs.
//
// DIR/layerwise-kv-cache.json marks the folder as this tool's. Per model fingerprint, each block is a raw file
// <hash>.kv (per layer: K rows then V rows, in the cache dtype) and its manifest <hash>.json (token ids, dtype,
// block size, checksums). Both are written to a temp name and renamed, manifest last: a block exists once its manifest does.
import { createHash } from "node:crypto";
import { mkdir, open, readFile, readdir, rename, rm, stat, utimes, writeFile } from "node:fs/promises";
import { join } from "node:path";
import * as zlib from "node:zlib";
import { CacheError } from "../errors.js";
import type { DiskPlace } from "./kv-spill.js";
import { diskWriteError } from "./kv-spill.js";

const markerName = "layerwise-kv-cache.json";
const format = 1;

export interface BlockLayout {
  readonly fingerprint: string;
  readonly dtype: string;
  readonly blockTokens: number;
  /** K (or V) bytes of one block, per layer. */
  readonly layerBytes: readonly number[];
}

interface Manifest {
  format: number;
  tool: "layerwise";
  fingerprint: string;
  dtype: string;
  block_tokens: number;
  index: number;
  parent: string | null;
  token_ids: number[];
  layers: { offset: number; bytes: number; crc32: number }[];
}

export interface StoredBlock {
  readonly hash: string;
  readonly file: string;
  readonly manifest: Manifest;
}

/** The file operations the store performs; tests swap in one that runs out of space. */
export interface StoreIo {
  writeFile(path: string, data: Uint8Array | string): Promise<void>;
}

const nodeStoreIo: StoreIo = {
  async writeFile(path, data) {
    const fh = await open(path, "w");
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
  },
};

export interface KvStoreEvents {
  /** Something was wrong with the cache and was handled (a corrupt block recomputed). */
  warn(code: string, message: string): void;
}

export class KvStore {
  readonly stats = { bytesWritten: 0, bytesRead: 0, blocksCorrupt: 0 };

  private constructor(
    readonly dir: string,
    private readonly maxBytes: number,
    private readonly io: StoreIo,
    private readonly events: KvStoreEvents,
  ) {}

  /** Opens (or creates) a cache folder; a non-empty folder without this tool's marker is refused, never touched. */
  static async open(dir: string, o: { maxBytes?: number; io?: StoreIo; events?: KvStoreEvents } = {}): Promise<KvStore> {
    const names = await readdir(dir).catch(async (e: NodeJS.ErrnoException) => {
      if (e.code !== "ENOENT") throw new CacheError("KV_CACHE_UNREADABLE", `${dir} cannot be read: ${e.message}`);
      await mkdir(dir, { recursive: true });
      return [] as string[];
    });
    if (names.length > 0 && !names.includes(markerName)) {
      throw new CacheError("KV_CACHE_DIR_FOREIGN", `${dir} is not empty and is not a layerwise KV cache (no ${markerName})`, "give an empty or new folder to --kv-cache");
    }
    if (!names.includes(markerName)) await writeFile(join(dir, markerName), JSON.stringify({ tool: "layerwise", format, note: "layerwise KV cache: every file below was written by layerwise and may be deleted by it" }) + "\n");
    return new KvStore(dir, o.maxBytes ?? Infinity, o.io ?? nodeStoreIo, o.events ?? { warn: () => {} });
  }

  /** Chain hash of block `index`: it covers every token id up to the block's end. */
  static blockHash(parent: string | null, ids: readonly number[], layout: BlockLayout): string {
    const h = createHash("sha256");
    h.update(`${parent ?? "root"}|${layout.dtype}|${layout.blockTokens}|`);
    h.update(new Uint8Array(Int32Array.from(ids).buffer));
    return h.digest("hex").slice(0, 32);
  }

  private modelDir(layout: BlockLayout): string {
    return join(this.dir, layout.fingerprint.slice(0, 16));
  }

  /** The stored blocks that cover the longest prefix of `ids` in whole blocks. */
  async lookup(layout: BlockLayout, ids: readonly number[]): Promise<StoredBlock[]> {
    const found: StoredBlock[] = [];
    let parent: string | null = null;
    for (let b = 0; (b + 1) * layout.blockTokens <= ids.length; b++) {
      const blockIds = ids.slice(b * layout.blockTokens, (b + 1) * layout.blockTokens);
      const hash = KvStore.blockHash(parent, blockIds, layout);
      const file = join(this.modelDir(layout), `${hash}.kv`);
      const manifest = await readManifest(join(this.modelDir(layout), `${hash}.json`));
      if (!manifest || manifest.fingerprint !== layout.fingerprint || manifest.parent !== parent || manifest.token_ids.length !== blockIds.length || manifest.token_ids.some((id, i) => id !== blockIds[i])) break;
      found.push({ hash, file, manifest });
      parent = hash;
    }
    return found;
  }

  /** Reads a stored block's layer, checking its checksum; on a mismatch the block is removed and null returned. */
  async readLayer(block: StoredBlock, layer: number, into: Uint8Array): Promise<Uint8Array | null> {
    const l = block.manifest.layers[layer]!;
    const buf = into.subarray(0, l.bytes);
    const fh = await open(block.file, "r").catch(() => undefined);
    let n = 0;
    if (fh) {
      try {
        n = (await fh.read(buf, 0, l.bytes, l.offset)).bytesRead;
      } finally {
        await fh.close();
      }
    }
    this.stats.bytesRead += n;
    if (n !== l.bytes || zlib.crc32(buf) !== l.crc32) {
      this.stats.blocksCorrupt++;
      this.events.warn("KV_CACHE_CORRUPT", `${block.file}: layer ${layer} of a cached block failed its checksum; it is recomputed`);
      await this.remove(block.file.slice(0, -3));
      return null;
    }
    return buf;
  }

  /** Marks blocks as just used (for least-recently-used eviction). */
  async touch(blocks: readonly StoredBlock[]): Promise<void> {
    const now = new Date();
    await Promise.all(blocks.map((b) => utimes(b.file.slice(0, -3) + ".json", now, now).catch(() => {})));
  }

  /** Writes one complete block: data first, then its manifest; returns its hash (the next block's parent). */
  async save(layout: BlockLayout, parent: string | null, index: number, ids: readonly number[], layerBytes: (layer: number) => Promise<Uint8Array>): Promise<string> {
    const hash = KvStore.blockHash(parent, ids, layout);
    const dir = this.modelDir(layout);
    const base = join(dir, hash);
    if (await readManifest(`${base}.json`)) return hash; // another run stored it already
    await mkdir(dir, { recursive: true });
    const layers: Manifest["layers"] = [];
    const parts: Uint8Array[] = [];
    let offset = 0;
    for (let l = 0; l < layout.layerBytes.length; l++) {
      const bytes = await layerBytes(l);
      layers.push({ offset, bytes: bytes.byteLength, crc32: zlib.crc32(bytes) });
      parts.push(bytes);
      offset += bytes.byteLength;
    }
    const data = new Uint8Array(offset);
    parts.reduce((o, p) => (data.set(p, o), o + p.byteLength), 0);
    const manifest: Manifest = { format, tool: "layerwise", fingerprint: layout.fingerprint, dtype: layout.dtype, block_tokens: layout.blockTokens, index, parent, token_ids: [...ids], layers };
    await this.evict(offset);
    try {
      await this.io.writeFile(`${base}.kv.partial`, data);
      await rename(`${base}.kv.partial`, `${base}.kv`);
      await this.io.writeFile(`${base}.json.partial`, JSON.stringify(manifest));
      await rename(`${base}.json.partial`, `${base}.json`);
    } catch (e) {
      await rm(`${base}.kv.partial`, { force: true });
      await rm(`${base}.json.partial`, { force: true });
      throw e instanceof CacheError ? e : diskWriteError(`${base}.kv`, offset, e);
    }
    this.stats.bytesWritten += offset;
    return hash;
  }

  /** Deletes least recently used blocks (only this tool's, named by their manifests) until `incoming` more bytes fit under the limit. */
  async evict(incoming = 0): Promise<void> {
    if (this.maxBytes === Infinity) return;
    const blocks: { base: string; bytes: number; used: number }[] = [];
    for (const sub of await readdir(this.dir, { withFileTypes: true })) {
      if (!sub.isDirectory()) continue;
      const dir = join(this.dir, sub.name);
      for (const name of await readdir(dir)) {
        if (!name.endsWith(".json")) continue;
        const base = join(dir, name.slice(0, -5));
        const m = await readManifest(`${base}.json`);
        if (!m) continue;
        const [kv, meta] = await Promise.all([stat(`${base}.kv`).catch(() => undefined), stat(`${base}.json`)]);
        blocks.push({ base, bytes: (kv?.size ?? 0) + meta.size, used: meta.mtimeMs });
      }
    }
    let total = blocks.reduce((n, b) => n + b.bytes, 0);
    blocks.sort((a, b) => a.used - b.used);
    for (const b of blocks) {
      if (total + incoming <= this.maxBytes) break;
      await this.remove(b.base);
      total -= b.bytes;
    }
  }

  private async remove(base: string): Promise<void> {
    await rm(`${base}.json`, { force: true }); // manifest first: the block stops existing before its data goes
    await rm(`${base}.kv`, { force: true });
  }
}

async function readManifest(file: string): Promise<Manifest | undefined> {
  try {
    const m = JSON.parse(await readFile(file, "utf8")) as Manifest;
    return m.tool === "layerwise" && m.format === format && Array.isArray(m.layers) ? m : undefined;
  } catch {
    return undefined;
  }
}

export type { DiskPlace };
