// The forward scheduler: new tokens of one or many sequences, in spans of chunks, layer by layer so each layer's weights pass once per span.
import type { ArchModel, AttentionCall, LayerRun } from "../arch/types.js";
import type { Backend, HostBuffer, Tensor } from "../backend/ops.js";
import { EventLoopTurns } from "../util/event-loop.js";
import { timeHost } from "../util/host-time.js";
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

interface Segment {
  readonly item: number;
  /** Global row range of this item inside a chunk, and the position of its first row. */
  readonly row: number;
  readonly rows: number;
  readonly pos: number;
}

interface Chunk {
  readonly row: number;
  readonly rows: number;
  readonly segments: readonly Segment[];
  hidden?: Tensor;
  host?: HostBuffer;
}

export class Runner {
  /** Pinned buffers of a chunk's hidden states, reserved at load (Plan.hiddenHostBuffers) and kept between prompts. */
  private readonly hostStates: HostBuffer[] = [];
  private hostStatesKept = 0;
  /** Turns of the event loop between layer passes: timers, sockets and Ctrl-C stay live while the math runs. */
  private readonly loopTurns = new EventLoopTurns();

  constructor(
    private readonly backend: Backend,
    private readonly model: ArchModel,
    private readonly weights: WeightSource,
    private readonly stager: KvStager | undefined,
    private readonly o: RunnerOptions,
  ) {}

  /** Allocates `count` pinned buffers of one chunk's hidden states (f32) now, for a prompt's spans to reuse. */
  reserveHostStates(count: number, rows: number): void {
    for (let i = 0; i < count; i++) this.hostStates.push(this.backend.allocHost(rows * this.model.shape.hiddenSize * 4));
    this.hostStatesKept = this.hostStates.length;
  }

  dispose(): void {
    for (const b of this.hostStates.splice(0)) this.backend.freeHost(b);
  }

