// The CUDA backend's opt-in stream profile, against a stand-in driver whose events carry fake timestamps: GPU time is
// summed by name, the idle time between ops is the span less that sum and is put down to the op that ends it (and to the
// pair of ops around it, with the part where the op after was already enqueued: a wait on another stream, not on the
// host), and a report starts the next one afresh.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { StreamProfile, type ProfileDriver } from "../../src/backend/cuda/stream-profile.js";

describe("stream profile", () => {
  it("sums GPU time by name, reports the idle time, frees its events and starts over", async () => {
    let clock = 0;
    let created = 0;
    const recordedAt = new Map<bigint, number>();
    const destroyed = new Set<bigint>();
    const driver: ProfileDriver = {
      eventCreate: () => BigInt(++created),
      eventRecord: (e) => void recordedAt.set(e, clock),
      eventWait: async () => {},
      elapsedMs: (a, b) => recordedAt.get(b)! - recordedAt.get(a)!,
      eventDestroy: (e) => void destroyed.add(e),
    };
    // The host enqueues at `host` (its own clock): ahead of the GPU, but late for the copy to the host.
    let host = 0;
    const profile = new StreamProfile(driver, 1n, () => host);
    const op = (name: string, ms: number, idleAfter = 0) => {
      profile.time(name, () => (clock += ms));
      clock += idleAfter;
    };
    op("gemm", 3, 1);
    op("norm", 0.5);
    op("gemm", 2, 2);
    host += 10;
    op("copy to host", 1);
    await profile.hostWait("sync", async () => {});
    await assert.rejects(
      profile.hostWait("copy to host", () => Promise.reject(new Error("copy failed"))),
      /copy failed/,
    );
    const report = await profile.report();
    assert.deepEqual(
      report.hostWaits.map((w) => [w.what, w.count]).sort(),
      [
        ["copy to host", 1],
        ["sync", 1],
      ],
      "host waits are counted by what they waited for, failed ones too",
    );
    assert.deepEqual(
      report.hostWaitIntervals.map((w) => w.what).sort(),
      ["copy to host", "sync"],
      "each host wait is kept with its times, to line up with the gaps",
    );
    const { hostWaits: _, hostWaitIntervals: __, ...stream } = report;
    assert.deepEqual(stream, {
      spanMs: 9.5,
      busyMs: 6.5,
      byName: [
        { name: "gemm", count: 2, ms: 5, idleBeforeMs: 0 },
        { name: "copy to host", count: 1, ms: 1, idleBeforeMs: 2 },
        { name: "norm", count: 1, ms: 0.5, idleBeforeMs: 1 },
      ],
      gaps: [
        { between: "gemm -> copy to host", count: 1, ms: 2, deviceWaitMs: 0 },
        { between: "gemm -> norm", count: 1, ms: 1, deviceWaitMs: 1 },
        { between: "norm -> gemm", count: 1, ms: 0, deviceWaitMs: 0 },
      ],
      worstGaps: [
        {
          index: 3,
          ops: 4,
          between: "gemm -> copy to host",
          ms: 2,
          previousEnqueuedMs: 0,
          enqueuedMs: 10,
          deviceWait: false,
        },
        { index: 1, ops: 4, between: "gemm -> norm", ms: 1, previousEnqueuedMs: 0, enqueuedMs: 0, deviceWait: true },
        { index: 2, ops: 4, between: "norm -> gemm", ms: 0, previousEnqueuedMs: 0, enqueuedMs: 0, deviceWait: true },
      ],
    });
    assert.equal(destroyed.size, created);
    assert.deepEqual(await profile.report(), {
      spanMs: 0,
      busyMs: 0,
      byName: [],
      hostWaits: [],
      hostWaitIntervals: [],
      gaps: [],
      worstGaps: [],
    });
  });
});
