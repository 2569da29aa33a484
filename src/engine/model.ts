// The library's entry point: a loaded model folder that plans its memory, streams its layers, generates text and
// exposes logits. The parts it runs on are built by the composition root (assemble.ts).
import type { ArchModel } from "../arch/types.js";
import type { Backend } from "../backend/ops.js";
import { UsageError } from "../errors.js";
import type { ChatMessage, ChatTemplate } from "../model/chat-template.js";
import type { Checkpoint } from "../model/checkpoint.js";
import type { GenerationDefaults } from "../model/generation-config.js";
import { checkTokenIds, promptTooLong, type EncodeOptions } from "../model/prompt-encoder.js";
import type { TextTokenizer } from "../model/tokenizer.js";
import { assembleEngine, type Engine, type LoadOptions } from "./assemble.js";
import {
  generateText,
  generateTokens,
  type GenerateOptions,
  type GenerationResult,
  type TokenStats,
} from "./generate.js";
import { KvCache, type KvPolicy } from "./kv-cache.js";
import type { BlockLayout } from "./kv-store.js";
import type { ModelLayout } from "./layout.js";
import type { Plan } from "./planner.js";
import type { LogitsWanted } from "./runner.js";
import type { LogitsRequest, RankedLogits } from "./sampling.js";
import { Sequence } from "./sequence.js";

export type { LoadOptions } from "./assemble.js";
export { Sequence } from "./sequence.js";

export type Prompt = string | { messages: readonly ChatMessage[] } | { ids: readonly number[] };

/** What the engine did, for --json and benchmarks; counters grow over the model's life. */
export interface EngineStats {
  peakVramBytes: number;
  peakHostBytes: number;
  diskReadBytes: number;
  h2dBytes: number;
  kvDiskBytes: number;
  ioWaitS: number;
  computeS: number;
  /** Seconds the weight reader had a read in flight (busy time of the disk, as this process drives it). */
  diskBusyS: number;
  kvCacheHitTokens: number;
  /** Mixture of experts: experts copied to the device (misses of the hot-expert cache), and hits. */
  expertLoads: number;
  expertHits: number;
}

/** What the layer streamer has moved so far and holds now (tests and benchmarks compare it with the plan). */
export interface LayerTraffic {
  /** Bytes of layer weights copied to the device, and read from disk for them. */
  h2dBytes: number;
  diskReadBytes: number;
  /** Streamed layers decode keeps on the device now (Plan.decodeSpare). */
  keptLayers: readonly number[];
  /** Device bytes of KV blocks beyond the pool's reserve (decodeKeptLayers takes them first). */
  kvBytesBeyondReserve: number;
}

export interface ForwardOptions {
  /** Fraction of the forward's layer passes done. */
  onProgress?: (done: number) => void;
  signal?: AbortSignal;
}

export class LayerwiseModel {
  private readonly statsBase = { kvCacheHitTokens: 0, computeS: 0 };
  readonly arch: ArchModel;
  readonly checkpoint: Checkpoint;
  readonly tokenizer: TextTokenizer;
  readonly chatTemplate: ChatTemplate | undefined;
  readonly defaults: GenerationDefaults;
  readonly backend: Backend;
  readonly plan: Plan;
  /** Why the backend was chosen, when `auto` fell back. */
  readonly backendNote?: string;

  private constructor(
    readonly dir: string,
    private readonly engine: Engine,
  ) {
    ({
      arch: this.arch,
      checkpoint: this.checkpoint,
      tokenizer: this.tokenizer,
      chatTemplate: this.chatTemplate,
      defaults: this.defaults,
      backend: this.backend,
      plan: this.plan,
      backendNote: this.backendNote,
    } = engine);
  }

  static async load(dir: string, o: LoadOptions = {}): Promise<LayerwiseModel> {
    return new LayerwiseModel(dir, await assembleEngine(dir, o));
  }

  get maxPositions(): number {
    return this.arch.shape.maxPositions;
  }

  /** Where each layer's weights sit in the checkpoint's files, and their sizes. */
  get layout(): ModelLayout {
    return this.plan.input.layout;
  }

  /** How many KV blocks each tier holds per layer and sequence. */
  get kvPolicy(): KvPolicy {
    return this.engine.policy;
  }

  /** The persistent KV cache's block format, when `kvCache` is set. */
  get kvBlockLayout(): BlockLayout | undefined {
    return this.engine.prefixCache?.layout;
  }

  layerTraffic(): LayerTraffic {
    const { streamer, reader, blocks } = this.engine;
    return {
      h2dBytes: streamer.stats.h2dBytes,
      diskReadBytes: reader.stats.diskReadBytes,
      keptLayers: streamer.keptLayers,
      kvBytesBeyondReserve: blocks.extraDeviceBytes(),
    };
  }

  /** Waits for the reads ahead a forward leaves (the next token's first layers) to land. */
  readsAheadSettled(): Promise<void> {
    return this.engine.streamer.readsAheadSettled();
  }

