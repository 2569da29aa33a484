// The OpenAI-compatible HTTP API over a loaded model (hono): chat and text completions (streamed or not), models,
// health and metrics. Requests share decoding passes through the scheduler.
import { randomUUID } from "node:crypto";
import { Hono, type Context } from "hono";
import { bodyLimit } from "hono/body-limit";
import { streamSSE } from "hono/streaming";
import type { GenerateOptions, GenerationResult } from "../engine/generate.js";
import type { LayerwiseModel } from "../engine/model.js";
import type { Scheduler } from "../engine/scheduler.js";
import { LayerwiseError, UsageError } from "../errors.js";
import type { ChatMessage } from "../model/chat-template.js";
import { Metrics } from "./metrics.js";
import { ChatRequest, CompletionRequest, describe } from "./schemas.js";

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
}

type ErrorType = "invalid_request_error" | "authentication_error" | "not_found_error" | "server_error" | "timeout_error" | "overloaded_error";

function errorBody(message: string, type: ErrorType, code: string | null = null) {
  return { error: { message, type, param: null, code } };
}

export function createApp(o: AppOptions): { app: Hono; metrics: Metrics } {
  const app = new Hono();
  const metrics = new Metrics();
  const created = Math.floor(Date.now() / 1000);

  app.use("*", async (c, next) => {
    await next();
    metrics.count(c.req.routePath === "*" ? "other" : c.req.routePath, c.res.status);
  });
  app.use("/v1/*", async (c, next) => {
    if (o.apiKey && c.req.header("authorization") !== `Bearer ${o.apiKey}`) return c.json(errorBody("missing or wrong API key (Authorization: Bearer ...)", "authentication_error", "invalid_api_key"), 401);
    if (!o.accepting()) return c.json(errorBody("the server is shutting down", "overloaded_error"), 503);
    return next();
  });
  // The rest of an oversized body is never read: close the connection so the client does not reuse it.
  app.use("/v1/*", bodyLimit({ maxSize: o.maxBodyBytes, onError: (c) => c.json(errorBody(`request body larger than ${o.maxBodyBytes} bytes`, "invalid_request_error", "body_too_large"), 413, { connection: "close" }) }));

  app.get("/health", (c) => c.json({ status: "ok", model: o.modelName, ...o.scheduler.stats() }));
  app.get("/metrics", (c) => c.text(metrics.render(o.scheduler.stats(), o.model.stats()), 200, { "content-type": "text/plain; version=0.0.4" }));
  app.get("/v1/models", (c) => c.json({ object: "list", data: [{ id: o.modelName, object: "model", created, owned_by: "layerwise" }] }));

  app.post("/v1/chat/completions", async (c) => {
    const body = await parseBody(c, ChatRequest);
    if (body instanceof Response) return body;
    const wrongModel = checkModel(c, body.model);
    if (wrongModel) return wrongModel;
    const messages: ChatMessage[] = body.messages.map((m) => ({ role: m.role, content: typeof m.content === "string" ? m.content : m.content.map((p) => p.text).join("") }));
    return generate(c, body, () => o.model.encodePrompt({ messages }), body.max_completion_tokens ?? body.max_tokens, "chat");
  });

  app.post("/v1/completions", async (c) => {
    const body = await parseBody(c, CompletionRequest);
    if (body instanceof Response) return body;
    const wrongModel = checkModel(c, body.model);
    if (wrongModel) return wrongModel;
    const prompt = body.prompt;
    return generate(c, body, () => o.model.encodePrompt(typeof prompt === "string" ? prompt : typeof prompt[0] === "string" ? prompt[0] : { ids: prompt as number[] }), body.max_tokens, "text");
  });

  app.notFound((c) => c.json(errorBody(`no route ${c.req.method} ${c.req.path}`, "not_found_error"), 404));
  app.onError((e, c) => {
    if (e instanceof UsageError) return c.json(errorBody(`${e.message}${e.hint ? ` (${e.hint})` : ""}`, "invalid_request_error", e.code), 400);
    const message = e instanceof LayerwiseError ? `${e.code}: ${e.message}` : "internal error";
    return c.json(errorBody(message, "server_error"), 500);
  });

  async function parseBody<T>(c: Context, schema: { safeParse(v: unknown): { success: true; data: T } | { success: false; error: import("zod").ZodError } }): Promise<T | Response> {
    let json: unknown;
    try {
      json = await c.req.json();
    } catch {
      return c.json(errorBody("the request body is not valid JSON", "invalid_request_error", "invalid_json"), 400);
    }
    const parsed = schema.safeParse(json);
    if (!parsed.success) return c.json(errorBody(describe(parsed.error), "invalid_request_error", "invalid_request"), 400);
    return parsed.data;
  }

  function checkModel(c: Context, model: string): Response | undefined {
    if (model === o.modelName) return undefined;
    return c.json(errorBody(`model "${model}" does not exist; this server runs "${o.modelName}"`, "not_found_error", "model_not_found"), 404);
  }

  async function generate(c: Context, body: ChatRequest | CompletionRequest, encode: () => Promise<number[]>, maxTokens: number | null | undefined, kind: "chat" | "text"): Promise<Response> {
    const promptIds = await encode(); // off the event loop: the encoder runs in its own process
    const contextLeft = o.model.maxPositions - promptIds.length;
    if (contextLeft <= 0) throw new UsageError("PROMPT_TOO_LONG", `the prompt has ${promptIds.length} tokens; the model's context is ${o.model.maxPositions}`);
    const controller = new AbortController();
    c.req.raw.signal.addEventListener("abort", () => controller.abort()); // the client went away
    const timer = setTimeout(() => controller.abort("timeout"), o.requestTimeoutMs);
    const options: GenerateOptions = {
      maxTokens: Math.min(maxTokens ?? contextLeft, contextLeft),
      temperature: body.temperature ?? undefined,
      topP: body.top_p ?? undefined,
      topK: body.top_k ?? undefined,
      minP: body.min_p ?? undefined,
      repetitionPenalty: body.repetition_penalty ?? undefined,
      seed: body.seed ?? undefined,
      stop: body.stop === null || body.stop === undefined ? undefined : typeof body.stop === "string" ? [body.stop] : body.stop,
      signal: controller.signal,
    };
    const id = `${kind === "chat" ? "chatcmpl" : "cmpl"}-${randomUUID().replaceAll("-", "")}`;
    const stamp = Math.floor(Date.now() / 1000);
    const usage = (r: GenerationResult) => ({ prompt_tokens: r.promptTokens, completion_tokens: r.tokens.length, total_tokens: r.promptTokens + r.tokens.length });
    const finish = (r: GenerationResult) => (r.finishReason === "stop" ? "stop" : "length");

    if (!body.stream) {
      try {
        const r = await o.scheduler.submit({ promptIds, options });
        if (r.finishReason === "abort") return c.json(errorBody(controller.signal.reason === "timeout" ? `the request ran past ${o.requestTimeoutMs} ms` : "cancelled", "timeout_error"), 504);
        const choice = kind === "chat" ? { index: 0, message: { role: "assistant", content: r.text }, logprobs: null, finish_reason: finish(r) } : { index: 0, text: r.text, logprobs: null, finish_reason: finish(r) };
        return c.json({ id, object: kind === "chat" ? "chat.completion" : "text_completion", created: stamp, model: o.modelName, choices: [choice], usage: usage(r) });
      } finally {
        clearTimeout(timer);
      }
    }

    const chunk = (delta: string | undefined, finishReason: string | null) =>
      kind === "chat"
        ? { id, object: "chat.completion.chunk", created: stamp, model: o.modelName, choices: [{ index: 0, delta: delta === undefined ? {} : { content: delta }, logprobs: null, finish_reason: finishReason }] }
        : { id, object: "text_completion", created: stamp, model: o.modelName, choices: [{ index: 0, text: delta ?? "", logprobs: null, finish_reason: finishReason }] };
    return streamSSE(c, async (stream) => {
      stream.onAbort(() => controller.abort());
      try {
        if (kind === "chat") await stream.writeSSE({ data: JSON.stringify({ ...chunk(undefined, null), choices: [{ index: 0, delta: { role: "assistant", content: "" }, logprobs: null, finish_reason: null }] }) });
        let writes = Promise.resolve();
        const r = await o.scheduler.submit({ promptIds, options, onText: (piece) => (writes = writes.then(() => stream.writeSSE({ data: JSON.stringify(chunk(piece, null)) }))) });
        await writes;
        if (r.finishReason === "abort") {
          if (controller.signal.reason === "timeout") await stream.writeSSE({ data: JSON.stringify(errorBody(`the request ran past ${o.requestTimeoutMs} ms`, "timeout_error")) });
          return;
        }
        await stream.writeSSE({ data: JSON.stringify(chunk(undefined, finish(r))) });
        if (body.stream_options?.include_usage) await stream.writeSSE({ data: JSON.stringify({ ...chunk(undefined, null), choices: [], usage: usage(r) }) });
        await stream.writeSSE({ data: "[DONE]" });
      } catch (e) {
        await stream.writeSSE({ data: JSON.stringify(errorBody(e instanceof LayerwiseError ? e.message : "internal error", e instanceof UsageError ? "invalid_request_error" : "server_error")) });
      } finally {
        clearTimeout(timer);
      }
    });
  }

  return { app, metrics };
}
