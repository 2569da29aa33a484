// Reads file ranges into memory with several reads in flight, with O_DIRECT where the file system and buffer allow it.
import { constants } from "node:fs";
import { open, type FileHandle } from "node:fs/promises";
import { CheckpointError } from "../errors.js";
import { fileOpenError } from "./safetensors.js";

/** The file operations the reader needs; tests swap in one that fails on purpose. */
export interface FileIo {
  open(path: string, direct: boolean): Promise<FileHandle>;
}

export const nodeFileIo: FileIo = {
  open: (path, direct) => open(path, direct ? constants.O_RDONLY | (constants.O_DIRECT ?? 0) : "r"),
};

export interface ReadStats {
  diskReadBytes: number;
  /** Seconds spent with at least one read outstanding, up to now. */
  readBusyS: number;
}

const pieceBytes = 16 << 20;

export class DiskReader {
  private readBytes = 0;
  /** Busy seconds of the periods that ended; the one under way counts from busySince. */
  private busyEndedS = 0;
  private readonly handles = new Map<string, Promise<{ fh: FileHandle; direct: boolean }>>();
  private inFlight = 0;
  private busySince = 0;
  private readonly waiting: (() => void)[] = [];
  private readonly retired: Promise<{ fh: FileHandle; direct: boolean }>[] = [];

  constructor(private readonly o: { direct: boolean; maxInFlight?: number; io?: FileIo } = { direct: false }) {}

  get stats(): ReadStats {
    // A reader kept busy throughout a pass would otherwise show no busy time until it next runs dry.
    const current = this.inFlight > 0 ? (performance.now() - this.busySince) / 1000 : 0;
    return { diskReadBytes: this.readBytes, readBusyS: this.busyEndedS + current };
  }

  /**
   * Fills `into[0 .. length)` with the file's bytes from `start`. Reads may run past the end of the file (aligned reads),
   * where they fill zeros, but the first `mustHave` bytes must exist.
   */
  async read(file: string, start: number, length: number, into: Uint8Array, mustHave = length): Promise<void> {
    const pieces: Promise<void>[] = [];
    for (let off = 0; off < length; off += pieceBytes) {
      const n = Math.min(pieceBytes, length - off);
      pieces.push(this.readPiece(file, start + off, n, into.subarray(off), Math.max(0, Math.min(n, mustHave - off))));
    }
    await Promise.all(pieces);
  }

  private async readPiece(
    file: string,
    start: number,
    length: number,
    into: Uint8Array,
    mustHave: number,
  ): Promise<void> {
    await this.slot();
    try {
      let { fh, direct } = await this.handle(file);
      let done = 0;
      while (done < length) {
        let n: number;
        try {
          ({ bytesRead: n } = await fh.read(into, done, length - done, start + done));
        } catch (e) {
          if (direct && (e as NodeJS.ErrnoException).code === "EINVAL") {
            // The file system or the buffer's alignment refuses O_DIRECT: read this file buffered from now on.
            ({ fh, direct } = await this.reopenBuffered(file));
            continue;
          }
          throw new CheckpointError(
            "READ_FAILED",
            `${file}: read of ${length - done} bytes at ${start + done} failed: ${(e as Error).message}`,
            "the disk or file may be damaged, or the file was removed while running",
          );
        }
        if (n === 0) {
          if (done < mustHave)
            throw new CheckpointError(
              "SAFETENSORS_TRUNCATED",
              `${file}: ended at byte ${start + done} while reading ${length} bytes at ${start}`,
              "the file shrank or is truncated; download it again",
            );
          into.fill(0, done, length); // aligned reads run past the end of the file
          break;
        }
        done += n;
        this.readBytes += n;
      }
    } finally {
      this.release();
    }
  }

  private handle(file: string): Promise<{ fh: FileHandle; direct: boolean }> {
    let h = this.handles.get(file);
    if (!h) {
      const io = this.o.io ?? nodeFileIo;
      h = io
        .open(file, this.o.direct)
        .then((fh) => ({ fh, direct: this.o.direct }))
        .catch(async (e) => {
          if (this.o.direct && (e as NodeJS.ErrnoException).code === "EINVAL")
            return { fh: await io.open(file, false), direct: false };
          throw e;
        })
        .catch((e) => {
          this.handles.delete(file);
          throw fileOpenError(file, e);
        });
      this.handles.set(file, h);
    }
    return h;
  }

  private async reopenBuffered(file: string): Promise<{ fh: FileHandle; direct: boolean }> {
    const old = this.handles.get(file);
    if (old) this.retired.push(old); // other reads may still use it; closed with the reader
    const h = (this.o.io ?? nodeFileIo).open(file, false).then((fh) => ({ fh, direct: false }));
    this.handles.set(file, h);
    return h;
  }

  private async slot(): Promise<void> {
    if (this.inFlight >= (this.o.maxInFlight ?? 8)) await new Promise<void>((resolve) => this.waiting.push(resolve));
    if (this.inFlight++ === 0) this.busySince = performance.now();
  }

  private release(): void {
    if (--this.inFlight === 0) this.busyEndedS += (performance.now() - this.busySince) / 1000;
    this.waiting.shift()?.();
  }

  async close(): Promise<void> {
    const all = [...this.handles.values(), ...this.retired.splice(0)];
    this.handles.clear();
    await Promise.all(all.map(async (h) => (await h.catch(() => undefined))?.fh.close()));
  }
}
