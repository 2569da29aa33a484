// The OpenAI-compatible HTTP API over a loaded model (hono): chat and text completions (streamed or not), models,
// health and metrics. Requests share decoding passes through the scheduler.
import { createHash, randomUUID, timingSafeEqual } from "node:crypto";
import { Hono, type Context } from "hono";
import { bodyLimit } from "hono/body-limit";
import { streamSSE } from "hono/streaming";
import type { GenerateOptions, GenerationResult } from "../engine/generate.js";
import type { LayerwiseModel } from "../engine/model.js";
import type { Scheduler } from "../engine/scheduler.js";
import type { ChatMessage } from "../model/chat-template.js";
import type { EncodeOptions } from "../model/prompt-encoder.js";
import { cut, errorAnswer, errorBody } from "./errors.js";
import { Metrics } from "./metrics.js";
import {
  parseChatRequest,
  parseCompletionRequest,
  type ChatRequest,
  type CompletionRequest,
  type Parsed,
} from "./schemas.js";

export interface AppOptions {
  model: LayerwiseModel;
  scheduler: Scheduler;
  /** The id clients name in `model`. */
  modelName: string;
  apiKey?: string;
  maxBodyBytes: number;
  requestTimeoutMs: number;
  /** False once the server is draining: new requests get 503. */
  accepting: () => boolean;
  /** Fires when a drain has waited long enough: generations still running are cancelled and answered 503. */
  shutdown?: AbortSignal;
  /** Where server errors go in full (paths, hints, stacks); default: stderr. */
  log?: (line: string) => void;
}

const shutDownMessage = "the server shut down before the answer finished";

/** Bodies above this many bytes are decoded and parsed one per turn of the event loop (a 4 MB one takes 20-60 ms). */
const largeBodyBytes = 256 << 10;

