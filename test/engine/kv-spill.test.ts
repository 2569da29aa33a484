// KV that overflows RAM goes to a scratch file; that is not optional, so a full or failing disk there is a clear error
// that names the spill file and nothing more of the system.
import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { KvSpill, diskWriteError } from "../../src/engine/kv-spill.js";
import { CacheError } from "../../src/errors.js";
import { tempDir } from "../helpers.js";

const errno = (code: string, message: string) => Object.assign(new Error(message), { code });

describe("KV spill on a full or failing disk", () => {
  it("DISK_FULL names the spill file and nothing more of the system", () => {
    const e = diskWriteError(
      "/tmp/layerwise-kv-abc/spill.kv",
      4096,
      errno("ENOSPC", "ENOSPC: no space left on device, write"),
    );
    assert.equal(e.code, "DISK_FULL");
    assert.equal(
      e.message,
      "/tmp/layerwise-kv-abc/spill.kv: no space left on the device writing 4096 bytes of KV that did not fit in memory",
    );
    assert.doesNotMatch(e.hint!, /--kv-cache-max/, "the persistent cache's limit does not bound spilled KV");
    const other = diskWriteError(
      "/tmp/layerwise-kv-abc/spill.kv",
      4096,
      errno("EIO", "EIO: i/o error, write '/home/someone/secret'"),
    );
    assert.equal(
      other.message,
      "/tmp/layerwise-kv-abc/spill.kv: writing 4096 bytes of KV that did not fit in memory failed (EIO)",
    );
  });

  it("a spill folder that cannot be made is a clear error naming it, and disposing after it is fine", async () => {
    const work = await tempDir();
    await writeFile(join(work, "a-file"), "mine");
    const spill = new KvSpill(join(work, "a-file"));
    await assert.rejects(spill.write(new Uint8Array(16)), (e: CacheError) => {
      assert.ok(e instanceof CacheError);
      assert.equal(e.code, "KV_WRITE_FAILED");
      assert.equal(
        e.message,
        `${join(work, "a-file", "layerwise-kv-*")}: making the scratch file for KV that does not fit in memory failed (ENOTDIR)`,
      );
      return true;
    });
    await spill.dispose();
  });
});
