// Property-based fuzz of the server's request parsing: random and mutated bodies for the completion endpoints get a
// 2xx or a 4xx with a JSON error, never a 5xx, never a hang, never an unbounded answer.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import fc from "fast-check";
import type { Hono } from "hono";
import { LayerwiseModel } from "../../src/engine/model.js";
import { Scheduler } from "../../src/engine/scheduler.js";
import { createApp } from "../../src/server/app.js";
import { tinyModel } from "../helpers.js";

const maxBodyBytes = 64 << 10;

/** Values of every JSON type, with the awkward numbers (huge, negative, fractional, past 2^32 and 2^53). */
const anyValue = fc.oneof(
  fc.jsonValue({ maxDepth: 2 }),
  fc.constantFrom(0, -1, 0.5, 1e308, -1e308, 2 ** 32, 2 ** 32 + 5, 2 ** 53, 2 ** 64, 1023, 1024, ""),
  fc.string({ maxLength: 40 }),
);
const tokenId = fc.oneof(
  { weight: 4, arbitrary: fc.integer({ min: 0, max: 1023 }) },
  fc.integer({ min: -3, max: 1100 }),
  fc.constantFrom(2 ** 31, 2 ** 32, 2 ** 32 + 1, 2 ** 53 - 1, 2 ** 53 + 2, 1e300, 0.5),
);

/** Requests the schema accepts, values spread over their whole range. */
const validSampling = fc.record(
  {
    max_tokens: fc.oneof(fc.integer({ min: 1, max: 20_000 }), fc.constant(null)),
    temperature: fc.double({ min: 0, max: 2, noNaN: true }),
    top_p: fc.double({ min: Number.MIN_VALUE, max: 1, noNaN: true }),
    top_k: fc.nat(5000),
    min_p: fc.double({ min: 0, max: 1, noNaN: true }),
    repetition_penalty: fc.double({ min: 1e-3, max: 1e6, noNaN: true }),
    seed: fc.oneof(fc.integer(), fc.maxSafeInteger(), fc.constant(-(2 ** 53) + 1)),
    stop: fc.oneof(fc.string({ maxLength: 8 }), fc.array(fc.string({ maxLength: 8 }), { maxLength: 16 })),
    stream: fc.boolean(),
    stream_options: fc.record({ include_usage: fc.boolean() }, { requiredKeys: [] }),
    n: fc.constant(1),
    presence_penalty: fc.constant(0),
    frequency_penalty: fc.constant(0),
    user: fc.string({ maxLength: 8 }),
  },
  { requiredKeys: [] },
);
const message = fc.record({
  role: fc.constantFrom("system", "user", "assistant", "tool", "developer"),
  content: fc.oneof(
    fc.string({ maxLength: 60 }),
    fc.array(fc.record({ type: fc.constant("text"), text: fc.string({ maxLength: 20 }) }), { maxLength: 3 }),
  ),
});
const prompt = fc.oneof(
  fc.string({ maxLength: 80 }),
  fc.array(fc.string({ maxLength: 20 }), { minLength: 1, maxLength: 1 }),
  fc.array(tokenId, { minLength: 1, maxLength: 24 }),
);
const validChat = fc
  .tuple(validSampling, fc.array(message, { minLength: 1, maxLength: 3 }))
  .map(([s, messages]) => ({ model: "tiny", ...s, messages }));
const validCompletion = fc.tuple(validSampling, prompt).map(([s, prompt]) => ({ model: "tiny", ...s, prompt }));

