// The OpenAI-compatible server, called with the official openai client and with raw HTTP for bad input.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import OpenAI from "openai";
import { LayerwiseModel } from "../../src/engine/model.js";
import { startServer, type RunningServer } from "../../src/server/index.js";
import { tinyModel } from "../helpers.js";

const opts = {
  host: "127.0.0.1",
  port: 0,
  modelName: "tiny",
  maxBatch: 16,
  maxBodyBytes: 1 << 20,
  requestTimeoutMs: 60_000,
};

describe("serve", () => {
  let model: LayerwiseModel;
  let server: RunningServer;
  let client: OpenAI;
  const post = (path: string, body: string, headers: Record<string, string> = { "content-type": "application/json" }) =>
    fetch(`${server.url}${path}`, { method: "POST", body, headers });

  before(async () => {
    model = await LayerwiseModel.load(await tinyModel({ preset: "tiny-llama", layers: 2 }), {
      backend: "cpu",
      batch: 16,
    });
    server = await startServer(model, opts);
    client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: "unused", maxRetries: 0 });
  });
  after(async () => {
    await server.stop();
    await model.close();
  });

  it("chat completions, plain and streamed, equal a direct run", async () => {
    const messages = [{ role: "user" as const, content: "Summarize the report in three sentences." }];
    const solo = await model.complete({ messages }, { maxTokens: 12, temperature: 0 });
    const r = await client.chat.completions.create({ model: "tiny", messages, max_tokens: 12, temperature: 0 });
    assert.equal(r.object, "chat.completion");
    assert.equal(r.choices[0]!.message.content, solo.text);
    assert.equal(r.choices[0]!.finish_reason, solo.finishReason === "stop" ? "stop" : "length");
    assert.deepEqual(r.usage, {
      prompt_tokens: solo.promptTokens,
      completion_tokens: solo.tokens.length,
      total_tokens: solo.promptTokens + solo.tokens.length,
    });
    const stream = await client.chat.completions.create({
      model: "tiny",
      messages,
      max_tokens: 12,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = "";
    let finish: string | null = null;
    let usage: unknown;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta.content ?? "";
      finish = chunk.choices[0]?.finish_reason ?? finish;
      usage = chunk.usage ?? usage;
    }
    assert.equal(text, solo.text);
    assert.equal(finish, "length");
    assert.deepEqual(usage, r.usage);
  });

  it("text completions, plain and streamed, and the model list", async () => {
    const solo = await model.complete("The model reads the document", { maxTokens: 10, temperature: 0 });
    const r = await client.completions.create({
      model: "tiny",
      prompt: "The model reads the document",
      max_tokens: 10,
      temperature: 0,
    });
    assert.equal(r.choices[0]!.text, solo.text);
    let text = "";
    for await (const chunk of await client.completions.create({
      model: "tiny",
      prompt: "The model reads the document",
      max_tokens: 10,
      temperature: 0,
      stream: true,
    }))
      text += chunk.choices[0]?.text ?? "";
    assert.equal(text, solo.text);
    const models = await client.models.list();
    assert.deepEqual(
      models.data.map((m) => m.id),
      ["tiny"],
    );
  });

  it("stop strings end the text and are left out", async () => {
    const full = (await client.completions.create({ model: "tiny", prompt: "answer", max_tokens: 16, temperature: 0 }))
      .choices[0]!.text;
    const stop = full.slice(5, 7);
    const r = await client.completions.create({
      model: "tiny",
      prompt: "answer",
      max_tokens: 16,
      temperature: 0,
      stop,
    });
    assert.equal(r.choices[0]!.text, full.slice(0, full.indexOf(stop)));
    assert.equal(r.choices[0]!.finish_reason, "stop");
  });

  it("bad requests get 4xx with a message, and the server stays healthy", async () => {
    const cases: [string, Response, number, RegExp][] = [
      ["malformed JSON", await post("/v1/chat/completions", "{ not json"), 400, /not valid JSON/],
      [
        "wrong type",
        await post("/v1/completions", JSON.stringify({ model: "tiny", prompt: "x", max_tokens: "ten" })),
        400,
        /max_tokens/,
      ],
      [
        "unknown field",
        await post("/v1/completions", JSON.stringify({ model: "tiny", prompt: "x", temprature: 1 })),
        400,
        /unknown field\(s\) temprature/,
      ],
      ["missing messages", await post("/v1/chat/completions", JSON.stringify({ model: "tiny" })), 400, /messages/],
      ["n > 1", await post("/v1/completions", JSON.stringify({ model: "tiny", prompt: "x", n: 2 })), 400, /^n: /],
      [
        "unknown model",
        await post("/v1/completions", JSON.stringify({ model: "gpt-9", prompt: "x" })),
        404,
        /model "gpt-9" does not exist/,
      ],
      [
        "huge body",
        await post("/v1/completions", JSON.stringify({ model: "tiny", prompt: "x".repeat(2 << 20) })),
        413,
        /larger than/,
      ],
      [
        "prompt too long",
        await post("/v1/completions", JSON.stringify({ model: "tiny", prompt: Array(20000).fill(300) })),
        400,
        /context is 16384/,
      ],
      ["no such route", await fetch(`${server.url}/v1/embeddings`, { method: "POST" }), 404, /no route/],
    ];
    for (const [name, res, status, message] of cases) {
      assert.equal(res.status, status, name);
      const body = (await res.json()) as { error: { message: string; type: string } };
      assert.match(body.error.message, message, name);
      assert.ok(body.error.type, name);
    }
    const health = await fetch(`${server.url}/health`);
    assert.equal(health.status, 200);
    assert.equal(((await health.json()) as { status: string }).status, "ok");
    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    assert.match(metrics, /layerwise_requests_total\{endpoint="\/v1\/completions",status="400"\} \d+/);
    assert.match(metrics, /layerwise_queue_depth 0/);
  });

  it("64 concurrent streaming requests all complete, each equal to its solo run; the queue drains", async () => {
    const prompts = Array.from({ length: 64 }, (_, i) => `request ${i}: the model reads a long document and answers`);
    const solos = [];
    for (const p of prompts) solos.push((await model.complete(p, { maxTokens: 8, temperature: 0 })).text);
    const texts = await Promise.all(
      prompts.map(async (prompt) => {
        let text = "";
        for await (const chunk of await client.completions.create({
          model: "tiny",
          prompt,
          max_tokens: 8,
          temperature: 0,
          stream: true,
        }))
          text += chunk.choices[0]?.text ?? "";
        return text;
      }),
    );
    assert.deepEqual(texts, solos);
    const stats = server.scheduler.stats();
    assert.equal(stats.queued, 0);
    assert.equal(stats.active, 0);
  });

  it("a client that disconnects cancels its work", async () => {
    const before = server.scheduler.counters.generatedTokens;
    const controller = new AbortController();
    const res = await post(
      "/v1/completions",
      JSON.stringify({ model: "tiny", prompt: "a long answer", max_tokens: 16000, temperature: 0, stream: true }),
      { "content-type": "application/json" },
    );
    const reader = res.body!.getReader();
    await reader.read(); // the first chunk arrived: the request is running
    await reader.cancel();
    controller.abort();
    for (let i = 0; i < 200 && server.scheduler.stats().active > 0; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(server.scheduler.stats().active, 0);
    assert.ok(
      server.scheduler.counters.generatedTokens - before < 2000,
      `${server.scheduler.counters.generatedTokens - before} tokens were generated for a closed connection`,
    );
  });
});

