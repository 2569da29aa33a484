// The persistent KV cache (--kv-cache DIR): complete blocks of KV keyed by the token ids before and in them, reused by later runs.
//
// DIR/layerwise-kv-cache.json marks the folder as this tool's. Per model fingerprint, each block is a raw file
// <hash>.kv (per layer: K rows then V rows, in the cache dtype) and its manifest <hash>.json (token ids, dtype,
// block size, checksums). Both are written to a temp name and renamed, manifest last: a block exists once its manifest does.
//
// The cache is a best effort and never fails an answer:
// - a write that fails (full disk, quota, I/O error, read-only folder) stops saving for the store's life, with one
//   KV_CACHE_DISABLED warning: a full disk stays full, and retrying would cost every later block a failed write;
// - a folder it cannot claim (unreadable, its marker damaged or not its own) is not used at all (KV_CACHE_DISABLED);
// - a block that cannot be read is recomputed (KV_CACHE_READ_FAILED); one damaged or malformed is recomputed and
//   removed (KV_CACHE_CORRUPT); anything at a block's name that is not a regular file is left alone (KV_CACHE_NOT_OURS).
// Only a non-empty folder without the marker is an error (KV_CACHE_DIR_FOREIGN): the wrong folder was given.
// Files are touched only through kv-files.ts: the store's own names, regular files, never through a link.
import { createHash } from "node:crypto";
import { lstat, lutimes, mkdir, readdir } from "node:fs/promises";
import { join } from "node:path";
import * as zlib from "node:zlib";
import { CacheError } from "../errors.js";
import { readFully } from "../util/read-fully.js";
import {
  entryKind,
  ioCause,
  leftoverAgeMs,
  names,
  nodeStoreIo,
  openOwnFile,
  ownFolder,
  readOwnFile,
  removeOwnFile,
  writeOwnFile,
  type StoreIo,
} from "./kv-files.js";
import {
  dataBytes,
  format,
  manifestMaxBytes,
  markerMaxBytes,
  markerName,
  markerProblem,
  markerText,
  parseManifest,
  type BlockLayout,
  type Manifest,
} from "./kv-manifest.js";

export type { BlockLayout, StoreIo };

export interface StoredBlock {
  readonly hash: string;
  readonly file: string;
  readonly manifest: Manifest;
}

export interface KvStoreEvents {
  /** Something was wrong with the cache and was handled (a corrupt block recomputed, the cache turned off). */
  warn(code: string, message: string): void;
}

/** A whole block on disk (its manifest and data, both regular files), for eviction. */
interface BlockFiles {
  readonly base: string;
  readonly bytes: number;
  readonly usedMs: number;
}

export class KvStore {
  readonly stats = { bytesWritten: 0, bytesRead: 0, blocksCorrupt: 0 };
  /** "read-only" once a save failed; "off" when the folder could not be claimed as this tool's. */
  private state: "on" | "read-only" | "off" = "on";
  private readonly warnedNotOurs = new Set<string>();

  private constructor(
    readonly dir: string,
    private readonly maxBytes: number,
    private readonly io: StoreIo,
    private readonly events: KvStoreEvents,
  ) {}

  /**
   * Opens (or creates) a cache folder, removes leftovers of killed runs and evicts down to `maxBytes`. A non-empty
   * folder without this tool's marker is refused, never touched; any other failure turns the cache off with a warning.
   */
  static async open(
    dir: string,
    o: { maxBytes?: number; io?: StoreIo; events?: KvStoreEvents } = {},
  ): Promise<KvStore> {
    const store = new KvStore(dir, o.maxBytes ?? Infinity, o.io ?? nodeStoreIo, o.events ?? { warn: () => {} });
    try {
      await store.claim();
    } catch (e) {
      if (e instanceof CacheError) throw e;
      store.turnOff("off", `it cannot be used: ${ioCause(e)}`);
    }
    if (store.state === "on") {
      try {
        const { blocks, leftovers } = await store.scan();
        for (const file of leftovers) await removeOwnFile(file);
        await store.evictFrom(blocks, 0);
      } catch (e) {
        store.turnOff("read-only", `tidying it failed: ${ioCause(e)}`);
      }
    }
    return store;
  }

