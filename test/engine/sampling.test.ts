// Sampling: greedy, seeded repeatability, and each filter's effect on which tokens can come out.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Sampler, argmax, type SamplingOptions } from "../../src/engine/sampling.js";
import { BackendError, UsageError } from "../../src/errors.js";
import { Random } from "../../src/util/random.js";
import { topIndices } from "../../src/util/top-k.js";

const logits = Float32Array.from([1.0, 3.0, 2.5, -1.0, 0.5, 2.9]);
const none: ReadonlySet<number> = new Set();

function counts(sampler: Sampler, n: number, seen: ReadonlySet<number> = new Set()): number[] {
  const c = new Array(logits.length).fill(0);
  for (let i = 0; i < n; i++) c[sampler.sample(logits, seen)]++;
  return c;
}

describe("sampling", () => {
  it("temperature 0 is argmax", () => {
    assert.equal(new Sampler({ temperature: 0 }).sample(logits, none), 1);
    assert.equal(argmax(logits), 1);
  });

  it("the same seed gives the same tokens; another seed gives others", () => {
    const run = (seed: number) =>
      Array.from(
        { length: 50 },
        (
          (s) => () =>
            s.sample(logits, none)
        )(new Sampler({ temperature: 1, seed })),
      );
    assert.deepEqual(run(7), run(7));
    assert.notDeepEqual(run(7), run(8));
  });

  it("follows the softmax distribution at temperature 1", () => {
    const c = counts(new Sampler({ temperature: 1, seed: 1 }), 20000);
    const p = Array.from(logits, (l) => Math.exp(l));
    const z = p.reduce((a, b) => a + b);
    c.forEach((n, i) => assert.ok(Math.abs(n / 20000 - p[i]! / z) < 0.015, `token ${i}: ${n / 20000} vs ${p[i]! / z}`));
  });

  it("top-k keeps only the k best", () => {
    const c = counts(new Sampler({ temperature: 1, topK: 2, seed: 2 }), 2000);
    assert.deepEqual(
      c.map((n) => n > 0),
      [false, true, false, false, false, true],
    );
  });

  it("top-p keeps the smallest set reaching p", () => {
    // softmax mass: token 1 ~0.35, token 5 ~0.32, token 2 ~0.21: p = 0.6 needs tokens 1 and 5.
    const c = counts(new Sampler({ temperature: 1, topP: 0.6, seed: 3 }), 2000);
    assert.deepEqual(
      c.map((n) => n > 0),
      [false, true, false, false, false, true],
    );
  });

  it("min-p drops tokens below p times the best", () => {
    // exp(2.5 - 3) = 0.61, exp(1 - 3) = 0.14: min-p 0.5 keeps 1, 5, 2.
    const c = counts(new Sampler({ temperature: 1, minP: 0.5, seed: 4 }), 3000);
    assert.deepEqual(
      c.map((n) => n > 0),
      [false, true, true, false, false, true],
    );
  });

  it("repetition penalty divides positive and multiplies negative logits of seen tokens", () => {
    const s = new Sampler({ temperature: 0, repetitionPenalty: 2 });
    assert.equal(s.sample(logits, new Set([1])), 5); // 3.0 / 2 = 1.5 < 2.9
    assert.equal(s.sample(logits, new Set([1, 5])), 2); // 2.9 / 2 = 1.45 < 2.5
    const negative = Float32Array.from([-1, -1.5]);
    assert.equal(new Sampler({ temperature: 0, repetitionPenalty: 2 }).sample(negative, new Set([0])), 1); // -1 * 2 = -2 < -1.5
  });

  // The definition the sampler must keep: a full stable sort of the penalized row, then each filter on that list.
  function referenceSample(o: SamplingOptions, random: Random, row: Float32Array, seen: ReadonlySet<number>): number {
    const scores = Float64Array.from(row);
    for (const id of seen)
      scores[id] =
        scores[id]! < 0 ? scores[id]! * (o.repetitionPenalty ?? 1) : scores[id]! / (o.repetitionPenalty ?? 1);
    let order = Array.from(scores.keys()).sort((a, b) => scores[b]! - scores[a]!);
    if (!o.temperature) return order[0]!;
    if (o.topK) order = order.slice(0, o.topK);
    const max = scores[order[0]!]! / o.temperature;
    let probs = order.map((id) => Math.exp(scores[id]! / o.temperature! - max));
    const sum = (p: number[]) => p.reduce((a, b) => a + b, 0);
    if (o.topP !== undefined && o.topP < 1) {
      const total = sum(probs);
      let cum = 0;
      const keep = probs.findIndex((p) => (cum += p / total) >= o.topP!);
      if (keep !== -1) [order, probs] = [order.slice(0, keep + 1), probs.slice(0, keep + 1)];
    }
    if (o.minP) {
      const below = probs.findIndex((p) => p < o.minP! * probs[0]!);
      if (below !== -1) [order, probs] = [order.slice(0, Math.max(1, below)), probs.slice(0, Math.max(1, below))];
    }
    let r = random.next() * sum(probs);
    for (let i = 0; i < order.length; i++) if ((r -= probs[i]!) < 0) return order[i]!;
    return order[order.length - 1]!;
  }

  const settings: SamplingOptions[] = [
    { temperature: 0 },
    { temperature: 0, repetitionPenalty: 1.3 },
    { temperature: 0.8 },
    { temperature: 0.8, topK: 40 },
    { temperature: 1.2, topK: 5, topP: 0.7 },
    { temperature: 0.7, topP: 0.9 },
    { temperature: 0.7, topP: 0.95, minP: 0.05 },
    { temperature: 1, minP: 0.2, repetitionPenalty: 1.2 },
    { temperature: 0.9, topK: 50, topP: 0.9, repetitionPenalty: 0.8 },
  ];
  for (const o of settings) {
    it(`ranks only as far as it must and draws what a full sort would: ${JSON.stringify(o)}`, () => {
      const vocab = 5000;
      const rng = new Random(11);
      const seen = new Set(Array.from({ length: 300 }, () => Math.floor(rng.next() * vocab)));
      const sampler = new Sampler({ ...o, seed: 5 });
      const reference = new Random(5);
      for (let step = 0; step < 40; step++) {
        // Peaked rows (as trained models give) and flat ones, with ties among the best.
        const spread = step % 2 ? 8 : 0.5;
        const row = Float32Array.from({ length: vocab }, () => Math.round(rng.next() * spread * 64) / 64);
        const want = referenceSample(o, reference, row, seen);
        const request = sampler.request(seen);
        if (request === undefined) {
          assert.equal(sampler.sample(row, seen), want, `step ${step}`);
          continue;
        }
        // What a backend gives for a request: the penalized row's best ids (ranked as topIndices ranks them).
        const penalized = Float32Array.from(row);
        for (const id of request.penalty?.ids ?? [])
          penalized[id] =
            penalized[id]! < 0 ? penalized[id]! * request.penalty!.factor : penalized[id]! / request.penalty!.factor;
        const ids = topIndices(penalized, request.top);
        assert.equal(
          sampler.sample({ ids, scores: Float32Array.from(ids, (id) => penalized[id]!) }, seen),
          want,
          `step ${step}`,
        );
      }
    });
  }

  it("top indices: a stable descending sort's first k, ties by lower index, NaN last", () => {
    const rng = new Random(3);
    for (const n of [1, 7, 100, 4000]) {
      const values = Float32Array.from({ length: n }, () => Math.floor(rng.next() * 20));
      if (n > 10) values[3] = NaN;
      const sorted = Array.from(values.keys()).sort(
        (a, b) =>
          (Number.isNaN(values[b]!) ? -Infinity : values[b]!) - (Number.isNaN(values[a]!) ? -Infinity : values[a]!) ||
          a - b,
      );
      for (const k of [0, 1, 5, 64, n, n + 3])
        assert.deepEqual(Array.from(topIndices(values, k)), sorted.slice(0, k), `n ${n}, k ${k}`);
    }
  });

  it("a tiny temperature samples the best token, as its limit (greedy) does", () => {
    for (const temperature of [1e-320, 1e-30, 1e-8]) {
      const sampler = new Sampler({ temperature, seed: 1 });
      for (let i = 0; i < 20; i++) assert.equal(sampler.sample(logits, none), 1, `temperature ${temperature}`);
      assert.equal(
        new Sampler({ temperature, topK: 3, seed: 1 }).sample(
          { ids: Int32Array.from([1, 5, 2]), scores: Float32Array.from([3, 2.9, 2.5]) },
          none,
        ),
        1,
      );
    }
  });

  it("refuses NaN or infinite logits instead of sampling around them", () => {
    const nan = new Float32Array(6).fill(NaN);
    const inf = Float32Array.from([1, Infinity, 0, 0, 0, 0]);
    const broken = (e: unknown) => (e as BackendError).code === "NON_FINITE_LOGITS";
    for (const o of [{ temperature: 0 }, { temperature: 0.8, seed: 1 }, { temperature: 0.8, topP: 0.9, seed: 1 }]) {
      assert.throws(() => new Sampler(o).sample(nan, none), broken, JSON.stringify(o));
      assert.throws(() => new Sampler(o).sample(inf, none), broken, JSON.stringify(o));
      assert.throws(
        () => new Sampler(o).sample({ ids: Int32Array.from([2, 0]), scores: Float32Array.from([NaN, NaN]) }, none),
        broken,
        JSON.stringify(o),
      );
    }
    const oneNan = Float32Array.from([1, 3, NaN, 0, 0, 0]);
    assert.equal(new Sampler({ temperature: 0 }).sample(oneNan, none), 1, "a NaN beside finite logits ranks last");
  });

  it("rejects impossible settings", () => {
    assert.throws(
      () => new Sampler({ temperature: -1 }),
      (e: UsageError) => e.code === "BAD_SAMPLING" && /temperature -1/.test(e.message),
    );
    assert.throws(
      () => new Sampler({ topP: 0 }),
      (e: UsageError) => e.code === "BAD_SAMPLING",
    );
    assert.throws(
      () => new Sampler({ topK: 1.5 }),
      (e: UsageError) => e.code === "BAD_SAMPLING",
    );
  });
});
