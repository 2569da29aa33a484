// The generate loop on the real stories260K model: stop ids, stop strings, limits, cancel, and the KV cache.
import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { LayerwiseModel } from "../../src/engine/model.js";
import { Sampler } from "../../src/engine/sampling.js";
import { maxAbsDiff, storiesCopy } from "../helpers.js";

describe("generation on stories260K", () => {
  let model: LayerwiseModel;
  before(async () => {
    model = await LayerwiseModel.load(await storiesCopy(), { backend: "cpu" });
  });
  after(() => model.close());

  const story = "Once upon a time, there was a little girl named Lily. She loved to play outside in the park.";

  it("stops at a stop string and leaves it out, even when it spans tokens", async () => {
    const pieces: string[] = [];
    const r = await model.complete(
      { ids: [1] },
      { maxTokens: 40, temperature: 0, stop: ["little girl"], onText: (p) => pieces.push(p) },
    );
    assert.equal(r.text, "Once upon a time, there was a ");
    assert.equal(pieces.join(""), r.text);
    assert.equal(r.finishReason, "stop");
    assert.ok(r.tokens.length < 40);
  });

  it("max tokens ends with finish reason length", async () => {
    const r = await model.complete({ ids: [1] }, { maxTokens: 7, temperature: 0 });
    assert.equal(r.tokens.length, 7);
    assert.equal(r.finishReason, "length");
  });

  it("a stop token id ends generation and is the last id", async () => {
    const r = await model.complete({ ids: [1] }, { maxTokens: 40, temperature: 0, stopTokenIds: [261] });
    assert.deepEqual(r.tokens, [403, 407, 261]);
    assert.equal(r.finishReason, "stop");
  });

  it("eos ids from generation_config.json (a list) stop it", async () => {
    const dir = await storiesCopy();
    await writeFile(join(dir, "generation_config.json"), JSON.stringify({ bos_token_id: 1, eos_token_id: [2, 432] }));
    const m = await LayerwiseModel.load(dir, { backend: "cpu" });
    const r = await m.complete({ ids: [1] }, { maxTokens: 40, temperature: 0 });
    await m.close();
    assert.deepEqual(r.tokens, [403, 407, 261, 378, 432]);
    assert.equal(r.text, "Once upon a time,");
    assert.equal(r.finishReason, "stop");
    const ignored = await model.complete({ ids: [1] }, { maxTokens: 20, temperature: 0, ignoreEos: true });
    assert.ok(ignored.text.startsWith(story.slice(0, 40)));
  });

  it("an aborted signal stops with finish reason abort", async () => {
    const controller = new AbortController();
    const r = await model.complete(
      { ids: [1] },
      { maxTokens: 40, temperature: 0, signal: controller.signal, onText: () => controller.abort() },
    );
    assert.equal(r.finishReason, "abort");
    assert.ok(r.tokens.length >= 1 && r.tokens.length < 5);
  });

  it("decoding with the KV cache equals recomputing the whole sequence", async () => {
    const ids = [1, 403, 407, 261, 378, 432, 383, 286];
    const seq = model.createSequence();
    let incremental = await model.forward(seq, ids.slice(0, 3));
    for (const id of ids.slice(3)) incremental = await model.forward(seq, [id]);
    const full = await model.forward(model.createSequence(), ids);
    assert.ok(maxAbsDiff(incremental, full) < 1e-5);
  });

  it("a batch of sequences decoded together gives each one's own logits", async () => {
    const prompts = [[1, 403, 407], [1, 432, 383, 286, 261], [1]];
    const seqs = prompts.map(() => model.createSequence());
    const first = await model.forwardBatch(prompts.map((ids, i) => ({ seq: seqs[i]!, ids })));
    const next = first.map((l) => [...l.keys()].reduce((a, b) => (l[b]! > l[a]! ? b : a)));
    const batched = await model.forwardBatch(seqs.map((seq, i) => ({ seq, ids: [next[i]!] })));
    for (let i = 0; i < prompts.length; i++) {
      const alone = await model.forward(model.createSequence(), [...prompts[i]!, next[i]!]);
      assert.ok(maxAbsDiff(batched[i]!, alone) < 1e-5, `sequence ${i}`);
      assert.equal(seqs[i]!.length, prompts[i]!.length + 1);
    }
  });

  // Generation asks the backend for only the best ids where that suffices (greedy, top-k); drawing from them must give
  // what sampling the whole row of logits gives.
  for (const o of [
    { temperature: 0, repetitionPenalty: 1.5 },
    { temperature: 0.9, topK: 20, topP: 0.9, repetitionPenalty: 1.2, seed: 3 },
    { temperature: 1.1, topK: 0, minP: 0.02, seed: 4 },
  ]) {
    it(`sampling from the backend's ranked ids equals sampling the whole row: ${JSON.stringify(o)}`, async () => {
      const prompt = [1, 403, 407];
      const got = await model.complete({ ids: prompt }, { ...o, maxTokens: 30, ignoreEos: true });
      const options = model.withDefaults(o);
      const sampler = new Sampler(options);
      const seen = new Set(prompt);
      const seq = model.createSequence();
      let logits = await model.forward(seq, prompt);
      const want: number[] = [];
      while (want.length < 30) {
        const id = sampler.sample(logits, sampler.penalized ? seen : new Set());
        want.push(id);
        seen.add(id);
        logits = await model.forward(seq, [id]);
      }
      seq.dispose();
      assert.deepEqual(got.tokens, want);
    });
  }

  it("seeded sampling is repeatable", async () => {
    const a = await model.complete("Once upon a time", { maxTokens: 20, temperature: 0.8, topP: 0.9, seed: 42 });
    const b = await model.complete("Once upon a time", { maxTokens: 20, temperature: 0.8, topP: 0.9, seed: 42 });
    assert.deepEqual(a.tokens, b.tokens);
  });

  it("a sequence can be rewound and continued", async () => {
    const seq = model.createSequence();
    const first = await model.complete({ ids: [1] }, { maxTokens: 10, temperature: 0 }, seq);
    assert.equal(seq.length, 1 + 10 - 1); // the last sampled token is not fed back
    await seq.rewind(1);
    const again = await model.complete({ ids: [] }, { maxTokens: 1, temperature: 0 }, seq).catch((e) => e);
    assert.equal(again.code, "EMPTY_PROMPT");
    const retry = await model.complete({ ids: [403] }, { maxTokens: 9, temperature: 0 }, seq);
    assert.deepEqual([403, ...retry.tokens], first.tokens);
  });
});
