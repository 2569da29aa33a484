// Prompt encoding in its own process: same ids as the tokenizer and template give in-process, bounded in bytes, time
// and memory, and hostile templates or tokenizers end in a clean error (never a hang or a crash of this process).
import assert from "node:assert/strict";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import fc from "fast-check";
import { LayerwiseModel } from "../../src/engine/model.js";
import { LayerwiseError } from "../../src/errors.js";
import { PromptEncoder } from "../../src/model/prompt-encoder.js";
import { tinyModel } from "../helpers.js";

/** Limits small enough for a test to meet them in a second or two. */
const testLimits = { timeMs: 1500, timeMsPerMB: 0, memoryMb: 160 };

const isCode =
  (...codes: string[]) =>
  (e: unknown) => {
    assert.ok(e instanceof LayerwiseError, `not a LayerwiseError: ${String(e)}`);
    assert.ok(codes.includes(e.code), `${e.code}: ${e.message}`);
    return true;
  };

async function withTemplate(template: string): Promise<string> {
  const dir = await tinyModel({ preset: "tiny-llama", layers: 1 });
  await writeFile(join(dir, "chat_template.jinja"), template);
  return dir;
}

describe("prompt encoding", () => {
  let model: LayerwiseModel;
  before(async () => {
    model = await LayerwiseModel.load(await tinyModel({ preset: "tiny-llama", layers: 1 }), { backend: "cpu" });
  });
  after(() => model.close());

  it("gives the ids the tokenizer and chat template give in-process", async () => {
    const texts = [
      "Once upon a time, there was a girl.",
      "héllo wörld, 日本語 and emoji 😀👍🏽",
      "  tabs\tand\nnew lines\n\n",
      "<|begin_of_text|>special <|eot_id|> inside",
      "",
    ];
    for (const text of texts) assert.deepEqual(await model.encodePrompt(text), model.tokenizer.encode(text), text);
    const messages = [
      { role: "system" as const, content: "You are terse." },
      { role: "user" as const, content: "Summarize the report in three sentences." },
    ];
    const rendered = model.chatTemplate!.render(messages, {
      bos_token: model.tokenizer.specialToken("bos_token"),
      eos_token: model.tokenizer.specialToken("eos_token"),
    });
    assert.deepEqual(await model.encodePrompt({ messages }), model.tokenizer.encode(rendered, false));
    assert.deepEqual(await model.encodePrompt({ ids: [1, 2, 3] }), [1, 2, 3]);
  });

  it("a text that cannot fit the context is refused by its size in bytes, before tokenizing", async () => {
    const huge = "word ".repeat(4_000_000); // 20 MB: far past 16384 tokens of any length
    await assert.rejects(
      model.encodePrompt(huge),
      (e: LayerwiseError) => isCode("PROMPT_TOO_LONG")(e) && /20000000 bytes/.test(e.message),
    );
    await assert.rejects(
      model.encodePrompt({ messages: [{ role: "user", content: huge }] }),
      isCode("PROMPT_TOO_LONG"),
    );
  });

  it("prompt ids must be whole numbers inside the vocabulary", async () => {
    for (const id of [1024, 2 ** 32 + 5, -1, 1.5, Number.NaN]) {
      await assert.rejects(
        model.encodePrompt({ ids: [1, id] }),
        (e: LayerwiseError) => isCode("TOKEN_ID_OUT_OF_RANGE")(e) && /vocabulary of 1024/.test(e.message),
        String(id),
      );
    }
  });
});

