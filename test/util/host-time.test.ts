// The host-time profile: off, it hands the work back untouched; on, a prefill reports where the host spent its time.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { withModel } from "../../src/engine/model.js";
import { runnerTimes, timeHost } from "../../src/util/host-time.js";
import { storiesCopy } from "../helpers.js";

describe("host time", () => {
  it("is free while off, and on sums the time to settle by label, failures included", async () => {
    const work = Promise.resolve(1);
    assert.equal(
      timeHost("x", () => work),
      work,
      "off: the same promise",
    );
    runnerTimes.on = true;
    try {
      assert.equal(await timeHost("wait", () => new Promise((resolve) => setTimeout(() => resolve(2), 5))), 2);
      await assert.rejects(
        timeHost("wait", () => Promise.reject(new Error("failed"))),
        /failed/,
      );
      const entry = runnerTimes.times.take().find((t) => t.what === "wait")!;
      assert.equal(entry.count, 2);
      assert.ok(entry.ms >= 4, `${entry.ms} ms`);
    } finally {
      runnerTimes.on = false;
      runnerTimes.times.take();
    }
  });

  it("reports a chunked prefill's layer passes, weight waits and KV settles", async () => {
    runnerTimes.on = true;
    try {
      await withModel(await storiesCopy(), { prefillChunk: 16, kvBlockTokens: 16 }, async (m) => {
        await m.complete(
          { ids: Array.from({ length: 40 }, (_, i) => 1 + (i % 300)) },
          { maxTokens: 1, temperature: 0 },
        );
      });
      const times = runnerTimes.times.take();
      const count = (label: string) => times.find((t) => t.what === label)?.count ?? 0;
      assert.equal(count("layer pass (enqueue and its waits)"), 5 * 3, "5 layers x 3 chunks");
      assert.equal(count("layer weights"), 5);
      // A layer's KV leaves the device once its pass is done; the layer before's lands after the first chunk, the last
      // layer's at the end.
      assert.equal(count("KV settle"), 5);
      assert.equal(count("KV moves landing"), 5 + 1);
      assert.ok(count("hidden-state copies of the layer before") >= 5);
    } finally {
      runnerTimes.on = false;
      runnerTimes.times.take();
    }
  });
});
