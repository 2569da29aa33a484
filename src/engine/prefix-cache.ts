// "Prefill once, ask many questions": a sequence's complete KV blocks go to the persistent cache (KvStore) as they
// finish, and a new prompt that starts with cached blocks adopts them instead of running them. Recurrent layers
// (linear attention) keep a state instead of KV: a block stored with that state is where a cached prefix can resume.
import type { BlockLayout, KvStore } from "./kv-store.js";
import type { Sequence } from "./sequence.js";

export class PrefixCache {
  constructor(
    private readonly store: KvStore,
    readonly layout: BlockLayout,
    /** Some layers keep recurrent state instead of KV. */
    readonly recurrent: boolean,
    /** Called before adopted blocks take device memory (the layers decode kept give theirs back first). */
    private readonly beforeAdopt: () => Promise<void>,
  ) {}

  /** Loads the longest cached prefix of `ids` into an empty sequence; returns how many tokens it covers. */
  async load(seq: Sequence, ids: readonly number[]): Promise<number> {
    const { store, layout } = this;
    if (seq.length > 0) return 0;
    let blocks = await store.lookup(layout, ids);
    const recurrent = layout.layerBytes.map((_, l) => seq.cache.isRecurrent(l));
    if (this.recurrent) {
      // Recurrent state resumes only at a block stored with its state, and must leave a prompt token to run.
      const resumable = (i: number) =>
        (i + 1) * layout.blockTokens < ids.length &&
        recurrent.every((r, l) => !r || blocks[i]!.manifest.layers[l]!.bytes > 0);
      let last = blocks.length - 1;
      while (last >= 0 && !resumable(last)) last--;
      blocks = blocks.slice(0, last + 1);
    }
    if (blocks.length > 0) await this.beforeAdopt();
    const buf = new Uint8Array(
      Math.max(...layout.layerBytes, ...blocks.flatMap((b) => b.manifest.layers.map((l) => l.bytes))),
    );
    let loaded = 0;
    for (const [i, b] of blocks.entries()) {
      const layers: (Uint8Array | undefined)[] = [];
      for (let l = 0; l < layout.layerBytes.length; l++) {
        if (recurrent[l] && i < blocks.length - 1) {
          layers.push(undefined); // only the last block's state is needed
          continue;
        }
        const bytes = await store.readLayer(b, l, buf);
        if (!bytes) break;
        layers.push(bytes.slice());
      }
      if (layers.length < layout.layerBytes.length) break; // a corrupt block ends the reusable prefix: recompute from here
      for (let l = 0; l < layers.length; l++) {
        if (!recurrent[l]) await seq.cache.adopt(l, layers[l]!);
        else if (layers[l]) seq.cache.adoptState(l, layers[l]!, (i + 1) * layout.blockTokens);
      }
      loaded++;
      seq.lastHash = b.hash;
    }
    if (this.recurrent && loaded < blocks.length) {
      // A corrupt block before the last: the state to resume from is gone, so nothing is reused.
      await seq.rewind(0);
      seq.lastHash = null;
      loaded = 0;
    }
    await store.touch(blocks.slice(0, loaded));
    const tokens = loaded * layout.blockTokens;
    seq.tokens.push(...ids.slice(0, tokens));
    seq.savedBlocks = loaded;
    // At least one prompt token must run to give logits.
    if (tokens === ids.length && tokens > 0) await seq.rewind(tokens - 1);
    return seq.length;
  }

  /** Writes the sequence's complete blocks that the cache does not have yet. */
  async save(seq: Sequence): Promise<void> {
    const { store, layout } = this;
    const block = layout.blockTokens;
    const complete = Math.floor(seq.length / block);
    for (let b = seq.savedBlocks; b < complete; b++) {
      const blocks = (l: number) => seq.cache.blocks(l)[b]!;
      const state = seq.cache.snapshotAt((b + 1) * block); // recurrent layers' state where this block ends, if kept
      seq.lastHash = await store.save(
        layout,
        seq.lastHash,
        b,
        seq.tokens.slice(b * block, (b + 1) * block),
        async (l) => {
          if (seq.cache.isRecurrent(l)) return state?.get(l) ?? new Uint8Array(0);
          const bytes = new Uint8Array(layout.layerBytes[l]!);
          await seq.cache.blockBytesOf(l, blocks(l), bytes);
          return bytes;
        },
      );
      seq.savedBlocks = b + 1;
    }
    seq.cache.dropSnapshots((position) => position > complete * block);
  }

  /** Bytes read from and written to the cache's files. */
  get stats(): { bytesRead: number; bytesWritten: number } {
    return this.store.stats;
  }

  /**
   * Where a single prompt must stop before its last block boundary so that recurrent state is cached there: the
   * tokens to run first, or 0 to run them all at once.
   */
  recurrentCut(seqLength: number, newTokens: number): number {
    if (!this.recurrent) return 0;
    const block = this.layout.blockTokens;
    const cut = Math.floor((seqLength + newTokens) / block) * block - seqLength;
    return cut > 0 && cut < newTokens ? cut : 0;
  }
}
