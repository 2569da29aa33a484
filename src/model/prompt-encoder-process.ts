// The prompt encoder's own process: renders the chat template and tokenizes, so that a hostile template or tokenizer
// (endless loops, billion-element ranges, catastrophic regexes) can only use up this process, which PromptEncoder
// kills past its time limit and V8 ends past its heap limit. Protocol: see prompt-encoder.ts.
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { Worker } from "node:worker_threads";
import { LayerwiseError } from "../errors.js";
import { ChatTemplate } from "./chat-template.js";
import type { EncoderReply, EncoderRequest, SerializedError } from "./prompt-encoder.js";
import { TextTokenizer } from "./tokenizer.js";

let tokenizer: TextTokenizer | undefined;
let template: ChatTemplate | undefined;

/** Sends and waits until the message is written, so a phase is known even if the work after it never returns. */
const send = (m: EncoderReply) => new Promise<void>((resolve) => process.send!(m, undefined, {}, () => resolve()));

process.on("disconnect", () => process.exit(0)); // the parent is gone
// The same when this thread is stuck in a template or regex that never yields: a thread of its own watches the parent.
new Worker(`const parent = process.ppid; setInterval(() => process.ppid !== parent && process.kill(process.pid, "SIGKILL"), 500);`, { eval: true }).unref();
process.on("message", (m: EncoderRequest) => {
  void handle(m).catch((e: unknown) => send({ type: "error", error: serialize(e) }));
});

async function handle(m: EncoderRequest): Promise<void> {
  if (m.type === "load") {
    tokenizer = await TextTokenizer.load(m.dir);
    template = await ChatTemplate.load(m.dir, tokenizer.config);
    return send({ type: "loaded", maxTokenBytes: longestTokenBytes(JSON.parse(await readFile(join(m.dir, "tokenizer.json"), "utf8"))) });
  }
  if (!tokenizer) throw new Error("encode before load");
  let text: string;
  if (m.messages) {
    if (!template) throw new Error("no chat template");
    text = template.render(m.messages, m.specials ?? {});
    const bytes = Buffer.byteLength(text);
    if (bytes > m.maxTextBytes) return send({ type: "text-too-long", bytes });
    await send({ type: "phase", phase: "encode" });
  } else text = m.text ?? "";
  const ids = tokenizer.encode(text, m.addSpecialTokens);
  // Past the limit only the count crosses back: the caller refuses the prompt anyway.
  return send(ids.length > m.maxIds ? { type: "encoded", count: ids.length } : { type: "encoded", count: ids.length, ids: Uint32Array.from(ids) });
}

function serialize(e: unknown): SerializedError {
  if (e instanceof LayerwiseError) return { name: e.name, code: e.code, message: e.message, hint: e.hint };
  return { name: "Error", message: e instanceof Error ? e.message : String(e) };
}

interface TokenizerJson {
  model?: { type?: string; vocab?: Record<string, number> | [string, number][]; unk_token?: string | null; unk_id?: number | null; fuse_unk?: boolean; byte_fallback?: boolean };
  added_tokens?: { content?: string }[];
}

/**
 * The most bytes of text one token can stand for, as its vocabulary spells it (byte-level and "▁" spellings take more
 * bytes than the text they stand for, so this errs long); null when a model can turn text of any length into one token
 * (unknown words, fused unknown characters), where no byte count bounds the tokens.
 */
function longestTokenBytes(json: TokenizerJson): number | null {
  const m = json.model ?? {};
  if (m.type === "WordPiece" || m.type === "WordLevel") return null;
  const hasUnk = m.type === "Unigram" ? m.unk_id !== undefined && m.unk_id !== null : m.unk_token !== undefined && m.unk_token !== null;
  if (hasUnk && !m.byte_fallback && (m.type === "Unigram" || m.fuse_unk)) return null;
  const tokens = Array.isArray(m.vocab) ? m.vocab.map(([t]) => t) : Object.keys(m.vocab ?? {});
  let longest = 4; // an unknown character (up to 4 bytes) may become one short unknown token
  for (const t of tokens) longest = Math.max(longest, Buffer.byteLength(t));
  for (const t of json.added_tokens ?? []) longest = Math.max(longest, Buffer.byteLength(t.content ?? ""));
  return longest;
}
