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
      // A disk that fills up mid-write first writes short, then fails: the loop reaches the failure.
      for (let done = 0; done < bytes.byteLength;) {
        const { bytesWritten } = await fh.write(bytes, done, bytes.byteLength - done, offset + done);
        if (bytesWritten === 0) throw Object.assign(new Error("ENOSPC: no progress writing"), { code: "ENOSPC" });
        done += bytesWritten;
      }
    } catch (e) {
      throw diskWriteError(path, bytes.byteLength, e);
    }
    this.bytesWritten += bytes.byteLength;
    return { file: path, offset };
  }

  private open(): Promise<{ path: string; dir: string; fh: FileHandle }> {
    this.file ??= (async () => {
      const dir = await mkdtemp(join(this.parent, "layerwise-kv-")).catch((e) => {
        throw diskWriteError(join(this.parent, "layerwise-kv-*"), 0, e);
      });
      const path = join(dir, "spill.kv");
      // A new private folder (mode 0700) of its own: nothing else can have put a file or a link at this name.
      const fh = await open(path, "w+").catch(async (e) => {
        await rm(dir, { recursive: true, force: true });
        throw diskWriteError(path, 0, e);
      });
      return { path, dir, fh };
    })();
    return this.file;
  }

  /** Removes the scratch folder this object made. */
  async dispose(): Promise<void> {
    const opened = await this.file?.catch(() => undefined); // a scratch file that could not be made left nothing
    this.file = undefined;
    if (!opened) return;
    const { dir, fh } = opened;
    await fh.close();
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * The error for a failed write of KV that spilled to disk (it is not optional, unlike the persistent cache): DISK_FULL
 * when the disk or quota ran out. The message names the spill file and the error's code, nothing more of the system.
 */
export function diskWriteError(file: string, bytes: number, e: unknown): CacheError {
  const what =
    bytes > 0
      ? `writing ${bytes} bytes of KV that did not fit in memory`
      : "making the scratch file for KV that does not fit in memory";
  if (isDiskFull(e)) {
    return new CacheError(
      "DISK_FULL",
      `${file}: no space left on the device ${what}`,
      "free disk space there, or give more --ram so less KV goes to disk",
    );
  }
  const code = (e as NodeJS.ErrnoException)?.code ?? "unknown error";
  return new CacheError(
    "KV_WRITE_FAILED",
    `${file}: ${what} failed (${code})`,
    "check that the temp folder is writable, or give more --ram so less KV goes to disk",
  );
}
