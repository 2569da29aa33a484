// Out-of-core runs on the CPU backend: weights streamed from RAM or disk and KV in tiers give the same outputs, inside the budgets.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { CpuBackend } from "../../src/backend/cpu/index.js";
import type { HostBuffer } from "../../src/backend/ops.js";
import { LayerwiseModel, withModel, type LoadOptions } from "../../src/engine/model.js";
import { Random } from "../../src/util/random.js";
import { backendCases, deviceBudget, fileIoWithRead, maxAbsDiff, storiesCopy, tinyModel } from "../helpers.js";

function randomIds(n: number, seed: number, low: number, high: number, bos?: number): number[] {
  const r = new Random(seed);
  const ids = Array.from({ length: n }, () => low + Math.floor(r.next() * (high - low)));
  if (bos !== undefined) ids[0] = bos;
  return ids;
}

for (const bc of backendCases) {
  describe(`streaming and tiered KV on stories260K, ${bc.name}`, () => {
    const prompt = randomIds(200, 1, 3, 500, 1);
    const small = { prefillChunk: 16, prefillSpan: 32, kvBlockTokens: 16 };

    it("resident, streamed from RAM, streamed from disk, KV in RAM and on disk: same logits and same greedy text", async () => {
      const dir = await storiesCopy();
      const backend = await bc.create();
      const runs: { name: string; o: LoadOptions; tiers: string }[] = [
        { name: "resident", o: {}, tiers: "device" },
        { name: "layers in RAM, KV in RAM", o: { ...small, vram: 800e3 }, tiers: "ram" },
        { name: "layers and KV from disk", o: { ...small, vram: 740e3, ram: 0 }, tiers: "disk" },
        {
          name: "small spans and chunks",
          o: { prefillChunk: 7, prefillSpan: 40, kvBlockTokens: 16, vram: 700e3, ram: 0 },
          tiers: "disk",
        },
      ];
      let reference: { logits: Float32Array; tokens: number[] } | undefined;
      for (const run of runs) {
        const vram = run.o.vram === undefined ? undefined : deviceBudget(backend, run.o.vram);
        await withModel(dir, { ...run.o, backend, vram }, async (m) => {
          assert.ok(
            m.plan.layerTier.every((t) => t === run.tiers),
            `${run.name}: tiers ${m.plan.layerTier}`,
          );
          const seq = m.createSequence();
          const logits = await m.forward(seq, prompt, "all");
          seq.dispose(); // the plan is for one sequence at a time
          const { tokens } = await m.complete({ ids: [1] }, { maxTokens: 120, temperature: 0 });
          const s = m.stats();
          if (vram) assert.ok(s.peakVramBytes <= vram, `${run.name}: peak device ${s.peakVramBytes} > budget ${vram}`);
          // Full blocks past the device's and RAM's share go to disk: the prompt's with the prefill share of the device, the
          // 120 generated tokens' (a one-token prompt, then decode) with the decode share.
          const { blockTokens, deviceBlocks, decodeDeviceBlocks, hostBlocks } = m.kvPolicy;
          const spills =
            Math.floor(prompt.length / blockTokens) > deviceBlocks + hostBlocks ||
            Math.floor(120 / blockTokens) > decodeDeviceBlocks + hostBlocks;
          assert.equal(s.kvDiskBytes > 0, spills, `${run.name}: KV bytes on disk ${s.kvDiskBytes}`);
          if (bc.name === "cpu" && run.o.ram === 0) assert.ok(spills, `${run.name}: this budget should put KV on disk`);
          if (run.tiers === "disk")
            assert.ok(
              s.diskReadBytes > 30 * 1e6,
              `${run.name}: layers should be read from disk every token (${s.diskReadBytes} bytes)`,
            );
          if (!reference) reference = { logits, tokens };
          else {
            // CUDA keeps KV in bf16: f32 sums in another order can round a key to the next bf16 value.
            const tolerance = bc.name === "cpu" ? 1e-4 : 2e-2;
            assert.ok(
              maxAbsDiff(logits, reference.logits) < tolerance,
              `${run.name}: logits differ by ${maxAbsDiff(logits, reference.logits)}`,
            );
            assert.deepEqual(tokens, reference.tokens, run.name);
          }
        });
      }
      await backend.dispose();
    });

    it("decode brings KV back onto the device after a prompt and a second prompt sends it out again, with the same logits", async () => {
      const dir = await storiesCopy();
      const backend = await bc.create();
      const steps = [
        randomIds(200, 8, 3, 500, 1),
        ...randomIds(30, 9, 3, 500).map((id) => [id]),
        randomIds(100, 10, 3, 500),
        ...randomIds(10, 11, 3, 500).map((id) => [id]),
      ];
      const run = (o: LoadOptions) =>
        withModel(dir, { backend, kvBlockTokens: 16, ...o }, async (m) => {
          const seq = m.createSequence();
          const out: Float32Array[] = [];
          const deviceBlocks: number[] = [];
          for (const ids of steps) {
            out.push(await m.forward(seq, ids));
            deviceBlocks.push(seq.cache.blocks(0).filter((b) => b.tier === "device" && b.length === 16).length);
          }
          seq.dispose();
          return { out, deviceBlocks, policy: m.kvPolicy, peak: m.stats().peakVramBytes };
        });
      const reference = await run({});
      const vram = deviceBudget(backend, 1e6);
      const tiered = await run({ prefillChunk: 64, vram });
      const { deviceBlocks: prefillShare, decodeDeviceBlocks: decodeShare } = tiered.policy;
      if (bc.name === "cpu")
        assert.ok(
          prefillShare < 12 && decodeShare > 12,
          `this budget should hold more KV while decoding: ${prefillShare} / ${decodeShare}`,
        );
      // After a prompt the cache keeps the prefill share on the device, after a decode step the decode share (or every
      // full block, if fewer): the first decode step brings KV back.
      const full = (tokens: number) => Math.floor(tokens / 16);
      let tokens = 0;
      steps.forEach((ids, i) => {
        tokens += ids.length;
        assert.equal(
          tiered.deviceBlocks[i],
          Math.min(full(tokens), ids.length > 1 ? prefillShare : decodeShare),
          `step ${i}`,
        );
      });
      assert.ok(tiered.peak <= vram, `peak device ${tiered.peak} > budget ${vram}`);
      const tolerance = bc.name === "cpu" ? 1e-4 : 2e-2;
      tiered.out.forEach((logits, i) =>
        assert.ok(
          maxAbsDiff(logits, reference.out[i]!) < tolerance,
          `step ${i}: logits differ by ${maxAbsDiff(logits, reference.out[i]!)}`,
        ),
      );
      await backend.dispose();
    });

    it("a run cancelled mid-prefill leaves the streamer ready for the next one", async () => {
      const backend = await bc.create();
      await withModel(
        await storiesCopy(),
        { backend, ...small, vram: deviceBudget(backend, 800e3), ram: 0 },
        async (m) => {
          const controller = new AbortController();
          const ids = [1, ...randomIds(300, 5, 3, 500)];
          const cancelled = await m.complete(
            { ids },
            {
              maxTokens: 5,
              temperature: 0,
              signal: controller.signal,
              onPrefillProgress: (done) => done > 0.5 && controller.abort(),
            },
          );
          assert.equal(cancelled.finishReason, "abort");
          const next = await m.complete({ ids: [1] }, { maxTokens: 5, temperature: 0 });
          assert.deepEqual(next.tokens, [403, 407, 261, 378, 432]);
        },
      );
      await backend.dispose();
    });

    it("refuses a VRAM budget too small for two streamed layers, saying what is needed", async () => {
      const backend = await bc.create();
      await assert.rejects(
        LayerwiseModel.load(await storiesCopy(), { backend, ...small, vram: deviceBudget(backend, 300e3) }),
        (e: Error & { code: string }) => {
          assert.equal(e.code, "VRAM_TOO_SMALL");
          assert.match(e.message, /cannot hold .* needs/);
          return true;
        },
      );
      await backend.dispose();
    });
  });

  describe(`memory stays flat as the context grows, ${bc.name}`, () => {
    it("peak device memory at 6k and 8k tokens differs by less than 5%, within --vram; host within --ram", async () => {
      const dir = await tinyModel({ preset: "tiny-llama", layers: 2 });
      const backend = await bc.create();
      // Small enough that most of 8k tokens' KV lives in RAM, with room for the blocks in transit (planner kvTransitBlocks).
      // CUDA keeps KV in bf16 (half the bytes a token) and rounds allocations up: its budget is its own.
      const vram = backend.name === "cpu" ? 2.7e6 : backend.deviceOverheadBytes + 3.0e6;
      const o: LoadOptions = {
        backend,
        vram,
        ram: 3e6,
        prefillChunk: 128,
        prefillSpan: 1024,
        kvBlockTokens: 64,
        context: 8192,
      };
      const peaks: number[] = [];
      // Both past the KV the device holds even while decoding (the decode share fills the prompt's activation memory
      // with KV), so both use every tier; a caching allocator holds what a run used at most.
      for (const n of [6144, 8192]) {
        await withModel(dir, o, async (m) => {
          await m.complete({ ids: randomIds(n, n, 256, 1000) }, { maxTokens: 2, temperature: 0 });
          assert.ok(
            m.plan.kvDeviceTokensDecode < 6144,
            `the KV cache spills to RAM (${m.plan.kvDeviceTokensDecode} tokens on the device while decoding)`,
          );
          const s = m.stats();
          assert.ok(s.peakVramBytes <= o.vram!, `${n} tokens: peak device ${s.peakVramBytes} > ${o.vram}`);
          const working = m.plan.hostBytes.staging + m.plan.hostBytes.activations + m.plan.hostBytes.transfer;
          assert.ok(
            s.peakHostBytes <= o.ram! + working,
            `${n} tokens: peak host ${s.peakHostBytes} > ram ${o.ram} + working ${working}`,
          );
          peaks.push(s.peakVramBytes - backend.deviceOverheadBytes);
        });
      }
      await backend.dispose();
      assert.ok(Math.abs(peaks[1]! - peaks[0]!) / peaks[0]! < 0.05, `peaks ${peaks}`);
    });
  });
}

