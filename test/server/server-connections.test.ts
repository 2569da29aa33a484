// Connections: slow clients are cut off, their number is bounded, and stopping never waits on an idle or slow client
// nor, past the drain timeout, on a long generation.
import assert from "node:assert/strict";
import { readFile, writeFile } from "node:fs/promises";
import { connect, type Socket } from "node:net";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { LayerwiseModel } from "../../src/engine/model.js";
import { startServer, type RunningServer, type ServeOptions } from "../../src/server/index.js";
import { tinyModel } from "../helpers.js";

const opts: ServeOptions = {
  host: "127.0.0.1",
  port: 0,
  modelName: "tiny",
  maxBatch: 4,
  maxBodyBytes: 1 << 20,
  requestTimeoutMs: 60_000,
};

/** A raw TCP client to the server; `closed` resolves when the server ends the connection. */
function rawClient(url: string, send = ""): { socket: Socket; opened: Promise<void>; closed: Promise<string> } {
  const { hostname, port } = new URL(url);
  const socket = connect(Number(port), hostname);
  let received = "";
  socket.on("data", (d) => (received += d));
  socket.on("error", () => {});
  const opened = new Promise<void>((resolve) => socket.once("connect", () => (send && socket.write(send), resolve())));
  const closed = new Promise<string>((resolve) => socket.once("close", () => resolve(received)));
  return { socket, opened, closed };
}

/** Fails the test instead of hanging when `p` takes longer than `ms` (a hang guard, not a timing assertion). */
async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const guard = new Promise<never>(
    (_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: still waiting after ${ms} ms`)), ms)),
  );
  try {
    return await Promise.race([p, guard]);
  } finally {
    clearTimeout(timer);
  }
}

const slowBody =
  'POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{"model":';

describe("server connections", () => {
  let dir: string;
  let model: LayerwiseModel;
  before(async () => {
    dir = await tinyModel({ preset: "tiny-llama", layers: 1 });
    // No eos: every generation runs to its max_tokens, so one is surely running when the drain begins.
    const config = join(dir, "generation_config.json");
    await writeFile(config, JSON.stringify({ ...JSON.parse(await readFile(config, "utf8")), eos_token_id: [] }));
    model = await LayerwiseModel.load(dir, { backend: "cpu", batch: 4 });
  });
  after(() => model.close());

  it("stop() ends at once with an idle connection, a kept-alive one and a slow body connected", async () => {
    const server = await startServer(model, opts);
    const idle = rawClient(server.url);
    const slow = rawClient(server.url, slowBody);
    const keptAlive = rawClient(server.url, "GET /health HTTP/1.1\r\nhost: x\r\n\r\n");
    await Promise.all([idle.opened, slow.opened, keptAlive.opened]);
    while (server.connections() < 3) await new Promise((r) => setTimeout(r, 5));
    await new Promise((r) => setTimeout(r, 100)); // the health answer has gone out; its connection stays open
    await within(server.stop(), 10_000, "stop()");
    await within(Promise.all([idle.closed, slow.closed, keptAlive.closed]), 5_000, "connections closed");
  });

  it("a client that sends its body too slowly is answered 408 and cut off", async () => {
    const server = await startServer(model, { ...opts, headersTimeoutMs: 300, receiveTimeoutMs: 600 });
    try {
      const slow = rawClient(server.url, slowBody);
      const silent = rawClient(server.url);
      const [slowGot, silentGot] = await within(
        Promise.all([slow.closed, silent.closed]),
        10_000,
        "slow clients cut off",
      );
      assert.match(slowGot, /^HTTP\/1\.1 408/);
      assert.match(silentGot, /^HTTP\/1\.1 408/);
    } finally {
      await server.stop();
    }
  });

  it("connections past the limit are refused", async () => {
    const server = await startServer(model, { ...opts, maxConnections: 2 });
    try {
      const kept = [rawClient(server.url), rawClient(server.url)];
      await Promise.all(kept.map((c) => c.opened));
      while (server.connections() < 2) await new Promise((r) => setTimeout(r, 5));
      const third = rawClient(server.url, "GET /health HTTP/1.1\r\nhost: x\r\n\r\n");
      assert.equal(
        await within(third.closed, 5_000, "third connection"),
        "",
        "the third connection is closed unanswered",
      );
      for (const c of kept) c.socket.destroy();
      while (server.connections() > 0) await new Promise((r) => setTimeout(r, 5));
      assert.equal((await fetch(`${server.url}/health`)).status, 200, "a connection is taken again once others closed");
    } finally {
      await server.stop();
    }
  });

  it("kept-alive sockets outlive the common clients' idle timeouts (5 s), so a reused socket is never closed under a request", async () => {
    const server = await startServer(model, opts);
    try {
      assert.ok(server.http.keepAliveTimeout > 5_000, `${server.http.keepAliveTimeout} ms`);
      assert.ok(server.http.headersTimeout <= server.http.requestTimeout);
    } finally {
      await server.stop();
    }
  });

  it("stopping waits for generations up to the drain timeout, then cancels them and answers 503", async () => {
    const server = await startServer(model, { ...opts, drainTimeoutMs: 300 });
    const body = (stream: boolean) =>
      JSON.stringify({ model: "tiny", prompt: "a long answer", max_tokens: 16000, temperature: 0, stream });
    const plain = fetch(`${server.url}/v1/completions`, { method: "POST", body: body(false) });
    const streamed = await fetch(`${server.url}/v1/completions`, { method: "POST", body: body(true) });
    while (server.scheduler.stats().active < 2) await new Promise((r) => setTimeout(r, 5));
    await within(server.stop(), 20_000, "stop() with generations running");
    const res = await plain;
    assert.equal(res.status, 503);
    assert.match(((await res.json()) as { error: { message: string } }).error.message, /shut down/);
    const events = await streamed.text();
    assert.match(events, /shut down/);
    assert.equal(server.scheduler.stats().active, 0);
  });
});