export function createApp(o: AppOptions): { app: Hono; metrics: Metrics } {
  const app = new Hono();
  const metrics = new Metrics();
  const created = Math.floor(Date.now() / 1000);

  app.use("*", async (c, next) => {
    await next();
    metrics.count(c.req.routePath === "*" ? "other" : c.req.routePath, c.res.status);
  });
  const log = o.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  // Digests of equal length, compared in constant time: the answer's timing says nothing about the key.
  const digest = (s: string) => createHash("sha256").update(s).digest();
  const keyDigest = o.apiKey === undefined ? undefined : digest(`Bearer ${o.apiKey}`);
  const authorized = (header: string | undefined) => !keyDigest || timingSafeEqual(digest(header ?? ""), keyDigest);
  for (const path of ["/v1/*", "/metrics"]) {
    app.use(path, async (c, next) => {
      if (!authorized(c.req.header("authorization")))
        return c.json(
          errorBody("missing or wrong API key (Authorization: Bearer ...)", "authentication_error", "invalid_api_key"),
          401,
        );
      return next();
    });
  }
  app.use("/v1/*", async (c, next) => {
    if (!o.accepting()) return c.json(errorBody("the server is shutting down", "overloaded_error"), 503);
    return next();
  });
  // The rest of an oversized body is never read: close the connection so the client does not reuse it.
  const tooLarge = (c: Context) =>
    c.json(
      errorBody(`request body larger than ${o.maxBodyBytes} bytes`, "invalid_request_error", "body_too_large"),
      413,
      { connection: "close" },
    );
  const limitBody = bodyLimit({ maxSize: o.maxBodyBytes, onError: tooLarge });
  app.use("/v1/*", async (c, next) => {
    // With a Content-Length the header decides, as in bodyLimit, but without touching `raw.body`: that would turn node's
    // request into a web stream, and reading a 4 MB body through it costs the event loop 2-3 times as much.
    const length = c.req.header("content-length");
    if (length !== undefined && c.req.header("transfer-encoding") === undefined)
      return Number(length) > o.maxBodyBytes ? tooLarge(c) : next();
    return limitBody(c, next);
  });

  app.get("/health", (c) => c.json({ status: "ok", model: o.modelName, ...o.scheduler.stats() }));
  app.get("/metrics", (c) =>
    c.text(metrics.render(o.scheduler.stats(), o.model.stats()), 200, { "content-type": "text/plain; version=0.0.4" }),
  );
  app.get("/v1/models", (c) =>
    c.json({ object: "list", data: [{ id: o.modelName, object: "model", created, owned_by: "layerwise" }] }),
  );

  app.post("/v1/chat/completions", async (c) => {
    const body = await parseBody(c, parseChatRequest);
    if (body instanceof Response) return body;
    const wrongModel = checkModel(c, body.model);
    if (wrongModel) return wrongModel;
    const messages: ChatMessage[] = body.messages.map((m) => ({
      role: m.role,
      content: typeof m.content === "string" ? m.content : m.content.map((p) => p.text).join(""),
    }));
    return generate(
      c,
      body,
      (eo) => o.model.encodePrompt({ messages }, eo),
      body.max_completion_tokens ?? body.max_tokens,
      "chat",
    );
  });

  app.post("/v1/completions", async (c) => {
    const body = await parseBody(c, parseCompletionRequest);
    if (body instanceof Response) return body;
    const wrongModel = checkModel(c, body.model);
    if (wrongModel) return wrongModel;
    const prompt = body.prompt;
    return generate(
      c,
      body,
      (eo) =>
        o.model.encodePrompt(
          typeof prompt === "string" ? prompt : typeof prompt[0] === "string" ? prompt[0] : { ids: prompt as number[] },
          eo,
        ),
      body.max_tokens,
      "text",
    );
  });

  app.notFound((c) =>
    c.json(errorBody(`no route ${cut(c.req.method, 20)} ${cut(c.req.path)}`, "not_found_error"), 404),
  );
  app.onError((e, c) => {
    const answer = errorAnswer(e, o.model.dir);
    if (answer.log) log(answer.log);
    return c.json(answer.body, answer.status);
  });

  // Several large bodies arriving together are decoded and parsed in separate turns of the event loop, so requests in
  // between (health checks) wait for one at most, not for all.
  let largeParses: Promise<void> = Promise.resolve();
  async function parseJson(bytes: ArrayBuffer): Promise<unknown> {
    if (bytes.byteLength > largeBodyBytes) {
      const turn = largeParses.then(() => new Promise<void>((resolve) => setImmediate(resolve)));
      largeParses = turn;
      await turn;
    }
    return JSON.parse(new TextDecoder().decode(bytes));
  }

  async function parseBody<T>(c: Context, parse: (json: unknown) => Parsed<T>): Promise<T | Response> {
    let json: unknown;
    try {
      json = await parseJson(await c.req.arrayBuffer());
    } catch {
      return c.json(errorBody("the request body is not valid JSON", "invalid_request_error", "invalid_json"), 400);
    }
    const parsed = parse(json);
    if (!parsed.ok) return c.json(errorBody(parsed.message, "invalid_request_error", "invalid_request"), 400);
    return parsed.data;
  }

  function checkModel(c: Context, model: string): Response | undefined {
    if (model === o.modelName) return undefined;
    return c.json(
      errorBody(
        `model "${cut(model)}" does not exist; this server runs "${o.modelName}"`,
        "not_found_error",
        "model_not_found",
      ),
      404,
    );
  }

  async function generate(
    c: Context,
    body: ChatRequest | CompletionRequest,
    encode: (o: EncodeOptions) => Promise<number[]>,
    maxTokens: number | null | undefined,
    kind: "chat" | "text",
  ): Promise<Response> {
    const controller = new AbortController();
    c.req.raw.signal.addEventListener("abort", () => controller.abort()); // the client went away
    const onShutdown = () => controller.abort("shutdown");
    o.shutdown?.addEventListener("abort", onShutdown);
    let timer: NodeJS.Timeout | undefined;
    const done = () => {
      clearTimeout(timer);
      o.shutdown?.removeEventListener("abort", onShutdown);
    };
    let streaming = false;
    try {
      // Off the event loop; a prompt with no room left for an answer is refused without its ids crossing back.
      const promptIds = await encode({ signal: controller.signal, maxTokens: o.model.maxPositions - 1 });
      if (!o.accepting()) return c.json(errorBody("the server is shutting down", "overloaded_error"), 503);
      const contextLeft = o.model.maxPositions - promptIds.length;
      timer = setTimeout(() => controller.abort("timeout"), o.requestTimeoutMs);
      const options: GenerateOptions = {
        maxTokens: Math.min(maxTokens ?? contextLeft, contextLeft),
        temperature: body.temperature ?? undefined,
        topP: body.top_p ?? undefined,
        topK: body.top_k ?? undefined,
        minP: body.min_p ?? undefined,
        repetitionPenalty: body.repetition_penalty ?? undefined,
        seed: body.seed ?? undefined,
        stop:
          body.stop === null || body.stop === undefined
            ? undefined
            : typeof body.stop === "string"
              ? [body.stop]
              : body.stop,
        signal: controller.signal,
      };
      const id = `${kind === "chat" ? "chatcmpl" : "cmpl"}-${randomUUID().replaceAll("-", "")}`;
      const stamp = Math.floor(Date.now() / 1000);
      const usage = (r: GenerationResult) => ({
        prompt_tokens: r.promptTokens,
        completion_tokens: r.tokens.length,
        total_tokens: r.promptTokens + r.tokens.length,
      });
      const finish = (r: GenerationResult) => (r.finishReason === "stop" ? "stop" : "length");
      const abortBody = () =>
        controller.signal.reason === "shutdown"
          ? errorBody(shutDownMessage, "overloaded_error")
          : errorBody(
              controller.signal.reason === "timeout" ? `the request ran past ${o.requestTimeoutMs} ms` : "cancelled",
              "timeout_error",
            );

      if (!body.stream) {
        const r = await o.scheduler.submit({ promptIds, options });
        if (r.finishReason === "abort") return c.json(abortBody(), controller.signal.reason === "shutdown" ? 503 : 504);
        const choice =
          kind === "chat"
            ? { index: 0, message: { role: "assistant", content: r.text }, logprobs: null, finish_reason: finish(r) }
            : { index: 0, text: r.text, logprobs: null, finish_reason: finish(r) };
        return c.json({
          id,
          object: kind === "chat" ? "chat.completion" : "text_completion",
          created: stamp,
          model: o.modelName,
          choices: [choice],
          usage: usage(r),
        });
      }

      const chunk = (delta: string | undefined, finishReason: string | null) =>
        kind === "chat"
          ? {
              id,
              object: "chat.completion.chunk",
              created: stamp,
              model: o.modelName,
              choices: [
                {
                  index: 0,
                  delta: delta === undefined ? {} : { content: delta },
                  logprobs: null,
                  finish_reason: finishReason,
                },
              ],
            }
          : {
              id,
              object: "text_completion",
              created: stamp,
              model: o.modelName,
              choices: [{ index: 0, text: delta ?? "", logprobs: null, finish_reason: finishReason }],
            };
      streaming = true;
      return streamSSE(c, async (stream) => {
        stream.onAbort(() => controller.abort());
        try {
          if (kind === "chat")
            await stream.writeSSE({
              data: JSON.stringify({
                ...chunk(undefined, null),
                choices: [{ index: 0, delta: { role: "assistant", content: "" }, logprobs: null, finish_reason: null }],
              }),
            });
          let writes = Promise.resolve();
          const r = await o.scheduler.submit({
            promptIds,
            options,
            onText: (piece) =>
              (writes = writes.then(() => stream.writeSSE({ data: JSON.stringify(chunk(piece, null)) }))),
          });
          await writes;
          if (r.finishReason === "abort") {
            if (controller.signal.reason === "timeout" || controller.signal.reason === "shutdown")
              await stream.writeSSE({ data: JSON.stringify(abortBody()) });
            return;
          }
          await stream.writeSSE({ data: JSON.stringify(chunk(undefined, finish(r))) });
          if (body.stream_options?.include_usage)
            await stream.writeSSE({
              data: JSON.stringify({ ...chunk(undefined, null), choices: [], usage: usage(r) }),
            });
          await stream.writeSSE({ data: "[DONE]" });
        } catch (e) {
          const answer = errorAnswer(e, o.model.dir);
          if (answer.log) log(answer.log);
          await stream.writeSSE({ data: JSON.stringify(answer.body) });
        } finally {
          done();
        }
      });
    } finally {
      if (!streaming) done();
    }
  }

  return { app, metrics };
}
