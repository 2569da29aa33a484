// `layerwise inspect MODEL`: what a checkpoint is, and what it costs to run, read from headers alone.
import type { Command } from "commander";
import { createArchModel } from "../arch/index.js";
import { Checkpoint } from "../model/checkpoint.js";
import { readGenerationDefaults } from "../model/generation-config.js";
import { TextTokenizer } from "../model/tokenizer.js";
import { ChatTemplate } from "../model/chat-template.js";
import { expertsIn, specList, type WeightSpec } from "../arch/types.js";
import { resolveWeight, validateWeights } from "../engine/weights.js";
import { formatBytes } from "../util/bytes.js";
import { kvBytesAt } from "../engine/planner.js";
import { LayerwiseError } from "../errors.js";

export interface ModelReport {
  model_type: string;
  parameters: number;
  dtypes: Record<string, number>;
  layers: number;
  hidden_size: number;
  vocab_size: number;
  max_positions: number;
  bytes_total: number;
  bytes_global: number;
  bytes_per_layer: number[];
  kv_bytes_per_token: { bf16: number; f32: number };
  kv_bytes_full_context_bf16: number;
  files: string[];
  tokenizer_vocab?: number;
  /** Why the tokenizer cannot be used, when it exists but is broken (a missing one is only the absent tokenizer_vocab). */
  tokenizer_error?: { code: string; message: string };
  chat_template: boolean;
  chat_template_error?: { code: string; message: string };
  eos_token_ids: number[];
  /** What runs but not as the checkpoint's authors meant (fewer layers than the weights hold). */
  warnings: { code: string; message: string }[];
}

/** The value of `load`, or the LayerwiseError that says why there is none (anything else is a bug and is thrown). */
async function settle<T>(load: () => Promise<T>): Promise<{ value?: T; error?: LayerwiseError }> {
  try {
    return { value: await load() };
  } catch (e) {
    if (e instanceof LayerwiseError) return { error: e };
    throw e;
  }
}

export async function inspectModel(dir: string): Promise<ModelReport> {
  const ckpt = await Checkpoint.open(dir);
  try {
    const { model } = createArchModel(ckpt.rawConfig, `${dir}/config.json`);
    const warnings: ModelReport["warnings"] = [];
    validateWeights(ckpt, model, (code, message) => warnings.push({ code, message }));
    // Counted as the architecture sees its weights (an MXFP4 byte holds two values; its scales are not parameters).
    const dtypes: Record<string, number> = {};
    let parameters = 0;
    const seen = new Set<string>();
    const bytesOf = (specs: readonly WeightSpec[]) =>
      specs.reduce((n, spec) => {
        const w = resolveWeight(ckpt, spec);
        const id = `${spec.name}|${spec.index ?? ""}`;
        if (!seen.has(id)) {
          seen.add(id);
          const values = spec.shape.reduce((a, b) => a * b, 1);
          parameters += values;
          dtypes[w.dtype.toUpperCase()] = (dtypes[w.dtype.toUpperCase()] ?? 0) + values;
        }
        return n + w.byteLength;
      }, 0);

    const bytesGlobal = bytesOf([...new Map(specList(model.globalWeights).map((s) => [s.name, s])).values()]);
    const perLayer = Array.from({ length: model.shape.numLayers }, (_, i) =>
      bytesOf([
        ...specList(model.layerWeights(i)),
        ...Array.from({ length: expertsIn(model.shape, i) }, (_, e) => specList(model.expertWeights!(i, e))).flat(),
      ]),
    );
    const kvElements = model.shape.kvLayers.reduce((n, l) => n + 2 * l.kvHeads * l.headDim, 0);
    const tokenizer = await settle(() => TextTokenizer.load(dir, { vocabSize: model.shape.vocabSize }));
    const tokenizerError = tokenizer.error?.code === "TOKENIZER_MISSING" ? undefined : tokenizer.error;
    const template = tokenizer.value ? await settle(() => ChatTemplate.load(dir, tokenizer.value!.config)) : {};
    const defaults = await readGenerationDefaults(dir, ckpt.rawConfig);
    return {
      model_type: String(ckpt.rawConfig.model_type),
      parameters,
      dtypes,
      layers: model.shape.numLayers,
      hidden_size: model.shape.hiddenSize,
      vocab_size: model.shape.vocabSize,
      max_positions: model.shape.maxPositions,
      bytes_total: [...ckpt.tensors.values()].reduce((n, t) => n + t.byteLength, 0),
      bytes_global: bytesGlobal,
      bytes_per_layer: perLayer,
      kv_bytes_per_token: { bf16: kvElements * 2, f32: kvElements * 4 },
      kv_bytes_full_context_bf16: kvBytesAt(model.shape, "bf16", model.shape.maxPositions),
      files: ckpt.files.map((f) => f.slice(dir.length + 1)),
      ...(tokenizer.value ? { tokenizer_vocab: tokenizer.value.vocabSize } : {}),
      ...(tokenizerError ? { tokenizer_error: { code: tokenizerError.code, message: tokenizerError.message } } : {}),
      chat_template: template.value !== undefined,
      ...(template.error
        ? { chat_template_error: { code: template.error.code, message: template.error.message } }
        : {}),
      eos_token_ids: defaults.eosTokenIds,
      warnings,
    };
  } finally {
    await ckpt.close();
  }
}

