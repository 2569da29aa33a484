// Weight names are typed per architecture: a misspelt weight in a layer's forward does not compile. The checks are
// `@ts-expect-error` lines, so `npm test`'s build fails if a typo ever compiles again.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { LlamaLayerWeight } from "../../src/arch/llama.js";
import type { Weights, WeightSpecs } from "../../src/arch/types.js";

function readsWeights(w: Weights<LlamaLayerWeight>, specs: WeightSpecs<LlamaLayerWeight>): unknown[] {
  return [
    w.qNorm,
    // @ts-expect-error a misspelt weight name
    w.qNrom,
    specs.mlpNorm,
    // @ts-expect-error a weight Llama does not have
    specs.postMlpNorm,
  ];
}

describe("weight names", () => {
  it("are checked at compile time (this file builds only if the misspelt names above fail to)", () => {
    assert.deepEqual(readsWeights({}, {}), [undefined, undefined, undefined, undefined]);
  });
});