  /** Whether blocks are still saved (false after a failed write, or when the folder was not usable). */
  get writable(): boolean {
    return this.state === "on";
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
    if (this.state === "off" || !(await this.usableModelDir(layout, false))) return found;
    let parent: string | null = null;
    for (let b = 0; (b + 1) * layout.blockTokens <= ids.length; b++) {
      const block = await this.readBlock(
        layout,
        parent,
        b,
        ids.slice(b * layout.blockTokens, (b + 1) * layout.blockTokens),
      );
      if (!block) break;
      found.push(block);
      parent = block.hash;
    }
    return found;
  }

  /** Reads a stored block's layer, checking its checksum; null (and the block recomputed) when that fails. */
  async readLayer(block: StoredBlock, layer: number, into: Uint8Array): Promise<Uint8Array | null> {
    const l = block.manifest.layers[layer]!;
    const buf = into.subarray(0, l.bytes);
    try {
      const opened = await openOwnFile(this.io, block.file);
      if (opened.kind === "missing") return null; // evicted by another run since the lookup
      if (opened.kind === "not ours") return this.notOurs(block.file, opened.what) ?? null;
      const { fh, bytes } = opened.value;
      let n = 0;
      try {
        if (bytes === dataBytes(block.manifest)) n = await readFully(fh, buf, l.offset);
      } finally {
        await fh.close();
      }
      this.stats.bytesRead += n;
      if (n !== l.bytes || zlib.crc32(buf) !== l.crc32)
        return (
          (await this.corrupt(
            block.file.slice(0, -3),
            `${block.file}: layer ${layer} of a cached block failed its checksum`,
          )) ?? null
        );
      return buf;
    } catch (e) {
      this.events.warn(
        "KV_CACHE_READ_FAILED",
        `${block.file}: reading layer ${layer} of a cached block failed (${ioCause(e)}); it is recomputed`,
      );
      return null;
    }
  }

  /** Marks blocks as just used (for least-recently-used eviction); never through a link. */
  async touch(blocks: readonly StoredBlock[]): Promise<void> {
    const now = new Date();
    await Promise.all(blocks.map((b) => lutimes(b.file.slice(0, -3) + ".json", now, now).catch(() => {})));
  }

  /**
   * Writes one complete block, data first, then its manifest; returns its hash (the next block's parent) whether or not
   * it could be written. `layerBytes` is called only when the block is written.
   */
  async save(
    layout: BlockLayout,
    parent: string | null,
    index: number,
    ids: readonly number[],
    layerBytes: (layer: number) => Promise<Uint8Array>,
  ): Promise<string> {
    const hash = KvStore.blockHash(parent, ids, layout);
    if (this.state !== "on" || !(await this.usableModelDir(layout, true))) return hash;
    const base = join(this.modelDir(layout), hash);
    try {
      // Stored already (by this run's lookup or another run): a damaged one is found, and replaced, when it is read.
      if ((await entryKind(`${base}.json`)) === "file" && (await entryKind(`${base}.kv`)) === "file") return hash;
    } catch (e) {
      this.turnOff("read-only", `${this.modelDir(layout)} cannot be listed: ${ioCause(e)}`);
      return hash;
    }
    const layers: Manifest["layers"] = [];
    const parts: Uint8Array[] = [];
    let offset = 0;
    for (let l = 0; l < layout.layerBytes.length; l++) {
      const bytes = await layerBytes(l);
      layers.push({ offset, bytes: bytes.byteLength, crc32: zlib.crc32(bytes) });
      parts.push(bytes);
      offset += bytes.byteLength;
    }
    if (offset > this.maxBytes) return hash; // it would only evict everything, then itself
    const data = new Uint8Array(offset);
    parts.reduce((o, p) => (data.set(p, o), o + p.byteLength), 0);
    const manifest: Manifest = {
      format,
      tool: "layerwise",
      fingerprint: layout.fingerprint,
      dtype: layout.dtype,
      block_tokens: layout.blockTokens,
      index,
      parent,
      token_ids: [...ids],
      layers,
    };
    let wroteData = false;
    try {
      await this.evict(offset);
      const kvThere = await writeOwnFile(this.io, `${base}.kv`, data);
      if (kvThere) return this.notOurs(`${base}.kv`, kvThere) ?? hash;
      wroteData = true;
      const manifestThere = await writeOwnFile(this.io, `${base}.json`, JSON.stringify(manifest));
      if (manifestThere) {
        await removeOwnFile(`${base}.kv`);
        return this.notOurs(`${base}.json`, manifestThere) ?? hash;
      }
    } catch (e) {
      if (wroteData) await removeOwnFile(`${base}.kv`).catch(() => {});
      this.turnOff("read-only", `saving a block of ${offset} bytes failed: ${ioCause(e)}`);
      return hash;
    }
    this.stats.bytesWritten += offset;
    return hash;
  }