describe("serve options", () => {
  it("an API key is required when set; a request past its timeout gets 504; stop drains", async () => {
    const model = await LayerwiseModel.load(await tinyModel({ preset: "tiny-llama", layers: 2 }), { backend: "cpu" });
    const server = await startServer(model, { ...opts, apiKey: "secret" });
    try {
      const body = JSON.stringify({ model: "tiny", prompt: "x", max_tokens: 4 });
      assert.equal((await fetch(`${server.url}/v1/completions`, { method: "POST", body })).status, 401);
      const ok = await fetch(`${server.url}/v1/completions`, {
        method: "POST",
        body,
        headers: { authorization: "Bearer secret", "content-type": "application/json" },
      });
      assert.equal(ok.status, 200);
    } finally {
      await server.stop();
    }
    // A timeout short enough that no request finishes, whatever the machine's load.
    const timing = await startServer(model, { ...opts, requestTimeoutMs: 50 });
    try {
      assert.equal(
        (await model.complete("a long answer", { maxTokens: 200, temperature: 0 })).finishReason,
        "length",
        "this prompt runs long without an eos",
      );
      const slow = await fetch(`${timing.url}/v1/completions`, {
        method: "POST",
        body: JSON.stringify({ model: "tiny", prompt: "a long answer", max_tokens: 16000 }),
      });
      assert.equal(slow.status, 504);
      assert.match(((await slow.json()) as { error: { message: string } }).error.message, /ran past 50 ms/);
    } finally {
      await timing.stop();
      await model.close();
    }
  });

  it("stopping drains: a request in flight finishes, new ones are refused", async () => {
    const model = await LayerwiseModel.load(await tinyModel({ preset: "tiny-llama", layers: 2 }), { backend: "cpu" });
    const server = await startServer(model, opts);
    try {
      const inFlight = fetch(`${server.url}/v1/completions`, {
        method: "POST",
        body: JSON.stringify({ model: "tiny", prompt: "a long answer", max_tokens: 100 }),
      });
      while (server.scheduler.stats().active === 0) await new Promise((r) => setTimeout(r, 5));
      const stopping = server.stop();
      const late = await fetch(`${server.url}/v1/completions`, {
        method: "POST",
        body: JSON.stringify({ model: "tiny", prompt: "x", max_tokens: 2 }),
      }).catch(() => undefined);
      assert.ok(!late || late.status === 503, "a request after stop() is refused");
      const r = await inFlight;
      assert.equal(r.status, 200, "the request in flight finished");
      assert.equal(((await r.json()) as { usage: { completion_tokens: number } }).usage.completion_tokens, 100);
      await stopping;
    } finally {
      await model.close();
    }
  });
});
