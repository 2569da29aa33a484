// The one reader of a model folder's own files (config.json, tokenizer files, index, chat template): regular files only,
// opened without blocking, size-capped per kind before a byte is read, strict UTF-8, parsed JSON with errors that say
// what really happened.
import { constants, type Stats } from "node:fs";
import { open, stat, type FileHandle } from "node:fs/promises";
import { basename } from "node:path";
import { CheckpointError } from "../errors.js";
import { formatBytes } from "../util/bytes.js";
import { readFully } from "../util/read-fully.js";

export type ModelFileKind =
  "config" | "index" | "tokenizer" | "tokenizer_config" | "generation_config" | "chat_template";

interface KindRules {
  /** Far above any released model's file of this kind; a bigger one is refused unread. */
  readonly maxBytes: number;
  /** The code of a file of this kind that is not what it should be (not JSON, wrong shape). */
  readonly invalidCode: string;
  readonly invalidHint: string;
}

const MiB = 1 << 20;

/**
 * Size caps per kind. Real files for scale: config.json up to ~200 KB (multimodal), tokenizer.json up to ~35 MB
 * (Gemma 3, 262k tokens), tokenizer_config.json up to ~2 MB (added-token tables), index up to ~10 MB (DeepSeek-V3).
 */
export const modelFileRules: Readonly<Record<ModelFileKind, KindRules>> = {
  config: {
    maxBytes: 16 * MiB,
    invalidCode: "CONFIG_INVALID",
    invalidHint: "compare it with the model's original config.json, or download it again",
  },
  index: {
    maxBytes: 256 * MiB,
    invalidCode: "INDEX_INVALID",
    invalidHint: "download model.safetensors.index.json again",
  },
  tokenizer: { maxBytes: 256 * MiB, invalidCode: "TOKENIZER_INVALID", invalidHint: "download tokenizer.json again" },
  tokenizer_config: {
    maxBytes: 64 * MiB,
    invalidCode: "TOKENIZER_CONFIG_INVALID",
    invalidHint: "download tokenizer_config.json again, or compare it with the model's original",
  },
  generation_config: {
    maxBytes: 16 * MiB,
    invalidCode: "GENERATION_CONFIG_INVALID",
    invalidHint: "download generation_config.json again, or remove it to use plain defaults",
  },
  chat_template: {
    maxBytes: 4 * MiB,
    invalidCode: "CHAT_TEMPLATE_INVALID",
    invalidHint: "download the chat template again",
  },
};

/** What a path is, for a message: "a directory", "a FIFO (named pipe)". */
function whatItIs(s: Stats): string {
  if (s.isDirectory()) return "a directory";
  if (s.isFIFO()) return "a FIFO (named pipe)";
  if (s.isCharacterDevice()) return "a character device";
  if (s.isBlockDevice()) return "a block device";
  if (s.isSocket()) return "a socket";
  return "not a file";
}

function notRegular(file: string, s: Stats): CheckpointError {
  return new CheckpointError(
    "FILE_NOT_REGULAR",
    `${file} is ${whatItIs(s)}, not a regular file`,
    "a model folder holds regular files (or links to them); replace it with the real file",
  );
}

/** An fs error as what happened: missing, permission denied, or the system's own words. */
export function fileReadError(file: string, e: unknown): CheckpointError {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === "ENOENT")
    return new CheckpointError(
      "FILE_MISSING",
      `${file} does not exist`,
      "the model folder is incomplete; download the missing file",
    );
  if (code === "EACCES" || code === "EPERM")
    return new CheckpointError(
      "FILE_UNREADABLE",
      `${file} cannot be read (permission denied)`,
      "check the file's permissions",
    );
  if (code === "ELOOP")
    return new CheckpointError(
      "FILE_UNREADABLE",
      `${file} cannot be read: a loop of symbolic links`,
      "fix or replace the link",
    );
  if (code === "ENOTDIR")
    return new CheckpointError(
      "FILE_MISSING",
      `${file} does not exist (a part of its path is a file, not a folder)`,
      "give the path of a model folder",
    );
  return new CheckpointError(
    "FILE_UNREADABLE",
    `${file} cannot be read: ${(e as Error).message}`,
    "the disk or file may be damaged",
  );
}

// O_NONBLOCK: opening a FIFO that slipped past the stat check (swapped in between) returns at once instead of waiting for
// a writer; on a regular file it changes nothing. O_NOCTTY: a terminal device never becomes ours.
const openFlags = constants.O_RDONLY | (constants.O_NONBLOCK ?? 0) | (constants.O_NOCTTY ?? 0);

/**
 * Opens `file` (following links) for reading if it is a regular file, without ever blocking on a FIFO or device.
 * The caller closes the handle. Throws FILE_MISSING, FILE_NOT_REGULAR or FILE_UNREADABLE.
 */
