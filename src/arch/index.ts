// The architectures layerwise runs, by HF model_type; aliases are entries, not copies.
import { CheckpointError } from "../errors.js";
import { gemma3, gemma3Text } from "./gemma3.js";
import { gptOss } from "./gpt-oss.js";
import { llama } from "./llama.js";
import { qwen3 } from "./qwen3.js";
import { qwen3Next } from "./qwen3-next.js";
import type { ArchModel, Architecture } from "./types.js";

export const architectures: ReadonlyMap<string, Architecture> = new Map<string, Architecture>([
  ["llama", llama],
  ["qwen3", qwen3],
  ["gemma3_text", gemma3Text],
  ["gemma3", gemma3],
  ["gpt_oss", gptOss],
  ["qwen3_next", qwen3Next],
]);

/** Validates a raw config.json against its architecture and builds the model description. */
export function createArchModel(
  rawConfig: Record<string, unknown>,
  source = "config.json",
): { arch: Architecture; config: unknown; model: ArchModel } {
  const modelType = rawConfig.model_type;
  const arch = typeof modelType === "string" ? architectures.get(modelType) : undefined;
  if (!arch) {
    const supported = [...architectures.keys()].join(", ");
    throw new CheckpointError(
      typeof modelType === "string" ? "ARCH_UNSUPPORTED" : "CONFIG_INVALID",
      typeof modelType === "string"
        ? `model_type "${modelType}" is not supported; supported: ${supported}`
        : `${source} has no model_type; supported: ${supported}`,
      "see the README for the list of architectures and how to ask for one",
    );
  }
  const parsed = arch.config.safeParse(rawConfig);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`).join("; ");
    throw new CheckpointError(
      "CONFIG_INVALID",
      `${source} is not a valid ${arch.modelType} config: ${problems}`,
      "compare it with the model's original config.json",
    );
  }
  return { arch, config: parsed.data, model: arch.create(parsed.data) };
}
