// Error answers of the HTTP API: OpenAI's error body, sizes bounded, no server file paths (the server's log gets the
// whole error instead).
import { resolve } from "node:path";
import { LayerwiseError, UsageError } from "../errors.js";

export type ErrorType =
  | "invalid_request_error"
  | "authentication_error"
  | "not_found_error"
  | "server_error"
  | "timeout_error"
  | "overloaded_error";

export function errorBody(message: string, type: ErrorType, code: string | null = null) {
  return { error: { message, type, param: null, code } };
}

/** `text` cut to `max` characters, saying how much was left out (client-supplied values echoed in errors). */
export function cut(text: string, max = 100): string {
  return text.length <= max ? text : `${text.slice(0, max)}... (${text.length - max} more characters)`;
}

/**
 * `text` without file paths: the known folders (the model's, as given and absolute) become "<model>", and any other
 * absolute path keeps only its last part ("/home/u/cache/ab.kv: ..." -> ".../ab.kv: ...").
 */
export function redactPaths(text: string, modelDir?: string): string {
  let out = text;
  if (modelDir)
    for (const p of [resolve(modelDir), modelDir.replace(/\/+$/, "")].filter((p) => p.length > 1))
      out = out.split(p).join("<model>");
  return out.replace(/(^|[\s'"`(=[])((?:[A-Za-z]:)?[\\/][^\s'"`()[\]<>]*)/g, (_, before: string, path: string) => {
    const [, body, trailing] = /^(.*?)([:;,.]*)$/.exec(path)!;
    const last = body!.split(/[\\/]/).filter(Boolean).pop();
    return `${before}${last ? `.../${last}` : "..."}${trailing}`;
  });
}

export interface ErrorAnswer {
  status: 400 | 500 | 503;
  body: ReturnType<typeof errorBody>;
  /** For the server's log: the whole error, paths and hint included (absent for the client's own mistakes). */
  log?: string;
}

/** What a request that threw `e` answers. */
export function errorAnswer(e: unknown, modelDir?: string): ErrorAnswer {
  if (e instanceof UsageError)
    return {
      status: 400,
      body: errorBody(
        cut(redactPaths(`${e.message}${e.hint ? ` (${e.hint})` : ""}`, modelDir), 2000),
        "invalid_request_error",
        e.code,
      ),
    };
  if (e instanceof LayerwiseError) {
    const log = `error [${e.code}]: ${e.message}${e.hint ? `\n  hint: ${e.hint}` : ""}`;
    // The request was cancelled (its client left, or the server is stopping) before it ran: nothing to log.
    if (e.code === "SHUTTING_DOWN" || e.code === "CANCELLED" || e.code === "ENCODER_CLOSED")
      return { status: 503, body: errorBody("the server is shutting down", "overloaded_error", e.code) };
    return {
      status: 500,
      body: errorBody(cut(`${e.code}: ${redactPaths(e.message, modelDir)}`, 2000), "server_error", e.code),
      log,
    };
  }
  return {
    status: 500,
    body: errorBody("internal error (the server's log has the details)", "server_error"),
    log: `error [INTERNAL]: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`,
  };
}