  /** Deletes least recently used blocks (only this tool's files in its folder) until `incoming` more bytes fit under the limit. */
  async evict(incoming = 0): Promise<void> {
    if (this.maxBytes === Infinity) return;
    await this.evictFrom((await this.scan()).blocks, incoming);
  }

  private async evictFrom(blocks: BlockFiles[], incoming: number): Promise<void> {
    let total = blocks.reduce((n, b) => n + b.bytes, 0);
    blocks.sort((a, b) => a.usedMs - b.usedMs);
    for (const b of blocks) {
      if (total + incoming <= this.maxBytes) break;
      await this.remove(b.base);
      total -= b.bytes;
    }
  }

  /** Marks the folder this tool's, or checks that it is: its marker must be a regular file holding this tool's JSON. */
  private async claim(): Promise<void> {
    const entries = await readdir(this.dir).catch(async (e: NodeJS.ErrnoException) => {
      if (e.code === "ENOTDIR" && (await entryKind(this.dir).catch(() => "missing")) !== "missing") {
        throw new CacheError(
          "KV_CACHE_DIR_FOREIGN",
          `${this.dir} is a file, not a folder`,
          "give an empty or new folder to --kv-cache",
        );
      }
      if (e.code !== "ENOENT") throw e;
      await mkdir(this.dir, { recursive: true });
      return [] as string[];
    });
    const marker = join(this.dir, markerName);
    if (entries.includes(markerName)) {
      const r = await readOwnFile(this.io, marker, markerMaxBytes);
      const why =
        r.kind === "missing"
          ? "it vanished"
          : r.kind === "not ours"
            ? `it is ${r.what}`
            : r.value === null
              ? `it is over ${markerMaxBytes} bytes`
              : markerProblem(r.value.toString("utf8"));
      if (why)
        this.turnOff(
          "off",
          `its marker ${markerName} is not layerwise's (${why}); delete the folder to start a new cache there`,
        );
      return;
    }
    if (entries.some((n) => !names.markerTemp.test(n))) {
      throw new CacheError(
        "KV_CACHE_DIR_FOREIGN",
        `${this.dir} is not empty and is not a layerwise KV cache (no ${markerName})`,
        "give an empty or new folder to --kv-cache",
      );
    }
    const there = await writeOwnFile(this.io, marker, markerText);
    if (there) this.turnOff("off", `its marker ${markerName} is ${there}`);
  }

  /** Whether the model's folder is one this tool made (created when `create`); a link or a file there turns the cache off. */
  private async usableModelDir(layout: BlockLayout, create: boolean): Promise<boolean> {
    const dir = this.modelDir(layout);
    try {
      const kind = await ownFolder(dir, create);
      if (kind === "folder") return true;
      if (kind !== "missing") this.turnOff("off", `${dir} is ${kind}, not a folder layerwise made: it is left alone`);
    } catch (e) {
      if (create) this.turnOff("read-only", `${dir} cannot be made: ${ioCause(e)}`);
      else
        this.events.warn(
          "KV_CACHE_READ_FAILED",
          `${dir} cannot be read (${ioCause(e)}); the prompt is computed without the cache`,
        );
    }
    return false;
  }

