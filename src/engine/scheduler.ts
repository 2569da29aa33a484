// Continuous batching: requests join a running batch as others finish; each decode step is one pass over the layers
// for every active sequence, so streamed weights serve the whole batch. Prompts are prefilled one at a time on admission.
import { LayerwiseError } from "../errors.js";
import { Generation, TextStream, type FinishReason, type GenerateOptions, type GenerationResult } from "./generate.js";
import type { LayerwiseModel, Sequence } from "./model.js";
import type { RankedLogits } from "./sampling.js";

export interface Job {
  promptIds: readonly number[];
  options: GenerateOptions;
  /** Each piece of text as it is generated. */
  onText?: (piece: string) => void;
}

export interface SchedulerStats {
  queued: number;
  active: number;
  completed: number;
  promptTokens: number;
  generatedTokens: number;
}

interface Active {
  readonly job: Job;
  readonly seq: Sequence;
  readonly gen: Generation;
  readonly text: TextStream;
  readonly resolve: (r: GenerationResult) => void;
  readonly reject: (e: unknown) => void;
  pending?: number;
}

interface Waiting {
  readonly job: Job;
  readonly resolve: (r: GenerationResult) => void;
  readonly reject: (e: unknown) => void;
}

export class Scheduler {
  private readonly queue: Waiting[] = [];
  private readonly active: Active[] = [];
  private running?: Promise<void>;
  private closed = false;
  readonly counters = { completed: 0, promptTokens: 0, generatedTokens: 0 };

  constructor(
    private readonly model: LayerwiseModel,
    private readonly o: { maxBatch: number },
  ) {}

  /** Queues a request; resolves with its result (finish reason "abort" when its signal fired). */
  submit(job: Job): Promise<GenerationResult> {
    if (this.closed)
      return Promise.reject(
        new LayerwiseError("SHUTTING_DOWN", "the server is shutting down and takes no new requests"),
      );
    return new Promise((resolve, reject) => {
      this.queue.push({ job, resolve, reject });
      this.running ??= this.loop().finally(() => (this.running = undefined));
    });
  }

  stats(): SchedulerStats {
    return { queued: this.queue.length, active: this.active.length, ...this.counters };
  }

  /** Stops taking requests; resolves when the ones already taken have finished. */
  async drain(): Promise<void> {
    this.closed = true;
    await this.running;
  }

  private async loop(): Promise<void> {
    while (this.queue.length || this.active.length) {
      while (this.active.length < this.o.maxBatch && this.queue.length) await this.admit(this.queue.shift()!);
      this.finishAborted();
      const stepping = this.active.filter((a) => a.pending !== undefined);
      if (stepping.length === 0) continue;
      let logits: (Float32Array | RankedLogits)[];
      try {
        logits = await this.model.forwardBatch(
          stepping.map((a) => ({ seq: a.seq, ids: [a.pending!] })),
          stepping.map((a) => a.gen.logitsRequest()),
        );
      } catch (e) {
        for (const a of stepping) this.fail(a, e);
        continue;
      }
      stepping.forEach((a, i) => this.advance(a, logits[i]!));
      // Let timers and sockets run between steps (a CPU backend's steps never wait on I/O by themselves).
      await new Promise((resolve) => setImmediate(resolve));
    }
  }

  /** Prefills a request's prompt (reusing a cached prefix) and samples its first token. */
  private async admit(w: Waiting): Promise<void> {
    if (w.job.options.signal?.aborted) {
      w.resolve(cancelledBeforeStart(w.job.promptIds.length));
      return;
    }
    const seq = this.model.createSequence();
    try {
      const options = this.model.withDefaults(w.job.options);
      const hit = await this.model.loadPrefix(seq, w.job.promptIds);
      const gen = new Generation(
        w.job.promptIds,
        options,
        this.model.defaults.eosTokenIds,
        this.model.maxPositions - w.job.promptIds.length,
        hit,
      );
      const a: Active = {
        job: w.job,
        seq,
        gen,
        text: new TextStream(this.model.tokenizer, options.stop, w.job.promptIds),
        resolve: w.resolve,
        reject: w.reject,
      };
      this.counters.promptTokens += w.job.promptIds.length;
      if (gen.done) return this.complete(a);
      const [logits] = await this.model.forwardBatch(
        [{ seq, ids: w.job.promptIds.slice(hit) }],
        [gen.logitsRequest()],
        { signal: w.job.options.signal },
      );
      this.active.push(a);
      this.advance(a, logits!);
    } catch (e) {
      seq.dispose();
      if (w.job.options.signal?.aborted) w.resolve(cancelledBeforeStart(w.job.promptIds.length));
      else w.reject(e);
    }
  }

  private advance(a: Active, logits: Float32Array | RankedLogits): void {
    const id = a.gen.next(logits);
    this.counters.generatedTokens++;
    const piece = a.text.push(id);
    if (piece) a.job.onText?.(piece);
    if (a.text.stopped) a.gen.finish("stop");
    if (a.gen.done) this.complete(a);
    else a.pending = id;
  }

  private finishAborted(): void {
    for (const a of [...this.active]) if (a.job.options.signal?.aborted) (a.gen.finish("abort"), this.complete(a));
  }

  private complete(a: Active): void {
    const i = this.active.indexOf(a);
    if (i !== -1) this.active.splice(i, 1);
    const rest = a.text.finish();
    if (rest && a.gen.finishReason !== "abort") a.job.onText?.(rest);
    const finishReason: FinishReason = a.text.stopped ? "stop" : a.gen.finishReason!;
    void this.model
      .persist(a.seq)
      .catch(() => {}) // a full cache disk must not fail an answer that is already computed
      .finally(() => a.seq.dispose());
    this.counters.completed++;
    a.resolve({ ...a.gen.stats(), text: a.text.text, finishReason });
  }

  private fail(a: Active, e: unknown): void {
    const i = this.active.indexOf(a);
    if (i !== -1) this.active.splice(i, 1);
    a.seq.dispose();
    a.reject(e);
  }
}

/** The result of a request cancelled before its first token. */
function cancelledBeforeStart(promptTokens: number): GenerationResult {
  return { text: "", tokens: [], promptTokens, finishReason: "abort", ttftS: 0, decodeSPerToken: 0 };
}