// Between layers, a long prompt's hidden states wait in host memory; the host does not wait for each copy (the device
// orders them), so a copy that fails is reported later: it must still fail that prefill, with its own error.
describe("hidden states through host memory", () => {
  it("a copy that fails fails the prefill with its error, frees what it held, and the model runs the next prompt", async () => {
    const chunk = 20;
    const hiddenCopyBytes = chunk * 64 * 4; // stories260K: hidden size 64, f32 (KV blocks copy other sizes)
    let copies = 0;
    let failNext = false;
    let failMatmulIn = Infinity; // matmuls from now until one throws
    class FlakyCpu extends CpuBackend {
      override matmul(...args: Parameters<CpuBackend["matmul"]>) {
        if (--failMatmulIn === 0) throw new Error("out of device memory mid-layer");
        return super.matmul(...args);
      }
      override async copyToHost(...args: Parameters<CpuBackend["copyToHost"]>): Promise<void> {
        if (args[4] === hiddenCopyBytes) copies++;
        if (failNext && args[4] === hiddenCopyBytes) {
          failNext = false;
          await sleep(5);
          throw new Error("device lost the copy");
        }
        return super.copyToHost(...args);
      }
    }
    await withModel(
      await storiesCopy(),
      { backend: new FlakyCpu(), prefillChunk: chunk, kvBlockTokens: 16 },
      async (m) => {
        const prompt = randomIds(100, 3, 3, 500, 1);
        const want = await m.complete({ ids: prompt }, { maxTokens: 3, temperature: 0 });
        assert.ok(copies >= 5 * 4, `the prompt's chunks went through host memory (${copies} copies)`);
        const held = m.backend.memory.deviceBytes;
        failNext = true;
        await assert.rejects(m.complete({ ids: prompt }, { maxTokens: 3, temperature: 0 }), /device lost the copy/);
        assert.equal(m.backend.memory.deviceBytes, held, "the failed prefill freed what it held");
        failMatmulIn = 7 * 5 + 7 * 2 + 3; // 7 matmuls a chunk, 5 chunks: the second layer's third chunk, with its input and the next chunk's held
        await assert.rejects(
          m.complete({ ids: prompt }, { maxTokens: 3, temperature: 0 }),
          /out of device memory mid-layer/,
        );
        assert.equal(m.backend.memory.deviceBytes, held, "the prefill that failed mid-layer freed what it held");
        const again = await m.complete({ ids: prompt }, { maxTokens: 3, temperature: 0 });
        assert.deepEqual(again.tokens, want.tokens);
      },
    );
  });
});

