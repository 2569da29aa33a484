// The safetensors format: parse and check a file's header before trusting any byte of it; write files for test checkpoints.
import { open, type FileHandle } from "node:fs/promises";
import { CheckpointError } from "../errors.js";
import { readFully } from "../util/read-fully.js";
import { fileReadError, openRegularFile } from "./model-files.js";

export const safetensorsDTypeBytes = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U64: 8,
  U32: 4,
  U16: 2,
  U8: 1,
  BOOL: 1,
  F8_E4M3: 1,
  F8_E5M2: 1,
} as const;
export type SafetensorsDType = keyof typeof safetensorsDTypeBytes;

export interface TensorInfo {
  readonly name: string;
  readonly dtype: SafetensorsDType;
  readonly shape: readonly number[];
  readonly file: string;
  /** Absolute offset of the first data byte in `file`. */
  readonly start: number;
  readonly byteLength: number;
}

export interface SafetensorsHeader {
  readonly file: string;
  readonly fileSize: number;
  readonly tensors: TensorInfo[];
  readonly metadata: Record<string, string>;
}

/** The reference implementation's limit on the header's length. */
const maxHeaderBytes = 100_000_000;
/** Far above any real tensor's rank (5 at most in released checkpoints). */
const maxRank = 64;

const truncated = (file: string, why: string) =>
  new CheckpointError("SAFETENSORS_TRUNCATED", `${file}: ${why}`, "the file looks truncated; download it again");

/** Reads and validates the header of one safetensors file: sizes, dtypes, shapes, bounds, and that the tensors tile the data. */
export async function readSafetensorsHeader(file: string): Promise<SafetensorsHeader> {
  const { fh, size: fileSize } = await openRegularFile(file);
  try {
    const lenBytes = await readExactly(fh, file, 0, Math.min(8, fileSize));
    const headerLen = safetensorsHeaderLength(file, fileSize, lenBytes);
    return parseSafetensorsHeader(file, fileSize, await readExactly(fh, file, 8, headerLen));
  } catch (e) {
    throw e instanceof CheckpointError ? e : fileOpenError(file, e);
  } finally {
    await fh.close();
  }
}

async function readExactly(fh: FileHandle, file: string, position: number, length: number): Promise<Uint8Array> {
  const bytes = new Uint8Array(length);
  const done = await readFully(fh, bytes, position);
  if (done < length) throw truncated(file, `ended at byte ${position + done} while reading the header`);
  return bytes;
}

/** The header length the first 8 bytes give, checked against the file's size and the cap before anything that size is allocated. */
export function safetensorsHeaderLength(file: string, fileSize: number, lenBytes: Uint8Array): number {
  if (fileSize < 8 || lenBytes.length < 8)
    throw truncated(file, `${fileSize} bytes, too short for a safetensors header`);
  const headerLen = Number(Buffer.from(lenBytes.buffer, lenBytes.byteOffset, 8).readBigUInt64LE(0));
  if (headerLen > fileSize - 8)
    throw truncated(
      file,
      `header says ${headerLen} bytes but the file has only ${fileSize - 8} after the length field`,
    );
  if (headerLen > maxHeaderBytes) {
    throw new CheckpointError(
      "SAFETENSORS_HEADER_INVALID",
      `${file}: header of ${headerLen} bytes is larger than the ${maxHeaderBytes} allowed`,
      "this is not a safetensors file, or it is corrupt",
    );
  }
  return headerLen;
}

