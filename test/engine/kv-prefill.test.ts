// A long prompt's chunks within one span attend to the span's own KV on the device: a layer's new blocks stay there
// for its whole pass (planner kvTransitBlocks), so no chunk stages an earlier chunk's KV back from RAM; only earlier
// spans' KV beyond the device share is staged.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { CpuBackend } from "../../src/backend/cpu/index.js";
import type { HostBuffer, Tensor } from "../../src/backend/ops.js";
import { withModel } from "../../src/engine/model.js";
import { Random } from "../../src/util/random.js";
import { maxAbsDiff, tinyModel } from "../helpers.js";

class CountingCpu extends CpuBackend {
  /** Copies of KV blocks (K or V, `blockBytes` each) from host memory to the device: staging. */
  kvCopiesIn = 0;
  blockBytes = 0;

  override async copyToDevice(
    dst: Tensor,
    dstOffset: number,
    src: HostBuffer,
    srcOffset: number,
    length: number,
  ): Promise<void> {
    if (length === this.blockBytes) this.kvCopiesIn++;
    return super.copyToDevice(dst, dstOffset, src, srcOffset, length);
  }
}

describe("KV while a long prompt runs", () => {
  it("chunks of one span stage none of the span's KV from RAM; a later span stages the earlier one's", async () => {
    const dir = await tinyModel({ preset: "tiny-llama", layers: 2 });
    const r = new Random(3);
    const ids = Array.from({ length: 1024 }, () => 16 + Math.floor(r.next() * 1000));
    const run = async (prefillSpan: number) => {
      const backend = new CountingCpu();
      // tiny-llama: 2 KV heads x 16 dims, f32, 16-token blocks.
      backend.blockBytes = 16 * 2 * 16 * 4;
      return withModel(
        dir,
        { backend, vram: 1.9e6, ram: 64e6, prefillChunk: 128, prefillSpan, kvBlockTokens: 16, context: 1024 },
        async (m) => {
          assert.ok(
            m.plan.kvDeviceTokens < 512,
            `device share ${m.plan.kvDeviceTokens}: the first span's KV must go partly to RAM`,
          );
          const seq = m.createSequence();
          const logits = await m.forward(seq, ids);
          seq.dispose();
          return { logits, copies: backend.kvCopiesIn };
        },
      );
    };
    const oneSpan = await run(1024);
    const twoSpans = await run(512);
    assert.equal(oneSpan.copies, 0, "a chunk staged KV of its own span from RAM");
    assert.ok(twoSpans.copies > 0, "the second span stages the first's KV beyond the device share");
    assert.ok(maxAbsDiff(oneSpan.logits, twoSpans.logits) < 1e-4);
  });
});
