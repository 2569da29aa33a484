// Stand-ins for the CUDA driver's allocation calls, for the device pool and its arena (no GPU needed).
import assert from "node:assert/strict";
import { DeviceArena, type ArenaDriver } from "../../src/backend/cuda/arena.js";
import type { PoolDriver } from "../../src/backend/cuda/memory.js";

const MiB = 1 << 20;

/** Segments from cuMemAlloc (far apart), the sizes given back by cuMemFree, and copy events done or destroyed. */
export function fakeDriver() {
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

/** A stand-in for the driver's virtual memory: which granules are mapped, and how often the device was drained. */
export function fakeArena(granule = 2 * MiB, bytes = 1024 * MiB) {
  const base = 1n << 40n;
  const mapped = new Map<bigint, bigint>();
  const log = { drains: 0, maps: 0, unmaps: 0, released: false };
  const driver: ArenaDriver = {
    memAddressReserve: () => base,
    memAddressFree: () => void (log.released = true),
    memMapNew: (ptr: bigint, n: number) => {
      assert.equal(n, granule);
      assert.ok(!mapped.has(ptr), "mapped twice");
      mapped.set(ptr, ptr + 7n);
      log.maps++;
      return ptr + 7n;
    },
    memUnmapRelease: (ptr: bigint, _n: number, handle: bigint) => {
      assert.equal(mapped.get(ptr), handle);
      assert.ok(log.drains > 0, "unmapped only after a drain");
      mapped.delete(ptr);
      log.unmaps++;
    },
  };
  const arena = new DeviceArena(driver, 0, granule, bytes, () => void log.drains++);
  const mappedMiB = () => (mapped.size * granule) / MiB;
  return { arena, log, mappedMiB, isMapped: (ptr: bigint) => mapped.has(ptr - (ptr % BigInt(granule))) };
}