describe("hostile model folders", () => {
  it("a template that builds a billion-element range fails cleanly, and the next prompt encodes", async () => {
    const dir = await withTemplate("{% for i in range(1000000000) %}{% endfor %}{{ messages[0].content }}");
    const model = await LayerwiseModel.load(dir, { backend: "cpu", promptLimits: testLimits });
    try {
      await assert.rejects(
        model.encodePrompt({ messages: [{ role: "user", content: "hi" }] }),
        isCode("TEMPLATE_TOO_LARGE", "TEMPLATE_TOO_SLOW"),
      );
      assert.deepEqual(await model.encodePrompt("still works"), model.tokenizer.encode("still works"));
    } finally {
      await model.close();
    }
  });

  it("a template with nested loops fails as too slow, naming the template as the cause", async () => {
    const dir = await withTemplate("{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}");
    const model = await LayerwiseModel.load(dir, { backend: "cpu", promptLimits: testLimits });
    try {
      await assert.rejects(
        model.encodePrompt({ messages: [{ role: "user", content: "hi" }] }),
        (e: LayerwiseError) => isCode("TEMPLATE_TOO_SLOW")(e) && /chat template/.test(e.hint ?? ""),
      );
    } finally {
      await model.close();
    }
  });

  it("a template whose output is far larger than the conversation is refused", async () => {
    const dir = await withTemplate(
      "{% for a in range(20000) %}padding padding padding padding padding padding padding padding {% endfor %}",
    );
    // Time enough that a loaded machine still finishes rendering: this case is about size.
    const model = await LayerwiseModel.load(dir, { backend: "cpu", promptLimits: { ...testLimits, timeMs: 60_000 } });
    try {
      await assert.rejects(
        model.encodePrompt({ messages: [{ role: "user", content: "hi" }] }),
        isCode("TEMPLATE_TOO_LARGE"),
      );
    } finally {
      await model.close();
    }
  });

  it("a tokenizer regex with catastrophic backtracking fails as too slow", async () => {
    const dir = await tinyModel({ preset: "tiny-llama", layers: 1 });
    const file = join(dir, "tokenizer.json");
    const json = JSON.parse(await readFile(file, "utf8"));
    json.pre_tokenizer = {
      type: "Sequence",
      pretokenizers: [
        { type: "Split", pattern: { Regex: "(a+)+$" }, behavior: "Isolated", invert: false },
        json.pre_tokenizer,
      ],
    };
    await writeFile(file, JSON.stringify(json));
    const model = await LayerwiseModel.load(dir, { backend: "cpu", promptLimits: testLimits });
    try {
      await assert.rejects(
        model.encodePrompt(`${"a".repeat(40)}!`),
        (e: LayerwiseError) => isCode("TOKENIZER_TOO_SLOW")(e) && /tokenizer\.json/.test(e.hint ?? ""),
      );
      assert.deepEqual(await model.encodePrompt("bbb"), model.tokenizer.encode("bbb"));
    } finally {
      await model.close();
    }
  });
});

describe("fuzz: random chat templates", () => {
  // Loops, ranges, string repetition and filters, nested: each template renders, fails cleanly, or hits a limit.
  const expr = fc.oneof(
    fc.constantFrom(
      "'x'",
      "messages[0].content",
      "i",
      "'ab' * 1000",
      "range(5) | length",
      "bos_token",
      "messages | length",
    ),
    fc.integer({ min: -5, max: 50 }).map(String),
  );
  const block: fc.Memo<string> = fc.memo((depth) =>
    depth <= 1
      ? expr.map((e) => `{{ ${e} }}`)
      : fc.oneof(
          expr.map((e) => `{{ ${e} }}`),
          fc
            .tuple(fc.constantFrom(10, 1000, 100000, 100000000), block(depth - 1))
            .map(([n, b]) => `{% for i in range(${n}) %}${b}{% endfor %}`),
          fc.tuple(block(depth - 1), block(depth - 1)).map(([a, b]) => a + b),
          fc.tuple(expr, block(depth - 1)).map(([e, b]) => `{% if ${e} %}${b}{% else %}x{% endif %}`),
          fc.constantFrom(
            "{{ raise_exception('no') }}",
            "{% set s = 'a' %}{% for i in range(40) %}{% set s = s ~ s %}{% endfor %}{{ s | length }}",
            "{{ undefined_name.attr }}",
            "{% for %}",
          ),
        ),
  );

  it("every template gives ids or a LayerwiseError, each within its time limit", async () => {
    const base = await tinyModel({ preset: "tiny-llama", layers: 1 });
    const file = join(base, "chat_template.jinja");
    await fc.assert(
      fc.asyncProperty(block(4), async (template) => {
        await writeFile(file, template);
        const encoder = PromptEncoder.open(base, { maxPositions: 16384, limits: testLimits });
        try {
          const t0 = performance.now();
          const r = await encoder
            .encodeMessages([{ role: "user", content: "hello" }], { bos_token: "<|begin_of_text|>" })
            .catch((e: unknown) => e);
          if (!Array.isArray(r)) assert.ok(r instanceof LayerwiseError, `${template}: ${String(r)}`);
          // The limit plus starting the encoder process: a hang guard, not a timing assertion.
          assert.ok(performance.now() - t0 < 30_000, template);
        } finally {
          encoder.close();
        }
      }),
      { numRuns: 20, seed: 23 },
    );
  });
});
