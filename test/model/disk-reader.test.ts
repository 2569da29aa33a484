// The reader's busy time (seconds with a read in flight) counts a read still under way: a reader kept busy through a
// whole pass would otherwise report none for it, and the bench's disk-busy share of a decode step would read 0.
import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { describe, it } from "node:test";
import { DiskReader } from "../../src/model/disk-reader.js";
import { fileIoWithRead, tempDir } from "../helpers.js";

describe("disk reader stats", () => {
  it("counts the busy time of a read still in flight, and its bytes once read", async () => {
    const dir = await tempDir("lw-reader-");
    const file = join(dir, "data");
    await writeFile(file, new Uint8Array(4096).fill(7));
    let letGo!: () => void;
    const held = new Promise<void>((resolve) => (letGo = resolve));
    const reader = new DiskReader({
      direct: false,
      io: fileIoWithRead(async (read, args) => (await held, read(...args))),
    });
    try {
      assert.deepEqual(reader.stats, { diskReadBytes: 0, readBusyS: 0 }, "idle: nothing yet");
      const into = new Uint8Array(4096);
      const reading = reader.read(file, 0, 4096, into);
      await sleep(20);
      const during = reader.stats;
      assert.ok(during.readBusyS > 0, `busy while the read is held: ${during.readBusyS}`);
      assert.equal(during.diskReadBytes, 0);
      letGo();
      await reading;
      const after = reader.stats;
      assert.ok(after.readBusyS >= during.readBusyS);
      assert.equal(after.diskReadBytes, 4096);
      assert.equal(into[4095], 7);
      await sleep(10);
      assert.equal(reader.stats.readBusyS, after.readBusyS, "idle again: the busy time stops growing");
    } finally {
      await reader.close();
    }
  });
});