  /**
   * Logits per item: [rows * vocab] of every new token ("all"), [vocab] of its last one ("last"), or for sampling
   * requests the last token's best ids where one was asked (ranked on the backend), else its whole row.
   */
  async forward(items: readonly ForwardItem[], logits: "last" | "all", hooks?: ForwardHooks): Promise<Float32Array[]>;
  async forward(items: readonly ForwardItem[], logits: LogitsWanted, hooks?: ForwardHooks): Promise<(Float32Array | RankedLogits)[]>;
  async forward(items: readonly ForwardItem[], logits: LogitsWanted, hooks: ForwardHooks = {}): Promise<(Float32Array | RankedLogits)[]> {
    const starts = items.map((it) => it.cache.length());
    const ids: number[] = [];
    const itemOfRow: number[] = [];
    items.forEach((it, i) => {
      ids.push(...it.ids);
      for (let r = 0; r < it.ids.length; r++) itemOfRow.push(i);
    });
    const firstRow: number[] = [];
    items.forEach((it, i) => firstRow.push(i === 0 ? 0 : firstRow[i - 1]! + items[i - 1]!.ids.length));
    const positionOf = (row: number) => starts[itemOfRow[row]!]! + row - firstRow[itemOfRow[row]!]!;
    const allRows: Float32Array[][] = items.map(() => []);
    const lastRow: (Float32Array | RankedLogits)[] = [];
    const spanRows = Math.max(1, this.o.prefillSpan);
    const chunkRows = Math.max(items.length, this.o.prefillChunk);
    const layers = this.model.shape.numLayers;
    const spans = Math.ceil(ids.length / spanRows);
    // A prompt needs room for its activations: caches keep to the prefill share of the device while it runs.
    const prefill = items.some((it) => it.ids.length > 1);
    try {
      // Layers kept for decode give their room back before KV takes it: to a prompt, or to a cache growing to decode's share.
      if (prefill || items.some((it) => !it.cache.atShare("decode"))) await timeHost("layers kept", () => this.weights.useShare("prefill"));
      for (const it of items) await timeHost("KV share", () => it.cache.useShare(prefill ? "prefill" : "decode"));
      if (!prefill) await timeHost("layers kept", () => this.weights.useShare("decode"));
      // Blocks beyond the prefill share (decode's, or a disposed sequence's) went back to the backend: their memory goes
      // back to the device now, in one go, for the prompt's activations.
      if (prefill) this.backend.releaseSmallCache();
      for (let s0 = 0, span = 0; s0 < ids.length; s0 += spanRows, span++) {
        const s1 = Math.min(ids.length, s0 + spanRows);
        const chunks = this.chunks(s0, s1, chunkRows, itemOfRow, positionOf);
        const spanCaches = [...new Set(chunks.flatMap((c) => c.segments.map((seg) => items[seg.item]!.cache)))];
        // With several chunks, hidden states wait in host memory between layers: device memory stays one chunk's worth.
        // Their copies are ordered on the device (a copy back waits for the compute that wrote the bytes), so the host
        // does not wait for each one, which would leave the GPU idle while the next chunk is enqueued; a layer's copies
        // are checked at the end of the next layer, and all of them before the host buffers are freed.
        const onHost = chunks.length > 1;
        const copies = new HostCopies();
        // The last hidden-state buffer whose copy out is enqueued: the next copy in reuses it, ordered after that copy on
        // the device, where freeing it would leave the allocator to wait on the host for the copy to reuse the memory.
        const spare: Tensor[] = [];
        // A layer pass's input, and the next chunk's, fetched ahead (freed on any path).
        let current: Tensor | undefined;
        let next: Tensor | undefined;
        const hiddenOf = (c: Chunk) =>
          c.hidden ?? (c.host ? this.fromHost(c, copies, spare) : this.model.embed(this.backend, this.weights.globals, Int32Array.from(ids.slice(c.row, c.row + c.rows))));
        try {
          for (let layer = 0; layer < layers; layer++) {
            if (hooks.signal?.aborted) throw abortError();
            const w = await timeHost("layer weights", () => this.weights.layer(layer));
            for (let i = 0; i < chunks.length; i++) {
              const c = chunks[i]!;
              const x = (current = next ?? hiddenOf(c));
              // The next chunk's hidden states copy in while this one computes (the copy waits only for compute so far);
              // after a layer's last chunk, the next layer's first, so that its copy is queued before the weights that
              // layer's start prefetches (which wait for this layer's compute to end, holding up the copies after them).
              const following = i + 1 < chunks.length ? chunks[i + 1] : layer + 1 < layers ? chunks[0] : undefined;
              next = onHost && following ? hiddenOf(following) : undefined;
              const y = await timeHost("layer pass (enqueue and its waits)", () => this.layerPass(layer, w, x, c, items));
              this.backend.free(x);
              current = undefined;
              c.hidden = y;
              await this.snapshotStates(layer, c, items, starts);
              // The last layer's last chunk stays on the device for the logits that come next (its copy back would
              // queue behind the next forward's first weights, read ahead).
              if (onHost && !(layer === layers - 1 && i === chunks.length - 1)) this.toHost(c, copies, spare);
              // A layer's new KV stays on the device for its whole pass, so later chunks attend to it there instead of
              // staging it back from RAM (which holds the host to the GPU's pace). This layer's start leaving after its
              // last chunk; they land once the next layer's second chunk is enqueued: waiting for them after its first
              // left the GPU with less queued work than the copies took (planner kvTransitBlocks).
              if (i === Math.min(1, chunks.length - 1)) for (const cache of spanCaches) await timeHost("KV moves landing", () => cache.finishMoves());
              if (i === chunks.length - 1) for (const cache of spanCaches) await timeHost("KV settle", () => cache.settle(layer));
              if (this.loopTurns.due) await timeHost("event loop turn", () => this.loopTurns.take());
            }
            this.weights.release(layer);
            await timeHost("hidden-state copies of the layer before", () => copies.checkPrevious());
            hooks.onProgress?.((span * layers + layer + 1) / (spans * layers));
          }
          for (const c of chunks) {
            if (logits === "all") {
              const x = hiddenOf(c);
              for (const seg of c.segments) allRows[seg.item]!.push(await this.logits(x, seg.row - c.row, seg.rows));
              this.backend.free(x);
            } else {
              const ending = c.segments.filter((seg) => seg.row + seg.rows === firstRow[seg.item]! + items[seg.item]!.ids.length);
              if (ending.length === 0) continue; // no last token here: its hidden states are not needed
              const x = hiddenOf(c);
              const got = await this.lastLogits(x, ending.map((seg) => seg.row - c.row + seg.rows - 1), ending.map((seg) => (logits === "last" ? undefined : logits[seg.item])));
              ending.forEach((seg, i) => (lastRow[seg.item] = got[i]!));
              this.backend.free(x);
            }
            c.hidden = undefined;
          }
          await copies.checkAll();
        } finally {
          for (const t of new Set([current, next, ...chunks.map((c) => c.hidden), ...spare])) if (t) this.backend.free(t);
          await copies.settleAll();
          for (const c of chunks) if (c.host) this.putHostState(c.host);
        }
        await hooks.afterSpan?.(s1);
      }
      // The last settles' moves off the device land now (the logits were read, so the GPU is done): a cache at rest has
      // none. Decode's larger device share comes back from RAM at the next decode step's start, not before this
      // prompt's first token is out.
      for (const it of items) await timeHost("KV moves landing", () => it.cache.finishMoves());
      return logits === "all" ? allRows.map((parts) => (parts.length === 1 ? parts[0]! : concat(parts))) : lastRow;
    } catch (e) {
      await this.weights.reset();
      // A failed pass leaves no half-written tokens behind (or none at all, where a sliding window already freed keys).
      for (let i = 0; i < items.length; i++) {
        const cache = items[i]!.cache;
        await cache.truncate(cache.canTruncate(starts[i]!) ? starts[i]! : 0);
      }
      throw e;
    }
  }

