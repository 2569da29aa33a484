// RoPE inverse frequencies for the rope types HF configs name (default, linear, llama3, yarn), from transformers' modeling_rope_utils.
import { z } from "zod";
import { CheckpointError } from "../errors.js";
import { configLimits } from "./limits.js";

export const RopeScaling = z
  .looseObject({
    rope_type: z.string().optional(),
    type: z.string().optional(),
    rope_theta: z.number().positive().optional(),
    factor: z.number().positive().optional(),
    low_freq_factor: z.number().optional(),
    high_freq_factor: z.number().optional(),
    original_max_position_embeddings: z.number().int().positive().optional(),
    attention_factor: z.number().optional(),
    beta_fast: z.number().optional(),
    beta_slow: z.number().optional(),
    truncate: z.boolean().optional(),
    partial_rotary_factor: z.number().positive().max(1).optional(),
  })
  .nullish();
export type RopeScaling = z.infer<typeof RopeScaling>;

export interface RopeInput {
  /** Config keys as written: legacy `rope_theta` + `rope_scaling`, or transformers 5's `rope_parameters`. */
  readonly rope_theta?: number | undefined;
  readonly rope_scaling?: RopeScaling;
  readonly rope_parameters?: RopeScaling;
  readonly max_position_embeddings: number;
}

export interface RopeTable {
  readonly invFreq: Float32Array;
  /** Multiplies cos/sin (YaRN's attention factor); 1 otherwise. */
  readonly scale: number;
}

export const supportedRopeTypes = ["default", "linear", "llama3", "yarn"] as const;

/** Inverse frequencies for `rotaryDim` rotated dims of each head. */
export function ropeTable(c: RopeInput, rotaryDim: number): RopeTable {
  // The configs' checks keep this true; a table of any other size would be garbage (or a huge allocation).
  if (!Number.isInteger(rotaryDim) || rotaryDim < 2 || rotaryDim % 2 !== 0 || rotaryDim > configLimits.heads) {
    throw new CheckpointError(
      "CONFIG_INVALID",
      `RoPE over ${rotaryDim} dimensions of a head: it needs an even number, from 2 to ${configLimits.heads}`,
      "compare config.json with the model's original",
    );
  }
  const p = c.rope_parameters ?? c.rope_scaling ?? {};
  const theta = p.rope_theta ?? c.rope_theta ?? 10000;
  const type = p.rope_type ?? p.type ?? "default";
  const base = new Float64Array(rotaryDim / 2).map((_, i) => 1 / theta ** ((2 * i) / rotaryDim));
  const factor = p.factor ?? 1;
  switch (type) {
    case "default":
      return { invFreq: Float32Array.from(base), scale: 1 };
    case "linear":
      return { invFreq: Float32Array.from(base, (f) => f / factor), scale: 1 };
    case "llama3": {
      const low = p.low_freq_factor ?? 1;
      const high = p.high_freq_factor ?? 4;
      const oldContext = p.original_max_position_embeddings ?? 8192;
      const lowWavelen = oldContext / low;
      const highWavelen = oldContext / high;
      const invFreq = Float32Array.from(base, (f) => {
        const wavelen = (2 * Math.PI) / f;
        if (wavelen < highWavelen) return f;
        if (wavelen > lowWavelen) return f / factor;
        const smooth = (oldContext / wavelen - low) / (high - low);
        return (1 - smooth) * (f / factor) + smooth * f;
      });
      return { invFreq, scale: 1 };
    }
    case "yarn":
      return yarn(p, theta, rotaryDim, c.max_position_embeddings);
    default:
      throw new CheckpointError(
        "ROPE_UNSUPPORTED",
        `rope type "${type}" is not supported; supported: ${supportedRopeTypes.join(", ")}`,
      );
  }
}

function yarn(p: NonNullable<RopeScaling>, theta: number, dim: number, maxPositions: number): RopeTable {
  const factor = p.factor ?? 1;
  const original = p.original_max_position_embeddings ?? maxPositions;
  const scale = p.attention_factor ?? 0.1 * Math.log(factor) + 1;
  const betaFast = p.beta_fast ?? 32;
  const betaSlow = p.beta_slow ?? 1;
  const correctionDim = (rotations: number) =>
    (dim * Math.log(original / (rotations * 2 * Math.PI))) / (2 * Math.log(theta));
  let low = correctionDim(betaFast);
  let high = correctionDim(betaSlow);
  if (p.truncate !== false) {
    low = Math.floor(low);
    high = Math.ceil(high);
  }
  low = Math.max(low, 0);
  high = Math.min(high, dim - 1);
  if (low === high) high += 0.001;
  const invFreq = new Float32Array(dim / 2);
  for (let i = 0; i < dim / 2; i++) {
    const posFreq = theta ** ((2 * i) / dim);
    const ramp = Math.min(1, Math.max(0, (i - low) / (high - low)));
    const extrapolation = 1 - ramp;
    invFreq[i] = (1 / (factor * posFreq)) * (1 - extrapolation) + (1 / posFreq) * extrapolation;
  }
  return { invFreq, scale };
}
