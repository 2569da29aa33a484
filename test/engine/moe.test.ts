// Mixture-of-experts models out of core (CPU backend): experts streamed through the hot-expert cache from RAM or disk give
// the same outputs as resident ones, a decode step reads only its routed experts, and a failed expert read loses nothing.
import assert from "node:assert/strict";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { LayerwiseModel, withModel, type LoadOptions } from "../../src/engine/model.js";
import { Random } from "../../src/util/random.js";
import { fileIoWithRead, runCli, tinyModel } from "../helpers.js";

const prompt = (() => {
  const r = new Random(5);
  return Array.from({ length: 60 }, () => 32 + Math.floor(r.next() * 900));
})();

/** Bytes of one expert's weights (every expert of these models has the same shapes). */
function expertBytes(m: LayerwiseModel): number {
  const sizes = new Set(m.layout.experts.flat().map((g) => g.dataBytes));
  assert.equal(sizes.size, 1);
  return [...sizes][0]!;
}

describe("gpt-oss experts out of core, cpu", () => {
  it("resident, cached on the device from RAM, and read from disk: same logits and greedy ids", async () => {
    const dir = await tinyModel({ preset: "tiny-gpt-oss" });
    const runs: { o: LoadOptions; check: (m: LayerwiseModel) => void }[] = [
      { o: {}, check: (m) => assert.equal(m.plan.experts.deviceSlots, m.plan.experts.total) },
      {
        o: { expertSlots: 3, prefillChunk: 7 },
        check: (m) => assert.deepEqual([m.plan.experts.deviceSlots, m.plan.experts.ram], [3, 32]),
      },
      {
        o: { expertSlots: 2, ram: 0 },
        check: (m) => assert.deepEqual([m.plan.experts.deviceSlots, m.plan.experts.ram], [2, 0]),
      },
    ];
    const results: { logits: Float32Array; tokens: number[]; loads: number }[] = [];
    for (const run of runs) {
      results.push(
        await withModel(dir, { backend: "cpu", kvDtype: "f32", ...run.o }, async (m) => {
          run.check(m);
          const logits = await m.forward(m.createSequence(), prompt, "all");
          const r = await m.complete({ ids: prompt }, { maxTokens: 8, temperature: 0, ignoreEos: true });
          return { logits, tokens: r.tokens, loads: m.stats().expertLoads };
        }),
      );
    }
    assert.equal(results[0]!.loads, 0, "resident experts are loaded once, at start");
    for (const r of results.slice(1)) {
      assert.deepEqual(r.logits, results[0]!.logits);
      assert.deepEqual(r.tokens, results[0]!.tokens);
      assert.ok(r.loads > 0);
    }
  });

  it("a decode step reads only the routed experts: layers x top-k of them, from disk", async () => {
    const dir = await tinyModel({ preset: "tiny-gpt-oss" });
    await withModel(dir, { backend: "cpu", kvDtype: "f32", expertSlots: 2, ram: 0 }, async (m) => {
      const { numLayers, moe } = m.arch.shape;
      const seq = m.createSequence();
      await m.forward(seq, prompt);
      for (const id of [100, 200, 300]) {
        const before = m.stats();
        await m.forward(seq, [id]);
        const after = m.stats();
        // Two slots: every layer's two experts push out the previous layer's, so each step loads exactly its routes.
        assert.equal(after.expertLoads - before.expertLoads, numLayers * moe!.topK);
        // The CPU backend reads exact byte ranges (no O_DIRECT alignment), and an expert's reads never take a neighbour's bytes.
        assert.equal(after.diskReadBytes - before.diskReadBytes, numLayers * moe!.topK * expertBytes(m));
      }
    });
  });

  it("run --json reports the disk bytes of a decode step: the routed experts' and no more", async () => {
    const dir = await tinyModel({ preset: "tiny-gpt-oss" });
    const r = await runCli([
      "run",
      dir,
      "--backend",
      "cpu",
      "--prompt",
      "The quick brown fox",
      "--max-tokens",
      "6",
      "--temperature",
      "0",
      "--ram",
      "0",
      "--expert-slots",
      "2",
      "--json",
    ]);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as {
      decode_disk_read_bytes_per_token: number;
      decode_h2d_bytes_per_token: number;
    };
    const want = await withModel(
      dir,
      { backend: "cpu" },
      async (m) => m.arch.shape.numLayers * m.arch.shape.moe!.topK * expertBytes(m),
    );
    assert.equal(out.decode_disk_read_bytes_per_token, want, JSON.stringify(out));
    assert.equal(out.decode_h2d_bytes_per_token, want);
  });

  it("a gpt-oss checkpoint without MXFP4 experts is refused, naming the field and why", async () => {
    const dir = await tinyModel({ preset: "tiny-gpt-oss" });
    const config = JSON.parse(await readFile(join(dir, "config.json"), "utf8")) as Record<string, unknown>;
    delete config.quantization_config;
    await writeFile(join(dir, "config.json"), JSON.stringify(config));
    await assert.rejects(
      LayerwiseModel.load(dir, { backend: "cpu" }),
      (e: Error & { code: string }) =>
        e.code === "CONFIG_INVALID" && /quantization_config: missing: .*MXFP4/.test(e.message),
    );
  });

  it("a failed expert read fails the step, and the next step recomputes it with the same result", async () => {
    const dir = await tinyModel({ preset: "tiny-gpt-oss" });
    let failNext = false;
    const m = await LayerwiseModel.load(dir, {
      backend: "cpu",
      kvDtype: "f32",
      expertSlots: 2,
      ram: 0,
      fileIo: fileIoWithRead(async (read, args) => {
        if (!failNext) return read(...args);
        failNext = false;
        throw Object.assign(new Error("EIO: i/o error, read"), { code: "EIO" });
      }),
    });
    try {
      const want = await m.forward(m.createSequence(), prompt, "all");
      const seq = m.createSequence();
      failNext = true;
      await assert.rejects(m.forward(seq, prompt, "all"), (e: Error & { code: string }) => e.code === "READ_FAILED");
      assert.equal(seq.length, 0, "a failed pass keeps no tokens");
      assert.deepEqual(await m.forward(seq, prompt, "all"), want);
    } finally {
      await m.close();
    }
  });
});
