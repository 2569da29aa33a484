// The forward scheduler: new tokens of one or many sequences, in spans of chunks, layer by layer so each layer's weights pass once per span.
import type { ArchModel, AttentionCall, LayerRun } from "../arch/types.js";
import type { Backend, Tensor } from "../backend/ops.js";
import { EventLoopTurns } from "../util/event-loop.js";
import { timeHost } from "../util/host-time.js";
import { HiddenHostBuffers, SpanHiddenStates, spanChunks, type Chunk } from "./hidden-states.js";
import { attendTiered, type AttendItem, type KvStager } from "./kv-attention.js";
import type { KvCache } from "./kv-cache.js";
import { logitRows } from "./planner.js";
import type { LogitsRequest, RankedLogits } from "./sampling.js";
import type { WeightSource } from "./weights.js";

/** Per item: every new token's logits ("all"), the last one's ("last"), or what sampling asks of the last one's. */
export type LogitsWanted = "all" | "last" | readonly (LogitsRequest | undefined)[];

export interface ForwardItem {
  readonly cache: KvCache;
  readonly ids: readonly number[];
}

export interface RunnerOptions {
  /** Most rows one layer pass works on at once (bounds activations). */
  readonly prefillChunk: number;
  /** Rows taken through all layers before the next ones start; each layer's weights pass once per span. */
  readonly prefillSpan: number;
  /**
   * With a persistent cache: recurrent layers' state is copied at block boundaries every this many tokens, and where a
   * sequence's new tokens end on one, so cached prefixes can resume there.
   */
  readonly stateSnapshotTokens?: number;
}

export interface ForwardHooks {
  /** A span went through every layer: its KV is complete (the persistent cache commits it). */
  afterSpan?: (spanEnd: number) => Promise<void>;
  /** Fraction of the forward's layer passes done. */
  onProgress?: (done: number) => void;
  signal?: AbortSignal;
}

/** The new rows of a forward, items one after another: each row's item and position. */
class ForwardRows {
  readonly ids: number[] = [];
  readonly itemOfRow: number[] = [];
  /** Per item: its first row, and the cache length before this forward (its first new position). */
  readonly firstRow: number[] = [];
  readonly starts: number[];

  constructor(items: readonly ForwardItem[]) {
    this.starts = items.map((it) => it.cache.length());
    items.forEach((it, i) => {
      this.firstRow.push(this.ids.length);
      this.ids.push(...it.ids);
      for (let r = 0; r < it.ids.length; r++) this.itemOfRow.push(i);
    });
  }

  get count(): number {
    return this.ids.length;
  }

  positionOf(row: number): number {
    const item = this.itemOfRow[row]!;
    return this.starts[item]! + row - this.firstRow[item]!;
  }
}

/** What a forward returns, filled span by span: every row's logits per item, or the last row's. */
interface ForwardLogits {
  readonly all: Float32Array[][];
  readonly last: (Float32Array | RankedLogits)[];
}

export class Runner {
  /** Pinned buffers of a chunk's hidden states, reserved at load (Plan.hiddenHostBuffers) and kept between prompts. */
  private readonly hostBuffers: HiddenHostBuffers;
  /** Turns of the event loop between layer passes: timers, sockets and Ctrl-C stay live while the math runs. */
  private readonly loopTurns = new EventLoopTurns();

  constructor(
    private readonly backend: Backend,
    private readonly model: ArchModel,
    private readonly weights: WeightSource,
    private readonly stager: KvStager | undefined,
    private readonly o: RunnerOptions,
  ) {
    this.hostBuffers = new HiddenHostBuffers(backend);
  }

  /** Allocates `count` pinned buffers of one chunk's hidden states (f32) now, for a prompt's spans to reuse. */
  reserveHostStates(count: number, rows: number): void {
    this.hostBuffers.reserve(count, rows * this.model.shape.hiddenSize * 4);
  }

  dispose(): void {
    this.hostBuffers.dispose();
  }

