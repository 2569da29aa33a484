// One measured generation, the unit every workload of the bench is built from: prompt ids, a greedy step, and the
// figures of a prefill followed by greedy decode.
import type { LayerwiseModel, Sequence } from "../engine/model.js";
import { argmax } from "../engine/sampling.js";
import { Random } from "../util/random.js";
import type { GenerationFigures } from "./results.js";

/** `n` pseudo-random token ids from 256 up to `vocab` - 768, the same ones for the same seed. */
export function promptIds(n: number, vocab: number, seed: number): number[] {
  const r = new Random(seed);
  return Array.from({ length: n }, () => 256 + Math.floor(r.next() * (vocab - 1024)));
}

/** Feeds each sequence its ids and picks each one's greedy next token as generation does (the backend ranks the logits). */
export async function greedyStep(
  m: LayerwiseModel,
  seqs: readonly Sequence[],
  ids: readonly (readonly number[])[],
): Promise<number[][]> {
  const out = await m.forwardBatch(
    seqs.map((seq, i) => ({ seq, ids: ids[i]! })),
    seqs.map(() => ({ top: 1 })),
  );
  return out.map((l) => [l instanceof Float32Array ? argmax(l) : l.ids[0]!]);
}

/**
 * Prefill `ids` on a fresh sequence, then greedy decode; times, tokens/s and the peak device memory of this run.
 * `betweenPhases` runs after the prefill and before the decode, outside both timings.
 */
export async function measureGeneration(
  m: LayerwiseModel,
  ids: number[],
  decodeTokens: number,
  betweenPhases?: () => Promise<void>,
): Promise<GenerationFigures> {
  const s = m.createSequence();
  m.backend.resetPeaks();
  try {
    const start = m.stats();
    const t0 = performance.now();
    let next = await greedyStep(m, [s], [ids]);
    const ttftS = (performance.now() - t0) / 1000;
    const prefilled = m.stats();
    await betweenPhases?.();
    const before = m.stats();
    const t1 = performance.now();
    let decodeFirstStepS = 0;
    for (let i = 0; i < decodeTokens; i++) {
      next = await greedyStep(m, [s], next);
      if (i === 0) decodeFirstStepS = (performance.now() - t1) / 1000;
    }
    const decodeSPerToken = decodeTokens ? (performance.now() - t1) / 1000 / decodeTokens : 0;
    const after = m.stats();
    const perToken = (
      k: "diskReadBytes" | "h2dBytes" | "expertLoads" | "expertHits" | "ioWaitS" | "computeS" | "diskBusyS",
    ) => (decodeTokens ? (after[k] - before[k]) / decodeTokens : 0);
    return {
      ttftS,
      prefillTokensPerS: ids.length / ttftS,
      decodeSPerToken,
      decodeFirstStepS,
      peakVramBytes: m.backend.memory.deviceBytesPeak,
      prefillIoWaitS: prefilled.ioWaitS - start.ioWaitS,
      prefillComputeS: prefilled.computeS - start.computeS,
      prefillDiskBusyS: prefilled.diskBusyS - start.diskBusyS,
      decodeIoWaitSPerToken: perToken("ioWaitS"),
      decodeComputeSPerToken: perToken("computeS"),
      decodeDiskBusySPerToken: perToken("diskBusyS"),
      decodeDiskBytesPerToken: perToken("diskReadBytes"),
      decodeH2dBytesPerToken: perToken("h2dBytes"),
      ...(m.arch.shape.moe
        ? { decodeExpertLoadsPerToken: perToken("expertLoads"), decodeExpertHitsPerToken: perToken("expertHits") }
        : {}),
    };
  } finally {
    s.dispose();
  }
}