const knownKeys = [
  "model",
  "messages",
  "prompt",
  "max_tokens",
  "max_completion_tokens",
  "temperature",
  "top_p",
  "top_k",
  "min_p",
  "repetition_penalty",
  "seed",
  "stop",
  "stream",
  "stream_options",
  "n",
  "presence_penalty",
  "frequency_penalty",
  "user",
  "echo",
  "logprobs",
];
type Body = Record<string, unknown>;
/** One change to a valid body: none, a field set to anything (known or not), a field removed, a message broken. */
const mutation: fc.Arbitrary<(b: Body) => unknown> = fc.oneof(
  { weight: 3, arbitrary: fc.constant((b: Body) => b) },
  {
    weight: 3,
    arbitrary: fc
      .tuple(fc.oneof(fc.constantFrom(...knownKeys), fc.string({ maxLength: 10 })), anyValue)
      .map(([k, v]) => (b: Body) => ({ ...b, [k]: v })),
  },
  {
    weight: 1,
    arbitrary: fc
      .constantFrom(...knownKeys)
      .map((k) => (b: Body) => Object.fromEntries(Object.entries(b).filter(([key]) => key !== k))),
  },
  {
    weight: 1,
    arbitrary: fc.tuple(fc.constantFrom("role", "content", "name", "type", "extra"), anyValue).map(
      ([k, v]) =>
        (b: Body) =>
          Array.isArray(b.messages) ? { ...b, messages: [{ ...(b.messages[0] as Body), [k]: v }] } : b,
    ),
  },
  { weight: 1, arbitrary: anyValue.map((v) => () => v) },
);

/** A body as sent: mutated JSON, sometimes cut short or not JSON at all. */
const mangled = (valid: fc.Arbitrary<Body>) => {
  const json = fc.tuple(valid, mutation).map(([b, m]) => JSON.stringify(m(b)) ?? "");
  return fc.oneof(
    { weight: 10, arbitrary: json },
    { weight: 1, arbitrary: fc.tuple(json, fc.nat()).map(([s, n]) => s.slice(0, n % (s.length + 1))) },
    { weight: 1, arbitrary: fc.string({ maxLength: 100 }) },
  );
};

describe("fuzz: server request parsing", () => {
  let model: LayerwiseModel;
  let app: Hono;
  before(async () => {
    model = await LayerwiseModel.load(await tinyModel({ preset: "tiny-llama", layers: 1 }), {
      backend: "cpu",
      batch: 4,
    });
    const real = new Scheduler(model, { maxBatch: 4 });
    // The real scheduler (prefill and sampling see the parsed values), with answers cut to 2 tokens to keep runs short.
    const scheduler = Object.assign(Object.create(real) as Scheduler, {
      submit: (job: Parameters<Scheduler["submit"]>[0]) =>
        real.submit({ ...job, options: { ...job.options, maxTokens: Math.min(job.options.maxTokens ?? 2, 2) } }),
    });
    app = createApp({
      model,
      scheduler,
      modelName: "tiny",
      maxBodyBytes,
      requestTimeoutMs: 30_000,
      accepting: () => true,
      log: () => {},
    }).app;
  });
  after(() => model.close());

  async function check(path: string, body: string): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const hang = new Promise<never>(
      (_, reject) => (timer = setTimeout(() => reject(new Error(`no answer in 20 s to ${body}`)), 20_000)),
    );
    try {
      const res = await Promise.race([
        app.fetch(
          new Request(`http://localhost${path}`, {
            method: "POST",
            body,
            headers: { "content-type": "application/json" },
          }),
        ),
        hang,
      ]);
      const text = await Promise.race([res.text(), hang]);
      assert.ok(res.status < 500, `${res.status} for ${body}: ${text}`);
      assert.ok(text.length < 16_384, `${text.length} bytes answered to ${body}`);
      if (res.headers.get("content-type")?.includes("text/event-stream")) {
        for (const data of text
          .split("\n")
          .filter((l) => l.startsWith("data: "))
          .map((l) => l.slice(6))) {
          if (data === "[DONE]") continue;
          const event = JSON.parse(data) as { error?: { type: string } };
          assert.ok(!event.error || event.error.type === "invalid_request_error", `${body}: ${data}`);
        }
      } else {
        const json = JSON.parse(text) as { error?: { message: string; type: string } };
        if (res.status >= 400)
          assert.ok(typeof json.error?.message === "string" && json.error.type, `${body}: ${text}`);
      }
    } finally {
      clearTimeout(timer);
    }
  }

  it("/v1/chat/completions", async () => {
    await fc.assert(
      fc.asyncProperty(mangled(validChat), (body) => check("/v1/chat/completions", body)),
      { numRuns: 150, seed: 2301 },
    );
  });

  it("/v1/completions", async () => {
    await fc.assert(
      fc.asyncProperty(mangled(validCompletion), (body) => check("/v1/completions", body)),
      { numRuns: 150, seed: 2302 },
    );
  });
});
