// The CUDA backend's pinned ring for small uploads, against a recording stand-in for the driver: every copy reads the
// bytes it was given, and a half is rewritten only after the driver confirmed the copies from it were done.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { UploadRing, type RingDriver } from "../../src/backend/cuda/upload-ring.js";

describe("upload ring", () => {
  it("copies through alternating halves, waiting for a half's last copies before reusing it", () => {
    const view = new Uint8Array(64); // halves of 32 bytes
    const log: string[] = [];
    const seen: number[][] = []; // bytes each copy reads, when it is enqueued
    let events = 0;
    const driver: RingDriver = {
      eventCreate: () => BigInt(++events),
      eventRecord: (e) => void log.push(`record ${e}`),
      eventSynchronize: (e) => void log.push(`sync ${e} (half 0 starts ${view[0]})`),
      eventDestroy: () => {},
    };
    const ring = new UploadRing(driver, view, (dst, at, bytes) => {
      log.push(`copy ${bytes} from ${at} to ${dst}`);
      seen.push(Array.from(view.subarray(at, at + bytes)));
    });
    const bytes = (n: number, v: number) => new Uint8Array(n).fill(v);
    ring.copy(10n, bytes(16, 1), 7n);
    ring.copy(11n, bytes(10, 2), 7n);
    ring.copy(12n, bytes(8, 3), 7n); // 16 + 16 (aligned) + 8 > 32: the other half
    ring.copy(13n, bytes(20, 4), 7n); // 32 + 16 + 20 > 64: back to the first, once its copies are done
    assert.deepEqual(log, [
      "copy 16 from 0 to 10",
      "copy 10 from 16 to 11",
      "record 1",
      "copy 8 from 32 to 12",
      "record 2",
      "sync 1 (half 0 starts 1)",
      "copy 20 from 0 to 13",
    ]);
    assert.deepEqual(seen, [Array(16).fill(1), Array(10).fill(2), Array(8).fill(3), Array(20).fill(4)]);
    assert.throws(() => ring.copy(14n, bytes(33, 5), 7n), RangeError);
  });
});
