// Qwen3 (dense): the Llama decoder plus RMSNorm of each query and key head before RoPE.
import { z } from "zod";
import { LlamaConfig, createLlamaFamily } from "./llama.js";
import type { Architecture } from "./types.js";

export const Qwen3Config = LlamaConfig.extend({
  head_dim: z.number().int().positive(),
  use_sliding_window: z.literal(false).nullish(),
});
export type Qwen3Config = z.infer<typeof Qwen3Config>;

export const qwen3: Architecture<Qwen3Config> = {
  modelType: "qwen3",
  config: Qwen3Config,
  create: (c) => createLlamaFamily(c, true),
};
