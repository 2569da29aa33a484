// Prompt encoding (chat template, then tokenizer) off the event loop and bounded: a text that cannot fit the context is
// refused by its size in bytes before anything runs; the rest runs in a child process with a time and a heap limit,
// killed and replaced when it breaks one, so a huge prompt never stalls a server and a hostile model folder ends in an
// error instead of a hang or a crash.
//
// Why a process and not a worker thread: a worker's resourceLimits did not hold against a template's
// `range(1000000000)` (Node 20: the heap grew past the limit and V8 aborted the whole process), and terminating a
// worker waits for the isolate to notice; a process dies alone, at once.
//
// Protocol, one request at a time: "load" -> "loaded" (or "error"); "encode" -> ["phase"] -> "encoded" |
// "text-too-long" | "error". The parent counts a job's time from sending it and knows from "phase" whether the
// template or the tokenizer was running when a limit was hit.
import { fork, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { BackendError, CacheError, CheckpointError, DiskFullError, LayerwiseError, UsageError } from "../errors.js";
import type { ChatMessage } from "./chat-template.js";

export interface PromptLimits {
  /** Longest one prompt may take to render and tokenize: timeMs plus timeMsPerMB for each MB of its text. */
  timeMs: number;
  timeMsPerMB: number;
  /** Heap of the encoder process (V8's --max-old-space-size). */
  memoryMb: number;
  /** Longest the encoder process may take to start and load the tokenizer. */
  loadTimeMs: number;
}

/** Far above what real models need (Llama 3's tokenizer: 100k tokens in under a second, 120 MB of heap). */
export const defaultPromptLimits: PromptLimits = {
  timeMs: 10_000,
  timeMsPerMB: 30_000,
  memoryMb: 2048,
  loadTimeMs: 120_000,
};

/** A chat template's output may exceed its messages by this much (system preambles, turn markers), and no more. */
const templateSlackBytes = 1 << 20;
const templateGrowth = 16;

export type SerializedError = { name: string; code?: string; message: string; hint?: string };
export type EncoderRequest =
  | { type: "load"; dir: string }
  | {
      type: "encode";
      text?: string;
      messages?: readonly ChatMessage[];
      specials?: TemplateSpecials;
      addSpecialTokens: boolean;
      maxTextBytes: number;
      maxIds: number;
    };
export type EncoderReply =
  | { type: "loaded"; maxTokenBytes: number | null }
  | { type: "phase"; phase: Phase }
  | { type: "encoded"; count: number; ids?: Uint32Array }
  | { type: "text-too-long"; bytes: number }
  | { type: "error"; error: SerializedError };

export interface TemplateSpecials {
  bos_token?: string;
  eos_token?: string;
}

export interface EncodeOptions {
  /** A prompt still waiting for the encoder when this fires is dropped (CANCELLED). */
  signal?: AbortSignal;
  /** Refuse (PROMPT_TOO_LONG) a prompt of more tokens than this; its ids then never cross back. */
  maxTokens?: number;
}

type Phase = "load" | "render" | "encode";
type Outcome = { reply: EncoderReply } | { timedOut: true } | { exited: string };

const errorClasses: Record<string, new (code: string, message: string, hint?: string) => LayerwiseError> = {
  UsageError,
  CheckpointError,
  BackendError,
  CacheError,
  DiskFullError,
};

export class PromptEncoder {
  private process?: EncoderProcess;
  private loaded?: Promise<{ maxTokenBytes: number | null }>;
  private readonly queue: (() => Promise<void>)[] = [];
  private running = false;
  private closed = false;

  private constructor(
    private readonly dir: string,
    private readonly maxPositions: number,
    private readonly limits: PromptLimits,
  ) {}

  /** An encoder for the model folder `dir`; its process starts with the first prompt (or `start`). */
  static open(dir: string, o: { maxPositions: number; limits?: Partial<PromptLimits> }): PromptEncoder {
    return new PromptEncoder(dir, o.maxPositions, { ...defaultPromptLimits, ...o.limits });
  }

  /** Starts the process and loads the tokenizer now, so the first prompt does not wait for it. */
  async start(): Promise<void> {
    await this.load();
  }

  /** Token ids of `text`, with the tokenizer's special tokens (BOS) unless told otherwise. */
  async encodeText(text: string, o: EncodeOptions & { addSpecialTokens?: boolean } = {}): Promise<number[]> {
    return this.encode({ text, addSpecialTokens: o.addSpecialTokens ?? true }, Buffer.byteLength(text), o);
  }

  /** Token ids of a conversation through the model's chat template (which writes its own special tokens). */
  async encodeMessages(
    messages: readonly ChatMessage[],
    specials: TemplateSpecials,
    o: EncodeOptions = {},
  ): Promise<number[]> {
    const bytes = messages.reduce((sum, m) => sum + Buffer.byteLength(m.content), 0);
    return this.encode({ messages, specials, addSpecialTokens: false }, bytes, o);
  }

  /** Ends the process; prompts still waiting fail with ENCODER_CLOSED. */
  close(): void {
    this.closed = true;
    this.process?.kill();
    this.process = undefined;
  }

  private async encode(
    job: { text?: string; messages?: readonly ChatMessage[]; specials?: TemplateSpecials; addSpecialTokens: boolean },
    inputBytes: number,
    o: EncodeOptions,
  ): Promise<number[]> {
    const { maxTokenBytes } = await this.load();
    // No token stands for more than maxTokenBytes bytes of text, so a longer text needs more tokens than the context holds.
    const maxTextBytes = maxTokenBytes === null ? Infinity : this.maxPositions * maxTokenBytes;
    if (inputBytes > maxTextBytes) throw tooManyBytes(inputBytes, maxTextBytes, this.maxPositions);
    const maxIds = o.maxTokens ?? Number.MAX_SAFE_INTEGER;
    const templateBytes = Math.min(maxTextBytes, templateGrowth * inputBytes + templateSlackBytes);
    const timeMs = this.limits.timeMs + (this.limits.timeMsPerMB * inputBytes) / 1e6;
    const outcome = await this.enqueue(o.signal, (p) =>
      p.request(
        { type: "encode", ...job, maxTextBytes: templateBytes, maxIds },
        timeMs,
        job.messages ? "render" : "encode",
      ),
    );
    if ("reply" in outcome) {
      const r = outcome.reply;
      if (r.type === "encoded") {
        if (r.count > maxIds || !r.ids) throw promptTooLong(r.count, this.maxPositions);
        return Array.from(r.ids);
      }
      if (r.type === "text-too-long") {
        if (r.bytes <= templateGrowth * inputBytes + templateSlackBytes)
          throw tooManyBytes(r.bytes, maxTextBytes, this.maxPositions, "the conversation through the chat template");
        throw new CheckpointError(
          "TEMPLATE_TOO_LARGE",
          `the chat template turned ${inputBytes} bytes of messages into more than ${templateBytes} bytes (at most ${templateGrowth}x + ${templateSlackBytes} allowed)`,
          templateHint,
        );
      }
      if (r.type === "error") throw revive(r.error, job.messages ? "render" : "encode");
      throw new Error(`unexpected encoder reply ${r.type}`);
    }
    if (this.closed) throw new LayerwiseError("ENCODER_CLOSED", "the model was closed before the prompt was encoded");
    throw this.breach(outcome, timeMs, inputBytes);
  }

  /** Runs `work` on the process once the jobs before it are done. */
  private enqueue(
    signal: AbortSignal | undefined,
    work: (p: EncoderProcess) => Promise<Outcome & { phase?: Phase }>,
  ): Promise<Outcome & { phase?: Phase }> {
    return new Promise((resolve, reject) => {
      this.queue.push(async () => {
        if (this.closed)
          return reject(new LayerwiseError("ENCODER_CLOSED", "the model was closed before the prompt was encoded"));
        if (signal?.aborted)
          return reject(new LayerwiseError("CANCELLED", "the request was cancelled before its prompt was encoded"));
        try {
          await this.load();
          resolve(await work(this.process!));
        } catch (e) {
          reject(e);
        }
      });
      void this.drainQueue();
    });
  }

  private async drainQueue(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      for (let next = this.queue.shift(); next; next = this.queue.shift()) await next();
    } finally {
      this.running = false;
    }
  }

  /** The running process, started and loaded if needed; a failed start is retried with the next prompt. */
  private load(): Promise<{ maxTokenBytes: number | null }> {
    if (this.closed)
      return Promise.reject(new LayerwiseError("ENCODER_CLOSED", "the model was closed before the prompt was encoded"));
    if (this.process?.alive && this.loaded) return this.loaded;
    const p = new EncoderProcess(this.limits.memoryMb);
    this.process = p;
    this.loaded = p.request({ type: "load", dir: this.dir }, this.limits.loadTimeMs, "load").then((outcome) => {
      if ("reply" in outcome && outcome.reply.type === "loaded") return { maxTokenBytes: outcome.reply.maxTokenBytes };
      p.kill();
      if ("reply" in outcome && outcome.reply.type === "error") throw revive(outcome.reply.error, "load");
      throw this.breach(outcome, this.limits.loadTimeMs, 0);
    });
    this.loaded.catch(() => {}); // a caller sees it; the next prompt starts a new process
    return this.loaded;
  }

  /** The error for a prompt that broke a limit; the process is gone (killed or dead) and the next prompt starts another. */
  private breach(outcome: Outcome & { phase?: Phase }, timeMs: number, inputBytes: number): LayerwiseError {
    this.process?.kill();
    const phase = outcome.phase ?? "encode";
    const what =
      phase === "render"
        ? "rendering the chat template"
        : phase === "load"
          ? "loading tokenizer.json"
          : `tokenizing ${inputBytes} bytes`;
    const code = `${phase === "render" ? "TEMPLATE" : "TOKENIZER"}_${"timedOut" in outcome ? "TOO_SLOW" : "TOO_LARGE"}`;
    const why =
      "timedOut" in outcome
        ? `took more than ${Math.round(timeMs)} ms`
        : `ended the encoder process (${(outcome as { exited: string }).exited}; its heap is ${this.limits.memoryMb} MB)`;
    return new CheckpointError(code, `${what} ${why}`, phase === "render" ? templateHint : tokenizerHint);
  }
}

