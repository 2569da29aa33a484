// Where an architecture's weights come from, and the checks that every tensor it needs is there with the right shape and dtype.
import { expertsIn, specList, type ArchModel, type Weights, type WeightSpec } from "../arch/types.js";
import { tensorBytes, type DType } from "../backend/dtype.js";
import { CheckpointError } from "../errors.js";
import type { Checkpoint } from "../model/checkpoint.js";
import type { SafetensorsDType, TensorInfo } from "../model/safetensors.js";

export interface WeightSource {
  /** Embedding table, final norm and LM head: resident for the whole run. */
  readonly globals: Weights;
  /** The layer's weights on the compute tier; resolves when they may be used. */
  layer(layer: number): Promise<Weights>;
  /** The layer's compute is queued; a streaming source may reuse its memory once that work is done. */
  release(layer: number): void;
  /**
   * Between forwards: a streaming source keeps no streamed layer on the device for a prompt (its activations need the
   * room), and while decoding keeps what fits beside the KV caches' decode share (set them first).
   */
  useShare(kind: "prefill" | "decode"): Promise<void>;
  /** One expert of a mixture-of-experts layer on the compute tier (held until `releaseExpert`). */
  expert(layer: number, expert: number): Promise<Weights>;
  releaseExpert(layer: number, expert: number): void;
  /** A forward failed part way: forget which layers it held and finish the reads ahead it started. */
  reset(): Promise<void>;
  dispose(): void;
}

const weightDTypes: Partial<Record<SafetensorsDType, DType>> = { F32: "f32", F16: "f16", BF16: "bf16" };

/** A contiguous byte range of a stored tensor that makes up (part of) one weight. */
export interface WeightRange {
  readonly file: string;
  readonly start: number;
  readonly byteLength: number;
}

/** One weight as the architecture sees it, and the file ranges it is made of (MXFP4: packed values, then scales). */
export interface ResolvedWeight {
  readonly shape: readonly number[];
  readonly dtype: DType;
  readonly ranges: readonly WeightRange[];
  readonly byteLength: number;
}

export function weightDType(t: TensorInfo): DType {
  const d = weightDTypes[t.dtype];
  if (!d)
    throw new CheckpointError(
      "DTYPE_UNSUPPORTED",
      `${t.file}: ${t.name} is ${t.dtype}; layerwise reads F32, F16 and BF16 weights (and MXFP4 experts)`,
      "use an unquantized (bf16/f16) release of the model",
    );
  return d;
}

function shapeError(t: TensorInfo, expected: readonly number[]): CheckpointError {
  return new CheckpointError(
    "TENSOR_SHAPE_MISMATCH",
    `${t.file}: ${t.name} has shape [${t.shape.join(", ")}], config.json implies [${expected.join(", ")}]`,
    "config.json does not describe these weights; use the config that came with them",
  );
}

function tensorOf(ckpt: Checkpoint, name: string): TensorInfo {
  const t = ckpt.tensors.get(name);
  if (!t)
    throw new CheckpointError(
      "TENSOR_MISSING",
      `${ckpt.dir}: no tensor named ${name}`,
      "the weights do not match config.json, or a shard is missing",
    );
  return t;
}

/** The bytes of slice `index` of a stacked tensor whose slices have shape `inner` (the whole tensor without an index). */
function slice(t: TensorInfo, inner: readonly number[], index: number | undefined): WeightRange {
  const expected = index === undefined ? inner : [t.shape[0]!, ...inner];
  if (
    t.shape.length !== expected.length ||
    t.shape.some((d, i) => d !== expected[i]) ||
    (index !== undefined && index >= t.shape[0]!)
  )
    throw shapeError(t, expected);
  const bytes = t.byteLength / (index === undefined ? 1 : t.shape[0]!);
  return { file: t.file, start: t.start + (index ?? 0) * bytes, byteLength: bytes };
}

