// Flags shared by the commands that load a model and generate, with their parsers.
import { readFile } from "node:fs/promises";
import { Option, type Command } from "commander";
import { isBackendName, type BackendName } from "../backend/index.js";
import { UsageError } from "../errors.js";
import type { GenerateOptions } from "../engine/generate.js";
import type { LoadOptions } from "../engine/model.js";
import { parseBytes, parseCount } from "../util/bytes.js";

export interface ModelFlags {
  backend: string;
  json?: boolean;
  debug?: boolean;
  vram?: string;
  ram?: string;
  context?: string;
  prefillChunk?: string;
  prefillSpan?: string;
  kvBlock?: string;
  kvCache?: string;
  kvCacheMax?: string;
  expertSlots?: string;
}

export interface GenerateFlags extends ModelFlags {
  maxTokens: string;
  temperature?: string;
  topP?: string;
  topK?: string;
  minP?: string;
  repetitionPenalty?: string;
  seed?: string;
  stop?: string[];
}

export function addModelFlags(cmd: Command): Command {
  return cmd
    .addOption(new Option("--backend <name>", "compute backend: cpu, cuda or auto").default("auto"))
    .option("--vram <size>", "GPU memory layerwise may use, e.g. 8GB (default: free memory less a margin)")
    .option(
      "--ram <size>",
      "RAM for caching weights and KV, e.g. 32GB, 0 to read weights from disk every token (default: half the free RAM)",
    )
    .option("--context <tokens>", "tokens to plan memory for, e.g. 100k (default: the model's context)")
    .option(
      "--prefill-chunk <tokens>",
      "rows per layer pass during prefill, bounding activations (default: 8192, 4096 or 2048, the largest whose plan decodes as fast as 2048's)",
    )
    .option(
      "--prefill-span <tokens>",
      "tokens taken through all layers before the next ones (each layer's weights are read once per span; default: the whole context if it fits, else 32768)",
    )
    .option("--kv-block <tokens>", "tokens per KV cache block", "256")
    .option(
      "--kv-cache <dir>",
      "persistent KV cache folder: a prompt that starts with a cached prefix skips its prefill",
    )
    .option(
      "--kv-cache-max <size>",
      "largest size of the KV cache folder; least recently used blocks are deleted first",
    )
    .option(
      "--expert-slots <n>",
      "most experts cached on the GPU (mixture-of-experts models; default: what --vram leaves room for)",
    )
    .option("--json", "print one JSON line at the end instead of streaming text")
    .option("--debug", "print stack traces of errors");
}

export function loadOptions(flags: ModelFlags): LoadOptions {
  const count = (v: string | undefined, flag: string) =>
    v === undefined ? undefined : positive(parseCount(v, flag), flag);
  const o: LoadOptions = {
    backend: backendName(flags),
    vram: flags.vram === undefined ? undefined : parseBytes(flags.vram, "--vram"),
    ram: flags.ram === undefined ? undefined : parseBytes(flags.ram, "--ram"),
    context: count(flags.context, "--context"),
    prefillChunk: count(flags.prefillChunk, "--prefill-chunk"),
    prefillSpan: count(flags.prefillSpan, "--prefill-span"),
    kvBlockTokens: count(flags.kvBlock, "--kv-block"),
    kvCache: flags.kvCache,
    kvCacheMax: flags.kvCacheMax === undefined ? undefined : parseBytes(flags.kvCacheMax, "--kv-cache-max"),
    expertSlots: count(flags.expertSlots, "--expert-slots"),
  };
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as LoadOptions;
}

function positive(n: number, flag: string): number {
  if (!(n >= 1)) throw new UsageError("BAD_FLAG", `${flag} must be at least 1`);
  return n;
}

export function addGenerateFlags(cmd: Command): Command {
  return addModelFlags(cmd)
    .option("--max-tokens <n>", "most new tokens", "256")
    .option("--temperature <t>", "0 for greedy decoding (default: the model's generation_config.json)")
    .option("--top-p <p>", "nucleus sampling mass")
    .option("--top-k <k>", "sample among the k best tokens")
    .option("--min-p <p>", "drop tokens below p times the best token's probability")
    .option("--repetition-penalty <r>", "divide logits of tokens already seen (transformers' rule)")
    .option("--seed <n>", "seed for sampling, for repeatable output")
    .option("--stop <text...>", "stop when the output contains this text");
}

export function backendName(flags: ModelFlags): BackendName {
  if (!isBackendName(flags.backend))
    throw new UsageError("BAD_BACKEND", `--backend ${flags.backend} is not one of cpu, cuda, auto`);
  return flags.backend;
}

export function numberFlag(value: string | undefined, flag: string, o: { integer?: boolean } = {}): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (value.trim() === "" || !Number.isFinite(n) || (o.integer && !Number.isInteger(n))) {
    throw new UsageError("BAD_FLAG", `${flag} ${value} is not ${o.integer ? "a whole number" : "a number"}`);
  }
  return n;
}

export function generateOptions(flags: GenerateFlags): GenerateOptions {
  const o: GenerateOptions = {
    maxTokens: numberFlag(flags.maxTokens, "--max-tokens", { integer: true }),
    temperature: numberFlag(flags.temperature, "--temperature"),
    topP: numberFlag(flags.topP, "--top-p"),
    topK: numberFlag(flags.topK, "--top-k", { integer: true }),
    minP: numberFlag(flags.minP, "--min-p"),
    repetitionPenalty: numberFlag(flags.repetitionPenalty, "--repetition-penalty"),
    seed: numberFlag(flags.seed, "--seed", { integer: true }),
    stop: flags.stop,
  };
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as GenerateOptions;
}

export async function promptText(flags: { prompt?: string; promptFile?: string }): Promise<string> {
  if (flags.prompt !== undefined && flags.promptFile !== undefined)
    throw new UsageError("BAD_FLAG", "give --prompt or --prompt-file, not both");
  if (flags.promptFile !== undefined) {
    try {
      return await readFile(flags.promptFile, "utf8");
    } catch (e) {
      throw new UsageError(
        "PROMPT_FILE_UNREADABLE",
        `--prompt-file ${flags.promptFile} cannot be read: ${(e as Error).message}`,
      );
    }
  }
  if (flags.prompt === undefined)
    throw new UsageError("NO_PROMPT", "no prompt given", "pass --prompt TEXT or --prompt-file FILE");
  return flags.prompt;
}
