// A huge prompt is encoded off the event loop: /health answers while it is being tokenized.
import assert from "node:assert/strict";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { LayerwiseModel } from "../../src/engine/model.js";
import { startServer } from "../../src/server/index.js";
import { tinyModel } from "../helpers.js";

/** A tiny model whose context lets a 3 MB prompt past the byte check, so it is really tokenized (then refused). */
async function longContextTinyModel(): Promise<string> {
  const dir = await tinyModel({ preset: "tiny-llama", layers: 1 });
  const config = JSON.parse(await readFile(join(dir, "config.json"), "utf8"));
  config.max_position_embeddings = 200_000;
  await writeFile(join(dir, "config.json"), JSON.stringify(config));
  return dir;
}

describe("serve under a huge prompt", () => {
  it("/health answers while a 3 MB prompt is being encoded, before that request ends", async (t) => {
    const model = await LayerwiseModel.load(await longContextTinyModel(), { backend: "cpu", context: 16384 });
    const server = await startServer(model, {
      host: "127.0.0.1",
      port: 0,
      modelName: "tiny",
      maxBatch: 1,
      maxBodyBytes: 4 << 20,
      requestTimeoutMs: 60_000,
    });
    try {
      await fetch(`${server.url}/v1/completions`, {
        method: "POST",
        body: JSON.stringify({ model: "tiny", prompt: "warm up", max_tokens: 1 }),
      });
      const prompt =
        "The model reads the document, then it answers the question. Summarize the report in three sentences. ".repeat(
          30_000,
        );
      let bigDone = 0;
      const big = fetch(`${server.url}/v1/completions`, {
        method: "POST",
        body: JSON.stringify({ model: "tiny", prompt, max_tokens: 1 }),
      }).then(async (r) => {
        bigDone = performance.now();
        return { status: r.status, body: await r.text() };
      });
      await new Promise((r) => setTimeout(r, 300)); // the body is in; its tokenization has begun
      const t0 = performance.now();
      const health = await fetch(`${server.url}/health`);
      const healthDone = performance.now();
      assert.equal(health.status, 200);
      const r = await big;
      t.diagnostic(
        `/health took ${(healthDone - t0).toFixed(1)} ms; the 3 MB prompt's request ended ${(bigDone - healthDone).toFixed(0)} ms after it`,
      );
      assert.ok(healthDone < bigDone, "/health waited for the huge prompt");
      assert.equal(r.status, 400, r.body);
      assert.match(r.body, /PROMPT_TOO_LONG/);
      assert.match(r.body, /context is 200000/);
    } finally {
      await server.stop();
      await model.close();
    }
  });
});
