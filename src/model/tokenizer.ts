// tokenizer.json through @huggingface/tokenizers, plus detokenization that streams text without splitting a character.
import { join } from "node:path";
import { Tokenizer } from "@huggingface/tokenizers";
import { CheckpointError } from "../errors.js";
import { parseModelJson, readOptionalModelJson, readOptionalModelText } from "./model-files.js";

export interface TokenizerConfig {
  bos_token?: string | { content: string } | null;
  eos_token?: string | { content: string } | null;
  add_bos_token?: boolean;
  chat_template?: string | { name: string; template: string }[];
  [key: string]: unknown;
}

export class TextTokenizer {
  private constructor(
    private readonly tokenizer: Tokenizer,
    readonly config: TokenizerConfig,
    readonly vocabSize: number,
    private readonly specialIds: ReadonlySet<number>,
  ) {}

  static async load(dir: string): Promise<TextTokenizer> {
    const file = join(dir, "tokenizer.json");
    const text = await readOptionalModelText(file, "tokenizer");
    if (text === undefined) {
      throw new CheckpointError("TOKENIZER_MISSING", `${file} does not exist`, "layerwise needs the fast tokenizer file tokenizer.json; download it with the model (tokenizer.model alone is not enough)");
    }
    const json = parseModelJson(file, "tokenizer", text) as { added_tokens?: { id: number; special?: boolean }[]; model?: { vocab?: unknown } };
    const config = ((await readOptionalModelJson(join(dir, "tokenizer_config.json"), "tokenizer_config")) ?? {}) as TokenizerConfig;
    let tokenizer: Tokenizer;
    try {
      tokenizer = new Tokenizer(json, config);
    } catch (e) {
      throw new CheckpointError("TOKENIZER_INVALID", `${file} could not be loaded: ${(e as Error).message}`, "download tokenizer.json again");
    }
    const special = new Set((json.added_tokens ?? []).filter((t) => t.special).map((t) => t.id));
    return new TextTokenizer(tokenizer, config, tokenizer.get_vocab(true).size, special);
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
