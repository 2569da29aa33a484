// Server input: prompt ids checked against the vocabulary, error bodies bounded and free of server paths, the API key
// guarding /metrics too.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { LayerwiseModel } from "../../src/engine/model.js";
import { CacheError } from "../../src/errors.js";
import { startServer, type RunningServer } from "../../src/server/index.js";
import { backendCases, tinyModel } from "../helpers.js";

const opts = {
  host: "127.0.0.1",
  port: 0,
  modelName: "tiny",
  maxBatch: 4,
  maxBodyBytes: 4 << 20,
  requestTimeoutMs: 60_000,
};

for (const { name: backend } of backendCases) {
  describe(`server input (${backend})`, () => {
    let model: LayerwiseModel;
    let server: RunningServer;
    const logged: string[] = [];
    const post = (path: string, body: unknown, headers: Record<string, string> = {}) =>
      fetch(`${server.url}${path}`, {
        method: "POST",
        body: typeof body === "string" ? body : JSON.stringify(body),
        headers: { "content-type": "application/json", authorization: "Bearer secret", ...headers },
      });

    before(async () => {
      model = await LayerwiseModel.load(await tinyModel({ preset: "tiny-llama", layers: 1 }), { backend, batch: 4 });
      server = await startServer(model, { ...opts, apiKey: "secret", log: (line) => logged.push(line) });
    });
    after(async () => {
      await server.stop();
      await model.close();
    });

    it("prompt ids outside the vocabulary get 400, including ids of 2^32 and more that would wrap", async () => {
      for (const id of [1024, 5000, 2 ** 32, 2 ** 32 + 5, 2 ** 53 - 1]) {
        const res = await post("/v1/completions", { model: "tiny", prompt: [1, 2, id], max_tokens: 2 });
        const body = (await res.json()) as { error: { message: string; code: string } };
        assert.equal(res.status, 400, `${id}: ${JSON.stringify(body)}`);
        assert.equal(body.error.code, "TOKEN_ID_OUT_OF_RANGE");
        assert.match(body.error.message, /vocabulary of 1024/);
      }
      const ok = await post("/v1/completions", { model: "tiny", prompt: [1, 2, 1023], max_tokens: 2 });
      assert.equal(ok.status, 200);
    });

    it("200k unknown fields give a short error naming a few of them", async () => {
      const body: Record<string, unknown> = { model: "tiny", prompt: "x" };
      for (let i = 0; i < 200_000; i++) body[`field_${i}`] = 1;
      const res = await post("/v1/completions", body);
      assert.equal(res.status, 400);
      const text = await res.text();
      assert.ok(text.length < 2000, `${text.length} bytes of error`);
      assert.match(text, /unknown field\(s\) field_0, field_1.* and 19\d{4} more/);
    });

    it("big arrays are checked in bounded time: counted first, the first bad item named (zod took seconds on them)", async () => {
      const many = await post("/v1/chat/completions", {
        model: "tiny",
        messages: new Array(150_000).fill({ role: "x", content: 1 }),
      });
      assert.equal(many.status, 400);
      assert.match(
        ((await many.json()) as { error: { message: string } }).error.message,
        /^messages: 150000 messages and content parts; at most 10000$/,
      );
      const bad = await post("/v1/chat/completions", {
        model: "tiny",
        messages: [{ role: "user", content: "hi" }, ...new Array(9000).fill({ role: "x", content: 1 })],
      });
      assert.equal(bad.status, 400);
      const message = ((await bad.json()) as { error: { message: string } }).error.message;
      assert.match(message, /^messages\.1\.role: /);
      assert.ok(!/messages\.2\./.test(message), message);
      const ids = await post("/v1/completions", { model: "tiny", prompt: new Array(1_200_000).fill(-1) });
      assert.equal(ids.status, 400);
      assert.match(
        ((await ids.json()) as { error: { message: string } }).error.message,
        /prompt id -1 at position 0 is outside the vocabulary/,
      );
    });

    it("the body limit holds with and without a Content-Length", async () => {
      const big = JSON.stringify({ model: "tiny", prompt: "x".repeat(5 << 20) });
      assert.equal((await post("/v1/completions", big)).status, 413);
      const chunked = new ReadableStream({
        start(c) {
          for (let i = 0; i < big.length; i += 1 << 20)
            c.enqueue(new TextEncoder().encode(big.slice(i, i + (1 << 20))));
          c.close();
        },
      });
      const res = await fetch(`${server.url}/v1/completions`, {
        method: "POST",
        body: chunked,
        duplex: "half",
        headers: { authorization: "Bearer secret" },
      } as RequestInit);
      assert.equal(res.status, 413);
      const small = await fetch(`${server.url}/v1/completions`, {
        method: "POST",
        body: new Blob([JSON.stringify({ model: "tiny", prompt: "hi", max_tokens: 1 })]).stream(),
        duplex: "half",
        headers: { authorization: "Bearer secret" },
      } as RequestInit);
      assert.equal(small.status, 200);
    });

    it("long values are cut in error messages", async () => {
      const res = await post("/v1/completions", { model: "m".repeat(1 << 20), prompt: "x" });
      assert.equal(res.status, 404);
      assert.ok((await res.text()).length < 2000);
    });

    it("/metrics needs the key when one is set; /health does not", async () => {
      assert.equal((await fetch(`${server.url}/metrics`)).status, 401);
      assert.equal((await fetch(`${server.url}/metrics`, { headers: { authorization: "Bearer wrong" } })).status, 401);
      assert.equal((await fetch(`${server.url}/metrics`, { headers: { authorization: "Bearer secret" } })).status, 200);
      assert.equal((await fetch(`${server.url}/health`)).status, 200);
      for (const key of ["", "secre", "secret2", "s".repeat(10_000)])
        assert.equal((await post("/v1/models", "", { authorization: `Bearer ${key}` })).status, 401, key);
    });

    it("errors show no server paths; the server's log has the whole error", async () => {
      const dir = await tinyModel({ preset: "tiny-llama", layers: 1 });
      const noTemplate = await LayerwiseModel.load(dir, { backend: "cpu" });
      // A chat request on a model without a template: the error names the model folder.
      (noTemplate as unknown as { chatTemplate: undefined }).chatTemplate = undefined;
      // A failing cache read inside a request: a 500 whose error names a cache file.
      const failing = await LayerwiseModel.load(dir, { backend: "cpu" });
      failing.loadPrefix = async () => {
        throw new CacheError(
          "CACHE_READ_FAILED",
          `${dir}/kv-cache/0a1b2c.kv: read failed (EIO)`,
          `remove ${dir}/kv-cache`,
        );
      };
      for (const [m, path, body, status] of [
        [noTemplate, "/v1/chat/completions", { model: "tiny", messages: [{ role: "user", content: "hi" }] }, 400],
        [failing, "/v1/completions", { model: "tiny", prompt: "hi", max_tokens: 2 }, 500],
        [failing, "/v1/completions", { model: "tiny", prompt: "hi", max_tokens: 2, stream: true }, 200],
      ] as const) {
        const s = await startServer(m, { ...opts, log: (line) => logged.push(line) });
        try {
          logged.length = 0;
          const res = await fetch(`${s.url}${path}`, { method: "POST", body: JSON.stringify(body) });
          const text = await res.text();
          assert.equal(res.status, status, text);
          assert.ok(!text.includes(dir) && !text.includes("/tmp"), `a path in: ${text}`);
          assert.match(text, /CACHE_READ_FAILED|NO_CHAT_TEMPLATE|chat template/);
          if (status === 500 || body.stream)
            assert.ok(
              logged.some((l) => l.includes(`${dir}/kv-cache/0a1b2c.kv`)),
              `logged: ${logged.join("\n")}`,
            );
        } finally {
          await s.stop();
        }
      }
      await noTemplate.close();
      await failing.close();
    });
  });
}
