// Where an architecture's weights come from, and the checks that every tensor it needs is there with the right shape and dtype.
import type { ArchModel, Weights, WeightSpec } from "../arch/types.js";
import type { DType } from "../backend/dtype.js";
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
  /** A forward failed part way: forget which layers it held and finish the reads ahead it started. */
  reset(): Promise<void>;
  dispose(): void;
}

const weightDTypes: Partial<Record<SafetensorsDType, DType>> = { F32: "f32", F16: "f16", BF16: "bf16" };

export function weightDType(t: TensorInfo): DType {
  const d = weightDTypes[t.dtype];
  if (!d) throw new CheckpointError("DTYPE_UNSUPPORTED", `${t.file}: ${t.name} is ${t.dtype}; layerwise reads F32, F16 and BF16 weights`, "use an unquantized (bf16/f16) release of the model");
  return d;
}

/** Every tensor the architecture needs exists with the shape its config implies; throws naming the first that does not. */
export function validateWeights(ckpt: Checkpoint, model: ArchModel): void {
  const check = (spec: WeightSpec) => {
    const t = ckpt.tensors.get(spec.name);
    if (!t) throw new CheckpointError("TENSOR_MISSING", `${ckpt.dir}: no tensor named ${spec.name}`, "the weights do not match config.json, or a shard is missing");
    if (t.shape.length !== spec.shape.length || t.shape.some((d, i) => d !== spec.shape[i])) {
      throw new CheckpointError(
        "TENSOR_SHAPE_MISMATCH",
        `${t.file}: ${spec.name} has shape [${t.shape.join(", ")}], config.json implies [${spec.shape.join(", ")}]`,
        "config.json does not describe these weights; use the config that came with them",
      );
    }
    weightDType(t);
  };
  Object.values(model.globalWeights).forEach(check);
  for (let i = 0; i < model.shape.numLayers; i++) Object.values(model.layerWeights(i)).forEach(check);
}