export async function openRegularFile(file: string): Promise<{ fh: FileHandle; size: number }> {
  const opened = await openIfRegular(file);
  if (!opened)
    throw new CheckpointError(
      "FILE_MISSING",
      `${file} does not exist`,
      "the model folder is incomplete; download the missing file",
    );
  return opened;
}

/** openRegularFile, but undefined when nothing is at `file`. */
async function openIfRegular(file: string): Promise<{ fh: FileHandle; size: number } | undefined> {
  // stat first: a FIFO or device is refused without being opened at all.
  let before: Stats;
  try {
    before = await stat(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw fileReadError(file, e);
  }
  if (!before.isFile()) throw notRegular(file, before);
  let fh: FileHandle;
  try {
    fh = await open(file, openFlags);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined; // removed in between
    throw fileReadError(file, e);
  }
  try {
    const s = await fh.stat(); // what was opened, not what the path named a moment ago
    if (!s.isFile()) throw notRegular(file, s);
    return { fh, size: s.size };
  } catch (e) {
    await fh.close();
    throw e instanceof CheckpointError ? e : fileReadError(file, e);
  }
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** The text of a model folder file, or undefined when it does not exist. */
export async function readOptionalModelText(file: string, kind: ModelFileKind): Promise<string | undefined> {
  const rules = modelFileRules[kind];
  const opened = await openIfRegular(file);
  if (!opened) return undefined;
  const { fh, size } = opened;
  try {
    if (size > rules.maxBytes) {
      throw new CheckpointError(
        "FILE_TOO_LARGE",
        `${file} is ${formatBytes(size)}; layerwise reads a ${basename(file)} of at most ${formatBytes(rules.maxBytes)}`,
        `this is not a real ${basename(file)}; ${rules.invalidHint}`,
      );
    }
    // Reads only the size fstat gave: a file that grows meanwhile cannot push past the cap.
    const bytes = new Uint8Array(size);
    const done = await readFully(fh, bytes, 0);
    try {
      return utf8.decode(bytes.subarray(0, done));
    } catch {
      throw new CheckpointError(rules.invalidCode, `${file} is not UTF-8 text`, rules.invalidHint);
    }
  } catch (e) {
    throw e instanceof CheckpointError ? e : fileReadError(file, e);
  } finally {
    await fh.close();
  }
}

/** Parsed JSON object of a model folder file, or undefined when it does not exist. */
export async function readOptionalModelJson(
  file: string,
  kind: ModelFileKind,
): Promise<Record<string, unknown> | undefined> {
  const text = await readOptionalModelText(file, kind);
  return text === undefined ? undefined : parseModelJson(file, kind, text);
}

/** Parsed JSON object of a model folder file that must exist; `missing` is the error when it does not. */
export async function readModelJson(
  file: string,
  kind: ModelFileKind,
  missing: { code: string; hint: string },
): Promise<Record<string, unknown>> {
  const json = await readOptionalModelJson(file, kind);
  if (json === undefined) throw new CheckpointError(missing.code, `${file} does not exist`, missing.hint);
  return json;
}

/**
 * Deepest nesting a model folder's JSON may have. Real files nest a few levels (tokenizer.json's normalizer sequences
 * about ten); JSON.parse takes any depth, but code that walks the result recursively (JSON.stringify of config.json for
 * the cache's fingerprint, say) would overflow the stack on a 200k-deep array in an ignored key.
 */
export const maxJsonDepth = 256;

/** Whether `text` nests arrays and objects deeper than `max` (a scan outside strings; JSON validity is JSON.parse's job). */
function nestsDeeperThan(text: string, max: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c)
        i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x5b || c === 0x7b) {
      if (++depth > max) return true;
    } else if (c === 0x5d || c === 0x7d) depth--;
  }
  return false;
}

/** `text` as a JSON object, or the kind's invalid error saying why not. */
export function parseModelJson(file: string, kind: ModelFileKind, text: string): Record<string, unknown> {
  const rules = modelFileRules[kind];
  if (nestsDeeperThan(text, maxJsonDepth))
    throw new CheckpointError(
      rules.invalidCode,
      `${file} nests lists or objects more than ${maxJsonDepth} levels deep`,
      rules.invalidHint,
    );
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new CheckpointError(
      rules.invalidCode,
      `${file} is not valid JSON: ${(e as Error).message.slice(0, 200)}`,
      rules.invalidHint,
    );
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new CheckpointError(
      rules.invalidCode,
      `${file} is not a JSON object (it holds ${json === null ? "null" : Array.isArray(json) ? "a list" : `a ${typeof json}`})`,
      rules.invalidHint,
    );
  }
  return json as Record<string, unknown>;
}
