// `layerwise plan` prints the plan `run` executes: same flags, same plan (or the same error), on each backend.
import assert from "node:assert/strict";
import { join } from "node:path";
import { describe, it } from "node:test";
import { loadOptions, type ModelFlags } from "../../src/cli/options.js";
import { planJson } from "../../src/engine/load-plan.js";
import { LayerwiseModel } from "../../src/engine/model.js";
import type { LayerwiseError } from "../../src/errors.js";
import { backendCases, runCli, storiesCopy, tempDir, tinyModel } from "../helpers.js";

/** The flags as `run` and `plan` both take them (kebab-case), and as commander hands them over (camelCase). */
type Flags = Record<string, string>;
const argv = (f: Flags) => Object.entries(f).flatMap(([k, v]) => [`--${k}`, v]);
const modelFlags = (f: Flags, backend: string): ModelFlags => ({
  backend,
  ...Object.fromEntries(Object.entries(f).map(([k, v]) => [k.replace(/-(\w)/g, (_, c: string) => c.toUpperCase()), v])),
});

for (const { name: backend } of backendCases) {
  describe(`plan and run agree (${backend})`, () => {
    const small = backend === "cpu" ? "1500KB" : "600MB"; // CUDA's budget counts its context (about 530 MB)
    const cases: { name: string; model: () => Promise<string>; flags: (tmp: string) => Flags }[] = [
      {
        name: "stories260K streamed in a small budget",
        model: storiesCopy,
        flags: () => ({ vram: small, ram: "100MB", "prefill-chunk": "16" }),
      },
      {
        name: "stories260K from disk, a persistent cache and small blocks",
        model: storiesCopy,
        flags: (tmp) => ({
          vram: small,
          ram: "0",
          "prefill-chunk": "16",
          "kv-block": "16",
          "kv-cache": join(tmp, "kv"),
          context: "300",
        }),
      },
      {
        name: "stories260K with no VRAM limit given",
        model: storiesCopy,
        flags: () => ({ ram: "50MB", "prefill-span": "128" }),
      },
      {
        name: "gpt-oss experts",
        model: () => tinyModel({ preset: "tiny-gpt-oss", dtype: "bf16" }),
        flags: () => ({
          vram: backend === "cpu" ? "4MB" : "700MB",
          ram: "1GB",
          "expert-slots": "4",
          context: "512",
          "prefill-chunk": "32",
        }),
      },
    ];
    for (const c of cases) {
      it(c.name, async () => {
        const dir = await c.model();
        const flags = c.flags(await tempDir());
        if (!("vram" in flags) && backend === "cuda") return; // free GPU memory differs between two processes' readings
        const printed = await runCli([
          "plan",
          dir,
          ...argv(flags),
          "--backend",
          backend,
          "--json",
          "--disk-gbps",
          "1",
          "--h2d-gbps",
          "10",
        ]);
        assert.equal(printed.code, 0, printed.stderr + printed.stdout);
        const {
          disk: _d,
          h2d: _h,
          floor_s_per_token: _f,
          ...planned
        } = JSON.parse(printed.stdout) as Record<string, unknown>;
        const m = await LayerwiseModel.load(dir, loadOptions(modelFlags(flags, backend)));
        try {
          assert.deepEqual(planned, JSON.parse(JSON.stringify(planJson(m.plan))));
        } finally {
          await m.close();
        }
      });
    }

    it("a budget too small: the same error with the same numbers", async () => {
      const dir = await storiesCopy();
      const flags = { vram: backend === "cpu" ? "500KB" : "560MB", "prefill-chunk": "16", ram: "100MB" };
      const printed = await runCli(["plan", dir, ...argv(flags), "--backend", backend, "--json"]);
      assert.equal(printed.code, 1);
      const { error } = JSON.parse(printed.stdout) as { error: { code: string; message: string } };
      await assert.rejects(LayerwiseModel.load(dir, loadOptions(modelFlags(flags, backend))), (e: LayerwiseError) => {
        assert.deepEqual({ code: e.code, message: e.message }, { code: error.code, message: error.message });
        return e.code === "VRAM_TOO_SMALL";
      });
    });
  });
}
