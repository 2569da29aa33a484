// `layerwise serve MODEL`: the OpenAI-compatible server (chat and text completions, streaming, metrics).
import { basename } from "node:path";
import type { Command } from "commander";
import { LayerwiseModel } from "../engine/model.js";
import { UsageError } from "../errors.js";
import { serveDefaults, startServer } from "../server/index.js";
import { parseBytes } from "../util/bytes.js";
import { addModelFlags, loadOptions, numberFlag, type ModelFlags } from "./options.js";

interface ServeFlags extends ModelFlags {
  host: string;
  port: string;
  apiKey?: string;
  modelName?: string;
  maxBatch: string;
  maxBody: string;
  requestTimeout: string;
  maxConnections: string;
  drainTimeout: string;
}

export function registerServe(program: Command): void {
  addModelFlags(
    program
      .command("serve")
      .description("serve the model over an OpenAI-compatible HTTP API (127.0.0.1 unless --host says otherwise)")
      .argument("<model>", "Hugging Face model folder")
      .option("--host <host>", "address to listen on (0.0.0.0 opens it to the network)", "127.0.0.1")
      .option("--port <port>", "port", "8080")
      .option("--api-key <key>", "require Authorization: Bearer <key>")
      .option("--model-name <name>", "the model id clients use (default: the folder's name)")
      .option("--max-batch <n>", "requests decoded together", "16")
      .option("--max-body <size>", "largest request body", "4MB")
      .option("--request-timeout <seconds>", "longest a request may run", "600")
      .option(
        "--max-connections <n>",
        "most connections open at once; more are closed unanswered",
        String(serveDefaults.maxConnections),
      )
      .option(
        "--drain-timeout <seconds>",
        "on Ctrl-C, how long requests in flight may finish before they are cancelled",
        String(serveDefaults.drainTimeoutMs / 1000),
      ),
  ).action(async (dir: string, flags: ServeFlags) => {
    const maxBatch = numberFlag(flags.maxBatch, "--max-batch", { integer: true })!;
    const maxConnections = numberFlag(flags.maxConnections, "--max-connections", { integer: true })!;
    const drainTimeoutMs = numberFlag(flags.drainTimeout, "--drain-timeout")! * 1000;
    if (maxConnections < 1)
      throw new UsageError("BAD_FLAG", `--max-connections ${flags.maxConnections} is not 1 or more`);
    if (drainTimeoutMs < 0) throw new UsageError("BAD_FLAG", `--drain-timeout ${flags.drainTimeout} is negative`);
    const model = await LayerwiseModel.load(dir, {
      ...loadOptions(flags),
      batch: maxBatch,
      onWarning: (code, message) => process.stderr.write(`warning [${code}]: ${message}\n`),
    });
    if (model.backendNote) process.stderr.write(`${model.backendNote}\n`);
    const server = await startServer(model, {
      host: flags.host,
      port: numberFlag(flags.port, "--port", { integer: true })!,
      modelName: flags.modelName ?? basename(dir.replace(/\/+$/, "")),
      apiKey: flags.apiKey,
      maxBatch,
      maxBodyBytes: parseBytes(flags.maxBody, "--max-body"),
      requestTimeoutMs: numberFlag(flags.requestTimeout, "--request-timeout")! * 1000,
      maxConnections,
      drainTimeoutMs,
    });
    process.stderr.write(`serving ${dir} at ${server.url}/v1 (Ctrl-C drains and stops; twice quits at once)\n`);
    await new Promise<void>((resolve) => {
      const drain = (signal: NodeJS.Signals) => {
        const active = server.scheduler.stats().active + server.scheduler.stats().queued;
        process.stderr.write(
          `${signal}: draining; ${active} generation(s) in flight get ${drainTimeoutMs / 1000} s to finish (Ctrl-C again quits at once)\n`,
        );
        process.once("SIGINT", () => process.exit(130));
        void server.stop().then(resolve);
      };
      process.once("SIGINT", drain);
      process.once("SIGTERM", drain);
    });
    await model.close();
  });
}
