// Sampling: greedy, seeded repeatability, and each filter's effect on which tokens can come out.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Sampler, argmax } from "../../src/engine/sampling.js";
import { UsageError } from "../../src/errors.js";

const logits = Float32Array.from([1.0, 3.0, 2.5, -1.0, 0.5, 2.9]);

function counts(sampler: Sampler, n: number, history: number[] = []): number[] {
  const c = new Array(logits.length).fill(0);
  for (let i = 0; i < n; i++) c[sampler.sample(logits, history)]++;
  return c;
}

describe("sampling", () => {
  it("temperature 0 is argmax", () => {
    assert.equal(new Sampler({ temperature: 0 }).sample(logits, []), 1);
    assert.equal(argmax(logits), 1);
  });

  it("the same seed gives the same tokens; another seed gives others", () => {
    const run = (seed: number) => Array.from({ length: 50 }, ((s) => () => s.sample(logits, []))(new Sampler({ temperature: 1, seed })));
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
    assert.deepEqual(c.map((n) => n > 0), [false, true, false, false, false, true]);
  });

  it("top-p keeps the smallest set reaching p", () => {
    // softmax mass: token 1 ~0.35, token 5 ~0.32, token 2 ~0.21: p = 0.6 needs tokens 1 and 5.
    const c = counts(new Sampler({ temperature: 1, topP: 0.6, seed: 3 }), 2000);
    assert.deepEqual(c.map((n) => n > 0), [false, true, false, false, false, true]);
  });

  it("min-p drops tokens below p times the best", () => {
    // exp(2.5 - 3) = 0.61, exp(1 - 3) = 0.14: min-p 0.5 keeps 1, 5, 2.
    const c = counts(new Sampler({ temperature: 1, minP: 0.5, seed: 4 }), 3000);
    assert.deepEqual(c.map((n) => n > 0), [false, true, true, false, false, true]);
  });

  it("repetition penalty divides positive and multiplies negative logits of seen tokens", () => {
    const s = new Sampler({ temperature: 0, repetitionPenalty: 2 });
    assert.equal(s.sample(logits, [1]), 5); // 3.0 / 2 = 1.5 < 2.9
    assert.equal(s.sample(logits, [1, 5]), 2); // 2.9 / 2 = 1.45 < 2.5
    const negative = Float32Array.from([-1, -1.5]);
    assert.equal(new Sampler({ temperature: 0, repetitionPenalty: 2 }).sample(negative, [0]), 1); // -1 * 2 = -2 < -1.5
  });

  it("rejects impossible settings", () => {
    assert.throws(() => new Sampler({ temperature: -1 }), (e: UsageError) => e.code === "BAD_SAMPLING" && /temperature -1/.test(e.message));
    assert.throws(() => new Sampler({ topP: 0 }), (e: UsageError) => e.code === "BAD_SAMPLING");
    assert.throws(() => new Sampler({ topK: 1.5 }), (e: UsageError) => e.code === "BAD_SAMPLING");
  });
});