// Weights streamed from disk are read ahead into pinned buffers; freeing one while a read still lands in it crashed a
// GPU run (the CPU backend's buffers are garbage-collected, so the test counts the frees instead).
describe("weight reads in flight from disk", () => {
  // Every layer from disk, each read taking 20 ms, with a count of the reads in flight.
  const slowReads = () => {
    const reads = { inFlight: 0 };
    const o = {
      vram: 800e3,
      ram: 0,
      prefillChunk: 16,
      kvBlockTokens: 16,
      fileIo: fileIoWithRead(async (read, args) => {
        reads.inFlight++;
        try {
          await sleep(20);
          return await read(...args);
        } finally {
          reads.inFlight--;
        }
      }),
    };
    return { reads, o };
  };

  it("waits for weight reads in flight before it frees the host buffers they land in", async () => {
    const { reads, o } = slowReads();
    let freedDuringRead = 0;
    class CheckedCpu extends CpuBackend {
      override freeHost(b: HostBuffer): void {
        if (reads.inFlight > 0) freedDuringRead++;
        super.freeHost(b);
      }
    }
    const m = await LayerwiseModel.load(await storiesCopy(), { ...o, backend: new CheckedCpu() });
    const seq = m.createSequence();
    await m.forward(seq, [1, 403, 407]);
    await m.forward(seq, [261]);
    await m.close();
    assert.equal(freedDuringRead, 0);
    assert.equal(reads.inFlight, 0);
  });

  // The bench measures the disk between a prompt and its decode: the reads ahead a forward leaves must be done by then.
  it("a forward leaves the next token's first layers reading ahead; readsAheadSettled waits for them", async () => {
    const { reads, o } = slowReads();
    await withModel(await storiesCopy(), { ...o, backend: new CpuBackend() }, async (m) => {
      assert.ok(
        m.plan.slots >= 2 && m.plan.layerTier.every((t) => t === "disk"),
        `every layer streams from disk: ${m.plan.layerTier.join(",")}, ${m.plan.slots} slots`,
      );
      const seq = m.createSequence();
      await m.forward(seq, [1, 403, 407]);
      assert.ok(reads.inFlight > 0, "reads ahead under way after the forward");
      await m.readsAheadSettled();
      assert.equal(reads.inFlight, 0);
      seq.dispose();
    });
  });
});
