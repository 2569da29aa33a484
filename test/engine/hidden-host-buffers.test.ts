// A prompt of several chunks keeps its hidden states in pinned host buffers between layers. Pinning memory stalls the
// host (milliseconds per megabyte on a GPU machine), so the plan's buffers (Plan.hiddenHostBuffers, one chunk's rows
// each) are taken at load and reused by every prompt: a forward allocates none, and closing the model frees them.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { CpuBackend } from "../../src/backend/cpu/index.js";
import type { HostBuffer } from "../../src/backend/ops.js";
import { withModel } from "../../src/engine/model.js";
import { Random } from "../../src/util/random.js";
import { tinyModel } from "../helpers.js";

class HostCountingCpu extends CpuBackend {
  hostAllocs = 0;

  override allocHost(byteLength: number): HostBuffer {
    this.hostAllocs++;
    return super.allocHost(byteLength);
  }
}

describe("hidden-state host buffers", () => {
  it("are taken at load, reused by each prompt, and freed on close", async () => {
    const dir = await tinyModel({ preset: "tiny-llama", layers: 2 });
    const backend = new HostCountingCpu();
    const r = new Random(5);
    const ids = Array.from({ length: 1000 }, () => 16 + Math.floor(r.next() * 1000));
    await withModel(dir, { backend, vram: 64e6, ram: 64e6, prefillChunk: 256, context: 1024 }, async (m) => {
      assert.deepEqual(m.plan.hiddenHostBuffers, { count: 4, rows: 256 }, "1024 rows of context in chunks of 256");
      assert.equal(m.plan.hostBytes.activations, 4 * 256 * m.arch.shape.hiddenSize * 4);
      const atLoad = backend.hostAllocs;
      for (let prompt = 0; prompt < 2; prompt++) {
        const seq = m.createSequence();
        await m.forward(seq, ids);
        seq.dispose();
      }
      assert.equal(backend.hostAllocs, atLoad, "no pinned allocation while prompts run");
    });
    assert.equal(backend.memory.hostBytes, 0, "closing the model frees them");
  });
});
