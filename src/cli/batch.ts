// `layerwise batch MODEL --in jobs.jsonl --out results.jsonl`: many prompts through one batched model, results appended
// (and synced) as they finish; a rerun skips ids already in the output, so a crash or Ctrl-C loses no finished result.
import { createReadStream } from "node:fs";
import { open, readFile, stat, truncate } from "node:fs/promises";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { SingleBar } from "cli-progress";
import type { Command } from "commander";
import { z } from "zod";
import { LayerwiseModel } from "../engine/model.js";
import { Scheduler } from "../engine/scheduler.js";
import { UsageError } from "../errors.js";
import { addModelFlags, loadOptions, numberFlag, type ModelFlags } from "./options.js";
import { makeScratchDir, removeScratchDir } from "./scratch.js";

const JobLine = z.strictObject({
  id: z.union([z.string(), z.number()]).transform(String),
  prompt: z.string().optional(),
  messages: z
    .array(z.strictObject({ role: z.enum(["system", "developer", "user", "assistant", "tool"]), content: z.string() }))
    .min(1)
    .optional(),
  max_tokens: z.number().int().positive().optional(),
  temperature: z.number().min(0).optional(),
  top_p: z.number().gt(0).max(1).optional(),
  top_k: z.number().int().nonnegative().optional(),
  min_p: z.number().min(0).max(1).optional(),
  repetition_penalty: z.number().positive().optional(),
  seed: z.number().int().optional(),
  stop: z.union([z.string(), z.array(z.string())]).optional(),
});

interface BatchFlags extends ModelFlags {
  in: string;
  out: string;
  batch: string;
  prefixCache: boolean;
}

/** How this command's records begin (JSON.stringify of { id, ... }): a last line cut short by a crash starts so too. */
const recordStart = '{"id":';

function isResult(line: string): boolean {
  try {
    const r = JSON.parse(line) as Record<string, unknown> | null;
    return (
      typeof r === "object" &&
      r !== null &&
      typeof r.id === "string" &&
      typeof r.text === "string" &&
      "finish_reason" in r
    );
  } catch {
    return false;
  }
}

/**
 * Ids already in the output. The file must be this command's own, checked before a byte of it changes: every complete
 * line a result record, and a last line without its newline one that starts as a record does (a crash cut it short; it
 * is removed and its job runs again).
 */
async function finishedIds(file: string): Promise<Set<string>> {
  const text = await readFile(file, "utf8").catch((e: NodeJS.ErrnoException) => {
    if (e.code === "ENOENT") return "";
    throw new UsageError("OUT_UNREADABLE", `--out ${file} cannot be read: ${e.message}`);
  });
  const end = text.lastIndexOf("\n") + 1;
  const lines = text
    .slice(0, end)
    .split("\n")
    .filter((l) => l.trim());
  const notResult =
    lines.find((l) => !isResult(l)) ??
    (end < text.length && !text.slice(end).startsWith(recordStart) ? text.slice(end) : undefined);
  if (notResult !== undefined) {
    throw new UsageError(
      "OUT_NOT_RESULTS",
      `--out ${file} has a line that is not a result of layerwise batch: ${notResult.slice(0, 80)}`,
      "give a new file or the output of an earlier batch run; the file was left as it is",
    );
  }
  if (end < text.length) await truncate(file, Buffer.byteLength(text.slice(0, end)));
  return new Set(lines.map((l) => (JSON.parse(l) as { id: string }).id));
}

async function sameFile(a: string, b: string): Promise<boolean> {
  const [x, y] = await Promise.all([stat(a), stat(b).catch(() => undefined)]);
  return y !== undefined && x.dev === y.dev && x.ino === y.ino;
}

