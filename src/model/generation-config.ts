// generation_config.json: stop ids and the sampling defaults the model's authors chose.
import { join } from "node:path";
import { z } from "zod";
import { CheckpointError } from "../errors.js";
import { readOptionalModelJson } from "./model-files.js";

const ids = z.union([z.number().int(), z.array(z.number().int())]).nullish();

export const GenerationConfigSchema = z.object({
  bos_token_id: ids,
  eos_token_id: ids,
  pad_token_id: ids,
  do_sample: z.boolean().optional(),
  temperature: z.number().nonnegative().nullish(),
  top_k: z.number().int().nonnegative().nullish(),
  top_p: z.number().min(0).max(1).nullish(),
  min_p: z.number().min(0).max(1).nullish(),
  repetition_penalty: z.number().positive().nullish(),
  max_new_tokens: z.number().int().positive().nullish(),
});

export interface GenerationDefaults {
  eosTokenIds: number[];
  bosTokenId?: number;
  /** Sampling the authors set; temperature 0 when the model asks for greedy decoding. */
  temperature: number;
  topK?: number;
  topP?: number;
  minP?: number;
  repetitionPenalty?: number;
}

export async function readGenerationDefaults(
  dir: string,
  rawConfig: Record<string, unknown>,
): Promise<GenerationDefaults> {
  const file = join(dir, "generation_config.json");
  const raw = (await readOptionalModelJson(file, "generation_config")) ?? {};
  const parsed = GenerationConfigSchema.safeParse(raw);
  if (!parsed.success) {
    const problems = parsed.error.issues
      .slice(0, 5)
      .map((i) => `${i.path.join(".")}: ${i.message}`)
      .join("; ");
    throw new CheckpointError(
      "GENERATION_CONFIG_INVALID",
      `${file}: ${problems}`,
      "download generation_config.json again, or remove it to use plain defaults",
    );
  }
  const g = parsed.data;
  const list = (v: number | number[] | null | undefined) =>
    v === null || v === undefined ? [] : Array.isArray(v) ? v : [v];
  const fromConfig = GenerationConfigSchema.safeParse(rawConfig);
  const eos = list(g.eos_token_id ?? (fromConfig.success ? fromConfig.data.eos_token_id : undefined));
  const bos = list(g.bos_token_id ?? (fromConfig.success ? fromConfig.data.bos_token_id : undefined))[0];
  return {
    eosTokenIds: eos,
    ...(bos !== undefined ? { bosTokenId: bos } : {}),
    temperature: g.do_sample ? (g.temperature ?? 1) : 0,
    ...(g.do_sample ? { topK: g.top_k ?? 50 } : {}), // transformers' default when sampling
    ...(g.do_sample && g.top_p !== undefined && g.top_p !== null ? { topP: g.top_p } : {}),
    ...(g.do_sample && g.min_p ? { minP: g.min_p } : {}),
    ...(g.repetition_penalty ? { repetitionPenalty: g.repetition_penalty } : {}),
  };
}