  createSequence(): Sequence {
    const e = this.engine;
    return new Sequence(new KvCache(this.backend, this.arch.shape, e.policy, e.spill, e.ranges, e.blocks));
  }

  /** Feeds `ids` after what `seq` holds; logits [rows * vocab] of the last id, or of every id with `all`. */
  async forward(
    seq: Sequence,
    ids: readonly number[],
    logits: "last" | "all" = "last",
    o: ForwardOptions = {},
  ): Promise<Float32Array> {
    return (await this.forwardBatch([{ seq, ids }], logits, o))[0]!;
  }

  /**
   * Feeds new ids to several sequences in one pass (every layer's weights serve all of them): a batch of decode steps,
   * or prompts. Logits per sequence, as `forward` gives them.
   */
  async forwardBatch(
    items: readonly { seq: Sequence; ids: readonly number[] }[],
    logits?: "last" | "all",
    o?: ForwardOptions,
  ): Promise<Float32Array[]>;
  /** With sampling requests (one per item): the last token's best ids where its request asks, ranked on the backend. */
  async forwardBatch(
    items: readonly { seq: Sequence; ids: readonly number[] }[],
    logits: LogitsWanted,
    o?: ForwardOptions,
  ): Promise<(Float32Array | RankedLogits)[]>;
  async forwardBatch(
    items: readonly { seq: Sequence; ids: readonly number[] }[],
    logits: LogitsWanted = "last",
    o: ForwardOptions = {},
  ): Promise<(Float32Array | RankedLogits)[]> {
    for (const { seq, ids } of items) {
      if (seq.length + ids.length > this.maxPositions) {
        throw new UsageError(
          "CONTEXT_FULL",
          `${seq.length} + ${ids.length} tokens exceed the model's context of ${this.maxPositions}`,
        );
      }
    }
    const single = items.length === 1 ? items[0]! : undefined;
    // Recurrent state can be cached only where a block ends: run up to the prompt's last block boundary first.
    const cut = single ? (this.engine.prefixCache?.recurrentCut(single.seq.length, single.ids.length) ?? 0) : 0;
    if (single && cut > 0) {
      const first = await this.forwardBatch(
        [{ seq: single.seq, ids: single.ids.slice(0, cut) }],
        logits === "all" ? "all" : "last",
        o,
      );
      const rest = await this.forwardBatch([{ seq: single.seq, ids: single.ids.slice(cut) }], logits, o);
      return [logits === "all" ? Float32Array.from([...first[0]!, ...(rest[0] as Float32Array)]) : rest[0]!];
    }
    const t0 = performance.now();
    const wait0 = this.ioWaitS();
    const before = items.map(({ seq }) => seq.tokens.length);
    // A prompt's completed spans go to the persistent cache as they finish (a crash keeps them).
    const afterSpan = single
      ? async (spanEnd: number) => {
          single.seq.tokens.length = before[0]!;
          single.seq.tokens.push(...single.ids.slice(0, spanEnd));
          await this.persist(single.seq);
        }
      : undefined;
    let out: (Float32Array | RankedLogits)[];
    try {
      out = await this.engine.runner.forward(
        items.map(({ seq, ids }) => ({ cache: seq.cache, ids })),
        logits,
        { onProgress: o.onProgress, signal: o.signal, afterSpan },
      );
    } catch (e) {
      // The runner rolled the caches back (to nothing, if a sliding window had freed keys): keep the token lists in step.
      for (const { seq } of items) if (seq.cache.length() < seq.tokens.length) await seq.rewind(seq.cache.length());
      throw e;
    }
    items.forEach(({ seq, ids }, i) => {
      seq.tokens.length = before[i]!;
      seq.tokens.push(...ids);
    });
    this.statsBase.computeS += (performance.now() - t0) / 1000 - (this.ioWaitS() - wait0);
    return out;
  }

  /** Loads the longest cached prefix of `ids` into an empty sequence (with `kvCache`); returns how many tokens it covers. */
  async loadPrefix(seq: Sequence, ids: readonly number[]): Promise<number> {
    const hit = (await this.engine.prefixCache?.load(seq, ids)) ?? 0;
    this.statsBase.kvCacheHitTokens += hit;
    return hit;
  }

  /** Writes the sequence's complete blocks that the persistent cache does not have yet (with `kvCache`). */
  async persist(seq: Sequence): Promise<void> {
    await this.engine.prefixCache?.save(seq);
  }

