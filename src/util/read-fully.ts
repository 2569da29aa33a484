// A positioned read that does not stop at a short read: file handles may return fewer bytes than asked.
import type { FileHandle } from "node:fs/promises";

/** Reads into all of `buf` from `position`; returns the bytes read (fewer only at the end of the file). */
export async function readFully(fh: FileHandle, buf: Uint8Array, position: number): Promise<number> {
  let n = 0;
  while (n < buf.byteLength) {
    const { bytesRead } = await fh.read(buf, n, buf.byteLength - n, position + n);
    if (bytesRead === 0) break;
    n += bytesRead;
  }
  return n;
}
