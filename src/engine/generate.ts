// Generation, one token at a time: sampling, stop ids, limits and timings (Generation); streamed text cut at stop strings
// (TextStream); and the loops that drive one sequence with them. The server's scheduler drives many with the same parts.
import { UsageError } from "../errors.js";
import { StreamingDetokenizer, type TextTokenizer } from "../model/tokenizer.js";
import { Sampler, type LogitsRequest, type RankedLogits, type SamplingOptions } from "./sampling.js";

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
  /** Seconds from the start to the first new token, and per new token after it. */
  ttftS: number;
  decodeSPerToken: number;
  /** Prompt tokens whose KV came from the persistent cache. */
  kvCacheHitTokens?: number;
}

export interface GenerationResult extends TokenStats {
  text: string;
}

/** The token-level state of one request: what it may still generate and why it stops. */
export class Generation {
  readonly tokens: number[] = [];
  /** The sequence's ids so far, kept only while a repetition penalty needs them. */
  private readonly seen = new Set<number>();
  private readonly sampler: Sampler;
  private readonly stopIds: Set<number>;
  /** Most new tokens: the request's limit, or what the context leaves. */
  readonly limit: number;
  private readonly start = performance.now();
  private firstAt = 0;
  private endAt = 0;
  finishReason?: FinishReason;

  /**
   * `promptIds` is the whole prompt (cached prefix included); `contextLeft` is how many positions the context has
   * after it (the model's context less the prompt, for a fresh sequence).
   */
  constructor(
    private readonly promptIds: readonly number[],
    o: GenerateOptions,
    eosTokenIds: readonly number[],
    contextLeft: number,
    readonly kvCacheHitTokens = 0,
  ) {
    const maxTokens = o.maxTokens ?? 256;
    if (!Number.isInteger(maxTokens) || maxTokens < 0)
      throw new UsageError("BAD_MAX_TOKENS", `max tokens ${maxTokens} is not a whole number >= 0`);
    if (promptIds.length === 0)
      throw new UsageError(
        "EMPTY_PROMPT",
        "the prompt has no tokens",
        "give a prompt, or a model whose tokenizer adds a BOS token",
      );
    if (contextLeft <= 0) {
      throw new UsageError(
        "PROMPT_TOO_LONG",
        `the prompt has ${promptIds.length} tokens; the model's context is ${promptIds.length + contextLeft}`,
        "shorten the prompt or pick a model with a longer context",
      );
    }
    this.sampler = new Sampler(o);
    this.stopIds = new Set([...(o.ignoreEos ? [] : eosTokenIds), ...(o.stopTokenIds ?? [])]);
    if (this.sampler.penalized) for (const id of promptIds) this.seen.add(id);
    this.limit = Math.min(maxTokens, contextLeft);
    if (this.limit === 0) this.finish("length");
  }

  get done(): boolean {
    return this.finishReason !== undefined;
  }

  /** What the next `next` needs of the logits: the best few ids, or (undefined) the whole row. */
  logitsRequest(): LogitsRequest | undefined {
    return this.sampler.request(this.seen);
  }

  /** Samples the next token from the logits `logitsRequest` asked for; afterwards `done` says whether it was the last. */
  next(logits: Float32Array | RankedLogits): number {
    const id = this.sampler.sample(logits, this.seen);
    if (this.tokens.length === 0) this.firstAt = performance.now();
    this.tokens.push(id);
    if (this.sampler.penalized) this.seen.add(id);
    if (this.stopIds.has(id)) this.finish("stop");
    else if (this.tokens.length >= this.limit) this.finish("length");
    return id;
  }

  finish(reason: FinishReason): void {
    if (this.finishReason) return;
    this.finishReason = reason;
    this.endAt = performance.now();
  }

  stats(): TokenStats {
    const end = this.endAt || performance.now();
    const n = this.tokens.length;
    return {
      tokens: this.tokens,
      promptTokens: this.promptIds.length,
      finishReason: this.finishReason ?? "length",
      ttftS: n ? (this.firstAt - this.start) / 1000 : 0,
      decodeSPerToken: n > 1 ? (end - this.firstAt) / 1000 / (n - 1) : 0,
      kvCacheHitTokens: this.kvCacheHitTokens,
    };
  }
}

