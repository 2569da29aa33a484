// Running out of disk: a clear DISK_FULL before a long write starts or when one fails, and nothing half-written kept.
import assert from "node:assert/strict";
import { mkdtemp, readdir, readFile, statfs, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { printError } from "../../src/cli/output.js";
import { makeTestModel, testModelMarker } from "../../src/testmodel/write.js";
import { checkDiskSpace, writeError } from "../../src/util/disk-space.js";

describe("disk space", () => {
  it("refuses a write larger than the free space, saying how much each is", async () => {
    const dir = await mkdtemp(join(tmpdir(), "lw-disk-"));
    const s = await statfs(dir);
    const free = s.bavail * s.bsize;
    await checkDiskSpace(dir, 1024, "a test", "hint");
    await assert.rejects(
      checkDiskSpace(dir, free + 1e12, "the big checkpoint", "free some"),
      (e: Error & { code: string; hint: string }) => {
        assert.equal(e.code, "DISK_FULL");
        assert.match(
          e.message,
          /^the big checkpoint needs [\d.]+ [KMGT]iB in .*; its disk has [\d.]+ [KMGT]?i?B free$/,
        );
        assert.equal(e.hint, "free some");
        return true;
      },
    );
  });

  it("a write that fails with ENOSPC or EDQUOT becomes DISK_FULL naming the file; other errors pass through", () => {
    for (const code of ["ENOSPC", "EDQUOT"]) {
      const e = writeError(
        "/data/model.safetensors",
        Object.assign(new Error(`${code}: no space`), { code }),
        "free disk space",
      ) as Error & { code: string };
      assert.equal(e.code, "DISK_FULL");
      assert.match(e.message, /\/data\/model\.safetensors: no space left/);
    }
    const other = Object.assign(new Error("EIO"), { code: "EIO" });
    assert.equal(writeError("/x", other, "h"), other);
  });

  it("make-test-model writes again over a folder a failed run left (its marker says incomplete, a .partial file remains)", async () => {
    const out = join(await mkdtemp(join(tmpdir(), "lw-disk-")), "model");
    await makeTestModel({ preset: "tiny-llama", dtype: "f32", out });
    await writeFile(
      join(out, testModelMarker),
      JSON.stringify({ preset: "tiny-llama", dtype: "f32", complete: false }),
    );
    await writeFile(join(out, "model.safetensors.partial"), "half");
    await makeTestModel({ preset: "tiny-llama", dtype: "f32", out });
    assert.ok(!(await readdir(out)).some((n) => n.endsWith(".partial")));
    assert.equal(JSON.parse(await readFile(join(out, testModelMarker), "utf8")).complete, true);
  });

  it("the CLI names a full disk that no code of ours caught, instead of calling it a bug", () => {
    const lines: string[] = [];
    const write = process.stdout.write;
    process.stdout.write = ((chunk: string) => (lines.push(chunk), true)) as typeof process.stdout.write;
    try {
      printError(Object.assign(new Error("ENOSPC: no space left on device, write"), { code: "ENOSPC" }), {
        json: true,
      });
    } finally {
      process.stdout.write = write;
    }
    const { error } = JSON.parse(lines.join("")) as { error: { code: string; hint: string } };
    assert.equal(error.code, "ENOSPC");
    assert.match(error.hint, /disk is full/);
  });
});