/** A copy of `ids` after checking each is a whole number inside the vocabulary (typed arrays downstream would wrap others). */
export function checkTokenIds(ids: readonly number[], vocabSize: number): number[] {
  const out = new Array<number>(ids.length);
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i]!;
    if (!Number.isInteger(id) || id < 0 || id >= vocabSize) {
      throw new UsageError(
        "TOKEN_ID_OUT_OF_RANGE",
        `prompt id ${String(id).slice(0, 32)} at position ${i} is outside the vocabulary of ${vocabSize} (ids 0 to ${vocabSize - 1})`,
        "send token ids of this model's tokenizer",
      );
    }
    out[i] = id;
  }
  return out;
}

const templateHint =
  "the model folder's chat template (chat_template.jinja or tokenizer_config.json) is at fault: fix or replace it";
const tokenizerHint =
  "if short prompts fail too, the model folder's tokenizer.json is at fault: download it again or replace it";

export function promptTooLong(tokens: number, context: number): UsageError {
  return new UsageError(
    "PROMPT_TOO_LONG",
    `the prompt has ${tokens} tokens; the model's context is ${context}`,
    "shorten the prompt or pick a model with a longer context",
  );
}

function tooManyBytes(bytes: number, max: number, context: number, what = "the prompt"): UsageError {
  return new UsageError(
    "PROMPT_TOO_LONG",
    `${what} has ${bytes} bytes; at most ${max} bytes can fit the model's context of ${context} tokens`,
    "shorten the prompt or pick a model with a longer context",
  );
}

