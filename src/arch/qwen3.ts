// Qwen3 (dense): the Llama decoder plus RMSNorm of each query and key head before RoPE.
import { z } from "zod";
import { headCount, checkAttention } from "./limits.js";
import { LlamaConfigFields, createLlamaFamily } from "./llama.js";
import type { Architecture } from "./types.js";

const Qwen3ConfigFields = LlamaConfigFields.extend({
  head_dim: headCount,
  use_sliding_window: z.literal(false).nullish(),
});
export const Qwen3Config = Qwen3ConfigFields.superRefine(checkAttention);
export type Qwen3Config = z.infer<typeof Qwen3ConfigFields>;

export const qwen3: Architecture<Qwen3Config> = {
  modelType: "qwen3",
  config: Qwen3Config,
  create: (c) => createLlamaFamily(c, true),
};