export function registerBatch(program: Command): void {
  addModelFlags(
    program
      .command("batch")
      .description(
        "run every job of a JSONL file ({id, prompt | messages, max_tokens, temperature, ...} per line); rerun to resume",
      )
      .argument("<model>", "Hugging Face model folder")
      .requiredOption("--in <file>", "input JSONL, one job per line")
      .requiredOption("--out <file>", "output JSONL; results are appended as they finish")
      .option("--batch <n>", "jobs decoded together", "16")
      .option("--no-prefix-cache", "do not share the KV of common prompt prefixes between jobs"),
  ).action(async (dir: string, flags: BatchFlags) => {
    const jobs: z.infer<typeof JobLine>[] = [];
    const seen = new Set<string>();
    let lineNo = 0;
    const input = createInterface({ input: createReadStream(flags.in).on("error", () => {}) });
    await stat(flags.in).catch((e: Error) => {
      throw new UsageError("IN_UNREADABLE", `--in ${flags.in} cannot be read: ${e.message}`);
    });
    for await (const line of input) {
      lineNo++;
      if (!line.trim()) continue;
      let json: unknown;
      try {
        json = JSON.parse(line);
      } catch {
        throw new UsageError("BAD_JOB", `${flags.in}:${lineNo}: not valid JSON`);
      }
      const parsed = JobLine.safeParse(json);
      if (!parsed.success)
        throw new UsageError(
          "BAD_JOB",
          `${flags.in}:${lineNo}: ${parsed.error.issues.map((i) => `${i.path.join(".") || "job"}: ${i.message}`).join("; ")}`,
        );
      if ((parsed.data.prompt === undefined) === (parsed.data.messages === undefined))
        throw new UsageError("BAD_JOB", `${flags.in}:${lineNo}: give "prompt" or "messages", not both or neither`);
      if (seen.has(parsed.data.id))
        throw new UsageError(
          "BAD_JOB",
          `${flags.in}:${lineNo}: id ${parsed.data.id} appears twice`,
          "ids must be unique: the output is keyed by them",
        );
      seen.add(parsed.data.id);
      jobs.push(parsed.data);
    }
    if (await sameFile(flags.in, flags.out))
      throw new UsageError("OUT_IS_IN", `--out ${flags.out} is the input file`, "give a separate file for the results");
    const done = await finishedIds(flags.out);
    const todo = jobs.filter((j) => !done.has(j.id));
    process.stderr.write(
      `${jobs.length} jobs, ${jobs.length - todo.length} already in ${flags.out}, ${todo.length} to run\n`,
    );
    if (todo.length === 0) return;

    // The prefix cache is a best effort: without room for its folder the jobs run without it.
    const scratch =
      !flags.kvCache && flags.prefixCache
        ? await makeScratchDir("layerwise-batch-").catch(
            (e: Error) =>
              void process.stderr.write(
                `warning [KV_CACHE_DISABLED]: no temporary folder for the prefix cache (${e.message}); shared prefixes are computed again\n`,
              ),
          )
        : undefined;
    try {
      await runJobs(dir, flags, todo, scratch);
    } finally {
      if (scratch) await removeScratchDir(scratch); // the temp KV folder this command made
    }
  });
}

async function runJobs(
  dir: string,
  flags: BatchFlags,
  todo: z.infer<typeof JobLine>[],
  scratch: string | undefined,
): Promise<void> {
  const maxBatch = numberFlag(flags.batch, "--batch", { integer: true })!;
  const model = await LayerwiseModel.load(dir, {
    ...loadOptions(flags),
    kvCache: flags.kvCache ?? (scratch && join(scratch, "kv")),
    batch: maxBatch,
    onWarning: (code, message) => process.stderr.write(`warning [${code}]: ${message}\n`),
  });
  const out = await open(flags.out, "a").catch(async (e: unknown) => {
    await model.close();
    throw e;
  });
  const stopAll = new AbortController();
  process.once("SIGINT", () => {
    process.stderr.write("\n(interrupted: results so far are saved; rerun to finish)\n");
    process.once("SIGINT", () => process.exit(130));
    stopAll.abort();
  });
  const bar = process.stderr.isTTY
    ? new SingleBar({
        format: "batch |{bar}| {value}/{total} jobs | {rate} tokens/s | ETA {eta_formatted}",
        stream: process.stderr,
        hideCursor: true,
      })
    : undefined;
  bar?.start(todo.length, 0, { rate: "-" });
  const scheduler = new Scheduler(model, { maxBatch });
  const start = performance.now();
  let tokens = 0;
  let writes = Promise.resolve();
  try {
    await Promise.all(
      todo.map(async (job) => {
        const r = await scheduler.submit({
          promptIds: await model.encodePrompt(job.messages ? { messages: job.messages } : job.prompt!),
          options: {
            maxTokens: job.max_tokens,
            temperature: job.temperature,
            topP: job.top_p,
            topK: job.top_k,
            minP: job.min_p,
            repetitionPenalty: job.repetition_penalty,
            seed: job.seed,
            stop: job.stop === undefined ? undefined : typeof job.stop === "string" ? [job.stop] : job.stop,
            signal: stopAll.signal,
          },
        });
        if (r.finishReason === "abort") return;
        tokens += r.tokens.length;
        const line =
          JSON.stringify({
            id: job.id,
            text: r.text,
            finish_reason: r.finishReason,
            prompt_tokens: r.promptTokens,
            completion_tokens: r.tokens.length,
            kv_cache_hit_tokens: r.kvCacheHitTokens ?? 0,
          }) + "\n";
        // One write per record, synced, in completion order: a crash can cut only the record being written.
        writes = writes.then(async () => {
          await out.write(line);
          await out.datasync();
        });
        await writes;
        bar?.increment(1, { rate: (tokens / ((performance.now() - start) / 1000)).toFixed(1) });
      }),
    );
  } finally {
    bar?.stop();
    // Each step runs whatever the one before did (a full disk fails the last write, not the closing).
    await writes.catch(() => {});
    await out.close().catch(() => {});
    await model.close();
  }
  await writes;
  process.stderr.write(
    `${stopAll.signal.aborted ? "stopped" : "done"}: ${tokens} tokens in ${((performance.now() - start) / 1000).toFixed(1)} s\n`,
  );
  if (stopAll.signal.aborted) process.exitCode = 130;
}
