// A conversation's state on a model: the tokens it has seen, their KV cache, and how far the persistent cache has them.
import type { KvCache } from "./kv-cache.js";

export class Sequence {
  readonly tokens: number[] = [];
  /** Blocks already in the persistent cache, and the hash of the last (the next block's parent). */
  savedBlocks = 0;
  lastHash: string | null = null;

  constructor(readonly cache: KvCache) {}

  get length(): number {
    return this.tokens.length;
  }

  /**
   * Forgets everything from token `length` on; returns the length kept, which is 0 when a sliding-window layer has
   * already freed keys that position needs, or a recurrent layer's state has moved past it (the caller then feeds the
   * tokens again).
   */
  async rewind(length: number): Promise<number> {
    if (!this.cache.canTruncate(Math.min(length, this.tokens.length))) length = 0;
    this.tokens.length = Math.min(length, this.tokens.length);
    await this.cache.truncate(this.tokens.length);
    if (this.savedBlocks * this.cache.policy.blockTokens > this.tokens.length) {
      // The hash chain restarts from the first block; blocks the cache already has are skipped when saving.
      this.savedBlocks = 0;
      this.lastHash = null;
    }
    return this.tokens.length;
  }

  dispose(): void {
    this.cache.free();
  }
}