/** A short description of a JSON value for a message: never deep, never long (a header may hold anything). */
function brief(v: unknown, depth = 0): string {
  if (Array.isArray(v)) {
    if (depth >= 2) return "[...]";
    const items = v.slice(0, 8).map((x) => brief(x, depth + 1));
    return `[${items.join(",")}${v.length > 8 ? ",..." : ""}]`;
  }
  if (typeof v === "string") return JSON.stringify(v.length > 200 ? `${v.slice(0, 200)}...` : v);
  if (typeof v === "object" && v !== null) return "{...}";
  return String(v);
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * Parses the header (the `headerBytes` after the length field) of a file of `fileSize` bytes. As the format requires,
 * the tensors' byte ranges, sorted, tile the data after the header from its first byte to the file's last: no overlap,
 * no hole, nothing after (a length field off by one shifts every tensor, and shows here).
 */
export function parseSafetensorsHeader(file: string, fileSize: number, headerBytes: Uint8Array): SafetensorsHeader {
  const invalid = (why: string, hint = "the file is corrupt or not safetensors; download it again") =>
    new CheckpointError("SAFETENSORS_HEADER_INVALID", `${file}: ${why}`, hint);
  let text: string;
  try {
    text = utf8.decode(headerBytes);
  } catch {
    throw invalid("header is not UTF-8 text");
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw invalid(`header is not valid JSON (${(e as Error).message.slice(0, 200)})`);
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) throw invalid("header is not a JSON object");
  const dataStart = 8 + headerBytes.length;
  const dataSize = fileSize - dataStart;
  const tensors: TensorInfo[] = [];
  const offsets = new Map<TensorInfo, readonly [number, number]>();
  let metadata: Record<string, string> = {};
  for (const [name, entry] of Object.entries(json as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (entry === null) continue;
      if (
        typeof entry !== "object" ||
        Array.isArray(entry) ||
        !Object.values(entry).every((v) => typeof v === "string")
      )
        throw invalid("__metadata__ is not a map of strings");
      metadata = entry as Record<string, string>;
      continue;
    }
    const bad = (why: string) => invalid(`tensor ${brief(name).slice(1, -1)}: ${why}`);
    if (typeof entry !== "object" || entry === null || Array.isArray(entry)) throw bad("entry is not an object");
    const { dtype, shape, data_offsets: range } = entry as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (typeof dtype !== "string" || !Object.hasOwn(safetensorsDTypeBytes, dtype)) {
      throw new CheckpointError(
        "SAFETENSORS_DTYPE_UNSUPPORTED",
        `${file}: tensor ${brief(name).slice(1, -1)} has dtype ${typeof dtype === "string" ? brief(dtype).slice(1, -1) : brief(dtype)}, not one of ${Object.keys(safetensorsDTypeBytes).join(", ")}`,
      );
    }
    if (!Array.isArray(shape)) throw bad(`shape ${brief(shape)} is not a list of non-negative integers`);
    if (shape.length > maxRank) throw bad(`shape has ${shape.length} dimensions; layerwise reads at most ${maxRank}`);
    if (!shape.every((d) => Number.isSafeInteger(d) && d >= 0))
      throw bad(`shape ${brief(shape)} is not a list of non-negative integers`);
    const dims = shape as number[];
    const elementBytes = safetensorsDTypeBytes[dtype as SafetensorsDType];
    const expected = dims.reduce((a, b) => a * b, 1) * elementBytes;
    if (!Number.isSafeInteger(expected)) throw bad(`shape ${brief(dims)} of ${dtype} is larger than any file`);
    if (
      !Array.isArray(range) ||
      range.length !== 2 ||
      !range.every((d) => Number.isSafeInteger(d) && d >= 0) ||
      range[0] > range[1]
    ) {
      throw bad(`data_offsets ${brief(range)} is not [begin, end] with begin <= end`);
    }
    const [begin, end] = range as [number, number];
    if (end - begin !== expected)
      throw bad(`holds ${end - begin} bytes but shape ${brief(dims)} of ${dtype} needs ${expected}`);
    if (end > dataSize) {
      throw new CheckpointError(
        "TENSOR_OUT_OF_BOUNDS",
        `${file}: ${brief(name).slice(1, -1)} ends at byte ${dataStart + end}, file has ${fileSize}`,
        "shard looks truncated; download it again",
      );
    }
    const info: TensorInfo = {
      name,
      dtype: dtype as SafetensorsDType,
      shape: dims,
      file,
      start: dataStart + begin,
      byteLength: end - begin,
    };
    tensors.push(info);
    offsets.set(info, [begin, end]);
  }
  checkTiling(file, dataSize, tensors, offsets);
  return { file, fileSize, tensors, metadata };
}

/** The sorted ranges must start at 0, follow each other with no overlap and no hole, and end at the file's end. */
function checkTiling(
  file: string,
  dataSize: number,
  tensors: readonly TensorInfo[],
  offsets: ReadonlyMap<TensorInfo, readonly [number, number]>,
): void {
  const layout = (why: string) =>
    new CheckpointError(
      "SAFETENSORS_LAYOUT_INVALID",
      `${file}: ${why}`,
      "the header does not describe this file's bytes (a wrong header length, or a damaged file); download it again",
    );
  // Zero-size tensors sort before a tensor that starts where they sit, so they never look like an overlap.
  const sorted = [...tensors].sort((a, b) => a.start - b.start || a.byteLength - b.byteLength);
  let cursor = 0;
  let last: TensorInfo | undefined;
  for (const t of sorted) {
    const [begin, end] = offsets.get(t)!;
    if (begin < cursor) {
      throw new CheckpointError(
        "TENSOR_OVERLAP",
        `${file}: tensors ${brief(last!.name).slice(1, -1)} and ${brief(t.name).slice(1, -1)} overlap at byte ${t.start}`,
        "the file is corrupt; download it again",
      );
    }
    if (begin > cursor)
      throw layout(`no tensor holds bytes ${cursor} to ${begin} of the data (before ${brief(t.name).slice(1, -1)})`);
    cursor = end;
    last = t;
  }
  if (cursor !== dataSize)
    throw layout(`tensors end at byte ${cursor} of the data, but the file has ${dataSize} bytes after the header`);
}

/** A failed open or read of a shard as a CheckpointError (the disk reader's name for model-files' fileReadError). */
export function fileOpenError(file: string, e: unknown): CheckpointError {
  return fileReadError(file, e);
}

export interface TensorToWrite {
  readonly name: string;
  readonly dtype: SafetensorsDType;
  readonly shape: readonly number[];
  /** Writes the tensor's bytes in pieces; called once, in file order. */
  readonly fill: (write: (bytes: Uint8Array) => Promise<void>) => Promise<void>;
}

/** Writes a safetensors file: 8-byte length, JSON header padded to 8 bytes, then the data in the given order. */
export async function writeSafetensors(
  file: string,
  tensors: readonly TensorToWrite[],
  metadata: Record<string, string> = { format: "pt" },
): Promise<void> {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  const sizes: number[] = [];
  for (const t of tensors) {
    const size = t.shape.reduce((a, b) => a * b, 1) * safetensorsDTypeBytes[t.dtype];
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + size] };
    sizes.push(size);
    offset += size;
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
  const fh = await open(file, "w");
  try {
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
    await fh.write(len);
    await fh.write(json);
    for (let i = 0; i < tensors.length; i++) {
      let written = 0;
      await tensors[i]!.fill(async (bytes) => {
        await fh.write(bytes);
        written += bytes.byteLength;
      });
      if (written !== sizes[i])
        throw new Error(`writeSafetensors: ${tensors[i]!.name} wrote ${written} bytes, expected ${sizes[i]}`);
    }
  } finally {
    await fh.close();
  }
}