  private async layerPass(layer: number, w: Awaited<ReturnType<WeightSource["layer"]>>, x: Tensor, c: Chunk, items: readonly ForwardItem[]): Promise<Tensor> {
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
        Promise.all(c.segments.map(async (seg) => ({ row: seg.row - c.row, rows: seg.rows, state: await items[seg.item]!.cache.recurrentState(layer, shapes, seg.rows) }))),
      read: (t) => backend.read(t),
      expert: (e) => weights.expert(layer, e),
      releaseExpert: (e) => weights.releaseExpert(layer, e),
    };
    return this.backend.scoped(() => this.model.forwardLayer(this.backend, layer, w, x, run));
  }

  private async snapshotStates(layer: number, c: Chunk, items: readonly ForwardItem[], starts: readonly number[]): Promise<void> {
    const every = this.o.stateSnapshotTokens;
    if (!every) return;
    for (const seg of c.segments) {
      const cache = items[seg.item]!.cache;
      const end = seg.pos + seg.rows;
      if (!cache.isRecurrent(layer) || end % cache.policy.blockTokens !== 0) continue;
      if (end % every === 0 || end === starts[seg.item]! + items[seg.item]!.ids.length) await cache.snapshotState(layer, end);
    }
  }

  /** Logits of `rows` rows of x from `row`, computed a few rows at a time so the workspace stays small. */
  private async logits(x: Tensor, row: number, rows: number): Promise<Float32Array> {
    const parts: Float32Array[] = [];
    for (let r = row; r < row + rows; r += logitRows) {
      const n = Math.min(logitRows, row + rows - r);
      const t = this.backend.scoped(() => this.model.head(this.backend, this.weights.globals, n === x.shape[0] ? x : this.backend.rows(x, r, n)));
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
  private async lastLogits(x: Tensor, rows: readonly number[], requests: readonly (LogitsRequest | undefined)[]): Promise<(Float32Array | RankedLogits)[]> {
    const backend = this.backend;
    const out: (Float32Array | RankedLogits)[] = [];
    for (let g = 0; g < rows.length; g += logitRows) {
      const group = rows.slice(g, g + logitRows);
      const asks = requests.slice(g, g + logitRows);
      const inOrder = group.length === x.shape[0] && group.every((r, i) => r === i);
      const t = backend.scoped(() => this.model.head(backend, this.weights.globals, inOrder ? x : backend.gatherRows(x, Int32Array.from(group))));
      try {
        const vocab = t.shape[1]!;
        asks.forEach((a, i) => a?.penalty && backend.penalize(t, i, a.penalty.ids, a.penalty.factor));
        const top = Math.min(vocab, Math.max(0, ...asks.map((a) => a?.top ?? 0)));
        const ranked = top > 0 ? await backend.topK(t, top) : undefined;
        const whole = asks.some((a) => !a) ? await backend.read(t) : undefined;
        asks.forEach((a, i) => {
          if (!a) return out.push(whole!.slice(i * vocab, (i + 1) * vocab));
          const n = Math.min(a.top, vocab);
          out.push({ ids: ranked!.ids.slice(i * top, i * top + n), scores: ranked!.values.slice(i * top, i * top + n) });
        });
      } finally {
        backend.free(t);
      }
    }
    return out;
  }

  private chunks(s0: number, s1: number, chunkRows: number, itemOfRow: number[], positionOf: (row: number) => number): Chunk[] {
    const chunks: Chunk[] = [];
    for (let c0 = s0; c0 < s1; c0 += chunkRows) {
      const c1 = Math.min(s1, c0 + chunkRows);
      const segments: Segment[] = [];
      for (let r = c0; r < c1; ) {
        let e = r;
        while (e < c1 && itemOfRow[e] === itemOfRow[r]) e++;
        segments.push({ item: itemOfRow[r]!, row: r, rows: e - r, pos: positionOf(r) });
        r = e;
      }
      chunks.push({ row: c0, rows: c1 - c0, segments });
    }
    return chunks;
  }

  /**
   * Enqueues the copy of a chunk's hidden states to its host buffer; their device buffer becomes the spare, the one
   * before it is freed (the plan counts one buffer copying out).
   */
  private toHost(c: Chunk, copies: HostCopies, spare: Tensor[]): void {
    const bytes = c.rows * this.model.shape.hiddenSize * 4;
    c.host ??= this.takeHostState(bytes);
    copies.add(this.backend.copyToHost(c.hidden!, 0, c.host, 0, bytes));
    for (const t of spare.splice(0)) this.backend.free(t);
    spare.push(c.hidden!);
    c.hidden = undefined;
  }

  private takeHostState(bytes: number): HostBuffer {
    const i = this.hostStates.findIndex((b) => b.bytes.byteLength >= bytes);
    return i >= 0 ? this.hostStates.splice(i, 1)[0]! : this.backend.allocHost(bytes);
  }

  /** Back to the reserve, which keeps its reserved count of the largest buffers; the smallest beyond it is freed. */
  private putHostState(b: HostBuffer): void {
    this.hostStates.push(b);
    if (this.hostStates.length <= this.hostStatesKept) return;
    this.hostStates.sort((x, y) => y.bytes.byteLength - x.bytes.byteLength);
    this.backend.freeHost(this.hostStates.pop()!);
  }

  /**
   * A chunk's hidden states back on the device, in a spare buffer of its size where there is one (a copy to the device
   * starts after the copies to the host enqueued before it); ops that read them wait for the copy by themselves.
   */
  private fromHost(c: Chunk, copies: HostCopies, spare: Tensor[]): Tensor {
    const i = spare.findIndex((t) => t.shape[0] === c.rows);
    const t = i >= 0 ? spare.splice(i, 1)[0]! : this.backend.alloc([c.rows, this.model.shape.hiddenSize], "f32");
    copies.add(this.backend.copyToDevice(t, 0, c.host!, 0, c.rows * this.model.shape.hiddenSize * 4));
    return t;
  }
}

/** Copies the host does not wait for as they go: each gets a handler at once, and their first error is thrown when checked. */
class HostCopies {
  private current: Promise<unknown>[] = [];
  private previous: Promise<unknown>[] = [];

  add(copy: Promise<void>): void {
    this.current.push(copy.then(() => undefined, (e: unknown) => e ?? new Error("a copy failed")));
  }

  /** Waits for the copies added before the last check (long done, as the device works in order) and rethrows a failure. */
  async checkPrevious(): Promise<void> {
    const done = this.previous;
    this.previous = this.current;
    this.current = [];
    for (const error of await Promise.all(done)) if (error) throw error;
  }

  /** Waits for every copy and rethrows a failure. */
  async checkAll(): Promise<void> {
    const all = [...this.previous, ...this.current];
    this.previous = [];
    this.current = [];
    for (const error of await Promise.all(all)) if (error) throw error;
  }

  /** Waits for every copy, failed or not (before their buffers are freed, on any path). */
  async settleAll(): Promise<void> {
    await Promise.all([...this.previous, ...this.current]);
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
