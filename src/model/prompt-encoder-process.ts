// The prompt encoder's own process: renders the chat template and tokenizes, so that a hostile template or tokenizer
// (endless loops, billion-element ranges, catastrophic regexes) can only use up this process, which PromptEncoder
// kills past its time limit and V8 ends past its heap limit. Protocol: see prompt-encoder.ts.
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
new Worker(
  `const parent = process.ppid; setInterval(() => process.ppid !== parent && process.kill(process.pid, "SIGKILL"), 500);`,
  { eval: true },
).unref();
process.on("message", (m: EncoderRequest) => {
  void handle(m).catch((e: unknown) => send({ type: "error", error: serialize(e) }));
});

async function handle(m: EncoderRequest): Promise<void> {
  if (m.type === "load") {
    tokenizer = await TextTokenizer.load(m.dir);
    template = await ChatTemplate.load(m.dir, tokenizer.config);
    return send({ type: "loaded", maxTokenBytes: tokenizer.maxTokenBytes });
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
  return send(
    ids.length > m.maxIds
      ? { type: "encoded", count: ids.length }
      : { type: "encoded", count: ids.length, ids: Uint32Array.from(ids) },
  );
}

function serialize(e: unknown): SerializedError {
  if (e instanceof LayerwiseError) return { name: e.name, code: e.code, message: e.message, hint: e.hint };
  return { name: "Error", message: e instanceof Error ? e.message : String(e) };
}
