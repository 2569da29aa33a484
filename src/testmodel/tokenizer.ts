// A byte-level BPE tokenizer.json (the GPT-2 / Llama 3 / Qwen family) with exactly the vocabulary size a preset needs.
import type { TokenizerStyle } from "./presets.js";

// Merges are learned from this text first, so English prompts become multi-byte tokens as with a real tokenizer.
const corpus = `Once upon a time, in a small town near the sea, there lived a girl who loved to read. Every morning she
walked to the library, and every evening she told her brother the stories she had found. The library was old and quiet;
its shelves held books about ships, stars, numbers and the history of the world. One day the librarian gave her a
letter that had been hidden in a book for a hundred years. It said: "The answer is in the last chapter." She read the
last chapter again and again, and at the end of the summer she understood what the writer meant. Knowledge is a long
road, and the people who walk it together go further than those who walk alone. The model reads the document, then it
answers the question. Summarize the report in three sentences. What is the main result of the experiment? The results
show that the system is faster, uses less memory, and gives the same answers as the reference implementation.`;

/** GPT-2's reversible map from bytes to printable characters. */
export function byteToUnicode(): string[] {
  const printable: number[] = [];
  for (let b = 33; b <= 126; b++) printable.push(b);
  for (let b = 161; b <= 172; b++) printable.push(b);
  for (let b = 174; b <= 255; b++) printable.push(b);
  const table: string[] = new Array(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) table[b] = String.fromCodePoint(printable.includes(b) ? b : 256 + extra++);
  return table;
}

const pretokenize = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

function learnMerges(maxMerges: number, bytes: string[]): [string, string][] {
  const encoder = new TextEncoder();
  const words = new Map<string, number>();
  for (const w of corpus.match(pretokenize) ?? []) words.set(w, (words.get(w) ?? 0) + 1);
  const split = [...words].map(([w, count]) => ({ symbols: [...encoder.encode(w)].map((b) => bytes[b]!), count }));
  const merges: [string, string][] = [];
  while (merges.length < maxMerges) {
    const pairs = new Map<string, number>();
    for (const { symbols, count } of split) {
      for (let i = 0; i + 1 < symbols.length; i++) {
        const key = `${symbols[i]}\u0000${symbols[i + 1]}`;
        pairs.set(key, (pairs.get(key) ?? 0) + count);
      }
    }
    let best: string | undefined;
    let bestCount = 1;
    for (const [key, count] of pairs)
      if (count > bestCount || (count === bestCount && best !== undefined && key < best))
        [best, bestCount] = [key, count];
    if (!best) break;
    const [a, b] = best.split("\u0000") as [string, string];
    merges.push([a, b]);
    for (const w of split) {
      const out: string[] = [];
      for (let i = 0; i < w.symbols.length; i++) {
        if (i + 1 < w.symbols.length && w.symbols[i] === a && w.symbols[i + 1] === b) {
          out.push(a + b);
          i++;
        } else out.push(w.symbols[i]!);
      }
      w.symbols = out;
    }
  }
  return merges;
}

export interface SpecialTokens {
  readonly names: readonly string[];
  readonly bos?: string;
  readonly eos: readonly string[];
  /** The chat turn's end token, the stop for chat. */
  readonly eot: string;
}

export function specialTokens(style: TokenizerStyle, count: number): SpecialTokens {
  const named = {
    llama3: [
      "<|begin_of_text|>",
      "<|end_of_text|>",
      "<|reserved_special_token_0|>",
      "<|reserved_special_token_1|>",
      "<|finetune_right_pad_id|>",
      "<|step_id|>",
      "<|start_header_id|>",
      "<|end_header_id|>",
      "<|eom_id|>",
      "<|eot_id|>",
      "<|python_tag|>",
    ],
    chatml: [
      "<|endoftext|>",
      "<|im_start|>",
      "<|im_end|>",
      "<|object_ref_start|>",
      "<|object_ref_end|>",
      "<|box_start|>",
      "<|box_end|>",
      "<|quad_start|>",
      "<|quad_end|>",
    ],
    gemma: ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>"],
    harmony: [
      "<|startoftext|>",
      "<|endoftext|>",
      "<|return|>",
      "<|constrain|>",
      "<|channel|>",
      "<|start|>",
      "<|end|>",
      "<|message|>",
      "<|call|>",
    ],
  }[style];
  const names = [...named];
  for (let i = 0; names.length < count; i++)
    names.push(
      style === "llama3"
        ? `<|reserved_special_token_${i + 2}|>`
        : style === "gemma"
          ? `<unused${i}>`
          : `<|extra_${i}|>`,
    );
  const special = {
    llama3: { bos: "<|begin_of_text|>", eos: ["<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"], eot: "<|eot_id|>" },
    chatml: { eos: ["<|endoftext|>", "<|im_end|>"], eot: "<|im_end|>" },
    gemma: { bos: "<bos>", eos: ["<eos>", "<end_of_turn>"], eot: "<end_of_turn>" },
    harmony: { eos: ["<|return|>", "<|endoftext|>", "<|call|>"], eot: "<|return|>" },
  }[style];
  return { names: names.slice(0, count), ...special };
}

