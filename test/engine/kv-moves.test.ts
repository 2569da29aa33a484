// KV blocks leaving the device: settle enqueues their copies to host memory and returns without waiting; the blocks
// stay on the device (attention reads them there) until the next settle lands them. A copy that fails leaves them on
// the device, whole. A backend stand-in holds each copy to host until the test lets it finish.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { ModelShape } from "../../src/arch/types.js";
import { CpuBackend } from "../../src/backend/cpu/index.js";
import type { Backend, HostBuffer, Tensor } from "../../src/backend/ops.js";
import { KvBlockPool } from "../../src/engine/kv-blocks.js";
import { KvCache } from "../../src/engine/kv-cache.js";
import { KvSpill } from "../../src/engine/kv-spill.js";
import { tempDir } from "../helpers.js";

/** The CPU backend, but each copy to host lands (or fails) only when `finish` is called. */
function heldCopies(): { backend: Backend; pending: () => number; finish: (fail?: boolean) => void } {
  const cpu = new CpuBackend();
  const held: { run: () => Promise<void>; done: (e?: Error) => void }[] = [];
  const backend = Object.create(cpu) as Backend;
  backend.copyToHost = (src: Tensor, srcOffset: number, dst: HostBuffer, dstOffset: number, length: number) =>
    new Promise<void>((resolve, reject) =>
      held.push({
        run: () => cpu.copyToHost(src, srcOffset, dst, dstOffset, length),
        done: (e) => (e ? reject(e) : resolve()),
      }),
    );
  return {
    backend,
    pending: () => held.length,
    finish: (fail = false) => {
      for (const h of held.splice(0)) {
        if (fail) h.done(new Error("copy failed"));
        else void h.run().then(() => h.done());
      }
    },
  };
}

const shape = { numLayers: 1, kvLayers: [{ kvHeads: 1, headDim: 4 }] } as unknown as ModelShape;
const rows = (backend: Backend, from: number, n: number) => {
  const t = backend.alloc([n, 4], "f32");
  void backend.upload(t, new Uint8Array(Float32Array.from({ length: 4 * n }, (_, i) => from * 4 + i).buffer));
  return t;
};

describe("KV blocks moving off the device", () => {
  it("settle does not wait for the copies it starts; the next one lands them in host memory", async () => {
    const { backend, pending, finish } = heldCopies();
    const cache = new KvCache(
      backend,
      shape,
      { blockTokens: 2, dtype: "f32", deviceBlocks: 1, decodeDeviceBlocks: 1, hostBlocks: 8, dropOutsideWindow: false },
      new KvSpill(await tempDir()),
      { read: async () => {} },
      new KvBlockPool(backend, 2, "f32"),
    );
    const k = rows(backend, 0, 4);
    cache.append(0, k, k, 0, 4); // two full blocks: one over the device share
    await cache.settle(0); // returns with the copies still held
    assert.equal(pending(), 2, "K and V copies enqueued");
    assert.deepEqual(
      cache.blocks(0).map((b) => b.tier),
      ["device", "device"],
      "still on the device until landed",
    );

    finish();
    const k2 = rows(backend, 4, 2);
    cache.append(0, k2, k2, 0, 2);
    await cache.settle(0); // lands the first move, starts the next
    assert.deepEqual(
      cache.blocks(0).map((b) => b.tier),
      ["device", "host", "device"],
    );
    const bytes = new Uint8Array(2 * 2 * 4 * 4);
    await cache.blockBytesOf(0, cache.blocks(0)[1]!, bytes);
    assert.deepEqual(
      Array.from(new Float32Array(bytes.buffer).subarray(0, 8)),
      [8, 9, 10, 11, 12, 13, 14, 15],
      "the block's K rows in host memory",
    );
    finish();
    await cache.finishMoves();
    assert.deepEqual(
      cache.blocks(0).map((b) => b.tier),
      ["device", "host", "host"],
    );
  });

  it("a copy that fails leaves its block on the device, whole, and the error is thrown", async () => {
    const { backend, finish } = heldCopies();
    const cache = new KvCache(
      backend,
      shape,
      { blockTokens: 2, dtype: "f32", deviceBlocks: 1, decodeDeviceBlocks: 1, hostBlocks: 8, dropOutsideWindow: false },
      new KvSpill(await tempDir()),
      { read: async () => {} },
      new KvBlockPool(backend, 2, "f32"),
    );
    const k = rows(backend, 0, 4);
    cache.append(0, k, k, 0, 4);
    await cache.settle(0);
    finish(true);
    await assert.rejects(cache.finishMoves(), /copy failed/);
    assert.deepEqual(
      cache.blocks(0).map((b) => b.tier),
      ["device", "device"],
    );
    assert.deepEqual(Array.from(await backend.read(cache.blocks(0)[1]!.k!)), [8, 9, 10, 11, 12, 13, 14, 15]);
  });

  it("the decode share brings the oldest blocks back from RAM, and the prefill share sends them out again without a copy, freeing their memory", async () => {
    const cpu = new CpuBackend();
    let copiesToHost = 0;
    const backend = Object.create(cpu) as Backend;
    backend.copyToHost = (...a: Parameters<Backend["copyToHost"]>) => (copiesToHost++, cpu.copyToHost(...a));
    const pool = new KvBlockPool(backend, 2, "f32");
    const cache = new KvCache(
      backend,
      shape,
      { blockTokens: 2, dtype: "f32", deviceBlocks: 1, decodeDeviceBlocks: 3, hostBlocks: 8, dropOutsideWindow: false },
      new KvSpill(await tempDir()),
      { read: async () => {} },
      pool,
    );
    pool.reserve(4, 3); // the prefill share, a partial block and one in transit
    const k = rows(backend, 0, 10);
    cache.append(0, k, k, 0, 10); // five full blocks
    await cache.settle(0);
    await cache.finishMoves();
    const tiers = () =>
      cache
        .blocks(0)
        .map((b) => b.tier)
        .join(",");
    assert.equal(tiers(), "device,host,host,host,host");
    const prefillBytes = backend.memory.deviceBytes;

    await cache.useShare("decode");
    assert.equal(tiers(), "device,device,device,host,host", "the oldest RAM blocks come back");
    assert.deepEqual(
      Array.from(await backend.read(cache.blocks(0)[2]!.k!)),
      [16, 17, 18, 19, 20, 21, 22, 23],
      "with their bytes",
    );

    const copiesBefore = copiesToHost;
    await cache.useShare("prefill");
    assert.equal(tiers(), "device,host,host,host,host");
    assert.equal(
      copiesToHost,
      copiesBefore,
      "the blocks brought back still had their RAM copies: no copy to send them out",
    );
    const bytes = new Uint8Array(2 * 2 * 4 * 4);
    await cache.blockBytesOf(0, cache.blocks(0)[2]!, bytes);
    assert.deepEqual(Array.from(new Float32Array(bytes.buffer).subarray(0, 8)), [16, 17, 18, 19, 20, 21, 22, 23]);
    assert.ok(backend.memory.deviceBytes <= prefillBytes, "blocks made beyond the reserve went back to the backend");
  });
});