  /** Block `index` if it is stored whole and valid; a malformed one is removed, a read failure reported. */
  private async readBlock(
    layout: BlockLayout,
    parent: string | null,
    index: number,
    ids: readonly number[],
  ): Promise<StoredBlock | undefined> {
    const hash = KvStore.blockHash(parent, ids, layout);
    const base = join(this.modelDir(layout), hash);
    try {
      const r = await readOwnFile(this.io, `${base}.json`, manifestMaxBytes(layout));
      if (r.kind === "missing") return undefined;
      if (r.kind === "not ours") return this.notOurs(`${base}.json`, r.what);
      const m =
        r.value === null
          ? `it is over ${manifestMaxBytes(layout)} bytes`
          : parseManifest(r.value.toString("utf8"), layout, parent, index, ids);
      if (typeof m === "string")
        return this.corrupt(base, `${base}.json: the manifest of a cached block is not valid: ${m}`);
      const kind = await entryKind(`${base}.kv`);
      if (kind === "missing") return undefined; // an eviction under way (manifest first, then data), or deleted by hand
      if (kind !== "file") return this.notOurs(`${base}.kv`, kind);
      const bytes = (await lstat(`${base}.kv`)).size;
      if (bytes !== dataBytes(m))
        return this.corrupt(
          base,
          `${base}.kv: a cached block's data is ${bytes} bytes, its manifest says ${dataBytes(m)}`,
        );
      return { hash, file: `${base}.kv`, manifest: m };
    } catch (e) {
      this.events.warn(
        "KV_CACHE_READ_FAILED",
        `${base}.json: reading a cached block failed (${ioCause(e)}); it is recomputed`,
      );
      return undefined;
    }
  }

  /** Whole blocks, and leftovers of killed runs (temp files, data without a manifest) old enough that no writer is at them. */
  private async scan(): Promise<{ blocks: BlockFiles[]; leftovers: string[] }> {
    const oldBefore = Date.now() - leftoverAgeMs;
    const blocks: BlockFiles[] = [];
    const leftovers: string[] = [];
    const regular = async (path: string) =>
      lstat(path).then(
        (st) => (st.isFile() ? st : undefined),
        () => undefined,
      );
    for (const top of await readdir(this.dir, { withFileTypes: true })) {
      const path = join(this.dir, top.name);
      if (top.isFile() && names.markerTemp.test(top.name) && ((await regular(path))?.mtimeMs ?? Infinity) < oldBefore)
        leftovers.push(path);
      if (!top.isDirectory() || !names.modelDir.test(top.name)) continue; // a link to a folder is a link, not a folder
      const found = new Map<
        string,
        { kv?: { size: number; mtimeMs: number }; json?: { size: number; mtimeMs: number } }
      >();
      for (const e of await readdir(path, { withFileTypes: true })) {
        if (!e.isFile()) continue;
        const st = await regular(join(path, e.name));
        if (!st) continue;
        const block = names.block.exec(e.name);
        if (block) found.set(block[1]!, { ...found.get(block[1]!), [block[2]!]: st });
        else if (names.blockTemp.test(e.name) && st.mtimeMs < oldBefore) leftovers.push(join(path, e.name));
      }
      for (const [hash, f] of found) {
        const base = join(path, hash);
        if (f.kv && f.json) blocks.push({ base, bytes: f.kv.size + f.json.size, usedMs: f.json.mtimeMs });
        else if (f.kv && f.kv.mtimeMs < oldBefore) leftovers.push(`${base}.kv`);
        else if (f.json && f.json.mtimeMs < oldBefore) leftovers.push(`${base}.json`);
      }
    }
    return { blocks, leftovers };
  }

  private turnOff(to: "read-only" | "off", cause: string): void {
    if (this.state === "off" || this.state === to) return;
    this.state = to;
    const what = to === "off" ? "not used" : "not written";
    this.events.warn(
      "KV_CACHE_DISABLED",
      `${this.dir}: ${cause}; the KV cache is ${what} for the rest of this run (answers are not affected)`,
    );
  }

  private async corrupt(base: string, message: string): Promise<undefined> {
    this.stats.blocksCorrupt++;
    this.events.warn("KV_CACHE_CORRUPT", `${message}; it is recomputed`);
    await this.remove(base).catch(() => {}); // the tool's own file in its own folder; if it cannot go, the next run says so again
    return undefined;
  }

  private notOurs(path: string, what: string): undefined {
    if (this.warnedNotOurs.has(path)) return undefined;
    this.warnedNotOurs.add(path);
    this.events.warn(
      "KV_CACHE_NOT_OURS",
      `${path} is ${what}, not a file layerwise wrote: it is left alone, and its block is not cached`,
    );
    return undefined;
  }

  private async remove(base: string): Promise<void> {
    await removeOwnFile(`${base}.json`); // manifest first: the block stops existing before its data goes
    await removeOwnFile(`${base}.kv`);
  }
}