export const chatTemplates: Record<TokenizerStyle, string> = {
  gemma:
    "{{- bos_token }}{%- for message in messages %}{{- '<start_of_turn>' + ('model' if message['role'] == 'assistant' else message['role']) + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{- '<start_of_turn>model\\n' }}{%- endif %}",
  llama3:
    "{{- bos_token }}{%- for message in messages %}{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{%- endfor %}{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}",
  // The harmony format's message frames (gpt-oss), without the system preamble and tool sections of the real template.
  harmony:
    "{%- for message in messages %}{{- '<|start|>' + message['role'] + ('<|channel|>final' if message['role'] == 'assistant' else '') + '<|message|>' + message['content'] + '<|end|>' }}{%- endfor %}{%- if add_generation_prompt %}{{- '<|start|>assistant' }}{%- endif %}",
  chatml:
    "{%- for message in messages %}{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}",
};

/** tokenizer.json with `vocabSize` ids: 256 byte tokens, merges (learned, then synthetic), then the special tokens. */
export function makeTokenizerJson(
  style: TokenizerStyle,
  vocabSize: number,
  specials: SpecialTokens,
  mergeFormat: "arrays" | "strings" = "arrays",
): object {
  const bytes = byteToUnicode();
  const regular = vocabSize - specials.names.length;
  const vocab = new Map<string, number>(bytes.map((b, i) => [b, i]));
  const merges: [string, string][] = [];
  const add = (a: string, b: string) => {
    if (vocab.has(a + b) || vocab.size >= regular) return;
    vocab.set(a + b, vocab.size);
    merges.push([a, b]);
  };
  for (const [a, b] of learnMerges(regular - 256, bytes)) add(a, b);
  // Synthetic merges fill the rest: printable tokens followed by each printable ASCII byte, so random models print text.
  const printable = bytes.slice(32, 127);
  const isPrintable = (t: string) => [...t].every((ch) => printable.includes(ch));
  const tokens: string[] = [];
  let scanned = 0;
  const collect = () => {
    const keys = [...vocab.keys()];
    for (; scanned < keys.length; scanned++) if (isPrintable(keys[scanned]!)) tokens.push(keys[scanned]!);
  };
  for (let i = 0; vocab.size < regular; i++) {
    if (i >= tokens.length) collect();
    for (const b of printable) add(tokens[i]!, b);
  }
  const addedTokens = specials.names.map((content, i) => ({
    id: regular + i,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  }));
  const byteLevel = { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true };
  const postProcessor =
    specials.bos === undefined
      ? { type: "ByteLevel", add_prefix_space: false, trim_offsets: false, use_regex: false }
      : {
          type: "TemplateProcessing",
          single: [{ SpecialToken: { id: specials.bos, type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
          pair: [
            { SpecialToken: { id: specials.bos, type_id: 0 } },
            { Sequence: { id: "A", type_id: 0 } },
            { SpecialToken: { id: specials.bos, type_id: 1 } },
            { Sequence: { id: "B", type_id: 1 } },
          ],
          special_tokens: {
            [specials.bos]: {
              id: specials.bos,
              ids: [regular + specials.names.indexOf(specials.bos)],
              tokens: [specials.bos],
            },
          },
        };
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: addedTokens,
    normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: postProcessor,
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab: Object.fromEntries(vocab),
      merges: mergeFormat === "arrays" ? merges : merges.map(([a, b]) => `${a} ${b}`),
    },
  };
}