/** Checks a weight against the checkpoint and finds its bytes; throws naming the first tensor that does not fit. */
export function resolveWeight(ckpt: Checkpoint, spec: WeightSpec): ResolvedWeight {
  if (spec.rowRanges) return rowRanges(ckpt, spec, spec.rowRanges);
  const t = tensorOf(ckpt, spec.name);
  if (spec.scales) {
    const [rows, cols] = spec.shape as [number, number];
    const s = tensorOf(ckpt, spec.scales);
    for (const x of [t, s])
      if (x.dtype !== "U8")
        throw new CheckpointError(
          "DTYPE_UNSUPPORTED",
          `${x.file}: ${x.name} is ${x.dtype}; MXFP4 blocks and scales are U8`,
          "the checkpoint's MXFP4 tensors look damaged; download it again",
        );
    const ranges = [slice(t, [rows, cols / 32, 16], spec.index), slice(s, [rows, cols / 32], spec.index)];
    return { shape: spec.shape, dtype: "mxfp4", ranges, byteLength: tensorBytes(spec.shape, "mxfp4") };
  }
  const dtype = weightDType(t);
  const range = slice(t, spec.shape, spec.index);
  return { shape: spec.shape, dtype, ranges: [range], byteLength: range.byteLength };
}

function rowRanges(ckpt: Checkpoint, spec: WeightSpec, ranges: NonNullable<WeightSpec["rowRanges"]>): ResolvedWeight {
  const inner = spec.shape.slice(1);
  let dtype: DType | undefined;
  const out = ranges.map((r) => {
    const t = tensorOf(ckpt, r.name);
    if (
      t.shape.length !== spec.shape.length ||
      t.shape.slice(1).some((d, i) => d !== inner[i]) ||
      r.start + r.count > t.shape[0]!
    )
      throw shapeError(t, [r.start + r.count, ...inner]);
    const d = weightDType(t);
    if (dtype && d !== dtype)
      throw new CheckpointError(
        "DTYPE_MIXED",
        `${t.file}: ${t.name} is ${t.dtype}, unlike the tensors it is used with`,
        "the checkpoint looks damaged; download it again",
      );
    dtype = d;
    const rowBytes = t.byteLength / t.shape[0]!;
    return { file: t.file, start: t.start + r.start * rowBytes, byteLength: r.count * rowBytes };
  });
  const rows = ranges.reduce((n, r) => n + r.count, 0);
  if (rows !== spec.shape[0])
    throw new Error(`${spec.name}: row ranges give ${rows} rows, the spec says ${spec.shape[0]}`);
  return { shape: spec.shape, dtype: dtype!, ranges: out, byteLength: out.reduce((n, r) => n + r.byteLength, 0) };
}

/**
 * Every weight the architecture names, per layer, with each expert's; generated one layer at a time, so a config that
 * names more layers or experts than the checkpoint holds fails at the first missing one instead of listing them all.
 */
export function* allWeightSpecs(model: ArchModel): Generator<WeightSpec> {
  yield* specList(model.globalWeights);
  for (let i = 0; i < model.shape.numLayers; i++) {
    yield* specList(model.layerWeights(i));
    for (let e = 0; e < expertsIn(model.shape, i); e++) yield* specList(model.expertWeights!(i, e));
  }
}

/**
 * Every tensor the architecture needs exists with the shape its config implies; throws naming the first that does not.
 * A checkpoint with more layers than config.json names is run with the first ones, as transformers does, with a warning
 * (the output is not the full model's): a deliberately truncated model is a real use, a silent one is a surprise.
 */
export function validateWeights(
  ckpt: Checkpoint,
  model: ArchModel,
  warn?: (code: string, message: string) => void,
): void {
  for (const spec of allWeightSpecs(model)) resolveWeight(ckpt, spec);
  const n = model.shape.numLayers;
  const extra = specList(model.layerWeights(n))
    .flatMap((s) => [s.name, ...(s.rowRanges ?? []).map((r) => r.name)])
    .find((name) => ckpt.has(name));
  if (extra) {
    warn?.(
      "LAYERS_UNUSED",
      `config.json's num_hidden_layers is ${n}, but the checkpoint has tensors of layer ${n} (${extra}): only the first ${n} layers run, and the output is not the full model's`,
    );
  }
}
