// Picking the next token from logits: repetition penalty, then temperature, top-k, top-p and min-p (transformers' order).
import { BackendError, UsageError } from "../errors.js";
import { Random } from "../util/random.js";
import { topIndices } from "../util/top-k.js";

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
  if (o.temperature !== undefined)
    check(
      Number.isFinite(o.temperature) && o.temperature >= 0,
      `temperature ${o.temperature} is not a number >= 0`,
      "use 0 for greedy decoding, about 0.7 for varied text",
    );
  if (o.topK !== undefined)
    check(Number.isInteger(o.topK) && o.topK >= 0, `top-k ${o.topK} is not a whole number >= 0`, "0 turns it off");
  if (o.topP !== undefined) check(o.topP > 0 && o.topP <= 1, `top-p ${o.topP} is not in (0, 1]`, "1 turns it off");
  if (o.minP !== undefined) check(o.minP >= 0 && o.minP <= 1, `min-p ${o.minP} is not in [0, 1]`, "0 turns it off");
  if (o.repetitionPenalty !== undefined)
    check(o.repetitionPenalty > 0, `repetition penalty ${o.repetitionPenalty} is not > 0`, "1 turns it off");
}

/** The best ids of one row of logits (repetition penalty already applied) with their scores, best first. */
export interface RankedLogits {
  readonly ids: Int32Array;
  readonly scores: Float32Array;
}

/** What sampling needs of a row: only its best `top` ids, ranked where the logits are (on the GPU, say). */
export interface LogitsRequest {
  readonly top: number;
  /** Applied to the row before ranking: positive logits of these ids divided by `factor`, negative ones multiplied. */
  readonly penalty?: { readonly ids: Int32Array; readonly factor: number };
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

  /** Whether a repetition penalty is on; then the caller keeps the sequence's ids in the `seen` set it passes. */
  get penalized(): boolean {
    const p = this.o.repetitionPenalty;
    return p !== undefined && p !== 1;
  }

  /**
   * What the next token needs: greedy and top-k decoding need only the best ids (1 or k), anything else the whole row
   * (undefined). `seen` holds the sequence's ids so far when `penalized`.
   */
  request(seen: ReadonlySet<number>): LogitsRequest | undefined {
    const top = this.greedy ? 1 : this.o.topK;
    if (!top) return undefined;
    return this.penalized && seen.size > 0
      ? { top, penalty: { ids: Int32Array.from(seen), factor: this.o.repetitionPenalty! } }
      : { top };
  }

  /**
   * The next token id, from the whole row of logits or from the ranked ids a `request` asked for (penalty applied
   * there, in f32); both draw as a full sort of the row would. `seen` is every id of the sequence so far, prompt included.
   */
  sample(logits: Float32Array | RankedLogits, seen: ReadonlySet<number>): number {
    if (logits instanceof Float32Array && this.greedy) {
      const scores = this.penalize(logits, seen);
      const best = argmax(scores);
      checkFinite(scores[best]!);
      return best;
    }
    const ranked =
      logits instanceof Float32Array ? new LazyRanking(this.penalize(logits, seen)) : new GivenRanking(logits);
    // NaN ranks last: a NaN best means every score is NaN.
    const top = ranked.score(0);
    checkFinite(top);
    if (this.greedy) return ranked.id(0);
    const t = this.o.temperature!;
    // Candidates in score order, best first; every filter below only shortens the prefix that stays.
    const candidates = Math.min(this.o.topK || Infinity, ranked.size);
    // Differences from the best before dividing: a tiny temperature then gives 0 for every worse id instead of NaN.
    const prob = (i: number) => Math.exp((ranked.score(i) - top) / t);
    const sumOf = (n: number) => (n === ranked.size ? ranked.sumExp(t, top) : sumPrefix(prob, n));
    let keep = candidates;
    const topP = this.o.topP;
    if (topP !== undefined && topP < 1) {
      // The smallest prefix whose mass reaches top_p (transformers drops tokens whose cumulative mass from below is <= 1 - top_p).
      const total = sumOf(candidates);
      let cum = 0;
      for (let i = 0; i < candidates; i++) {
        cum += prob(i) / total;
        if (cum >= topP) {
          keep = i + 1;
          break;
        }
      }
    }
    if (this.o.minP) {
      const threshold = this.o.minP * prob(0);
      for (let i = 1; i < keep; i++) {
        if (prob(i) < threshold) {
          keep = i;
          break;
        }
      }
    }
    let r = this.random.next() * sumOf(keep);
    for (let i = 0; i < keep; i++) {
      r -= prob(i);
      if (r < 0) return ranked.id(i);
    }
    return ranked.id(keep - 1);
  }

  private penalize(logits: Float32Array, seen: ReadonlySet<number>): Float32Array | Float64Array {
    if (!this.penalized || seen.size === 0) return logits;
    const scores = Float64Array.from(logits);
    const factor = this.o.repetitionPenalty!;
    for (const id of seen) {
      const s = scores[id]!;
      scores[id] = s < 0 ? s * factor : s / factor;
    }
    return scores;
  }
}

interface Ranking {
  /** How many ids can be ranked: the row's length, or what was given. */
  readonly size: number;
  id(rank: number): number;
  score(rank: number): number;
  /** Sum over every id of exp((score - top) / t). */
  sumExp(t: number, top: number): number;
}

/** A whole row, ranked as far as sampling walks into it (a full sort of 200k logits would cost tens of ms a token). */
class LazyRanking implements Ranking {
  private order: Int32Array = new Int32Array(0);

  constructor(private readonly scores: Float32Array | Float64Array) {}

  get size(): number {
    return this.scores.length;
  }

  id(rank: number): number {
    if (rank >= this.order.length) this.order = topIndices(this.scores, Math.max(rank + 1, 4 * this.order.length, 64));
    return this.order[rank]!;
  }

  score(rank: number): number {
    return this.scores[this.id(rank)]!;
  }

  sumExp(t: number, top: number): number {
    let sum = 0;
    for (const s of this.scores) if (s === s) sum += Math.exp((s - top) / t);
    return sum;
  }
}

class GivenRanking implements Ranking {
  constructor(private readonly r: RankedLogits) {}

  get size(): number {
    return this.r.ids.length;
  }

  id(rank: number): number {
    return this.r.ids[rank]!;
  }

  score(rank: number): number {
    return this.r.scores[rank]!;
  }

  sumExp(t: number, top: number): number {
    return sumPrefix((i) => Math.exp((this.r.scores[i]! - top) / t), this.size);
  }
}

/** The best score of a row must be a number: NaN or infinite logits mean the model's numbers broke down. */
function checkFinite(best: number): void {
  if (Number.isFinite(best)) return;
  throw new BackendError(
    "NON_FINITE_LOGITS",
    `the next token's best logit is ${best}: the model's numbers broke down (NaN or infinite values)`,
    "the checkpoint's weights may hold NaN or Inf values, or its activations overflow in this dtype: try another copy or release of the model",
  );
}

function sumPrefix(f: (i: number) => number, n: number): number {
  let sum = 0;
  for (let i = 0; i < n; i++) sum += f(i);
  return sum;
}

export function argmax(values: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i]! > values[best]!) best = i;
  return best;
}