/** Generated text as it streams: complete characters only, cut at the first stop string (which is left out). */
export class TextStream {
  private readonly detok: StreamingDetokenizer;
  private readonly stops: string[];
  private readonly longestStop: number;
  text = "";
  private emitted = 0;
  stopped = false;

  /** `promptIds`: what the generated text continues (see StreamingDetokenizer). */
  constructor(tokenizer: TextTokenizer, stops: readonly string[] = [], promptIds: readonly number[] = []) {
    this.detok = new StreamingDetokenizer(tokenizer, promptIds);
    this.stops = stops.filter((s) => s.length > 0);
    this.longestStop = this.stops.reduce((n, s) => Math.max(n, s.length), 0);
  }

  /** Adds a token; returns the text that may be shown now (a tail that could still start a stop string is held). */
  push(id: number): string {
    if (this.stopped) return "";
    this.text += this.detok.push(id);
    const hit = firstStop(this.text, this.stops, Math.max(0, this.emitted - this.longestStop));
    if (hit !== undefined) {
      this.text = this.text.slice(0, hit);
      this.stopped = true;
    }
    const safe = this.stopped ? this.text.length : this.text.length - heldTail(this.text, this.stops);
    return this.take(safe);
  }

  /** The rest, once generation ended without a stop string. */
  finish(): string {
    if (!this.stopped) this.text += this.detok.flush();
    return this.take(this.text.length);
  }

  private take(upTo: number): string {
    if (upTo <= this.emitted) return "";
    const piece = this.text.slice(this.emitted, upTo);
    this.emitted = upTo;
    return piece;
  }
}

/** What the loop needs from a model: a step that takes new ids and returns the logits of the last one. */
export interface TokenStepper {
  readonly eosTokenIds: readonly number[];
  /** Positions the context has left before the prompt is fed. */
  readonly room: number;
  /** Feeds ids after what the sequence holds; what `request` asks of the last id's logits (undefined: all of them). */
  step(ids: readonly number[], request: LogitsRequest | undefined): Promise<Float32Array | RankedLogits>;
}

/**
 * Yields generated ids for one sequence. `promptIds` is the whole prompt; only its last `fresh` ids are fed (the rest
 * came from the KV cache). Calling next(false) ends generation with finish reason "stop".
 */
export async function* generateTokens(
  model: TokenStepper,
  promptIds: readonly number[],
  fresh: number,
  o: GenerateOptions,
  kvCacheHitTokens = 0,
): AsyncGenerator<number, TokenStats, boolean | undefined> {
  const gen = new Generation(promptIds, o, model.eosTokenIds, model.room - fresh, kvCacheHitTokens);
  // A cancel during a step ends the run as "abort" (the engine rolled the step back); other errors propagate.
  const step = (ids: readonly number[]) =>
    model.step(ids, gen.logitsRequest()).catch((e: unknown) => {
      if (o.signal?.aborted) return undefined;
      throw e;
    });
  let logits = gen.done ? undefined : await step(promptIds.slice(promptIds.length - fresh));
  while (!gen.done) {
    if (!logits || o.signal?.aborted) {
      gen.finish("abort");
      break;
    }
    const id = gen.next(logits);
    const more: boolean | undefined = yield id;
    if (more === false) gen.finish("stop");
    if (!gen.done) logits = await step([id]);
  }
  return gen.stats();
}

/** Streams text pieces of generated tokens, cut at the first stop string; returns the whole result. */
export async function* generateText(
  tokenizer: TextTokenizer,
  promptIds: readonly number[],
  tokens: AsyncGenerator<number, TokenStats, boolean | undefined>,
  o: GenerateOptions,
): AsyncGenerator<string, GenerationResult> {
  const text = new TextStream(tokenizer, o.stop, promptIds);
  let next = await tokens.next();
  while (!next.done) {
    const piece = text.push(next.value);
    if (piece) yield piece;
    next = await tokens.next(!text.stopped);
  }
  const rest = text.finish();
  if (rest) yield rest;
  return { ...next.value, text: text.text, finishReason: text.stopped ? "stop" : next.value.finishReason };
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
