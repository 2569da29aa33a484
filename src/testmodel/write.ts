// Writes a deterministic random-weight checkpoint with a preset's exact shapes: config, safetensors shards, tokenizer files.
import { lstat, mkdir, readdir, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { createArchModel } from "../arch/index.js";
import { expertsIn, specList, type WeightSpec } from "../arch/types.js";
import type { FloatDType } from "../backend/dtype.js";
import { configLimits } from "../arch/limits.js";
import { LayerwiseError, UsageError } from "../errors.js";
import { readOptionalModelText } from "../model/model-files.js";
import { checkDiskSpace, writeError } from "../util/disk-space.js";
import {
  safetensorsDTypeBytes,
  writeSafetensors,
  type SafetensorsDType,
  type TensorToWrite,
} from "../model/safetensors.js";
import { FillPool, fillSegment, segmentValues, type Distribution, type FillDType, type SegmentJob } from "./fill.js";
import { presets, type TestModelPreset } from "./presets.js";
import { chatTemplates, makeTokenizerJson, specialTokens } from "./tokenizer.js";

export interface MakeTestModelOptions {
  preset: string;
  /** Must match the preset's architecture when given. */
  arch?: string;
  dtype: FloatDType;
  /** Fewer decoder layers than the real model (same shapes otherwise). */
  layers?: number;
  out: string;
  seed?: number;
  /** Largest shard; more tensors go to the next model-0000N-of-0000M.safetensors file. */
  shardBytes?: number;
  mergeFormat?: "arrays" | "strings";
}

export interface TestModelInfo {
  dir: string;
  files: string[];
  parameterCount: number;
  bytes: number;
}

/**
 * Marks a folder as written by this tool and lists the files it wrote (`files`), so a later run may replace those; a
 * folder holding anything else is left alone.
 */
export const testModelMarker = ".layerwise-test-model.json";

/** The only names this tool writes: a marker listing anything else is not trusted to delete it. */
const ownFileName =
  /^(?:(?:config|generation_config|tokenizer|tokenizer_config)\.json|model\.safetensors(?:\.index\.json)?|model-\d{5}-of-\d{5}\.safetensors)$/;

const stDType: Record<FillDType, SafetensorsDType> = { f32: "F32", f16: "F16", bf16: "BF16", u8: "U8" };
const torchDType: Record<FloatDType, string> = { f32: "float32", f16: "float16", bf16: "bfloat16" };

export function presetFor(name: string, arch?: string): TestModelPreset {
  const preset = presets[name];
  if (!preset)
    throw new UsageError("UNKNOWN_PRESET", `no preset "${name}"; presets: ${Object.keys(presets).join(", ")}`);
  if (arch && preset.arch !== arch)
    throw new UsageError(
      "PRESET_ARCH_MISMATCH",
      `preset ${name} is a ${preset.arch} model, not ${arch}`,
      `presets for ${arch}: ${
        Object.entries(presets)
          .filter(([, p]) => p.arch === arch)
          .map(([n]) => n)
          .join(", ") || "none"
      }`,
    );
  return preset;
}

export async function makeTestModel(o: MakeTestModelOptions): Promise<TestModelInfo> {
  const preset = presetFor(o.preset, o.arch);
  const seed = o.seed ?? 0;
  const numLayers = o.layers ?? (preset.config.num_hidden_layers as number);
  if (!Number.isInteger(numLayers) || numLayers < 1 || numLayers > configLimits.layers)
    throw new UsageError("BAD_LAYERS", `--layers ${o.layers} is not a whole number from 1 to ${configLimits.layers}`);
  const vocabSize = preset.config.vocab_size as number;
  const specials = specialTokens(preset.tokenizer, preset.specialTokens);
  const regular = vocabSize - specials.names.length;
  const idOf = (token: string) => regular + specials.names.indexOf(token);
  const config: Record<string, unknown> = {
    ...preset.config,
    num_hidden_layers: numLayers,
    torch_dtype: torchDType[o.dtype],
    ...(specials.bos ? { bos_token_id: idOf(specials.bos) } : {}),
    eos_token_id: idOf(specials.eos[0]!),
  };
  if (Array.isArray(config.layer_types)) config.layer_types = config.layer_types.slice(0, numLayers);
  const { model } = createArchModel(config, "preset config");
  const specs: WeightSpec[] = [model.globalWeights.embed!];
  for (let i = 0; i < numLayers; i++) {
    specs.push(...specList(model.layerWeights(i)));
    for (let e = 0; e < expertsIn(model.shape, i); e++) specs.push(...specList(model.expertWeights!(i, e)));
  }
  specs.push(model.globalWeights.norm!);
  if (model.globalWeights.lmHead!.name !== model.globalWeights.embed!.name) specs.push(model.globalWeights.lmHead!);
  const stored = storedTensors(specs, o.dtype, preset);
  const parameterCount = stored.reduce(
    (n, t) => n + t.shape.reduce((a, b) => a * b, 1) * (t.dtype === "u8" ? 2 : 1),
    0,
  );
  // Worker threads pay off for real-size presets; tiny ones are written inline.
  const pool = parameterCount > 50e6 ? new FillPool() : undefined;
  const segments = new SegmentStream(stored, seed, pool);
  const tensors = stored.map((t) => randomTensor(t, segments));
  const bytes = tensors.reduce((n, t) => n + byteSize(t), 0);
  const shards = planShards(tensors, o.shardBytes ?? 4e9);
  const files =
    shards.length === 1 ? ["model.safetensors"] : [...shards.map((s) => s.name), "model.safetensors.index.json"];
  const written = [...files, "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"];

  const hint = "free disk space, choose --out on a larger disk, or write fewer layers (--layers)";
  try {
    await prepareOutDir(o.out);
    // Marked ours, with every name about to be written, before the first byte: a folder a failed write leaves
    // behind can be written again; `complete` once done.
    const marker = { preset: o.preset, dtype: o.dtype, layers: numLayers, seed, files: written };
    await writeFile(join(o.out, testModelMarker), JSON.stringify({ ...marker, complete: false }) + "\n");
    await checkDiskSpace(o.out, bytes, `the ${o.preset} checkpoint`, hint);
    await writeShards(o.out, shards, hint);
  } finally {
    await pool?.close();
  }

  const json = (v: unknown) => JSON.stringify(v, null, 2) + "\n";
  await writeFile(join(o.out, "config.json"), json(config));
  await writeFile(
    join(o.out, "generation_config.json"),
    json({
      ...(specials.bos ? { bos_token_id: idOf(specials.bos) } : {}),
      eos_token_id: specials.eos.map(idOf),
      do_sample: false,
    }),
  );
  await writeFile(
    join(o.out, "tokenizer.json"),
    JSON.stringify(makeTokenizerJson(preset.tokenizer, vocabSize, specials, o.mergeFormat)),
  );
  await writeFile(
    join(o.out, "tokenizer_config.json"),
    json({
      bos_token: specials.bos ?? null,
      eos_token: specials.eot,
      model_max_length: preset.config.max_position_embeddings,
      tokenizer_class: "PreTrainedTokenizerFast",
      clean_up_tokenization_spaces: false,
      chat_template: chatTemplates[preset.tokenizer],
    }),
  );
  await writeFile(
    join(o.out, testModelMarker),
    json({ preset: o.preset, dtype: o.dtype, layers: numLayers, seed, files: written, complete: true }),
  );
  return { dir: o.out, files, parameterCount, bytes };
}

/**
 * Makes `dir` ready to write: created when new; when it holds files, it must carry this tool's marker, and every file
 * in it must be one the marker lists (those are removed). Anything else, and nothing is deleted: the run is refused.
 */
async function prepareOutDir(dir: string): Promise<void> {
  const info = await lstat(dir).catch((e: NodeJS.ErrnoException) => {
    if (e.code === "ENOENT") return undefined;
    throw new UsageError("OUT_UNREADABLE", `--out ${dir} cannot be read: ${e.message}`, "choose another folder");
  });
  if (!info) {
    await mkdir(dir, { recursive: true });
    return;
  }
  if (!info.isDirectory()) {
    throw new UsageError(
      "OUT_NOT_FOLDER",
      `--out ${dir} is ${info.isFile() ? "a file" : "something other than a folder"}, not a folder`,
      "give the path of a new folder; layerwise never replaces a file",
    );
  }
  const entries = (await readdir(dir, { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : 1));
  if (entries.length === 0) return;
  const notEmpty = (why: string) =>
    new UsageError(
      "OUT_NOT_EMPTY",
      `${dir} exists and is not empty: ${why}`,
      "give a new folder; layerwise only replaces files it wrote itself",
    );
  const listed = await markerFiles(dir);
  if (!listed) throw notEmpty(`it has no ${testModelMarker} of make-test-model`);
  const bad = listed.find((n) => !ownFileName.test(n));
  if (bad !== undefined)
    throw notEmpty(
      `its marker ${testModelMarker} lists ${JSON.stringify(bad).slice(1, -1).slice(0, 200)}, not a file make-test-model writes`,
    );
  const ours = new Set([testModelMarker, ...listed, ...listed.map((n) => `${n}.partial`)]);
  const foreign = entries.find((e) => !ours.has(e.name) || !(e.isFile() || e.isSymbolicLink()));
  if (foreign) throw notEmpty(`it holds ${foreign.name}, which make-test-model did not write`);
  for (const e of entries) if (e.name !== testModelMarker) await rm(join(dir, e.name), { force: true });
}

/** The files the folder's marker says this tool wrote; undefined when there is no readable marker. */
async function markerFiles(dir: string): Promise<string[] | undefined> {
  let text: string | undefined;
  try {
    text = await readOptionalModelText(join(dir, testModelMarker), "config");
  } catch (e) {
    if (e instanceof LayerwiseError) return undefined; // not a regular file, too large, not UTF-8: not ours
    throw e;
  }
  if (text === undefined) return undefined;
  let marker: unknown;
  try {
    marker = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof marker !== "object" || marker === null || Array.isArray(marker)) return undefined;
  const files = (marker as { files?: unknown }).files;
  if (Array.isArray(files)) return files.map((f) => (typeof f === "string" ? f : String(f)));
  // A marker of an older version lists nothing; that version wrote only names of ownFileName, so those (and only
  // those) present are its files.
  return files === undefined ? (await readdir(dir)).filter((n) => ownFileName.test(n)) : [String(files)];
}

function byteSize(t: TensorToWrite): number {
  return t.shape.reduce((a, b) => a * b, 1) * safetensorsDTypeBytes[t.dtype];
}

interface Shard {
  readonly name: string;
  readonly tensors: readonly TensorToWrite[];
}

/** Tensors in file order, split into shards of at most `shardBytes` (a bigger tensor gets a shard of its own). */
function planShards(tensors: readonly TensorToWrite[], shardBytes: number): Shard[] {
  const groups: TensorToWrite[][] = [[]];
  let size = 0;
  for (const t of tensors) {
    const bytes = byteSize(t);
    if (size > 0 && size + bytes > shardBytes) {
      groups.push([]);
      size = 0;
    }
    groups[groups.length - 1]!.push(t);
    size += bytes;
  }
  if (groups.length === 1) return [{ name: "model.safetensors", tensors: groups[0]! }];
  const pad = (n: number) => String(n).padStart(5, "0");
  return groups.map((g, i) => ({ name: `model-${pad(i + 1)}-of-${pad(groups.length)}.safetensors`, tensors: g }));
}

async function writeShards(dir: string, shards: readonly Shard[], hint: string): Promise<void> {
  for (const shard of shards)
    await writeAtomically(join(dir, shard.name), (tmp) => writeSafetensors(tmp, shard.tensors), hint);
  if (shards.length === 1) return;
  const weightMap: Record<string, string> = {};
  for (const shard of shards) for (const t of shard.tensors) weightMap[t.name] = shard.name;
  const total = shards.reduce((n, s) => n + s.tensors.reduce((m, t) => m + byteSize(t), 0), 0);
  await writeFile(
    join(dir, "model.safetensors.index.json"),
    JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2) + "\n",
  );
}

/** Writes `file` through a temporary beside it; a failed write removes the temporary (a full disk says so). */
async function writeAtomically(file: string, write: (tmp: string) => Promise<void>, hint: string): Promise<void> {
  const tmp = `${file}.partial`;
  try {
    await write(tmp);
  } catch (e) {
    await rm(tmp, { force: true });
    throw writeError(file, e, hint);
  }
  await rename(tmp, file);
}

interface StoredTensor {
  readonly name: string;
  readonly shape: readonly number[];
  readonly dtype: FillDType;
  readonly dist: Distribution;
}

/** Mean square of the 16 e2m1 values, for choosing MXFP4 scales that give a weight std. */
const fp4MeanSquare = 68.5 / 8;

/**
 * The tensors to write: each weight as stored, experts stacked [experts, ...] as one tensor, MXFP4 weights as random
 * packed bytes plus scales near the exponent that gives the wanted std. Uniform values with the preset's std (norm
 * weights near 1, attention sinks spread wide enough to matter).
 */
function storedTensors(weights: readonly WeightSpec[], dtype: FloatDType, preset: TestModelPreset): StoredTensor[] {
  // A weight made of row ranges stands for whole stored tensors: as many rows as its ranges reach.
  const rowsOf = new Map<string, number>();
  for (const w of weights)
    for (const r of w.rowRanges ?? []) rowsOf.set(r.name, Math.max(rowsOf.get(r.name) ?? 0, r.start + r.count));
  const specs = weights.flatMap((w): WeightSpec[] =>
    w.rowRanges
      ? [...new Set(w.rowRanges.map((r) => r.name))].map((name) => ({
          name,
          shape: [rowsOf.get(name)!, ...w.shape.slice(1)],
        }))
      : [w],
  );
  const out: StoredTensor[] = [];
  const seen = new Set<string>();
  for (const spec of specs) {
    if (seen.has(spec.name)) continue; // one stored tensor for all experts, or for every weight taking rows of it
    seen.add(spec.name);
    const stack = spec.index === undefined ? [] : [specs.filter((x) => x.name === spec.name).length];
    const cols = spec.shape[spec.shape.length - 1] ?? 0; // fan-in: the last dimension (a conv's taps)
    const std =
      spec.shape.length === 1
        ? 0.02
        : preset.initStd === "fan-in"
          ? spec.name.includes("embed")
            ? 0.1
            : 1 / Math.sqrt(cols)
          : preset.initStd;
    if (spec.scales) {
      const rows = spec.shape[0]!;
      const exponent = Math.round(Math.log2(std / Math.sqrt(fp4MeanSquare)));
      out.push({
        name: spec.name,
        shape: [...stack, rows, cols / 32, 16],
        dtype: "u8",
        dist: { center: 128, halfWidth: 128 },
      });
      out.push({
        name: spec.scales,
        shape: [...stack, rows, cols / 32],
        dtype: "u8",
        dist: { center: 127.5 + exponent, halfWidth: 1.5 },
      });
      continue;
    }
    const isNorm = spec.shape.length === 1 && spec.name.includes("norm");
    // Attention sinks and the delta rule's decay parameters spread wide enough to matter; dt_bias around 1, as initialized.
    const wide = preset.initStd === "fan-in" && /\.(sinks|A_log)$/.test(spec.name);
    const isDtBias = spec.name.endsWith(".dt_bias");
    const halfWidth = isNorm ? 0.1 : wide ? 2 : isDtBias ? 0.5 : std * Math.sqrt(3);
    out.push({
      name: spec.name,
      shape: [...stack, ...spec.shape],
      dtype,
      dist: { center: isNorm || isDtBias ? 1 : 0, halfWidth },
    });
  }
  return out;
}

/** Random contents in segments seeded by the tensor's name and index. */
function randomTensor(t: StoredTensor, segments: SegmentStream): TensorToWrite {
  return {
    name: t.name,
    dtype: stDType[t.dtype],
    shape: t.shape,
    fill: async (write) => {
      for (let i = 0; i * segmentValues < t.shape.reduce((a, b) => a * b, 1); i++)
        await write(await segments.next(t.name, i));
    },
  };
}

/**
 * The segments of every tensor in file order, filled ahead on worker threads: up to 32 in flight across tensor
 * boundaries, so checkpoints of many small tensors (experts) keep every worker busy too.
 */
class SegmentStream {
  private readonly jobs: { key: string; job: SegmentJob }[] = [];
  private readonly pending = new Map<string, Promise<Uint8Array>>();
  private cursor = 0;

  constructor(
    tensors: readonly StoredTensor[],
    seed: number,
    private readonly pool: FillPool | undefined,
  ) {
    for (const t of tensors) {
      const n = t.shape.reduce((a, b) => a * b, 1);
      for (let i = 0; i * segmentValues < n; i++)
        this.jobs.push({
          key: `${t.name}:${i}`,
          job: {
            seed: hash(`${seed}:${t.name}:${i}`),
            count: Math.min(segmentValues, n - i * segmentValues),
            dist: t.dist,
            dtype: t.dtype,
          },
        });
    }
  }

  /** Segment `index` of tensor `name`; asked for in file order. */
  next(name: string, index: number): Promise<Uint8Array> {
    const { key, job } = this.jobs[this.cursor++]!;
    if (key !== `${name}:${index}`) throw new Error(`segments asked out of order: ${name}:${index}, expected ${key}`);
    if (!this.pool) return Promise.resolve(fillSegment(job));
    for (let j = this.cursor - 1; j < Math.min(this.jobs.length, this.cursor + 31); j++) {
      const ahead = this.jobs[j]!;
      if (!this.pending.has(ahead.key)) this.pending.set(ahead.key, this.pool.run(ahead.job));
    }
    const bytes = this.pending.get(key)!;
    this.pending.delete(key);
    return bytes;
  }
}

/** FNV-1a, to give each tensor its own random stream. */
function hash(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h >>> 0;
}
