// Reads byte ranges of files the engine wrote itself (KV scratch and cache files), keeping their handles open.
import { open, type FileHandle } from "node:fs/promises";
import { CacheError } from "../errors.js";
import type { DiskPlace } from "./kv-spill.js";

export class FileRanges {
  private readonly handles = new Map<string, Promise<FileHandle>>();
  bytesRead = 0;

  async read(place: DiskPlace, into: Uint8Array): Promise<void> {
    let h = this.handles.get(place.file);
    if (!h) {
      h = open(place.file, "r");
      this.handles.set(place.file, h);
    }
    let fh: FileHandle;
    try {
      fh = await h;
    } catch (e) {
      this.handles.delete(place.file);
      throw new CacheError(
        "KV_READ_FAILED",
        `${place.file} cannot be read: ${(e as Error).message}`,
        "the KV cache folder changed while running; run again",
      );
    }
    const { bytesRead } = await fh.read(into, 0, into.byteLength, place.offset);
    if (bytesRead !== into.byteLength)
      throw new CacheError(
        "KV_READ_SHORT",
        `${place.file}: read ${bytesRead} of ${into.byteLength} bytes at ${place.offset}`,
        "the KV cache file is truncated; it will be recomputed",
      );
    this.bytesRead += bytesRead;
  }

  /** Forgets a file (before it is deleted or replaced). */
  async forget(file: string): Promise<void> {
    const h = this.handles.get(file);
    this.handles.delete(file);
    await (await h?.catch(() => undefined))?.close();
  }

  async close(): Promise<void> {
    const all = [...this.handles.values()];
    this.handles.clear();
    await Promise.all(all.map(async (h) => (await h.catch(() => undefined))?.close()));
  }
}
