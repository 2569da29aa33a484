// `layerwise run MODEL --prompt ...`: generate from a plain prompt, streaming text or printing one JSON line.
import type { Command } from "commander";
import { LayerwiseModel } from "../engine/model.js";
import { addGenerateFlags, backendName, generateOptions, promptText, type GenerateFlags } from "./options.js";
import { interruptSignal, peakRamBytes } from "./output.js";

interface RunFlags extends GenerateFlags {
  prompt?: string;
  promptFile?: string;
  chatTemplate?: boolean;
}

export function registerRun(program: Command): void {
  addGenerateFlags(
    program
      .command("run")
      .description("generate a continuation of a prompt")
      .argument("<model>", "Hugging Face model folder (config.json, *.safetensors, tokenizer.json)")
      .option("--prompt <text>", "the prompt")
      .option("--prompt-file <file>", "read the prompt from a file")
      .option("--chat-template", "wrap the prompt as one user message in the model's chat template"),
  ).action(async (dir: string, flags: RunFlags) => {
    const text = await promptText(flags);
    const gen = generateOptions(flags);
    const model = await LayerwiseModel.load(dir, { backend: backendName(flags) });
    if (model.backendNote && !flags.json) process.stderr.write(`${model.backendNote}\n`);
    try {
      const prompt = flags.chatTemplate ? { messages: [{ role: "user" as const, content: text }] } : text;
      const result = await model.complete(prompt, { ...gen, signal: interruptSignal(), onText: flags.json ? undefined : (piece) => process.stdout.write(piece) });
      if (flags.json) {
        process.stdout.write(
          JSON.stringify({
            text: result.text,
            tokens: result.tokens.length,
            prompt_tokens: result.promptTokens,
            finish_reason: result.finishReason,
            ttft_s: result.ttftS,
            decode_s_per_token: result.decodeSPerToken,
            peak_ram_bytes: peakRamBytes(),
            backend: model.backend.name,
          }) + "\n",
        );
      } else {
        process.stdout.write("\n");
        process.stderr.write(
          `[${result.promptTokens} prompt tokens, ${result.tokens.length} new, ${result.finishReason}; first token ${result.ttftS.toFixed(2)} s, ${result.decodeSPerToken > 0 ? (1 / result.decodeSPerToken).toFixed(1) : "-"} tokens/s]\n`,
        );
      }
    } finally {
      await model.close();
    }
  });
}
