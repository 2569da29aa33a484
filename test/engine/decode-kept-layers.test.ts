// Decode keeps streamed layers on the device in the room a prompt's activations leave (beside decode's KV share), gives
// it back to the next prompt, moves only the other layers per token (as the planner predicts), and computes the same.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { Backend } from "../../src/backend/ops.js";
import { withModel, type LayerwiseModel, type LoadOptions } from "../../src/engine/model.js";
import {
  decodeBytesAt,
  decodeExtraKvBytesAt,
  decodeKeptLayers,
  planPrefill,
  type Plan,
} from "../../src/engine/planner.js";
import { argmax } from "../../src/engine/sampling.js";
import { Random } from "../../src/util/random.js";
import { backendCases, deviceBudget, maxAbsDiff, storiesCopy } from "../helpers.js";

function randomIds(n: number, seed: number): number[] {
  const r = new Random(seed);
  return Array.from({ length: n }, () => 3 + Math.floor(r.next() * 497));
}

interface Step {
  readonly ids: readonly number[];
  readonly logits: Float32Array;
  /** Layers the streamer kept after the step, and those the planner gives for the KV beyond the reserve before it. */
  readonly kept: readonly number[];
  readonly predicted: readonly number[];
  /** The layers the planner keeps at the step's context (what decodeBytesAt counts). */
  readonly plannedAtLength: readonly number[];
  /** Layer bytes the step copied to the device and read from disk, and what the planner predicts at its context. */
  readonly layerH2d: number;
  readonly layerDisk: number;
  readonly predictedH2d: number;
  readonly predictedDisk: number;
  readonly allKvOnDevice: boolean;
}

/** Two prompts, each followed by greedy decode steps (the tokens `reference` chose, when given). */
async function run(
  m: LayerwiseModel,
  plan: readonly (readonly number[] | number)[],
  reference?: readonly Step[],
): Promise<Step[]> {
  const seq = m.createSequence();
  const steps: Step[] = [];
  let last: Float32Array | undefined;
  for (const part of plan) {
    const inputs = typeof part === "number" ? Array.from({ length: part }, () => undefined) : [part];
    for (const given of inputs) {
      const ids = given ?? [reference?.[steps.length]?.ids[0] ?? argmax(last!)];
      const before = m.layerTraffic();
      const extra = before.kvBytesBeyondReserve;
      last = await m.forward(seq, ids);
      const after = m.layerTraffic();
      const predicted = decodeBytesAt(m.plan, seq.length);
      steps.push({
        ids,
        logits: last,
        kept: after.keptLayers,
        predicted: ids.length === 1 ? decodeKeptLayers(m.plan, extra).sort((a, b) => a - b) : [],
        plannedAtLength: decodeKeptLayers(m.plan, decodeExtraKvBytesAt(m.plan, seq.length)).sort((a, b) => a - b),
        layerH2d: after.h2dBytes - before.h2dBytes,
        layerDisk: after.diskReadBytes - before.diskReadBytes,
        predictedH2d: predicted.h2dBytes,
        predictedDisk: predicted.diskBytes - predicted.kvDiskBytes,
        allKvOnDevice: seq.cache.blocks(0).every((b) => b.tier === "device"),
      });
    }
  }
  seq.dispose();
  return steps;
}

