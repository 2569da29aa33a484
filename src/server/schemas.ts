// Request bodies of the OpenAI-compatible endpoints (zod): the fields layerwise honours, OpenAI's names and meanings.
// Parsing is bounded: zod costs about a microsecond per array item and several per problem found (a 4 MB body of bad
// token ids took it 4.5 s), so big arrays are counted or checked in plain loops first and problems reported early.
import { z } from "zod";
import { cut } from "./errors.js";

const stop = z.union([z.string(), z.array(z.string()).max(16)]).nullish();
const zeroOnly = (what: string) =>
  z
    .number()
    .refine((v) => v === 0, { message: `${what} is not supported (only 0)` })
    .nullish();

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

/** Most messages plus content parts of one chat request (OpenAI allows 2048 messages). */
export const maxChatItems = 10_000;

export const ChatRequest = z.strictObject({
  ...sampling,
  messages: z.array(message).min(1).max(maxChatItems),
  max_completion_tokens: z.number().int().positive().nullish(),
  logprobs: z.literal(false).nullish(),
});
export type ChatRequest = z.infer<typeof ChatRequest>;

export const CompletionRequest = z.strictObject({
  ...sampling,
  // Token ids: numbers, checked in one loop; whole numbers inside the vocabulary is the model's check (encodePrompt).
  prompt: z.union([
    z.string(),
    z.array(z.string()).length(1),
    z.custom<number[]>((v) => Array.isArray(v) && v.length > 0 && v.every((x) => typeof x === "number"), {
      message: "expected text, [text] or token ids (numbers)",
    }),
  ]),
  echo: z.literal(false).nullish(),
  logprobs: z.null().optional(),
});
export type CompletionRequest = z.infer<typeof CompletionRequest>;

/** Issues, and unknown fields per issue, named in an error; the rest are counted (a body of 200k fields stays short). */
const maxListed = 10;

/** A zod error as one line naming each field (at most a few, each name cut short). */
export function describe(error: z.ZodError, at: PropertyKey[] = []): string {
  const name = (key: PropertyKey) => cut(String(key), 40);
  const more = (n: number) => (n > 0 ? ` and ${n} more` : "");
  const issues = error.issues.slice(0, maxListed).map((i) => {
    const path = [...at, ...i.path].map(name).join(".") || "body";
    return i.code === "unrecognized_keys"
      ? `${path}: unknown field(s) ${i.keys.slice(0, maxListed).map(name).join(", ")}${more(i.keys.length - maxListed)}`
      : `${path}: ${cut(i.message, 200)}`;
  });
  return (
    issues.join("; ") + (error.issues.length > maxListed ? `; ${error.issues.length - maxListed} more problems` : "")
  );
}

export type Parsed<T> = { ok: true; data: T } | { ok: false; message: string };

function parsed<T>(r: { success: true; data: T } | { success: false; error: z.ZodError }): Parsed<T> {
  return r.success ? { ok: true, data: r.data } : { ok: false, message: describe(r.error) };
}

/** A chat request: its size in messages and parts counted first, then each message alone (the first bad one is named). */
export function parseChatRequest(json: unknown): Parsed<ChatRequest> {
  const messages = (json as { messages?: unknown } | null)?.messages;
  if (Array.isArray(messages)) {
    let items = messages.length;
    for (const m of messages) {
      const content = (m as { content?: unknown } | null)?.content;
      if (Array.isArray(content)) items += content.length;
    }
    if (items > maxChatItems)
      return { ok: false, message: `messages: ${items} messages and content parts; at most ${maxChatItems}` };
    for (let i = 0; i < messages.length; i++) {
      const r = message.safeParse(messages[i]);
      if (!r.success) return { ok: false, message: describe(r.error, ["messages", i]) };
    }
  }
  return parsed(ChatRequest.safeParse(json));
}

export function parseCompletionRequest(json: unknown): Parsed<CompletionRequest> {
  return parsed(CompletionRequest.safeParse(json));
}