  /**
   * Logits per item: [rows * vocab] of every new token ("all"), [vocab] of its last one ("last"), or for sampling
   * requests the last token's best ids where one was asked (ranked on the backend), else its whole row.
   */
  async forward(items: readonly ForwardItem[], logits: "last" | "all", hooks?: ForwardHooks): Promise<Float32Array[]>;
  async forward(
    items: readonly ForwardItem[],
    logits: LogitsWanted,
    hooks?: ForwardHooks,
  ): Promise<(Float32Array | RankedLogits)[]>;
  async forward(
    items: readonly ForwardItem[],
    logits: LogitsWanted,
    hooks: ForwardHooks = {},
  ): Promise<(Float32Array | RankedLogits)[]> {
    const rows = new ForwardRows(items);
    const out: ForwardLogits = { all: items.map(() => []), last: [] };
    const spanRows = Math.max(1, this.o.prefillSpan);
    // A prompt needs room for its activations: caches keep to the prefill share of the device while it runs.
    const prefill = items.some((it) => it.ids.length > 1);
    try {
      await this.enterPhase(items, prefill);
      const spans = Math.ceil(rows.count / spanRows);
      for (let s0 = 0, span = 0; s0 < rows.count; s0 += spanRows, span++) {
        const s1 = Math.min(rows.count, s0 + spanRows);
        await this.runSpan(items, rows, s0, s1, logits, out, hooks, (layersDone) =>
          hooks.onProgress?.((span * this.model.shape.numLayers + layersDone) / (spans * this.model.shape.numLayers)),
        );
        await hooks.afterSpan?.(s1);
      }
      // The last settles' moves off the device land now (the logits were read, so the GPU is done): a cache at rest has
      // none. Decode's larger device share comes back from RAM at the next decode step's start, not before this
      // prompt's first token is out.
      for (const it of items) await timeHost("KV moves landing", () => it.cache.finishMoves());
      return logits === "all" ? out.all.map((parts) => (parts.length === 1 ? parts[0]! : concat(parts))) : out.last;
    } catch (e) {
      await this.weights.reset();
      // A failed pass leaves no half-written tokens behind (or none at all, where a sliding window already freed keys).
      for (let i = 0; i < items.length; i++) {
        const cache = items[i]!.cache;
        await cache.truncate(cache.canTruncate(rows.starts[i]!) ? rows.starts[i]! : 0);
      }
      throw e;
    }
  }

  /**
   * Sets the device shares for a prompt or a decode step (docs/engine.md, "Device shares"): layers kept for decode give
   * their room back before KV takes it, to a prompt or to a cache growing to decode's share; then the caches take their
   * share; a decode step then keeps what layers fit beside them.
   */
  private async enterPhase(items: readonly ForwardItem[], prefill: boolean): Promise<void> {
    if (prefill || items.some((it) => !it.cache.atShare("decode")))
      await timeHost("layers kept", () => this.weights.useShare("prefill"));
    for (const it of items) await timeHost("KV share", () => it.cache.useShare(prefill ? "prefill" : "decode"));
    if (!prefill) await timeHost("layers kept", () => this.weights.useShare("decode"));
    // Blocks beyond the prefill share (decode's, or a disposed sequence's) went back to the backend: their memory goes
    // back to the device now, in one go, for the prompt's activations.
    if (prefill) this.backend.releaseSmallCache();
  }

  /** Rows s0..s1 through every layer, chunk by chunk, then the logits they owe. */
  private async runSpan(
    items: readonly ForwardItem[],
    rows: ForwardRows,
    s0: number,
    s1: number,
    logits: LogitsWanted,
    out: ForwardLogits,
    hooks: ForwardHooks,
    onLayer: (layersDone: number) => void,
  ): Promise<void> {
    const chunkRows = Math.max(items.length, this.o.prefillChunk);
    const chunks = spanChunks(s0, s1, chunkRows, rows.itemOfRow, (row) => rows.positionOf(row));
    const spanCaches = [...new Set(chunks.flatMap((c) => c.segments.map((seg) => items[seg.item]!.cache)))];
    const embed = (c: Chunk) =>
      this.model.embed(this.backend, this.weights.globals, Int32Array.from(rows.ids.slice(c.row, c.row + c.rows)));
    const hidden = new SpanHiddenStates(this.backend, this.hostBuffers, this.model.shape.hiddenSize, chunks, embed);
    try {
      for (let layer = 0; layer < this.model.shape.numLayers; layer++) {
        if (hooks.signal?.aborted) throw abortError();
        await this.passLayer(layer, chunks, hidden, spanCaches, items, rows);
        onLayer(layer + 1);
      }
      await this.collectLogits(chunks, hidden, items, rows, logits, out);
      await hidden.checkAll();
    } finally {
      await hidden.release();
    }
  }

