// The CUDA backend's caching allocator, against a stand-in driver: buffers are carved from segments and merge back when
// freed, so a working set of changing sizes stays in the same memory; near the budget only segments with nothing in use
// go back to the driver, the largest first and no more than needed.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { DevicePool, blockBytes, type DeviceBuffer } from "../../src/backend/cuda/memory.js";
import { Random } from "../../src/util/random.js";
import { fakeArena, fakeDriver } from "./fake-driver.js";

const MiB = 1 << 20;

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
    assert.deepEqual(pool.stats, { driverAllocs: 1, driverFrees: 0, copyWaits: 0, copyWaitMs: 0 });
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
    assert.equal(
      pool.reserved,
      8 * MiB + 1024,
      "a small buffer near the budget takes a segment of its own size, not 2 MiB",
    );
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
      const bytes =
        random.next() < 0.5 ? 1 + Math.floor(random.next() * 300_000) : MiB + Math.floor(random.next() * 6 * MiB);
      const b = pool.alloc(bytes);
      assert.ok(b.bytes >= bytes);
      for (const other of live)
        assert.ok(
          b.ptr + BigInt(b.bytes) <= other.ptr || other.ptr + BigInt(other.bytes) <= b.ptr,
          `step ${step}: overlap`,
        );
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

describe("device pool with a virtual memory arena", () => {
  it("gives back a free stretch that lies between buffers in use, so a larger buffer fits within the limit", () => {
    const { arena, log, mappedMiB } = fakeArena();
    const pool = new DevicePool(fakeDriver().driver, arena);
    pool.limit = 64 * MiB;
    const a = pool.alloc(20 * MiB);
    const b = pool.alloc(4 * MiB); // outlives a and c, between them
    const c = pool.alloc(20 * MiB);
    const e = pool.alloc(4 * MiB); // and after c
    pool.release(a);
    pool.release(c);
    assert.equal(pool.reserved, 48 * MiB, "freed buffers stay mapped (cached)");
    const d = pool.alloc(40 * MiB); // the 20 MiB holes cannot hold it; 48 + 40 > 64 without giving (at least 24 MiB of) them back
    assert.equal(pool.reserved, 48 * MiB, "after a drain, every cached granule went back (up to 256 MiB)");
    assert.equal(pool.overrun, undefined);
    assert.equal(log.drains, 1, "one drain before the granules went back");
    assert.equal(mappedMiB(), 48);
    for (const x of [b, d, e]) pool.release(x);
    pool.trim();
    assert.equal(pool.reserved, 0);
    pool.dispose();
    assert.ok(log.released);
  });

  it("reuses cached granules without mapping or draining, and never gives back those of the buffer being handed out", () => {
    const { arena, log, isMapped } = fakeArena();
    const pool = new DevicePool(fakeDriver().driver, arena);
    pool.limit = 12 * MiB;
    const a = pool.alloc(8 * MiB);
    pool.release(a);
    const maps = log.maps;
    const b = pool.alloc(8 * MiB);
    assert.equal(b.ptr, a.ptr);
    assert.equal(log.maps, maps, "its granules were still mapped");
    assert.equal(log.drains, 0);
    const c = pool.alloc(3 * MiB); // 8 + 4 (two granules) = 12: fits
    pool.release(b);
    const d = pool.alloc(9 * MiB); // b's 8 MiB hole is too small: after c, 8 MiB more to map; 12 + 8 > 12, so b's granules go back
    assert.ok(pool.reserved <= pool.limit, `reserved ${pool.reserved / MiB} MiB`);
    assert.ok(isMapped(d.ptr) && isMapped(d.ptr + BigInt(9 * MiB - 1)), "the new buffer is mapped end to end");
    assert.ok(isMapped(c.ptr), "the buffer in use kept its memory");
    pool.release(c);
    pool.dispose();
    assert.ok(isMapped(d.ptr), "a buffer still in use keeps its memory through dispose (the context takes it)");
    assert.ok(!log.released, "and the addresses stay reserved");
  });

  it("counts a granule shared by two buffers as used until both are free", () => {
    const { arena, isMapped } = fakeArena();
    const pool = new DevicePool(fakeDriver().driver, arena);
    const a = pool.alloc(3 * MiB);
    const b = pool.alloc(3 * MiB); // granule 1 holds a's last MiB and b's first
    pool.release(a);
    pool.trim();
    assert.ok(!isMapped(a.ptr), "a's own granule went back");
    assert.ok(isMapped(a.ptr + BigInt(2 * MiB)), "the shared granule stays while b uses it");
    assert.equal(pool.reserved, 4 * MiB);
    pool.release(b);
    pool.trim();
    assert.equal(pool.reserved, 0);
  });

  it("keeps to its limit below a pass order's footprint, and above it settles into passes that map and drain nothing", () => {
    // The pass below holds at most 200 MiB at once, but its order (a freed 40 MiB stretch too small for the next 56 MiB
    // tensor) spreads it over 280 MiB of addresses: the planner's workspace slack is for that.
    for (const limit of [240, 280]) {
      const { arena, log } = fakeArena();
      const pool = new DevicePool(fakeDriver().driver, arena);
      pool.limit = limit * MiB;
      const kept = pool.alloc(40 * MiB); // weights and the like, for good
      const pass = (rows: number) => {
        // A layer pass's tensors, in MiB per 8 rows: some freed before later ones are taken, one (its output) kept.
        const mib = (n: number) => Math.ceil((n * rows) / 8) * MiB;
        const x = pool.alloc(mib(4));
        const q = pool.alloc(mib(4));
        const kv = pool.alloc(mib(2));
        const att = pool.alloc(mib(4));
        for (const b of [q, kv]) pool.release(b);
        const gate = pool.alloc(mib(14));
        const up = pool.alloc(mib(14));
        pool.release(att);
        const act = pool.alloc(mib(14));
        for (const b of [gate, up]) pool.release(b);
        const out = pool.alloc(mib(4));
        for (const b of [act, x]) pool.release(b);
        return out;
      };
      let settled = { ...log };
      let previous: DeviceBuffer | undefined;
      for (let layer = 0; layer < 12; layer++) {
        if (layer === 3) settled = { ...log };
        for (const rows of [32, 32, 32, 29]) {
          const out = pass(rows);
          if (previous) pool.release(previous);
          previous = out;
          assert.ok(pool.reserved <= pool.limit, `limit ${limit}, layer ${layer}: ${pool.reserved / MiB} MiB reserved`);
        }
      }
      if (limit === 280) {
        assert.equal(log.drains - settled.drains, 0, "no drains once settled");
        assert.equal(log.maps - settled.maps, 0, "no new mappings once settled");
      } else assert.ok(log.drains > settled.drains, "below the footprint, granules go back and come again");
      for (const b of [kept, previous!]) pool.release(b);
    }
  });

  it("gives small segments back in one go when asked, so large buffers after them free none one at a time", () => {
    // A prompt's activations (large, from the arena), then decode's KV blocks in the same memory (small segments), then
    // the next prompt's activations: each cuMemFree waits for the whole device, so none may come while they are enqueued.
    const phases = (releaseBetween: boolean) => {
      const { arena } = fakeArena();
      const { driver, freed } = fakeDriver();
      const pool = new DevicePool(driver, arena);
      pool.limit = 64 * MiB;
      const activations = () => Array.from({ length: 6 }, () => pool.alloc(8 * MiB));
      for (const b of activations()) pool.release(b);
      const kvBlocks = Array.from({ length: 96 }, () => pool.alloc(512 << 10)); // 48 MiB in small segments
      for (const b of kvBlocks) pool.release(b);
      if (releaseBetween) pool.trimSmallSegments();
      const freedBefore = freed.length;
      const again = activations();
      assert.ok(pool.reserved <= pool.limit);
      for (const b of again) pool.release(b);
      return { freedBefore, freedAfter: freed.length - freedBefore };
    };
    assert.deepEqual(
      phases(true),
      { freedBefore: 24, freedAfter: 0 },
      "all 24 small segments at once, none while the activations come",
    );
    assert.ok(
      phases(false).freedAfter > 1,
      "without it they go back one at a time, as the activations need the memory",
    );
  });

  it("never hands out overlapping or unmapped memory over a random run within its limit", () => {
    const { arena, isMapped } = fakeArena();
    const pool = new DevicePool(fakeDriver().driver, arena);
    pool.limit = 96 * MiB;
    const random = new Random(5);
    const live: DeviceBuffer[] = [];
    let inUse = 0;
    for (let step = 0; step < 3000; step++) {
      const bytes = MiB + Math.floor(random.next() * 12 * MiB);
      if (
        live.length > 0 &&
        (random.next() < 0.45 || inUse + blockBytes(bytes) + 2 * MiB * (live.length + 2) > pool.limit)
      ) {
        const [b] = live.splice(Math.floor(random.next() * live.length), 1);
        inUse -= b!.bytes;
        pool.release(b!);
        continue;
      }
      const b = pool.alloc(bytes);
      for (const other of live)
        assert.ok(
          b.ptr + BigInt(b.bytes) <= other.ptr || other.ptr + BigInt(other.bytes) <= b.ptr,
          `step ${step}: overlap`,
        );
      for (let off = 0; off < b.bytes; off += MiB)
        assert.ok(isMapped(b.ptr + BigInt(off)), `step ${step}: unmapped byte handed out`);
      assert.ok(pool.reserved <= pool.limit, `step ${step}: ${pool.reserved / MiB} MiB reserved`);
      live.push(b);
      inUse += b.bytes;
    }
    for (const b of live.splice(0)) pool.release(b);
    pool.dispose();
    assert.equal(pool.reserved, 0);
  });
});
