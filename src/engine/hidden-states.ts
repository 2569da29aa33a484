// A span's chunks and where their hidden states wait between layers. With one chunk they stay on the device; with
// several, each chunk's states go to a pinned host buffer after its layer pass and come back before the next layer's,
// so device memory holds one chunk's worth (two in flight). The copies are ordered on the device (a copy back waits for
// the compute that wrote the bytes), so the host does not wait for each one; a layer's copies are checked at the end of
// the next layer, and all of them before their buffers are freed.
import type { Backend, HostBuffer, Tensor } from "../backend/ops.js";

export interface Segment {
  readonly item: number;
  /** Global row range of this item inside a chunk, and the position of its first row. */
  readonly row: number;
  readonly rows: number;
  readonly pos: number;
}

export interface Chunk {
  readonly row: number;
  readonly rows: number;
  readonly segments: readonly Segment[];
  hidden?: Tensor;
  host?: HostBuffer;
}

/** The span's rows [s0, s1) in chunks of at most `chunkRows`, each split into its items' segments. */
export function spanChunks(
  s0: number,
  s1: number,
  chunkRows: number,
  itemOfRow: readonly number[],
  positionOf: (row: number) => number,
): Chunk[] {
  const chunks: Chunk[] = [];
  for (let c0 = s0; c0 < s1; c0 += chunkRows) {
    const c1 = Math.min(s1, c0 + chunkRows);
    const segments: Segment[] = [];
    for (let r = c0; r < c1;) {
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
 * Pinned host buffers for chunks' hidden states, reserved at load (Plan.hiddenHostBuffers) and kept between prompts:
 * pinning memory stalls the host, which would leave the GPU idle in a prompt's first layer.
 */
export class HiddenHostBuffers {
  private readonly free: HostBuffer[] = [];
  private kept = 0;

  constructor(private readonly backend: Backend) {}

  /** Allocates `count` buffers of `bytes` now, for a prompt's spans to reuse. */
  reserve(count: number, bytes: number): void {
    for (let i = 0; i < count; i++) this.free.push(this.backend.allocHost(bytes));
    this.kept = this.free.length;
  }

  take(bytes: number): HostBuffer {
    const i = this.free.findIndex((b) => b.bytes.byteLength >= bytes);
    return i >= 0 ? this.free.splice(i, 1)[0]! : this.backend.allocHost(bytes);
  }

  /** Back to the reserve, which keeps its reserved count of the largest buffers; the smallest beyond it is freed. */
  put(b: HostBuffer): void {
    this.free.push(b);
    if (this.free.length <= this.kept) return;
    this.free.sort((x, y) => y.bytes.byteLength - x.bytes.byteLength);
    this.backend.freeHost(this.free.pop()!);
  }

  dispose(): void {
    for (const b of this.free.splice(0)) this.backend.freeHost(b);
  }
}

/** One span's hidden states through its layer passes: the input of each pass, the next chunk's fetched ahead. */
export class SpanHiddenStates {
  private readonly copies = new HostCopies();
  /** Whether states wait in host memory between layers (several chunks). */
  private readonly onHost: boolean;
  /**
   * The last device buffer whose copy out is enqueued: the next copy in reuses it, ordered after that copy on the
   * device, where freeing it would leave the allocator to wait on the host for the copy to reuse the memory.
   */
  private readonly spare: Tensor[] = [];
  /** A layer pass's input, and the next chunk's, fetched ahead (freed on any path). */
  private current?: Tensor;
  private next?: Tensor;

  constructor(
    private readonly backend: Backend,
    private readonly hostBuffers: HiddenHostBuffers,
    private readonly hiddenSize: number,
    private readonly chunks: readonly Chunk[],
    /** A chunk's first layer input: its rows' embeddings. */
    private readonly embed: (c: Chunk) => Tensor,
  ) {
    this.onHost = chunks.length > 1;
  }

  /** The input of `c`'s layer pass: fetched ahead, on the device already, back from the host, or embedded. */
  input(c: Chunk): Tensor {
    this.current = this.next ?? this.hiddenOf(c);
    return this.current;
  }

  /**
   * Starts `following`'s input on its way while this pass computes (the copy waits only for compute so far). After a
   * layer's last chunk, `following` is the next layer's first, so that its copy is queued before the weights that
   * layer's start prefetches (which wait for this layer's compute to end, holding up the copies after them).
   */
  fetchAhead(following: Chunk | undefined): void {
    this.next = this.onHost && following ? this.hiddenOf(following) : undefined;
  }

  /** `c`'s pass is enqueued: its input is freed and `y` is its output. */
  passed(c: Chunk, x: Tensor, y: Tensor): void {
    this.backend.free(x);
    this.current = undefined;
    c.hidden = y;
  }

  /**
   * Sends `c`'s states to the host unless it is the last layer's last chunk, which stays on the device for the logits
   * that come next (its copy back would queue behind the next forward's first weights, read ahead).
   */
  park(c: Chunk, lastOfSpan: boolean): void {
    if (!this.onHost || lastOfSpan) return;
    const bytes = c.rows * this.hiddenSize * 4;
    c.host ??= this.hostBuffers.take(bytes);
    this.copies.add(this.backend.copyToHost(c.hidden!, 0, c.host, 0, bytes));
    for (const t of this.spare.splice(0)) this.backend.free(t);
    this.spare.push(c.hidden!);
    c.hidden = undefined;
  }

  /** The final states of `c` for the logits (the caller frees them). */
  final(c: Chunk): Tensor {
    return this.hiddenOf(c);
  }

  /** Waits for the copies of the layer before this one (long done) and rethrows a failure. */
  checkPreviousLayer(): Promise<void> {
    return this.copies.checkPrevious();
  }

  checkAll(): Promise<void> {
    return this.copies.checkAll();
  }

  /** Frees every device buffer and returns the host buffers, once every copy has settled (on any path). */
  async release(): Promise<void> {
    for (const t of new Set([this.current, this.next, ...this.chunks.map((c) => c.hidden), ...this.spare]))
      if (t) this.backend.free(t);
    await this.copies.settleAll();
    for (const c of this.chunks) if (c.host) this.hostBuffers.put(c.host);
  }

  private hiddenOf(c: Chunk): Tensor {
    return c.hidden ?? (c.host ? this.fromHost(c) : this.embed(c));
  }

  /**
   * A chunk's hidden states back on the device, in a spare buffer of its size where there is one (a copy to the device
   * starts after the copies to the host enqueued before it); ops that read them wait for the copy by themselves.
   */
  private fromHost(c: Chunk): Tensor {
    const i = this.spare.findIndex((t) => t.shape[0] === c.rows);
    const t = i >= 0 ? this.spare.splice(i, 1)[0]! : this.backend.alloc([c.rows, this.hiddenSize], "f32");
    this.copies.add(this.backend.copyToDevice(t, 0, c.host!, 0, c.rows * this.hiddenSize * 4));
    return t;
  }
}

/** Copies the host does not wait for as they go: each gets a handler at once, and their first error is thrown when checked. */
class HostCopies {
  private current: Promise<unknown>[] = [];
  private previous: Promise<unknown>[] = [];

  add(copy: Promise<void>): void {
    this.current.push(
      copy.then(
        () => undefined,
        (e: unknown) => e ?? new Error("a copy failed"),
      ),
    );
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
