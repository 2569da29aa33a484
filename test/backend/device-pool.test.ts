// The CUDA backend's caching allocator, against a stand-in driver: buffers are carved from segments and merge back when
// freed, so a working set of changing sizes stays in the same memory; near the budget only segments with nothing in use
// go back to the driver, the largest first and no more than needed.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { DevicePool, blockBytes, type DeviceBuffer, type PoolDriver } from "../../src/backend/cuda/memory.js";
import { Random } from "../../src/util/random.js";

const MiB = 1 << 20;

function fakeDriver() {
  let next = 0n;
  const sizes = new Map<bigint, number>();
  const freed: number[] = [];
  /** Events of copies to the host that are done; eventSynchronize marks one done. */
  const done = new Set<bigint>();
  const destroyed: bigint[] = [];
  const driver: PoolDriver = {
    memAlloc: (bytes: number) => {
      next += 1n << 32n; // segments far apart, so offsets within one are plain to read
      sizes.set(next, bytes);
      return next;
    },
    memFree: (ptr: bigint) => void freed.push(sizes.get(ptr)! / MiB),
    eventDone: (e: bigint) => done.has(e),
    eventSynchronize: (e: bigint) => void done.add(e),
    eventDestroy: (e: bigint) => void destroyed.push(e),
  };
  return { freed, done, destroyed, driver };
}

describe("device pool", () => {
  it("carves buffers of other sizes out of a freed one and merges them back when they are freed", () => {
    const { driver } = fakeDriver();
    const pool = new DevicePool(driver);
    const a = pool.alloc(8 * MiB);
    pool.release(a);
    const b = pool.alloc(3 * MiB);
    const c = pool.alloc(4 * MiB);
    assert.equal(b.ptr, a.ptr);
    assert.equal(c.ptr, a.ptr + BigInt(3 * MiB));
    assert.equal(pool.stats.driverAllocs, 1);
    pool.release(c);
    pool.release(b);
    const d = pool.alloc(8 * MiB);
    assert.equal(d.ptr, a.ptr, "the freed pieces merged back into one 8 MiB block");
    assert.deepEqual(pool.stats, { driverAllocs: 1, driverFrees: 0, copyWaits: 0 });
    assert.throws(() => (pool.release(d), pool.release(d)), /released twice/);
  });

  it("takes the smallest free block that fits, and keeps small requests in their own segments", () => {
    const { driver } = fakeDriver();
    const pool = new DevicePool(driver);
    const big = pool.alloc(6 * MiB);
    const gap = pool.alloc(2 * MiB); // keeps the two free stretches apart
    const mid = pool.alloc(3 * MiB);
    pool.release(big);
    pool.release(mid);
    assert.equal(pool.alloc(3 * MiB).ptr, mid.ptr, "the 3 MiB hole, not the 6 MiB one");
    const s1 = pool.alloc(1000);
    const s2 = pool.alloc(1000);
    assert.equal(blockBytes(1000), 1024);
    assert.equal(s2.ptr, s1.ptr + 1024n);
    assert.notEqual(s1.ptr >> 32n, gap.ptr >> 32n, "small buffers come from a small segment");
    assert.equal(pool.stats.driverAllocs, 4);
  });

  it("near the budget frees only segments with nothing in use, largest first, as many as the new one needs", () => {
    const { driver, freed } = fakeDriver();
    const pool = new DevicePool(driver);
    pool.limit = 16 * MiB;
    const held = pool.alloc(2 * MiB);
    const four = [pool.alloc(4 * MiB), pool.alloc(4 * MiB)];
    const one = pool.alloc(3 * MiB);
    for (const b of [...four, one]) pool.release(b);
    const six = pool.alloc(6 * MiB); // 13 MiB held + 6 > 16: 3 MiB must go: one 4 MiB segment; the other and the 3 MiB one stay cached
    assert.deepEqual(freed, [4]);
    assert.equal(pool.reserved, 15 * MiB);
    pool.trim();
    assert.deepEqual(freed, [4, 4, 3], "trim frees every segment with nothing in use...");
    assert.equal(pool.reserved, 8 * MiB, "...and keeps those in use");
    pool.release(held);
    pool.release(six);
    assert.equal(pool.cachedBytes(), 8 * MiB);
    pool.limit = 9 * MiB;
    assert.equal(pool.alloc(1000).bytes, 1024);
    assert.equal(pool.reserved, 8 * MiB + 1024, "a small buffer near the budget takes a segment of its own size, not 2 MiB");
  });

  it("never hands out overlapping memory over a random run, and merges everything back", () => {
    const { driver } = fakeDriver();
    const pool = new DevicePool(driver);
    pool.limit = 64 * MiB;
    const random = new Random(3);
    const live: DeviceBuffer[] = [];
    for (let step = 0; step < 3000; step++) {
      if (live.length > 0 && random.next() < 0.45) {
        pool.release(live.splice(Math.floor(random.next() * live.length), 1)[0]!);
        continue;
      }
      const bytes = random.next() < 0.5 ? 1 + Math.floor(random.next() * 300_000) : MiB + Math.floor(random.next() * 6 * MiB);
      const b = pool.alloc(bytes);
      assert.ok(b.bytes >= bytes);
      for (const other of live) assert.ok(b.ptr + BigInt(b.bytes) <= other.ptr || other.ptr + BigInt(other.bytes) <= b.ptr, `step ${step}: overlap`);
      live.push(b);
    }
    for (const b of live.splice(0)) pool.release(b);
    assert.equal(pool.cachedBytes(), pool.reserved, "all free again");
    pool.trim();
    assert.equal(pool.reserved, 0, "every segment is one free block again, so all go back");
    assert.equal(pool.stats.driverAllocs, pool.stats.driverFrees);
  });

  it("holds a buffer back while its copy to the host runs, waiting for the copy only when nothing else fits", () => {
    const { driver, done, destroyed } = fakeDriver();
    const pool = new DevicePool(driver);
    pool.limit = 8 * MiB;
    const a = pool.alloc(4 * MiB);
    a.pendingRead = 101n;
    pool.release(a);
    const b = pool.alloc(4 * MiB);
    assert.notEqual(b.ptr, a.ptr, "the copy may still read a: b gets new memory");
    done.add(101n);
    pool.release(b);
    const c = pool.alloc(4 * MiB);
    assert.equal(c.ptr, a.ptr, "a's copy is done: its memory serves again");
    assert.deepEqual(destroyed, [101n]);

    c.pendingRead = 102n;
    pool.release(c);
    const d = pool.alloc(4 * MiB); // the free 4 MiB (b's)
    const e = pool.alloc(4 * MiB); // nothing free, 8 MiB held: waits for c's copy, then takes its memory
    assert.equal(e.ptr, a.ptr);
    assert.ok(done.has(102n), "waited for the copy");
    assert.equal(pool.stats.copyWaits, 1);
    assert.equal(pool.stats.driverAllocs, 2);
    assert.throws(() => (pool.release(d), pool.release(d)), /released twice/);
  });
});
