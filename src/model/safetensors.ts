// The safetensors format: parse and check a file's header before trusting any byte of it; write files for test checkpoints.
import { open, type FileHandle } from "node:fs/promises";
import { CheckpointError } from "../errors.js";

export const safetensorsDTypeBytes = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U64: 8, U32: 4, U16: 2, U8: 1, BOOL: 1, F8_E4M3: 1, F8_E5M2: 1,
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

const maxHeaderBytes = 100 * 1024 * 1024;

/** Reads and validates the header of one safetensors file: sizes, dtypes, shapes, bounds and overlaps. */
export async function readSafetensorsHeader(file: string): Promise<SafetensorsHeader> {
  let fh: FileHandle;
  try {
    fh = await open(file, "r");
  } catch (e) {
    throw fileOpenError(file, e);
  }
  try {
    const fileSize = (await fh.stat()).size;
    if (fileSize < 8) {
      throw new CheckpointError("SAFETENSORS_TRUNCATED", `${file}: ${fileSize} bytes, too short for a safetensors header`, "the file looks truncated; download it again");
    }
    const lenBuf = Buffer.alloc(8);
    await fh.read(lenBuf, 0, 8, 0);
    const headerLen = Number(lenBuf.readBigUInt64LE(0));
    if (headerLen > fileSize - 8) {
      throw new CheckpointError("SAFETENSORS_TRUNCATED", `${file}: header says ${headerLen} bytes but the file has only ${fileSize - 8} after the length field`, "the file looks truncated; download it again");
    }
    if (headerLen > maxHeaderBytes) {
      throw new CheckpointError("SAFETENSORS_HEADER_INVALID", `${file}: header of ${headerLen} bytes is larger than the ${maxHeaderBytes} allowed`, "this is not a safetensors file, or it is corrupt");
    }
    const headerBuf = Buffer.alloc(headerLen);
    await fh.read(headerBuf, 0, headerLen, 8);
    return parseHeader(file, fileSize, headerLen, headerBuf.toString("utf8"));
  } catch (e) {
    throw e instanceof CheckpointError ? e : fileOpenError(file, e);
  } finally {
    await fh.close();
  }
}

function parseHeader(file: string, fileSize: number, headerLen: number, text: string): SafetensorsHeader {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new CheckpointError("SAFETENSORS_HEADER_INVALID", `${file}: header is not valid JSON (${(e as Error).message})`, "the file is corrupt or not safetensors; download it again");
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new CheckpointError("SAFETENSORS_HEADER_INVALID", `${file}: header is not a JSON object`, "the file is corrupt or not safetensors");
  }
  const dataStart = 8 + headerLen;
  const dataSize = fileSize - dataStart;
  const tensors: TensorInfo[] = [];
  let metadata: Record<string, string> = {};
  for (const [name, entry] of Object.entries(json as Record<string, unknown>)) {
    if (name === "__metadata__") {
      metadata = (entry ?? {}) as Record<string, string>;
      continue;
    }
    const bad = (why: string) => new CheckpointError("SAFETENSORS_HEADER_INVALID", `${file}: tensor ${name}: ${why}`, "the file is corrupt; download it again");
    if (typeof entry !== "object" || entry === null) throw bad("entry is not an object");
    const { dtype, shape, data_offsets: offsets } = entry as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (typeof dtype !== "string" || !(dtype in safetensorsDTypeBytes)) {
      throw new CheckpointError("SAFETENSORS_DTYPE_UNSUPPORTED", `${file}: tensor ${name} has dtype ${String(dtype)}, not one of ${Object.keys(safetensorsDTypeBytes).join(", ")}`);
    }
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) throw bad(`shape ${JSON.stringify(shape)} is not a list of non-negative integers`);
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((d) => Number.isSafeInteger(d) && d >= 0) || offsets[0] > offsets[1]) {
      throw bad(`data_offsets ${JSON.stringify(offsets)} is not [begin, end] with begin <= end`);
    }
    const [begin, end] = offsets as [number, number];
    const expected = shape.reduce((a: number, b: number) => a * b, 1) * safetensorsDTypeBytes[dtype as SafetensorsDType];
    if (end - begin !== expected) throw bad(`holds ${end - begin} bytes but shape ${JSON.stringify(shape)} of ${dtype} needs ${expected}`);
    if (end > dataSize) {
      throw new CheckpointError("TENSOR_OUT_OF_BOUNDS", `${file}: ${name} ends at byte ${dataStart + end}, file has ${fileSize}`, "shard looks truncated; download it again");
    }
    tensors.push({ name, dtype: dtype as SafetensorsDType, shape, file, start: dataStart + begin, byteLength: end - begin });
  }
  const sorted = [...tensors].sort((a, b) => a.start - b.start);
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1]!;
    const cur = sorted[i]!;
    if (cur.start < prev.start + prev.byteLength) {
      throw new CheckpointError("TENSOR_OVERLAP", `${file}: tensors ${prev.name} and ${cur.name} overlap at byte ${cur.start}`, "the file is corrupt; download it again");
    }
  }
  return { file, fileSize, tensors, metadata };
}

export function fileOpenError(file: string, e: unknown): CheckpointError {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === "ENOENT") return new CheckpointError("FILE_MISSING", `${file} does not exist`, "the model folder is incomplete; download the missing file");
  if (code === "EACCES" || code === "EPERM") return new CheckpointError("FILE_UNREADABLE", `${file} cannot be read (permission denied)`, "check the file's permissions");
  return new CheckpointError("FILE_UNREADABLE", `${file} cannot be read: ${(e as Error).message}`);
}

export interface TensorToWrite {
  readonly name: string;
  readonly dtype: SafetensorsDType;
  readonly shape: readonly number[];
  /** Writes the tensor's bytes in pieces; called once, in file order. */
  readonly fill: (write: (bytes: Uint8Array) => Promise<void>) => Promise<void>;
}

/** Writes a safetensors file: 8-byte length, JSON header padded to 8 bytes, then the data in the given order. */
export async function writeSafetensors(file: string, tensors: readonly TensorToWrite[], metadata: Record<string, string> = { format: "pt" }): Promise<void> {
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
      if (written !== sizes[i]) throw new Error(`writeSafetensors: ${tensors[i]!.name} wrote ${written} bytes, expected ${sizes[i]}`);
    }
  } finally {
    await fh.close();
  }
}