for (const bc of backendCases) {
  describe(`layers kept for decode on stories260K, ${bc.name}`, () => {
    const context = 512; // the model's
    const tiered = (backend: Backend, o: LoadOptions): LoadOptions => ({
      backend,
      vram: deviceBudget(backend, 1.4e6),
      prefillChunk: 128,
      prefillSpan: 256,
      kvBlockTokens: 16,
      context,
      ...o,
    });

    it("keeps the last streamed layers while decoding, fewer as KV takes the room, none during a prompt; same logits", async () => {
      const dir = await storiesCopy();
      const backend = await bc.create();
      // A prefill chunk and budget where decode keeps layers after a short prompt and its KV takes the room of one back
      // before the model's context is full, and the decode after the second prompt runs that far: found with the planner
      // (the KV's size and the allocator's rounding differ by backend), from the budget above down.
      const input = await withModel(dir, tiered(backend, { ram: 1e8 }), async (m) => m.plan.input);
      const found = [128, 64]
        .flatMap((prefillChunk) =>
          Array.from({ length: 40 }, (_, i) => ({
            prefillChunk,
            vramBytes: Math.round(input.vramBytes * (1 - i / 100)),
          })),
        )
        .flatMap((choice) => {
          let p: Plan;
          try {
            p = planPrefill({ ...input, ...choice });
          } catch {
            return [];
          }
          const keptAt = (tokens: number) => decodeKeptLayers(p, decodeExtraKvBytesAt(p, tokens)).length;
          const fewer = Array.from({ length: context - 300 }, (_, i) => 260 + i).find((t) => keptAt(t) < keptAt(100));
          return p.layerTier.every((t) => t === "ram") && keptAt(100) >= 1 && fewer !== undefined
            ? [{ ...choice, fewer }]
            : [];
        })[0];
      assert.ok(found, "some budget streams every layer and keeps fewer as decode's KV grows within the context");
      const parts = [[1, ...randomIds(99, 1)], 100, randomIds(60, 2), found.fewer - 260 + 40];
      const reference = await withModel(dir, { backend, kvBlockTokens: 16 }, (m) => run(m, parts));
      await withModel(
        dir,
        tiered(backend, {
          ram: 1e8,
          prefillChunk: found.prefillChunk,
          vram: found.vramBytes + backend.deviceOverheadBytes,
        }),
        async (m) => {
          assert.ok(
            m.plan.layerTier.every((t) => t === "ram") && m.plan.decodeSpare > 0,
            `layers stream and the prompt's room is free in decode: ${m.plan.layerTier} ${m.plan.decodeSpare}`,
          );
          const steps = await run(m, parts, reference);
          const tolerance = bc.name === "cpu" ? 1e-4 : 2e-2;
          steps.forEach((s, i) => {
            assert.ok(
              maxAbsDiff(s.logits, reference[i]!.logits) < tolerance,
              `step ${i}: logits differ by ${maxAbsDiff(s.logits, reference[i]!.logits)}`,
            );
            if (s.ids.length > 1) assert.deepEqual(s.kept, [], `step ${i}: a prompt keeps no layer`);
            // (The first step after a prompt decides once decode's KV share is back, which adds blocks beyond the reserve.)
            else if (steps[i - 1]!.ids.length === 1)
              assert.deepEqual(
                s.kept,
                s.predicted,
                `step ${i}: the layers the planner gives for the KV beyond the reserve`,
              );
            // A steady decode step (the kept layers as before it and as the planner keeps them at its context; the first
            // step after a change loads or gives back layers) with every KV block on the device copies exactly the layer
            // bytes the planner counts at that context.
            const steady =
              s.ids.length === 1 &&
              steps[i - 1]!.ids.length === 1 &&
              String(steps[i - 1]!.kept) === String(s.kept) &&
              String(s.plannedAtLength) === String(s.kept);
            if (steady && s.allKvOnDevice) assert.equal(s.layerH2d, s.predictedH2d, `step ${i}: layer bytes copied`);
          });
          const decodeKept = steps.filter((s) => s.ids.length === 1).map((s) => s.kept.length);
          assert.ok(decodeKept[0]! >= 1, `decode keeps layers after a short prompt: ${decodeKept[0]}`);
          assert.ok(
            Math.min(...decodeKept) < decodeKept[0]!,
            `longer contexts keep fewer (KV takes the room): ${decodeKept.join(",")}`,
          );
          const kept = steps.find((s) => s.kept.length > 0)!.kept;
          assert.deepEqual(kept, m.plan.layerTier.map((_, i) => i).slice(-kept.length), "the last layers are kept");
          const peak = m.stats().peakVramBytes;
          assert.ok(
            peak <= m.plan.input.vramBytes + backend.deviceOverheadBytes,
            `peak device ${peak} within the budget`,
          );
        },
      );
      await backend.dispose();
    });

    it("with --ram 0, kept layers are read from disk once, and decode reads only the others", async () => {
      const dir = await storiesCopy();
      const backend = await bc.create();
      await withModel(dir, tiered(backend, { ram: 0 }), async (m) => {
        assert.ok(
          m.plan.layerTier.every((t) => t === "disk"),
          `layers stream from disk: ${m.plan.layerTier}`,
        );
        const steps = await run(m, [[1, ...randomIds(99, 3)], 40]);
        const layer = m.layout.layers[0]!.dataBytes;
        const kept = steps[1]!.kept.length;
        assert.ok(kept >= 1, `decode keeps layers: ${kept}`);
        // The first decode step reads every streamed layer once (the kept ones to keep); later ones only the rest.
        for (const s of steps.slice(2)) {
          assert.deepEqual([s.kept, s.plannedAtLength], [steps[1]!.kept, steps[1]!.kept]);
          assert.equal(s.layerDisk, s.predictedDisk, "layer bytes read from disk, as the planner predicts");
          assert.ok(s.layerDisk <= (m.layout.layers.length - kept) * layer, `${s.layerDisk} bytes from disk a token`);
        }
      });
      await backend.dispose();
    });
  });
}