  /** One layer over every chunk of the span: its weights once, each chunk's pass, its KV settled. */
  private async passLayer(
    layer: number,
    chunks: readonly Chunk[],
    hidden: SpanHiddenStates,
    spanCaches: readonly KvCache[],
    items: readonly ForwardItem[],
    rows: ForwardRows,
  ): Promise<void> {
    const layers = this.model.shape.numLayers;
    const w = await timeHost("layer weights", () => this.weights.layer(layer));
    for (let i = 0; i < chunks.length; i++) {
      const c = chunks[i]!;
      const x = hidden.input(c);
      hidden.fetchAhead(i + 1 < chunks.length ? chunks[i + 1] : layer + 1 < layers ? chunks[0] : undefined);
      const y = await timeHost("layer pass (enqueue and its waits)", () => this.layerPass(layer, w, x, c, items));
      hidden.passed(c, x, y);
      await this.snapshotStates(layer, c, items, rows.starts);
      hidden.park(c, layer === layers - 1 && i === chunks.length - 1);
      // A layer's new KV stays on the device for its whole pass, so later chunks attend to it there instead of staging
      // it back from RAM (which holds the host to the GPU's pace). This layer's start leaving after its last chunk; they
      // land once the next layer's second chunk is enqueued: waiting for them after its first left the GPU with less
      // queued work than the copies took (planner kvTransitBlocks).
      if (i === Math.min(1, chunks.length - 1))
        for (const cache of spanCaches) await timeHost("KV moves landing", () => cache.finishMoves());
      if (i === chunks.length - 1)
        for (const cache of spanCaches) await timeHost("KV settle", () => cache.settle(layer));
      if (this.loopTurns.due) await timeHost("event loop turn", () => this.loopTurns.take());
    }
    this.weights.release(layer);
    await timeHost("hidden-state copies of the layer before", () => hidden.checkPreviousLayer());
  }

  /** Every row's logits ("all"), or the last row's of each item that ends in this span. */
  private async collectLogits(
    chunks: readonly Chunk[],
    hidden: SpanHiddenStates,
    items: readonly ForwardItem[],
    rows: ForwardRows,
    logits: LogitsWanted,
    out: ForwardLogits,
  ): Promise<void> {
    for (const c of chunks) {
      if (logits === "all") {
        const x = hidden.final(c);
        for (const seg of c.segments) out.all[seg.item]!.push(await this.logits(x, seg.row - c.row, seg.rows));
        this.backend.free(x);
      } else {
        const ending = c.segments.filter(
          (seg) => seg.row + seg.rows === rows.firstRow[seg.item]! + items[seg.item]!.ids.length,
        );
        if (ending.length === 0) continue; // no last token here: its hidden states are not needed
        const x = hidden.final(c);
        const got = await this.lastLogits(
          x,
          ending.map((seg) => seg.row - c.row + seg.rows - 1),
          ending.map((seg) => (logits === "last" ? undefined : logits[seg.item])),
        );
        ending.forEach((seg, i) => (out.last[seg.item] = got[i]!));
        this.backend.free(x);
      }
      c.hidden = undefined;
    }
  }

