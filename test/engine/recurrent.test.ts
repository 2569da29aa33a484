// Recurrent (linear-attention) layers on the engine, with Qwen3-Next (CPU backend): state per sequence in a batch, the
// same outputs whatever the chunking and wherever the experts come from, rewinds that restart, and prefix reuse from the
// persistent cache that resumes the state and gives the cold run's output.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { LayerwiseModel, withModel, type LoadOptions } from "../../src/engine/model.js";
import { Random } from "../../src/util/random.js";
import { tempDir, tinyModel } from "../helpers.js";

const ids = (n: number, seed: number) => {
  const r = new Random(seed);
  return Array.from({ length: n }, () => 32 + Math.floor(r.next() * 900));
};

async function greedy(dir: string, prompt: number[], o: LoadOptions = {}) {
  return withModel(dir, { backend: "cpu", kvDtype: "f32", kvBlockTokens: 16, ...o }, (m) =>
    m.complete({ ids: prompt }, { maxTokens: 8, temperature: 0, ignoreEos: true }),
  );
}

describe("Qwen3-Next recurrent state, cpu", () => {
  it("one pass, 5-row chunks, streamed experts and token-by-token feeding give the same logits", async () => {
    const dir = await tinyModel({ preset: "tiny-qwen3-next" });
    const prompt = ids(40, 1);
    const all = (o: LoadOptions) =>
      withModel(dir, { backend: "cpu", kvDtype: "f32", ...o }, (m) => m.forward(m.createSequence(), prompt, "all"));
    const want = await all({});
    for (const o of [{ prefillChunk: 5 }, { expertSlots: 2, ram: 0 }, { prefillChunk: 7, prefillSpan: 14 }])
      assert.deepEqual(await all(o), want, JSON.stringify(o));
    const stepwise = await withModel(dir, { backend: "cpu", kvDtype: "f32" }, async (m) => {
      const seq = m.createSequence();
      const out: number[] = [];
      for (const id of prompt) out.push(...(await m.forward(seq, [id])));
      return Float32Array.from(out);
    });
    const maxDiff = stepwise.reduce((d, v, i) => Math.max(d, Math.abs(v - want[i]!)), 0);
    assert.ok(maxDiff < 1e-5, `token by token: max |diff| ${maxDiff}`);
  });

  it("sequences decoded in one batch keep their own state", async () => {
    const dir = await tinyModel({ preset: "tiny-qwen3-next" });
    await withModel(dir, { backend: "cpu", kvDtype: "f32", batch: 2 }, async (m) => {
      const [a, b] = [ids(20, 2), ids(33, 3)];
      const solo = async (p: number[]) => m.forward(m.createSequence(), p);
      const [sa, sb] = [m.createSequence(), m.createSequence()];
      const both = await m.forwardBatch([
        { seq: sa, ids: a },
        { seq: sb, ids: b },
      ]);
      assert.deepEqual(both[0], await solo(a));
      assert.deepEqual(both[1], await solo(b));
    });
  });

  it("a rewind cannot take recurrent state back: the sequence restarts, and feeding the tokens again gives the same logits", async () => {
    const dir = await tinyModel({ preset: "tiny-qwen3-next" });
    await withModel(dir, { backend: "cpu", kvDtype: "f32" }, async (m) => {
      const prompt = ids(30, 4);
      const seq = m.createSequence();
      const want = await m.forward(seq, prompt.slice(0, 20));
      await m.forward(seq, prompt.slice(20));
      assert.equal(await seq.rewind(20), 0);
      assert.equal(seq.length, 0);
      assert.equal(await seq.rewind(0), 0);
      assert.deepEqual(await m.forward(seq, prompt.slice(0, 20)), want);
    });
  });

  it("a second question on a cached document resumes the state and gives the cold run's answer", async () => {
    const dir = await tinyModel({ preset: "tiny-qwen3-next" });
    const cache = await tempDir("lw-kv-");
    const doc = ids(70, 5);
    const q1 = [...doc, ...ids(9, 6)];
    const q2 = [...doc, ...ids(11, 7)];
    const cached = { kvCache: cache, prefillChunk: 32 };
    const first = await greedy(dir, q1, cached);
    assert.equal(first.kvCacheHitTokens, 0);
    assert.deepEqual(first.tokens, (await greedy(dir, q1)).tokens);
    const second = await greedy(dir, q2, cached);
    // State was kept at chunk ends (32, 64) and at the prompt's last block boundary (64 + 16 = 80 > 70: not a doc block),
    // so the document resumes at 64 tokens.
    assert.equal(second.kvCacheHitTokens, 64);
    assert.deepEqual(second.tokens, (await greedy(dir, q2)).tokens);
  });
});
