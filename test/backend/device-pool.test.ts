// The CUDA backend's caching pool near its budget, against a stand-in allocator: a cached buffer up to twice the size
// serves before the driver is asked, and trimming frees only what the new buffer needs, largest first.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { DevicePool } from "../../src/backend/cuda/memory.js";

const MiB = 1 << 20;

describe("device pool", () => {
  it("reuses a larger cached buffer under pressure and trims only what a new buffer needs", () => {
    let next = 0n;
    const freed: number[] = [];
    const sizeOf = new Map<bigint, number>();
    const pool = new DevicePool({
      memAlloc: (bytes: number) => {
        sizeOf.set(++next, bytes);
        return next;
      },
      memFree: (ptr: bigint) => void freed.push(sizeOf.get(ptr)! / MiB),
    });
    pool.limit = 16 * MiB;
    const [a, b, c] = [pool.alloc(8 * MiB), pool.alloc(4 * MiB), pool.alloc(2 * MiB)];
    for (const x of [a, b, c]) pool.release(x);
    assert.equal(pool.alloc(8 * MiB), a, "same size: from the cache");

    // 14 MiB reserved: a 3 MiB buffer takes the cached 4 MiB one (within twice its size), no driver call.
    assert.equal(pool.alloc(3 * MiB), b);
    assert.deepEqual(pool.stats, { driverAllocs: 3, driverFrees: 0 });

    // A 5 MiB buffer: nothing cached within 10 MiB but 2 MiB is too small; 14 + 5 > 16 frees 3 MiB: the 2 MiB buffer,
    // all that is cached (the rest is in use), then asks the driver.
    pool.alloc(5 * MiB);
    assert.deepEqual(freed, [2]);
    assert.deepEqual(pool.stats, { driverAllocs: 4, driverFrees: 1 });
  });

  it("frees cached buffers largest first, stopping once enough is free", () => {
    let next = 0n;
    const freed: number[] = [];
    const sizeOf = new Map<bigint, number>();
    const pool = new DevicePool({
      memAlloc: (bytes: number) => {
        sizeOf.set(++next, bytes);
        return next;
      },
      memFree: (ptr: bigint) => void freed.push(sizeOf.get(ptr)! / MiB),
    });
    pool.limit = 12 * MiB;
    for (const x of [pool.alloc(1 * MiB), pool.alloc(2 * MiB), pool.alloc(4 * MiB), pool.alloc(4 * MiB)]) pool.release(x);
    pool.alloc(9 * MiB); // 11 + 9 > 12: free 8 MiB, the two 4 MiB buffers; 1 and 2 stay cached
    assert.deepEqual(freed, [4, 4]);
    assert.equal(pool.reserved, 12 * MiB);
  });
});
