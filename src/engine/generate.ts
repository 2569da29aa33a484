// The generate loop: prefill the prompt, then sample token by token until a stop id, a stop string or a limit.
import { UsageError } from "../errors.js";
import { StreamingDetokenizer, type TextTokenizer } from "../model/tokenizer.js";
import { Sampler, type SamplingOptions } from "./sampling.js";

export interface GenerateOptions extends SamplingOptions {
  /** Most new tokens; default 256. */
  maxTokens?: number;
  /** Text that ends generation; it is not included in the output. */
  stop?: readonly string[];
  /** Token ids that end generation, besides the model's eos ids. */
  stopTokenIds?: readonly number[];
  /** Keep going past eos ids (benchmarks). */
  ignoreEos?: boolean;
  signal?: AbortSignal;
}

export type FinishReason = "stop" | "length" | "abort";

export interface TokenStats {
  tokens: number[];
  promptTokens: number;
  finishReason: FinishReason;
  /** Seconds from the call to the first new token, and per new token after it. */
  ttftS: number;
  decodeSPerToken: number;
  /** Prompt tokens whose KV came from the persistent cache. */
  kvCacheHitTokens?: number;
}

export interface GenerationResult extends TokenStats {
  text: string;
}

/** What the loop needs from a model: a step that takes new ids and returns the logits of the last one. */
export interface TokenStepper {
  readonly maxPositions: number;
  readonly eosTokenIds: readonly number[];
  /** Feeds ids after what the sequence holds; logits of the last id. */
  step(ids: readonly number[]): Promise<Float32Array>;
}

export async function* generateTokens(model: TokenStepper, promptIds: readonly number[], o: GenerateOptions): AsyncGenerator<number, TokenStats> {
  const start = performance.now();
  const maxTokens = o.maxTokens ?? 256;
  if (!Number.isInteger(maxTokens) || maxTokens < 0) throw new UsageError("BAD_MAX_TOKENS", `max tokens ${maxTokens} is not a whole number >= 0`);
  if (promptIds.length === 0) throw new UsageError("EMPTY_PROMPT", "the prompt has no tokens", "give a prompt, or a model whose tokenizer adds a BOS token");
  if (promptIds.length >= model.maxPositions) {
    throw new UsageError("PROMPT_TOO_LONG", `the prompt has ${promptIds.length} tokens; the model's context is ${model.maxPositions}`, "shorten the prompt or pick a model with a longer context");
  }
  const sampler = new Sampler(o);
  const stopIds = new Set([...(o.ignoreEos ? [] : model.eosTokenIds), ...(o.stopTokenIds ?? [])]);
  const history = [...promptIds];
  const tokens: number[] = [];
  let firstAt = 0;
  let finishReason: FinishReason = "length";
  const limit = Math.min(maxTokens, model.maxPositions - promptIds.length);
  // A cancel during a step ends the run as "abort" (the engine rolled the step back); other errors propagate.
  const step = (ids: readonly number[]) =>
    model.step(ids).catch((e: unknown) => {
      if (o.signal?.aborted) return undefined;
      throw e;
    });
  let logits = limit > 0 ? await step(promptIds) : undefined;
  if (limit > 0 && !logits) finishReason = "abort";
  while (logits && tokens.length < limit) {
    if (o.signal?.aborted) {
      finishReason = "abort";
      break;
    }
    const id = sampler.sample(logits, history);
    if (tokens.length === 0) firstAt = performance.now();
    tokens.push(id);
    history.push(id);
    const more: boolean | undefined = yield id;
    if (stopIds.has(id) || more === false) {
      finishReason = "stop";
      break;
    }
    if (tokens.length < limit) {
      logits = await step([id]);
      if (!logits) finishReason = "abort";
    }
  }
  const end = performance.now();
  return {
    tokens,
    promptTokens: promptIds.length,
    finishReason,
    ttftS: tokens.length ? (firstAt - start) / 1000 : 0,
    decodeSPerToken: tokens.length > 1 ? (end - firstAt) / 1000 / (tokens.length - 1) : 0,
  };
}

/** Streams text pieces of generated tokens, cut at the first stop string; returns the whole result. */
export async function* generateText(tokenizer: TextTokenizer, tokens: AsyncGenerator<number, TokenStats, boolean | undefined>, o: GenerateOptions): AsyncGenerator<string, GenerationResult> {
  const detok = new StreamingDetokenizer(tokenizer);
  const stops = (o.stop ?? []).filter((s) => s.length > 0);
  let text = "";
  let emitted = 0;
  let stopped = false;
  let next = await tokens.next();
  while (!next.done) {
    text += detok.push(next.value);
    const hit = firstStop(text, stops, Math.max(0, emitted - longest(stops)));
    if (hit !== undefined) {
      text = text.slice(0, hit);
      stopped = true;
    }
    // Hold back a tail that could still become a stop string.
    const safe = stopped ? text.length : text.length - heldTail(text, stops);
    if (safe > emitted) {
      yield text.slice(emitted, safe);
      emitted = safe;
    }
    next = await tokens.next(!stopped);
  }
  const stats = next.value;
  if (!stopped) {
    text += detok.flush();
    if (text.length > emitted) yield text.slice(emitted);
  }
  return { ...stats, text, finishReason: stopped ? "stop" : stats.finishReason };
}

function longest(stops: readonly string[]): number {
  return stops.reduce((n, s) => Math.max(n, s.length), 0);
}

function firstStop(text: string, stops: readonly string[], from: number): number | undefined {
  let best: number | undefined;
  for (const s of stops) {
    const i = text.indexOf(s, from);
    if (i !== -1 && (best === undefined || i < best)) best = i;
  }
  return best;
}

/** Length of the longest end of `text` that is a proper start of some stop string. */
function heldTail(text: string, stops: readonly string[]): number {
  let held = 0;
  for (const s of stops) {
    for (let n = Math.min(s.length - 1, text.length); n > held; n--) {
      if (text.endsWith(s.slice(0, n))) {
        held = n;
        break;
      }
    }
  }
  return held;
}
