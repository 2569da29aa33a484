// The one place the persistent KV cache touches files: it creates them exclusively under a random name and renames
// them into place, opens nothing through a symbolic link, and deletes only regular files of its own naming.
import { randomBytes } from "node:crypto";
import { constants } from "node:fs";
import { lstat, mkdir, open as fsOpen, rename, unlink, type FileHandle } from "node:fs/promises";
import { readFully } from "../util/read-fully.js";

/** How the store opens files: every cache file is opened here (tests swap in one whose handles fail). */
export interface StoreIo {
  open(path: string, flags: number, mode?: number): Promise<FileHandle>;
}

export const nodeStoreIo: StoreIo = { open: (path, flags, mode) => fsOpen(path, flags, mode) };

// O_NOFOLLOW: a symlink planted at the name fails the open (ELOOP) instead of being followed. O_NONBLOCK: a FIFO
// planted there opens at once (and is then refused as not a regular file) instead of hanging.
const noFollow = constants.O_NOFOLLOW ?? 0;
const createFlags = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | noFollow;
const readFlags = constants.O_RDONLY | noFollow | (constants.O_NONBLOCK ?? 0);

/** The store's own names: a model's folder (fingerprint prefix), a block's data and manifest, their temp files. */
export const names = {
  modelDir: /^[0-9a-f]{16}$/,
  block: /^([0-9a-f]{32})\.(kv|json)$/,
  /** `<final name>.<writer pid>-<random>.tmp`, and `.partial` from versions before the random suffix. */
  blockTemp: /^[0-9a-f]{32}\.(?:kv|json)\.(?:\d+-[0-9a-f]{8}\.tmp|partial)$/,
  markerTemp: /^layerwise-kv-cache\.json\.\d+-[0-9a-f]{8}\.tmp$/,
};

/**
 * A temp file, or a block's data without its manifest, is a leftover of a killed run once it is this old: a live writer
 * writes a block in one go and renames it at once, so nothing this old is still being written (by any process, on any
 * host sharing the folder, which a writer's pid could not tell).
 */
export const leftoverAgeMs = 10 * 60_000;

export type OwnFile<T> = { kind: "ok"; value: T } | { kind: "missing" } | { kind: "not ours"; what: string };

/**
 * Writes `data` as `path`: a new temp file (exclusive, never through a link), synced, then renamed over `path` if that
 * is absent or a regular file. Returns undefined once written, or what is at `path` when that is not ours to replace.
 */
export async function writeOwnFile(io: StoreIo, path: string, data: Uint8Array | string): Promise<string | undefined> {
  const temp = `${path}.${process.pid}-${randomBytes(4).toString("hex")}.tmp`;
  const fh = await io.open(temp, createFlags, 0o644);
  let renamed = false;
  try {
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    const there = await entryKind(path);
    if (there !== "file" && there !== "missing") return there;
    await rename(temp, path); // replaces the name, never writes through it
    renamed = true;
    return undefined;
  } finally {
    if (!renamed) await unlink(temp).catch(() => {}); // ours: it was created exclusively
  }
}

/** Opens a regular file for reading without following a link; a link, folder, FIFO or device there is not ours. */
export async function openOwnFile(io: StoreIo, path: string): Promise<OwnFile<{ fh: FileHandle; bytes: number }>> {
  let fh: FileHandle;
  try {
    fh = await io.open(path, readFlags);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return { kind: "missing" };
    if (code === "ELOOP" || code === "EMLINK") return { kind: "not ours", what: "a symbolic link" };
    throw e;
  }
  const st = await fh.stat().catch(async (e) => {
    await fh.close();
    throw e;
  });
  if (!st.isFile()) {
    await fh.close();
    return { kind: "not ours", what: st.isDirectory() ? "a folder" : "not a regular file" };
  }
  return { kind: "ok", value: { fh, bytes: st.size } };
}

/** Reads a whole regular file of at most `maxBytes` (null when larger: nothing past the cap is read). */
export async function readOwnFile(io: StoreIo, path: string, maxBytes: number): Promise<OwnFile<Buffer | null>> {
  const opened = await openOwnFile(io, path);
  if (opened.kind !== "ok") return opened;
  const { fh, bytes } = opened.value;
  try {
    if (bytes > maxBytes) return { kind: "ok", value: null };
    const buf = Buffer.alloc(bytes);
    return { kind: "ok", value: (await readFully(fh, buf, 0)) === bytes ? buf : null };
  } finally {
    await fh.close();
  }
}

export type EntryKind = "missing" | "file" | "folder" | "a symbolic link" | "not a regular file";

/** What is at `path`, without following a link. */
export async function entryKind(path: string): Promise<EntryKind> {
  try {
    const st = await lstat(path);
    return st.isSymbolicLink()
      ? "a symbolic link"
      : st.isFile()
        ? "file"
        : st.isDirectory()
          ? "folder"
          : "not a regular file";
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return "missing";
    throw e;
  }
}

/** Makes folder `path` (its parent exists) or finds it there; anything else at the name (a link to a folder, too) is not ours. */
export async function ownFolder(path: string, create: boolean): Promise<EntryKind> {
  if (create) {
    await mkdir(path, { mode: 0o755 }).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== "EEXIST") throw e; // mkdir never follows a link at the last name: it reports EEXIST
    });
  }
  return entryKind(path);
}

/** Deletes `path` if it is a regular file; a link or anything else is left alone. Returns whether it deleted. */
export async function removeOwnFile(path: string): Promise<boolean> {
  if ((await entryKind(path)) !== "file") return false;
  await unlink(path).catch((e: NodeJS.ErrnoException) => {
    if (e.code !== "ENOENT") throw e;
  });
  return true;
}

/** A file error in a few words, without a stack: "ENOSPC (no space left on the device)". */
export function ioCause(e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  if (err?.code === "ENOSPC") return "no space left on the device (ENOSPC)";
  if (err?.code === "EDQUOT") return "the disk quota is used up (EDQUOT)";
  if (typeof err?.code === "string") return `${err.code}: ${(err.message ?? "").replace(/^[A-Z]+: /, "")}`;
  return err instanceof Error ? err.message : String(e);
}