  /**
   * Token ids for a prompt: text gets the tokenizer's special tokens (BOS), messages go through the chat template, ids
   * are checked against the vocabulary. Rendering and tokenizing run in the encoder's own process, never on the event
   * loop, within time and memory limits (`promptLimits`); a text too long in bytes for the context is refused first.
   */
  async encodePrompt(prompt: Prompt, o: EncodeOptions = {}): Promise<number[]> {
    if (typeof prompt === "string") return this.engine.encoder.encodeText(prompt, o);
    if ("ids" in prompt) {
      const ids = checkTokenIds(prompt.ids, this.arch.shape.vocabSize);
      if (o.maxTokens !== undefined && ids.length > o.maxTokens) throw promptTooLong(ids.length, this.maxPositions);
      return ids;
    }
    if (!this.chatTemplate)
      throw new UsageError(
        "NO_CHAT_TEMPLATE",
        `${this.dir} has no chat template`,
        "use a plain prompt (layerwise run) or an instruct model",
      );
    return this.engine.encoder.encodeMessages(
      prompt.messages,
      { bos_token: this.tokenizer.specialToken("bos_token"), eos_token: this.tokenizer.specialToken("eos_token") },
      o,
    );
  }

  /** Generated token ids, one at a time, on a fresh sequence (or `seq`, continuing it). */
  generateTokens(
    promptIds: readonly number[],
    o: GenerateOptions & { onPrefillProgress?: (done: number) => void } = {},
    seq?: Sequence,
  ): AsyncGenerator<number, TokenStats, boolean | undefined> {
    const sequence = seq ?? this.createSequence();
    const model = this;
    return (async function* () {
      try {
        const hit = await model.loadPrefix(sequence, promptIds);
        let first = true;
        const stepper = {
          eosTokenIds: model.defaults.eosTokenIds,
          room: model.maxPositions - sequence.length,
          step: async (ids: readonly number[], request: LogitsRequest | undefined) => {
            const progress = first ? o.onPrefillProgress : undefined;
            first = false;
            return (
              await model.forwardBatch([{ seq: sequence, ids }], [request], { onProgress: progress, signal: o.signal })
            )[0]!;
          },
        };
        const stats = yield* generateTokens(stepper, promptIds, promptIds.length - hit, model.withDefaults(o), hit);
        await model.persist(sequence);
        return stats;
      } finally {
        if (!seq) sequence.dispose();
      }
    })();
  }

  /** Streams text pieces; `for await (const piece of model.generate(prompt))`. The generator's return value is the full result. */
  generate(
    prompt: Prompt,
    o: GenerateOptions & { onPrefillProgress?: (done: number) => void } = {},
    seq?: Sequence,
  ): AsyncGenerator<string, GenerationResult> {
    const model = this;
    return (async function* () {
      const ids = await model.encodePrompt(prompt, { signal: o.signal });
      return yield* generateText(model.tokenizer, ids, model.generateTokens(ids, o, seq), o);
    })();
  }

  /** Generates to the end and returns text, tokens and timings; `onText` sees each piece as it comes. */
  async complete(
    prompt: Prompt,
    o: GenerateOptions & { onText?: (piece: string) => void; onPrefillProgress?: (done: number) => void } = {},
    seq?: Sequence,
  ): Promise<GenerationResult> {
    const it = this.generate(prompt, o, seq);
    for (;;) {
      const r = await it.next();
      if (r.done) return r.value;
      o.onText?.(r.value);
    }
  }

  /** What the engine has done so far (bytes moved, waits, peaks). */
  stats(): EngineStats {
    const m = this.backend.memory;
    const { reader, ranges, spill, streamer, prefixCache } = this.engine;
    return {
      peakVramBytes: m.deviceBytesPeak,
      peakHostBytes: m.hostBytesPeak,
      diskReadBytes: reader.stats.diskReadBytes + ranges.bytesRead + (prefixCache?.stats.bytesRead ?? 0),
      h2dBytes: m.h2dBytes,
      kvDiskBytes: spill.bytesWritten + (prefixCache?.stats.bytesWritten ?? 0),
      ioWaitS: this.ioWaitS(),
      computeS: this.statsBase.computeS,
      diskBusyS: reader.stats.readBusyS,
      kvCacheHitTokens: this.statsBase.kvCacheHitTokens,
      expertLoads: streamer.expertStats?.loads ?? 0,
      expertHits: streamer.expertStats?.hits ?? 0,
    };
  }

  private ioWaitS(): number {
    const { streamer, stager } = this.engine;
    return streamer.stats.ioWaitS + (streamer.expertStats?.waitS ?? 0) + stager.stats.waitS;
  }

  /** The request's options over the model's generation_config.json defaults. */
  withDefaults(o: GenerateOptions): GenerateOptions {
    const d = this.defaults;
    return {
      temperature: d.temperature,
      topK: d.topK,
      topP: d.topP,
      minP: d.minP,
      repetitionPenalty: d.repetitionPenalty,
      ...stripUndefined(o),
    };
  }

  async close(): Promise<void> {
    await this.engine.close();
  }
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

export const loadModel = LayerwiseModel.load;

/** Loads a model, runs `fn` with it, and closes it whatever happens. */
export async function withModel<T>(dir: string, o: LoadOptions, fn: (m: LayerwiseModel) => Promise<T>): Promise<T> {
  const m = await LayerwiseModel.load(dir, o);
  try {
    return await fn(m);
  } finally {
    await m.close();
  }
}
