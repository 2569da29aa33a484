// A sequence's KV cache: per layer, fixed-size blocks of keys and values in the compute tier.
import type { ModelShape } from "../arch/types.js";
import type { DType } from "../backend/dtype.js";
import type { Backend, KvBlock, Tensor } from "../backend/ops.js";

interface Block extends KvBlock {
  length: number;
}

export class KvCache {
  private readonly layers: Block[][];

  constructor(
    private readonly backend: Backend,
    private readonly shape: ModelShape,
    readonly blockTokens: number,
    readonly dtype: DType,
  ) {
    this.layers = shape.kvLayers.map(() => []);
  }

  /** Tokens stored in `layer` (every layer holds the same count between forwards). */
  length(layer = 0): number {
    const blocks = this.layers[layer]!;
    const last = blocks[blocks.length - 1];
    return last ? last.start + last.length : 0;
  }

  blocks(layer: number): readonly KvBlock[] {
    return this.layers[layer]!;
  }

  /** Appends `count` rows of k and v (from `srcRow`) at the end of `layer`. */
  append(layer: number, k: Tensor, v: Tensor, srcRow: number, count: number): void {
    const blocks = this.layers[layer]!;
    const { kvHeads, headDim } = this.shape.kvLayers[layer]!;
    let done = 0;
    while (done < count) {
      let last = blocks[blocks.length - 1];
      if (!last || last.length === this.blockTokens) {
        const start = last ? last.start + last.length : 0;
        last = {
          k: this.backend.alloc([this.blockTokens, kvHeads * headDim], this.dtype),
          v: this.backend.alloc([this.blockTokens, kvHeads * headDim], this.dtype),
          start,
          length: 0,
        };
        blocks.push(last);
      }
      const n = Math.min(count - done, this.blockTokens - last.length);
      this.backend.writeRows(last.k, last.length, k, srcRow + done, n);
      this.backend.writeRows(last.v, last.length, v, srcRow + done, n);
      last.length += n;
      done += n;
    }
  }

  /** Drops every token from position `length` on (to rewind a conversation or retry a step). */
  truncate(length: number): void {
    for (const blocks of this.layers) {
      while (blocks.length && blocks[blocks.length - 1]!.start >= length) {
        const b = blocks.pop()!;
        this.backend.free(b.k);
        this.backend.free(b.v);
      }
      const last = blocks[blocks.length - 1];
      if (last && last.start + last.length > length) last.length = length - last.start;
    }
  }

  free(): void {
    this.truncate(0);
  }
}