export function registerInspect(program: Command): void {
  program
    .command("inspect")
    .description("architecture, parameters, dtypes, bytes per layer and KV bytes per token, from the headers alone")
    .argument("<model>", "Hugging Face model folder")
    .option("--json", "print the report as JSON")
    .option("--debug", "print stack traces of errors")
    .action(async (dir: string, flags: { json?: boolean }) => {
      const r = await inspectModel(dir);
      if (flags.json) {
        process.stdout.write(JSON.stringify(r) + "\n");
        return;
      }
      const layerMin = Math.min(...r.bytes_per_layer);
      const layerMax = Math.max(...r.bytes_per_layer);
      const lines = [
        ["architecture", r.model_type],
        [
          "parameters",
          r.parameters >= 1e9 ? `${(r.parameters / 1e9).toFixed(2)} B` : `${(r.parameters / 1e6).toFixed(2)} M`,
        ],
        [
          "dtypes",
          Object.entries(r.dtypes)
            .map(([d, n]) => `${d} ${((100 * n) / r.parameters).toFixed(1)}%`)
            .join(", "),
        ],
        ["layers", `${r.layers}, hidden ${r.hidden_size}, vocab ${r.vocab_size}`],
        ["context", `${r.max_positions} tokens`],
        ["weights", `${formatBytes(r.bytes_total)} in ${r.files.length} file(s)`],
        ["embeddings+head", formatBytes(r.bytes_global)],
        [
          "bytes per layer",
          layerMin === layerMax ? formatBytes(layerMin) : `${formatBytes(layerMin)} .. ${formatBytes(layerMax)}`,
        ],
        [
          "KV per token",
          `${formatBytes(r.kv_bytes_per_token.bf16)} (bf16), ${formatBytes(r.kv_bytes_per_token.f32)} (f32)`,
        ],
        [
          "KV at full context",
          `${formatBytes(r.kv_bytes_full_context_bf16)} (bf16; sliding-window layers hold only their window)`,
        ],
        [
          "tokenizer",
          r.tokenizer_vocab !== undefined
            ? `${r.tokenizer_vocab} tokens`
            : r.tokenizer_error
              ? `unusable: [${r.tokenizer_error.code}] ${r.tokenizer_error.message}`
              : "missing (tokenizer.json)",
        ],
        [
          "chat template",
          r.chat_template
            ? "yes"
            : r.chat_template_error
              ? `unusable: [${r.chat_template_error.code}] ${r.chat_template_error.message}`
              : "no",
        ],
        ["eos ids", r.eos_token_ids.join(", ") || "none"],
        ...r.warnings.map((w) => ["warning", `[${w.code}] ${w.message}`]),
      ];
      const w = Math.max(...lines.map(([k]) => k!.length));
      for (const [k, v] of lines) process.stdout.write(`${k!.padEnd(w)}  ${v}\n`);
    });
}
