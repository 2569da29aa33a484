// A Hugging Face model folder: config.json, one or many safetensors shards, and byte-range reads of tensor data.
import { readdir, stat } from "node:fs/promises";
import { DiskReader } from "./disk-reader.js";
import { join } from "node:path";
import { CheckpointError } from "../errors.js";
import { fileReadError, readModelJson } from "./model-files.js";
import { readSafetensorsHeader, type TensorInfo } from "./safetensors.js";

export class Checkpoint {
  /** Buffered reads of small things; layer streaming has its own reader. */
  private readonly reader = new DiskReader();

  private constructor(
    readonly dir: string,
    /** config.json as parsed JSON, not yet validated against an architecture. */
    readonly rawConfig: Record<string, unknown>,
    readonly tensors: ReadonlyMap<string, TensorInfo>,
    readonly files: readonly string[],
  ) {}

  /** Opens a model folder: reads config.json and every shard's header; reads no tensor data. */
  static async open(dir: string): Promise<Checkpoint> {
    const info = await stat(dir).catch((e: NodeJS.ErrnoException) => {
      if (e.code === "ENOENT") return undefined;
      throw fileReadError(dir, e);
    });
    if (!info)
      throw new CheckpointError(
        "MODEL_DIR_MISSING",
        `${dir} does not exist`,
        "give the path of a model folder holding config.json, *.safetensors and tokenizer.json",
      );
    if (!info.isDirectory())
      throw new CheckpointError(
        "MODEL_DIR_MISSING",
        `${dir} is not a folder`,
        "give the model's folder, not one of its files",
      );
    const rawConfig = await readModelJson(join(dir, "config.json"), "config", {
      code: "CONFIG_MISSING",
      hint: "a Hugging Face model folder has config.json beside its *.safetensors files",
    });
    const { files, index } = await findShards(dir);
    const tensors = new Map<string, TensorInfo>();
    for (const file of files) {
      const header = await readSafetensorsHeader(file);
      for (const t of header.tensors) {
        const seen = tensors.get(t.name);
        if (seen)
          throw new CheckpointError(
            "TENSOR_DUPLICATE",
            `tensor ${t.name} is in both ${seen.file} and ${file}`,
            "the checkpoint's shards disagree; download it again",
          );
        tensors.set(t.name, t);
      }
    }
    for (const [name, shard] of Object.entries(index ?? {})) {
      if (tensors.get(name)?.file !== join(dir, shard)) {
        throw new CheckpointError(
          "TENSOR_MISSING",
          `model.safetensors.index.json puts ${name} in ${shard}, but that shard has no such tensor`,
          "the shard looks incomplete; download it again",
        );
      }
    }
    return new Checkpoint(dir, rawConfig, tensors, files);
  }

  tensor(name: string): TensorInfo {
    const t = this.tensors.get(name);
    if (!t)
      throw new CheckpointError(
        "TENSOR_MISSING",
        `${this.dir}: no tensor named ${name}`,
        "the checkpoint does not match its config.json, or a shard is missing",
      );
    return t;
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  async readRange(file: string, start: number, length: number, into?: Uint8Array): Promise<Uint8Array> {
    const buf = into ?? new Uint8Array(length);
    await this.reader.read(file, start, length, buf);
    return buf;
  }

  async close(): Promise<void> {
    await this.reader.close();
  }
}

/** A checkpoint folder's safetensors files (those its index lists, if it has one), with the index. */
export async function findShards(dir: string): Promise<{ files: string[]; index?: Record<string, string> }> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (e) {
    throw fileReadError(dir, e);
  }
  if (names.includes("model.safetensors.index.json")) {
    const index = await readIndex(dir);
    const shards = [...new Set(Object.values(index))].sort();
    for (const s of shards) {
      if (!names.includes(s)) {
        throw new CheckpointError(
          "SHARD_MISSING",
          `${join(dir, s)} is listed in model.safetensors.index.json but does not exist`,
          "the download is incomplete; fetch the missing shard",
        );
      }
    }
    return { files: shards.map((s) => join(dir, s)), index };
  }
  const shards = names.filter((n) => n.endsWith(".safetensors")).sort();
  if (shards.length === 0) {
    const pickled = names.filter((n) => n.endsWith(".bin") || n.endsWith(".pt") || n.endsWith(".pth"));
    throw new CheckpointError(
      "WEIGHTS_MISSING",
      `${dir} has no *.safetensors files${pickled.length ? ` (found ${pickled.join(", ")})` : ""}`,
      pickled.length
        ? "layerwise never unpickles .bin/.pt files; use the model's safetensors release"
        : "download the model's *.safetensors files into this folder",
    );
  }
  return { files: shards.map((s) => join(dir, s)) };
}

async function readIndex(dir: string): Promise<Record<string, string>> {
  const file = join(dir, "model.safetensors.index.json");
  const json = await readModelJson(file, "index", {
    code: "INDEX_MISSING",
    hint: "download model.safetensors.index.json again",
  });
  const map = json.weight_map;
  if (
    typeof map !== "object" ||
    map === null ||
    Array.isArray(map) ||
    !Object.values(map).every((v) => typeof v === "string" && !v.includes("/") && !v.includes("\\"))
  ) {
    throw new CheckpointError(
      "INDEX_INVALID",
      `${file}: weight_map must map tensor names to shard file names in this folder`,
      "download model.safetensors.index.json again",
    );
  }
  return map as Record<string, string>;
}
