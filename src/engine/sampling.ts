// Picking the next token from logits: repetition penalty, then temperature, top-k, top-p and min-p (transformers' order).
import { UsageError } from "../errors.js";
import { Random } from "../util/random.js";

export interface SamplingOptions {
  /** 0 (the default) means greedy decoding. */
  temperature?: number;
  topK?: number;
  topP?: number;
  minP?: number;
  repetitionPenalty?: number;
  seed?: number;
}

export function validateSampling(o: SamplingOptions): void {
  const check = (ok: boolean, what: string, hint: string) => {
    if (!ok) throw new UsageError("BAD_SAMPLING", what, hint);
  };
  if (o.temperature !== undefined) check(Number.isFinite(o.temperature) && o.temperature >= 0, `temperature ${o.temperature} is not a number >= 0`, "use 0 for greedy decoding, about 0.7 for varied text");
  if (o.topK !== undefined) check(Number.isInteger(o.topK) && o.topK >= 0, `top-k ${o.topK} is not a whole number >= 0`, "0 turns it off");
  if (o.topP !== undefined) check(o.topP > 0 && o.topP <= 1, `top-p ${o.topP} is not in (0, 1]`, "1 turns it off");
  if (o.minP !== undefined) check(o.minP >= 0 && o.minP <= 1, `min-p ${o.minP} is not in [0, 1]`, "0 turns it off");
  if (o.repetitionPenalty !== undefined) check(o.repetitionPenalty > 0, `repetition penalty ${o.repetitionPenalty} is not > 0`, "1 turns it off");
}

export class Sampler {
  private readonly random: Random;

  constructor(private readonly o: SamplingOptions) {
    validateSampling(o);
    this.random = new Random(o.seed ?? Math.floor(Math.random() * 2 ** 32));
  }

  get greedy(): boolean {
    return !this.o.temperature;
  }

  /** The next token id; `history` is every id of the sequence so far (prompt included), for the repetition penalty. */
  sample(logits: Float32Array, history: Iterable<number>): number {
    const scores = Float64Array.from(logits);
    const penalty = this.o.repetitionPenalty;
    if (penalty && penalty !== 1) {
      for (const id of new Set(history)) {
        const s = scores[id]!;
        scores[id] = s < 0 ? s * penalty : s / penalty;
      }
    }
    if (this.greedy) return argmax(scores);
    const t = this.o.temperature!;
    // Candidates sorted by score, best first; every filter below only shortens this list.
    let order = Array.from(scores.keys()).sort((a, b) => scores[b]! - scores[a]!);
    if (this.o.topK && this.o.topK < order.length) order = order.slice(0, this.o.topK);
    const max = scores[order[0]!]! / t;
    let probs = order.map((id) => Math.exp(scores[id]! / t - max));
    let total = probs.reduce((a, b) => a + b, 0);
    const topP = this.o.topP;
    if (topP !== undefined && topP < 1) {
      // Keep the smallest prefix whose mass reaches top_p (transformers drops tokens whose cumulative mass from below is <= 1 - top_p).
      let cum = 0;
      let keep = order.length;
      for (let i = 0; i < order.length; i++) {
        cum += probs[i]! / total;
        if (cum >= topP) {
          keep = i + 1;
          break;
        }
      }
      order = order.slice(0, keep);
      probs = probs.slice(0, keep);
    }
    if (this.o.minP) {
      const threshold = this.o.minP * probs[0]!;
      const firstBelow = probs.findIndex((p) => p < threshold);
      const keep = firstBelow === -1 ? probs.length : Math.max(1, firstBelow);
      order = order.slice(0, keep);
      probs = probs.slice(0, keep);
    }
    total = probs.reduce((a, b) => a + b, 0);
    let r = this.random.next() * total;
    for (let i = 0; i < order.length; i++) {
      r -= probs[i]!;
      if (r < 0) return order[i]!;
    }
    return order[order.length - 1]!;
  }
}

export function argmax(values: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i]! > values[best]!) best = i;
  return best;
}