  private async layerPass(
    layer: number,
    w: Awaited<ReturnType<WeightSource["layer"]>>,
    x: Tensor,
    c: Chunk,
    items: readonly ForwardItem[],
  ): Promise<Tensor> {
    const backend = this.backend;
    const stager = this.stager;
    const weights = this.weights;
    const positions = new Int32Array(c.rows);
    for (const seg of c.segments) for (let r = 0; r < seg.rows; r++) positions[seg.row - c.row + r] = seg.pos + r;
    const run: LayerRun = {
      positions,
      async attention(q: Tensor, k: Tensor, v: Tensor, o: AttentionCall): Promise<Tensor> {
        const attend: AttendItem[] = c.segments.map((seg) => {
          const cache = items[seg.item]!.cache;
          cache.append(layer, k, v, seg.row - c.row, seg.rows);
          return { cache, qRow: seg.row - c.row, qRows: seg.rows, qPos: seg.pos };
        });
        return attendTiered(backend, stager, layer, q, attend, o);
      },
      recurrent: (shapes) =>
        Promise.all(
          c.segments.map(async (seg) => ({
            row: seg.row - c.row,
            rows: seg.rows,
            state: await items[seg.item]!.cache.recurrentState(layer, shapes, seg.rows),
          })),
        ),
      read: (t) => backend.read(t),
      expert: (e) => weights.expert(layer, e),
      releaseExpert: (e) => weights.releaseExpert(layer, e),
    };
    return this.backend.scoped(() => this.model.forwardLayer(this.backend, layer, w, x, run));
  }

  private async snapshotStates(
    layer: number,
    c: Chunk,
    items: readonly ForwardItem[],
    starts: readonly number[],
  ): Promise<void> {
    const every = this.o.stateSnapshotTokens;
    if (!every) return;
    for (const seg of c.segments) {
      const cache = items[seg.item]!.cache;
      const end = seg.pos + seg.rows;
      if (!cache.isRecurrent(layer) || end % cache.policy.blockTokens !== 0) continue;
      if (end % every === 0 || end === starts[seg.item]! + items[seg.item]!.ids.length)
        await cache.snapshotState(layer, end);
    }
  }

  /** Logits of `rows` rows of x from `row`, computed a few rows at a time so the workspace stays small. */
  private async logits(x: Tensor, row: number, rows: number): Promise<Float32Array> {
    const parts: Float32Array[] = [];
    for (let r = row; r < row + rows; r += logitRows) {
      const n = Math.min(logitRows, row + rows - r);
      const t = this.backend.scoped(() =>
        this.model.head(this.backend, this.weights.globals, n === x.shape[0] ? x : this.backend.rows(x, r, n)),
      );
      try {
        parts.push(await this.backend.read(t));
      } finally {
        this.backend.free(t);
      }
    }
    return parts.length === 1 ? parts[0]! : concat(parts);
  }

  /**
   * Per row of x in `rows`: the best ids its request asks for, or (no request) its whole row of logits. The head runs on
   * a few rows at a time, so the workspace stays small and a decode batch reads the head's weights once a few rows.
   */
  private async lastLogits(
    x: Tensor,
    rows: readonly number[],
    requests: readonly (LogitsRequest | undefined)[],
  ): Promise<(Float32Array | RankedLogits)[]> {
    const backend = this.backend;
    const out: (Float32Array | RankedLogits)[] = [];
    for (let g = 0; g < rows.length; g += logitRows) {
      const group = rows.slice(g, g + logitRows);
      const asks = requests.slice(g, g + logitRows);
      const inOrder = group.length === x.shape[0] && group.every((r, i) => r === i);
      const t = backend.scoped(() =>
        this.model.head(backend, this.weights.globals, inOrder ? x : backend.gatherRows(x, Int32Array.from(group))),
      );
      try {
        const vocab = t.shape[1]!;
        asks.forEach((a, i) => a?.penalty && backend.penalize(t, i, a.penalty.ids, a.penalty.factor));
        const top = Math.min(vocab, Math.max(0, ...asks.map((a) => a?.top ?? 0)));
        const ranked = top > 0 ? await backend.topK(t, top) : undefined;
        const whole = asks.some((a) => !a) ? await backend.read(t) : undefined;
        asks.forEach((a, i) => {
          if (!a) return out.push(whole!.slice(i * vocab, (i + 1) * vocab));
          const n = Math.min(a.top, vocab);
          out.push({
            ids: ranked!.ids.slice(i * top, i * top + n),
            scores: ranked!.values.slice(i * top, i * top + n),
          });
        });
      } finally {
        backend.free(t);
      }
    }
    return out;
  }
}

function concat(parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

function abortError(): Error {
  const e = new Error("the run was cancelled");
  e.name = "AbortError";
  return e;
}
