// The disk floor's measurement reads a checkpoint's shards one after another, up to its byte cap, at a few queue depths
// (the best counts), and frees its buffers; the host->device one takes the best of a few rounds of copies.
import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { CpuBackend } from "../../src/backend/cpu/index.js";
import { measureDisk, measureHostToDevice } from "../../src/bench/bandwidth.js";
import { tempDir } from "../helpers.js";

describe("disk measurement", () => {
  it("reads the files in order, whole 4 KiB pages of each, up to the cap", async () => {
    const dir = await tempDir("lw-disk-");
    const files = [join(dir, "a"), join(dir, "b")];
    await writeFile(files[0]!, new Uint8Array(300 << 20).fill(1)); // more than one 256 MiB read
    await writeFile(files[1]!, new Uint8Array((5 << 20) + 100).fill(2)); // a partial page at the end is left out
    const backend = new CpuBackend();
    const all = await measureDisk(backend, files, 2 ** 33);
    assert.equal(all.bytes, (300 << 20) + (5 << 20));
    assert.ok(all.gbps > 0 && all.seconds > 0);
    assert.ok([8, 32].includes(all.depth), `the best of the queue depths tried: ${all.depth}`);
    const capped = await measureDisk(backend, files, 64 << 20);
    assert.equal(capped.bytes, 64 << 20);
    assert.equal(backend.memory.hostBytes, 0, "its buffers are freed");
  });

  it("host->device: the best round of copies, its bytes and time, buffers freed", async () => {
    const backend = new CpuBackend();
    const link = await measureHostToDevice(backend, 1 << 20, 4, 3);
    assert.equal(link.bytes, 4 << 20, "one round's bytes");
    assert.ok(link.seconds > 0 && link.gbps === link.bytes / link.seconds / 1e9);
    assert.equal(backend.memory.hostBytes, 0);
    assert.equal(backend.memory.deviceBytes, 0);
  });
});
