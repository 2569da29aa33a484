// The library's entry point: a loaded model folder that generates text and exposes logits.
import { createArchModel } from "../arch/index.js";
import type { ArchModel } from "../arch/types.js";
import { createBackend, type BackendName } from "../backend/index.js";
import type { DType } from "../backend/dtype.js";
import type { Backend } from "../backend/ops.js";
import { UsageError } from "../errors.js";
import { ChatTemplate, type ChatMessage } from "../model/chat-template.js";
import { Checkpoint } from "../model/checkpoint.js";
import { readGenerationDefaults, type GenerationDefaults } from "../model/generation-config.js";
import { TextTokenizer } from "../model/tokenizer.js";
import { forward } from "./forward.js";
import { generateText, generateTokens, type GenerateOptions, type GenerationResult, type TokenStats } from "./generate.js";
import { KvCache } from "./kv-cache.js";
import { loadResidentWeights, validateWeights, type WeightSource } from "./weights.js";

export interface LoadOptions {
  backend?: BackendName;
  /** Element type of the KV cache; default f32 on the CPU backend. */
  kvDtype?: DType;
  /** Tokens per KV cache block. */
  kvBlockTokens?: number;
}

export type Prompt = string | { messages: readonly ChatMessage[] } | { ids: readonly number[] };

/** A conversation's state on the model: the tokens it has seen and their KV cache. */
export class Sequence {
  readonly tokens: number[] = [];

  constructor(readonly cache: KvCache) {}

  get length(): number {
    return this.tokens.length;
  }

  /** Forgets everything from token `length` on. */
  rewind(length: number): void {
    this.tokens.length = Math.min(length, this.tokens.length);
    this.cache.truncate(this.tokens.length);
  }

  dispose(): void {
    this.cache.free();
  }
}

export class LayerwiseModel {
  private constructor(
    readonly dir: string,
    readonly modelType: string,
    readonly arch: ArchModel,
    readonly checkpoint: Checkpoint,
    readonly tokenizer: TextTokenizer,
    readonly chatTemplate: ChatTemplate | undefined,
    readonly defaults: GenerationDefaults,
    readonly backend: Backend,
    private readonly weights: WeightSource,
    private readonly o: Required<Pick<LoadOptions, "kvDtype" | "kvBlockTokens">>,
    /** Why the backend was chosen, when `auto` fell back. */
    readonly backendNote?: string,
  ) {}

  static async load(dir: string, o: LoadOptions = {}): Promise<LayerwiseModel> {
    const checkpoint = await Checkpoint.open(dir);
    try {
      const { model: arch } = createArchModel(checkpoint.rawConfig, `${dir}/config.json`);
      validateWeights(checkpoint, arch);
      const tokenizer = await TextTokenizer.load(dir);
      const chatTemplate = await ChatTemplate.load(dir, tokenizer.config);
      const defaults = await readGenerationDefaults(dir, checkpoint.rawConfig);
      const { backend, note } = await createBackend(o.backend ?? "auto");
      const weights = await loadResidentWeights(backend, checkpoint, arch);
      const modelType = String(checkpoint.rawConfig.model_type);
      const kv = { kvDtype: o.kvDtype ?? "f32", kvBlockTokens: o.kvBlockTokens ?? 256 };
      return new LayerwiseModel(dir, modelType, arch, checkpoint, tokenizer, chatTemplate, defaults, backend, weights, kv, note);
    } catch (e) {
      await checkpoint.close();
      throw e;
    }
  }

  get maxPositions(): number {
    return this.arch.shape.maxPositions;
  }

  createSequence(): Sequence {
    return new Sequence(new KvCache(this.backend, this.arch.shape, this.o.kvBlockTokens, this.o.kvDtype));
  }

  /** Feeds `ids` after what `seq` holds; logits [rows * vocab] of the last id, or of every id with `all`. */
  async forward(seq: Sequence, ids: readonly number[], logits: "last" | "all" = "last"): Promise<Float32Array> {
    if (seq.length + ids.length > this.maxPositions) {
      throw new UsageError("CONTEXT_FULL", `${seq.length} + ${ids.length} tokens exceed the model's context of ${this.maxPositions}`);
    }
    const [out] = await forward(this.backend, this.arch, this.weights, [{ cache: seq.cache, ids }], logits);
    seq.tokens.push(...ids);
    return out!;
  }

  /** Token ids for a prompt: text gets the tokenizer's special tokens (BOS), messages go through the chat template. */
  encodePrompt(prompt: Prompt): number[] {
    if (typeof prompt === "string") return this.tokenizer.encode(prompt);
    if ("ids" in prompt) return [...prompt.ids];
    if (!this.chatTemplate) throw new UsageError("NO_CHAT_TEMPLATE", `${this.dir} has no chat template`, "use a plain prompt (layerwise run) or an instruct model");
    const text = this.chatTemplate.render(prompt.messages, { bos_token: this.tokenizer.specialToken("bos_token"), eos_token: this.tokenizer.specialToken("eos_token") });
    return this.tokenizer.encode(text, false);
  }

  /** Generated token ids, one at a time, on a fresh sequence (or `seq`, continuing it). */
  generateTokens(promptIds: readonly number[], o: GenerateOptions = {}, seq?: Sequence): AsyncGenerator<number, TokenStats, boolean | undefined> {
    const sequence = seq ?? this.createSequence();
    const stepper = {
      maxPositions: this.maxPositions - sequence.length,
      eosTokenIds: this.defaults.eosTokenIds,
      step: (ids: readonly number[]) => this.forward(sequence, ids),
    };
    const inner = generateTokens(stepper, promptIds, this.withDefaults(o));
    if (seq) return inner;
    return (async function* () {
      try {
        return yield* inner;
      } finally {
        sequence.dispose();
      }
    })();
  }

  /** Streams text pieces; `for await (const piece of model.generate(prompt))`. The generator's return value is the full result. */
  generate(prompt: Prompt, o: GenerateOptions = {}, seq?: Sequence): AsyncGenerator<string, GenerationResult> {
    return generateText(this.tokenizer, this.generateTokens(this.encodePrompt(prompt), o, seq), o);
  }

  /** Generates to the end and returns text, tokens and timings; `onText` sees each piece as it comes. */
  async complete(prompt: Prompt, o: GenerateOptions & { onText?: (piece: string) => void } = {}, seq?: Sequence): Promise<GenerationResult> {
    const it = this.generate(prompt, o, seq);
    for (;;) {
      const r = await it.next();
      if (r.done) return r.value;
      o.onText?.(r.value);
    }
  }

  private withDefaults(o: GenerateOptions): GenerateOptions {
    const d = this.defaults;
    return { temperature: d.temperature, topK: d.topK, topP: d.topP, minP: d.minP, repetitionPenalty: d.repetitionPenalty, ...stripUndefined(o) };
  }

  async close(): Promise<void> {
    this.weights.dispose();
    await this.backend.dispose();
    await this.checkpoint.close();
  }
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

export const loadModel = LayerwiseModel.load;
