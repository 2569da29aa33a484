// Request bodies of the OpenAI-compatible endpoints (zod): the fields layerwise honours, OpenAI's names and meanings.
import { z } from "zod";

const stop = z.union([z.string(), z.array(z.string()).max(16)]).nullish();
const zeroOnly = (what: string) => z.number().refine((v) => v === 0, { message: `${what} is not supported (only 0)` }).nullish();

const sampling = {
  model: z.string(),
  max_tokens: z.number().int().positive().nullish(),
  temperature: z.number().min(0).max(2).nullish(),
  top_p: z.number().gt(0).max(1).nullish(),
  top_k: z.number().int().nonnegative().nullish(),
  min_p: z.number().min(0).max(1).nullish(),
  repetition_penalty: z.number().positive().nullish(),
  seed: z.number().int().nullish(),
  stop,
  stream: z.boolean().nullish(),
  stream_options: z.strictObject({ include_usage: z.boolean().optional() }).nullish(),
  n: z.literal(1).nullish(),
  presence_penalty: zeroOnly("presence_penalty"),
  frequency_penalty: zeroOnly("frequency_penalty"),
  user: z.string().nullish(),
};

const textPart = z.strictObject({ type: z.literal("text"), text: z.string() });
const message = z.strictObject({
  role: z.enum(["system", "developer", "user", "assistant", "tool"]),
  content: z.union([z.string(), z.array(textPart)]),
  name: z.string().optional(),
});

export const ChatRequest = z.strictObject({
  ...sampling,
  messages: z.array(message).min(1),
  max_completion_tokens: z.number().int().positive().nullish(),
  logprobs: z.literal(false).nullish(),
});
export type ChatRequest = z.infer<typeof ChatRequest>;

export const CompletionRequest = z.strictObject({
  ...sampling,
  prompt: z.union([z.string(), z.array(z.string()).length(1), z.array(z.number().int().nonnegative()).min(1)]),
  echo: z.literal(false).nullish(),
  logprobs: z.null().optional(),
});
export type CompletionRequest = z.infer<typeof CompletionRequest>;

/** A zod error as one line naming each field. */
export function describe(error: z.ZodError): string {
  return error.issues
    .map((i) => {
      const path = i.path.join(".") || "body";
      return i.code === "unrecognized_keys" ? `${path}: unknown field(s) ${i.keys.join(", ")}` : `${path}: ${i.message}`;
    })
    .join("; ");
}
