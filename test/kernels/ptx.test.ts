// The committed PTX is what the CUDA sources compile to (users get the PTX; nobody compiles at install).
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFile, readdir } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { repoRoot, tempDir } from "../helpers.js";

const nvcc = (() => {
  try {
    execFileSync("nvcc", ["--version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
})();

describe("kernels/*.ptx", () => {
  it(
    "match a fresh nvcc build of kernels/*.cu",
    { skip: nvcc ? false : "nvcc is not installed here, so the PTX cannot be rebuilt" },
    async () => {
      const dir = join(repoRoot, "kernels");
      const out = await tempDir("lw-ptx-");
      execFileSync("bash", [join(dir, "build.sh"), out], { stdio: "pipe" });
      const built = (await readdir(out)).filter((f) => f.endsWith(".ptx"));
      assert.deepEqual(
        built.sort(),
        (await readdir(dir))
          .filter((f) => f.endsWith(".cu"))
          .map((f) => f.replace(/\.cu$/, ".ptx"))
          .sort(),
      );
      for (const ptx of built)
        assert.equal(
          await readFile(join(out, ptx), "utf8"),
          await readFile(join(dir, ptx), "utf8"),
          `${ptx} is stale: run npm run build:kernels`,
        );
    },
  );
});
