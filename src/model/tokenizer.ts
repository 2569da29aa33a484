// tokenizer.json through @huggingface/tokenizers, plus detokenization that streams text without splitting a character.
import { join } from "node:path";
import { Tokenizer } from "@huggingface/tokenizers";
import { z } from "zod";
import { CheckpointError } from "../errors.js";
import { readOptionalModelJson, readOptionalModelText, parseModelJson } from "./model-files.js";

const SpecialToken = z
  .union([z.string(), z.looseObject({ content: z.string() }), z.null()], {
    error: "must be a string, {content: string} or null",
  })
  .optional();

/** The keys of tokenizer_config.json that layerwise or the tokenizer library read; the rest pass through unchecked. */
export const TokenizerConfigSchema = z.looseObject({
  bos_token: SpecialToken,
  eos_token: SpecialToken,
  add_bos_token: z.boolean().nullish(),
  // transformers allows one template, or named ones of which "default" is used.
  chat_template: z
    .union([z.string(), z.array(z.object({ name: z.string(), template: z.string() }))], {
      error: "must be a string or a list of {name, template}",
    })
    .nullish(),
  additional_special_tokens: z
    .array(z.union([z.string(), z.looseObject({ content: z.string() })]), { error: "must be a list of tokens" })
    .nullish(),
  clean_up_tokenization_spaces: z.boolean().nullish(),
  remove_space: z.boolean().nullish(),
  do_lowercase_and_remove_accent: z.boolean().nullish(),
});

export interface TokenizerConfig {
  bos_token?: string | { content: string } | null;
  eos_token?: string | { content: string } | null;
  add_bos_token?: boolean | null;
  chat_template?: string | { name: string; template: string }[] | null;
  [key: string]: unknown;
}

/** tokenizer_config.json checked against what layerwise and the tokenizer library read from it. */
export function parseTokenizerConfig(raw: Record<string, unknown>, file: string): TokenizerConfig {
  const parsed = TokenizerConfigSchema.safeParse(raw);
  if (!parsed.success) {
    const problems = parsed.error.issues
      .slice(0, 5)
      .map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`)
      .join("; ");
    throw new CheckpointError(
      "TOKENIZER_CONFIG_INVALID",
      `${file}: ${problems}`,
      "compare it with the model's original tokenizer_config.json, or download it again",
    );
  }
  return parsed.data as TokenizerConfig;
}

/** The parts of tokenizer.json read before the library sees it: every token id it can produce, with its text. */
const TokenizerJsonSchema = z.looseObject({
  model: z.looseObject({
    vocab: z
      .union([
        z.record(z.string(), z.number().int().nonnegative()),
        z.array(z.tuple([z.string(), z.number()]).rest(z.unknown())),
      ])
      .optional(),
  }),
  added_tokens: z
    .array(z.looseObject({ id: z.number().int().nonnegative(), content: z.string(), special: z.boolean().optional() }))
    .default([]),
});

/** The largest token id of a checked tokenizer.json and its text. */
function largestId(json: z.infer<typeof TokenizerJsonSchema>): { id: number; token: string } {
  let best = { id: -1, token: "" };
  const vocab = json.model.vocab;
  if (Array.isArray(vocab)) {
    if (vocab.length > 0) best = { id: vocab.length - 1, token: vocab[vocab.length - 1]![0] }; // Unigram: ids are positions
  } else if (vocab) {
    for (const [token, id] of Object.entries(vocab)) if (id > best.id) best = { id, token };
  }
  for (const t of json.added_tokens) if (t.id > best.id) best = { id: t.id, token: t.content };
  return best;
}

export interface TokenizerLoadOptions {
  /** The model's vocab_size: a tokenizer that can produce an id at or past it is refused (the embedding has no row for it). */
  vocabSize?: number;
}

export class TextTokenizer {
  private constructor(
    private readonly tokenizer: Tokenizer,
    readonly config: TokenizerConfig,
    readonly vocabSize: number,
    private readonly specialIds: ReadonlySet<number>,
    /** Text of any length can become one token (unknown words, fused unknown characters): no byte count bounds tokens. */
    private readonly unboundedTokens: boolean,
  ) {}

  private longestToken?: number;

  /**
   * The most bytes of text one token stands for, as its vocabulary spells it (byte-level and "▁" spellings take more
   * bytes than the text they stand for, so this errs long); null where text of any length can become one token. Only
   * the prompt encoder asks, so it is counted then (a large vocabulary takes tens of milliseconds).
   */
  get maxTokenBytes(): number | null {
    if (this.unboundedTokens) return null;
    // An unknown character (up to 4 bytes) may become one short unknown token.
    if (this.longestToken === undefined) {
      let longest = 4;
      for (const token of this.tokenizer.get_vocab(true).keys()) longest = Math.max(longest, Buffer.byteLength(token));
      this.longestToken = longest;
    }
    return this.longestToken;
  }

  static async load(dir: string, o: TokenizerLoadOptions = {}): Promise<TextTokenizer> {
    const file = join(dir, "tokenizer.json");
    const text = await readOptionalModelText(file, "tokenizer");
    if (text === undefined) {
      throw new CheckpointError(
        "TOKENIZER_MISSING",
        `${file} does not exist`,
        "layerwise needs the fast tokenizer file tokenizer.json; download it with the model (tokenizer.model alone is not enough)",
      );
    }
    const raw = parseModelJson(file, "tokenizer", text);
    const checked = TokenizerJsonSchema.safeParse(raw);
    if (!checked.success) {
      const problems = checked.error.issues
        .slice(0, 3)
        .map((i) => `${i.path.slice(0, 4).join(".") || "(root)"}: ${i.message}`)
        .join("; ");
      throw new CheckpointError(
        "TOKENIZER_INVALID",
        `${file} is not a tokenizer: ${problems}`,
        "download tokenizer.json again",
      );
    }
    const largest = largestId(checked.data);
    if (o.vocabSize !== undefined && largest.id >= o.vocabSize) {
      throw new CheckpointError(
        "TOKENIZER_VOCAB_MISMATCH",
        `${file} has token id ${largest.id} (${JSON.stringify(largest.token.slice(0, 100))}), but config.json's vocab_size is ${o.vocabSize}: the model has no embedding for it`,
        "the tokenizer does not belong to these weights; use the tokenizer files that came with the model",
      );
    }
    const configFile = join(dir, "tokenizer_config.json");
    const config = parseTokenizerConfig(
      (await readOptionalModelJson(configFile, "tokenizer_config")) ?? {},
      configFile,
    );
    let tokenizer: Tokenizer;
    try {
      tokenizer = new Tokenizer(raw, config);
    } catch (e) {
      throw new CheckpointError(
        "TOKENIZER_INVALID",
        `${file} could not be loaded: ${String((e as Error)?.message ?? e).slice(0, 300)}`,
        "download tokenizer.json again",
      );
    }
    const special = new Set(checked.data.added_tokens.filter((t) => t.special).map((t) => t.id));
    return new TextTokenizer(
      tokenizer,
      config,
      tokenizer.get_vocab(true).size,
      special,
      unboundedTokens((raw as TokenizerJson).model ?? {}),
    );
  }

  /** Token ids of `text`; with `addSpecialTokens` the tokenizer's post-processor adds BOS (as HF does). */
  encode(text: string, addSpecialTokens = true): number[] {
    return this.tokenizer.encode(text, { add_special_tokens: addSpecialTokens }).ids;
  }

  decode(ids: readonly number[], skipSpecialTokens = true): string {
    if (ids.length === 0) return "";
    return this.tokenizer.decode([...ids], { skip_special_tokens: skipSpecialTokens });
  }

  tokenId(token: string): number | undefined {
    return this.tokenizer.token_to_id(token);
  }

  isSpecial(id: number): boolean {
    return this.specialIds.has(id);
  }

  /** A named special token of tokenizer_config.json ("bos_token", "eos_token") as text. */
  specialToken(key: "bos_token" | "eos_token"): string | undefined {
    const t = this.config[key];
    return typeof t === "string" ? t : (t?.content ?? undefined);
  }
}