function revive(e: SerializedError, phase: Phase): LayerwiseError {
  const Class = errorClasses[e.name];
  if (Class && e.code) return new Class(e.code, e.message, e.hint);
  if (e.code) return new LayerwiseError(e.code, e.message, e.hint);
  // Anything else thrown by the template or tokenizer library is the model folder's doing.
  return phase === "render"
    ? new CheckpointError("CHAT_TEMPLATE_FAILED", `the chat template failed: ${e.message}`, templateHint)
    : new CheckpointError("TOKENIZER_FAILED", `the tokenizer failed: ${e.message}`, tokenizerHint);
}

/** The child process and its one request in flight. */
class EncoderProcess {
  private readonly child: ChildProcess;
  private stderrTail = "";
  private pending?: { settle: (o: Outcome & { phase?: Phase }) => void; phase: Phase };
  private exited = false;
  private killed = false;

  constructor(memoryMb: number) {
    this.child = fork(fileURLToPath(new URL("./prompt-encoder-process.js", import.meta.url)), [], {
      execArgv: [`--max-old-space-size=${memoryMb}`],
      serialization: "advanced",
      stdio: ["ignore", "ignore", "pipe", "ipc"],
    });
    this.child.stderr!.on("data", (d: Buffer) => (this.stderrTail = (this.stderrTail + d.toString()).slice(-2000)));
    this.child.on("message", (m: EncoderReply) => {
      if (m.type === "phase") {
        if (this.pending) this.pending.phase = m.phase;
      } else this.settle({ reply: m });
    });
    this.child.on("error", (e) => this.settle({ exited: e.message }));
    this.child.on("exit", (code, signal) => {
      this.exited = true;
      const oom = /heap out of memory|invalid (array|table|string) (length|size)|Allocation failed/i.test(
        this.stderrTail,
      );
      this.settle({ exited: oom ? "out of memory" : signal ? `signal ${signal}` : `exit code ${code}` });
    });
    this.setRef(false);
  }

  /** Sends one request; resolves with the reply, a timeout (the process is then killed) or the process's end. */
  request(m: EncoderRequest, timeMs: number, phase: Phase): Promise<Outcome & { phase?: Phase }> {
    if (!this.alive) return Promise.resolve({ exited: "not running", phase });
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        const at = this.pending?.phase;
        this.kill();
        this.settle({ timedOut: true }, at);
      }, timeMs);
      this.pending = {
        phase,
        settle: (o) => {
          clearTimeout(timer);
          resolve(o);
        },
      };
      this.setRef(true);
      try {
        this.child.send(m);
      } catch (e) {
        this.settle({ exited: (e as Error).message });
      }
    });
  }

  /** False from the moment it is killed, before the process has gone. */
  get alive(): boolean {
    return !this.exited && !this.killed;
  }

  kill(): void {
    if (this.alive) this.child.kill("SIGKILL");
    this.killed = true;
  }

  private settle(o: Outcome, phase?: Phase): void {
    const p = this.pending;
    if (!p) return;
    this.pending = undefined;
    this.setRef(false);
    p.settle({ ...o, phase: phase ?? p.phase });
  }

  /** Held only while a request is out: an idle encoder never keeps the program alive. */
  private setRef(on: boolean): void {
    const handles = [this.child, this.child.channel, this.child.stderr] as (
      { ref?: () => void; unref?: () => void } | null | undefined
    )[];
    for (const h of handles) (on ? h?.ref : h?.unref)?.call(h);
  }
}
