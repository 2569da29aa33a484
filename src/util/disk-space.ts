// Disk-full errors that say what was being written and how much room it needed, before a long write starts and when
// one fails half way.
import { statfs } from "node:fs/promises";
import { DiskFullError } from "../errors.js";
import { formatBytes } from "./bytes.js";

/** Throws DISK_FULL when the file system holding `dir` has less than `bytes` free (for `what`). */
export async function checkDiskSpace(dir: string, bytes: number, what: string, hint: string): Promise<void> {
  const s = await statfs(dir);
  const free = s.bavail * s.bsize;
  if (bytes > free)
    throw new DiskFullError(
      "DISK_FULL",
      `${what} needs ${formatBytes(bytes)} in ${dir}; its disk has ${formatBytes(free)} free`,
      hint,
    );
}

/** Whether a failed write failed because the disk or the user's quota ran out. */
export function isDiskFull(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException).code;
  return code === "ENOSPC" || code === "EDQUOT";
}

/** The error to throw for a failed write of `file`: DISK_FULL (with `hint`) when the disk or quota ran out, else `e`. */
export function writeError(file: string, e: unknown, hint: string): unknown {
  return isDiskFull(e) ? new DiskFullError("DISK_FULL", `${file}: no space left on the device`, hint) : e;
}
