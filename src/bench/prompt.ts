// Writes a prompt file of (about) exactly N tokens for a model's tokenizer: words from a small vocabulary, trimmed.
// Usage: node dist/src/bench/prompt.js MODEL_DIR TOKENS OUT_FILE
import { writeFileSync } from "node:fs";
import { TextTokenizer } from "../model/tokenizer.js";
import { Random } from "../util/random.js";

export async function promptOfTokens(dir: string, tokens: number, seed = 1): Promise<string> {
  const t = await TextTokenizer.load(dir);
  const words =
    "the a model reads long document and answers question about report results system memory faster same reference".split(
      " ",
    );
  const r = new Random(seed);
  const parts: string[] = [];
  let text = "";
  // Grow in batches, then trim by whole words until the count fits.
  while (t.encode(text).length < tokens) {
    for (let i = 0; i < Math.max(64, (tokens - t.encode(text).length) / 2); i++)
      parts.push(words[Math.floor(r.next() * words.length)]!);
    text = parts.join(" ");
  }
  let lo = 0;
  let hi = parts.length;
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (t.encode(parts.slice(0, mid).join(" ")).length <= tokens) lo = mid;
    else hi = mid - 1;
  }
  return parts.slice(0, lo).join(" ");
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const [dir, n, out] = process.argv.slice(2);
  writeFileSync(out!, await promptOfTokens(dir!, Number(n)));
}
