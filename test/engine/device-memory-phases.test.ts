// Prompt, decode, next prompt: the memory decode's KV blocks took (small segments) goes back to the device once, at the
// next prompt's start, and not piece by piece while its layers run (on the GPU each cuMemFree waits for the device:
// a second 32k prompt took twice the first's time). The CPU backend runs the ops; the CUDA backend's allocator, over a
// stand-in driver, is asked for every tensor, with the CUDA backend's rounding and slack in the plan.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { CpuBackend } from "../../src/backend/cpu/index.js";
import type { CpuTensor } from "../../src/backend/cpu/tensor.js";
import { DevicePool, plannedBytes, type DeviceBuffer } from "../../src/backend/cuda/memory.js";
import type { Tensor } from "../../src/backend/ops.js";
import { withModel } from "../../src/engine/model.js";
import { Random } from "../../src/util/random.js";
import { fakeArena, fakeDriver } from "../backend/fake-driver.js";
import { tinyModel } from "../helpers.js";

class PooledCpu extends CpuBackend {
  readonly driver = fakeDriver();
  readonly arena = fakeArena(2 << 20, 1 << 30);
  readonly pool = new DevicePool(this.driver.driver, this.arena.arena);
  /** Segments given back inside releaseSmallCache, and elsewhere (while ops run). */
  readonly frees = { atRelease: 0, elsewhere: 0 };
  private readonly buffers = new Map<Tensor, DeviceBuffer>();
  private releasing = false;
  override readonly workspaceSlack: number = 0.2;

  constructor() {
    super();
    const memFree = this.driver.driver.memFree;
    this.driver.driver.memFree = (ptr) => {
      this.frees[this.releasing ? "atRelease" : "elsewhere"]++;
      memFree(ptr);
    };
  }

  override deviceBytesFor(bytes: number): number {
    return plannedBytes(bytes);
  }

  override setDeviceBudget(bytes: number): void {
    this.pool.trim();
    this.pool.limit = bytes;
  }

  override releaseSmallCache(): void {
    this.releasing = true;
    try {
      this.pool.trimSmallSegments();
    } finally {
      this.releasing = false;
    }
  }

  protected override track(t: CpuTensor): CpuTensor {
    this.buffers.set(t, this.pool.alloc(t.byteLength));
    return super.track(t);
  }

  override free(t: Tensor): void {
    const b = this.buffers.get(t);
    if (b) this.pool.release(b);
    this.buffers.delete(t);
    super.free(t);
  }
}

function randomIds(n: number, seed: number): number[] {
  const r = new Random(seed);
  return Array.from({ length: n }, () => 16 + Math.floor(r.next() * 1000));
}

describe("device memory between a prompt, decode and the next prompt", () => {
  it("gives decode's KV memory back at the next prompt's start, not while its layers run", async () => {
    const dir = await tinyModel({ preset: "tiny-llama", layers: 2 });
    const backend = new PooledCpu();
    // Chunks of 2048 rows make large (arena) buffers; the KV blocks are small. Most of the prompt's KV is in RAM while
    // it runs, and comes back to the device for decode, into the memory its activations used.
    await withModel(
      dir,
      { backend, vram: 11.2e6, ram: 64e6, prefillChunk: 1024, kvBlockTokens: 64, context: 2048 },
      async (m) => {
        assert.ok(
          m.plan.kvDeviceTokens < 512 && m.plan.kvDeviceTokensDecode >= 2048,
          `shares ${m.plan.kvDeviceTokens} / ${m.plan.kvDeviceTokensDecode}`,
        );
        const first = m.createSequence();
        await m.forward(first, randomIds(2000, 1));
        await m.forward(first, [17]); // the decode share comes back
        first.dispose();
        const before = { ...backend.frees };
        const second = m.createSequence();
        await m.forward(second, randomIds(2000, 2));
        second.dispose();
        assert.ok(backend.frees.atRelease > before.atRelease, "decode's KV blocks left small segments to give back");
        assert.equal(
          backend.frees.elsewhere,
          before.elsewhere,
          "segments given back while the second prompt's layers ran",
        );
        assert.equal(backend.pool.overrun, undefined, "the pool kept to the budget");
      },
    );
  });
});