/** Prompt ids the detokenizer decodes before the new ones: enough for a word's pieces. */
const contextTokens = 6;

/**
 * Turns a growing list of token ids into text pieces. Decoding ids one by one would break words (leading spaces,
 * byte-fallback pieces of one character), so each step decodes a short window and emits only what is new and complete.
 */
export class StreamingDetokenizer {
  private readonly ids: number[];
  private prefixOffset = 0;
  private readOffset: number;

  /**
   * `context`: the ids before the first one pushed (the prompt). Its last few are decoded with the new ids, so a
   * continuation's first word keeps its leading space (SentencePiece decoders strip the space of a text's first word).
   */
  constructor(
    private readonly tokenizer: TextTokenizer,
    context: readonly number[] = [],
  ) {
    this.ids = context.slice(-contextTokens);
    this.readOffset = this.ids.length;
  }

  /** Adds one id; returns the text it completes (possibly ""). */
  push(id: number): string {
    this.ids.push(id);
    const prefix = this.tokenizer.decode(this.ids.slice(this.prefixOffset, this.readOffset));
    const full = this.tokenizer.decode(this.ids.slice(this.prefixOffset));
    // An incomplete UTF-8 sequence decodes to U+FFFD: wait for the ids that finish it.
    if (full.length <= prefix.length || full.endsWith("\uFFFD")) return "";
    this.prefixOffset = this.readOffset;
    this.readOffset = this.ids.length;
    return full.slice(prefix.length);
  }

  /** Whatever is still held back (an incomplete character at the very end). */
  flush(): string {
    const prefix = this.tokenizer.decode(this.ids.slice(this.prefixOffset, this.readOffset));
    const full = this.tokenizer.decode(this.ids.slice(this.prefixOffset));
    this.prefixOffset = this.readOffset = this.ids.length;
    return full.slice(prefix.length);
  }
}

interface TokenizerJson {
  model?: TokenizerModelJson;
}

interface TokenizerModelJson {
  type?: string;
  unk_token?: string | null;
  unk_id?: number | null;
  fuse_unk?: boolean;
  byte_fallback?: boolean;
}

/** Whether a model can turn text of any length into one token (unknown words, fused unknown characters). */
function unboundedTokens(m: TokenizerModelJson): boolean {
  if (m.type === "WordPiece" || m.type === "WordLevel") return true;
  const hasUnk =
    m.type === "Unigram"
      ? m.unk_id !== undefined && m.unk_id !== null
      : m.unk_token !== undefined && m.unk_token !== null;
  return hasUnk && !m.byte_fallback && (m.type === "Unigram" || m.fuse_unk === true);
}
