// The disk tier of the KV cache: blocks appended to a scratch file that layerwise creates and removes itself.
import { mkdtemp, open, rm, type FileHandle } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CacheError } from "../errors.js";
import { isDiskFull } from "../util/disk-space.js";

export interface DiskPlace {
  readonly file: string;
  readonly offset: number;
}

export class KvSpill {
  private file?: Promise<{ path: string; dir: string; fh: FileHandle }>;
  private size = 0;
  bytesWritten = 0;

  constructor(private readonly parent = tmpdir()) {}

  async write(bytes: Uint8Array): Promise<DiskPlace> {
    const { path, fh } = await this.open();
    const offset = this.size;
    this.size += bytes.byteLength;
    try {
      await fh.write(bytes, 0, bytes.byteLength, offset);
    } catch (e) {
      throw diskWriteError(path, bytes.byteLength, e);
    }
    this.bytesWritten += bytes.byteLength;
    return { file: path, offset };
  }

  private open(): Promise<{ path: string; dir: string; fh: FileHandle }> {
    this.file ??= (async () => {
      const dir = await mkdtemp(join(this.parent, "layerwise-kv-"));
      const path = join(dir, "spill.kv");
      return { path, dir, fh: await open(path, "w+") };
    })();
    return this.file;
  }

  /** Removes the scratch folder this object made. */
  async dispose(): Promise<void> {
    if (!this.file) return;
    const { dir, fh } = await this.file;
    this.file = undefined;
    await fh.close();
    await rm(dir, { recursive: true, force: true });
  }
}

export function diskWriteError(file: string, bytes: number, e: unknown): CacheError {
  if (isDiskFull(e)) {
    return new CacheError("DISK_FULL", `${file}: no space left on the device writing ${bytes} bytes of KV cache`, "free disk space, lower --kv-cache-max, or give more --ram so less KV goes to disk");
  }
  return new CacheError("KV_WRITE_FAILED", `${file}: writing ${bytes} bytes of KV cache failed: ${(e as Error).message}`);
}
