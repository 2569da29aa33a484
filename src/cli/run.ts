// `layerwise run MODEL --prompt ...`: generate from a plain prompt, streaming text or printing one JSON line.
import type { Command } from "commander";
import { LayerwiseModel } from "../engine/model.js";
import { addGenerateFlags, generateOptions, loadOptions, promptText, type GenerateFlags } from "./options.js";
import { interruptSignal, peakRamBytes } from "./output.js";
import { prefillProgress } from "./progress.js";

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
    const warnings: { code: string; message: string }[] = [];
    const model = await LayerwiseModel.load(dir, {
      ...loadOptions(flags),
      onWarning: (code, message) => {
        warnings.push({ code, message });
        if (!flags.json) process.stderr.write(`warning [${code}]: ${message}\n`);
      },
    });
    if (model.backendNote && !flags.json) process.stderr.write(`${model.backendNote}\n`);
    try {
      const prompt = flags.chatTemplate ? { messages: [{ role: "user" as const, content: text }] } : text;
      const interrupted = interruptSignal();
      const ids = await model.encodePrompt(prompt, { signal: interrupted });
      const progress = prefillProgress(ids.length, !flags.json);
      let first = true;
      let afterPrefill = model.stats();
      const result = await model.complete(
        { ids },
        {
          ...gen,
          signal: interrupted,
          onPrefillProgress: (done) => {
            progress.onProgress?.(done);
            if (done >= 1) afterPrefill = model.stats();
          },
          onText: (piece) => {
            if (first) progress.stop();
            first = false;
            if (!flags.json) process.stdout.write(piece);
          },
        },
      );
      progress.stop();
      const s = model.stats();
      // Decode steps are the forwards after the prompt's: one per new token but the last.
      const steps = Math.max(1, result.tokens.length - 1);
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
            peak_vram_bytes: s.peakVramBytes,
            disk_read_bytes: s.diskReadBytes,
            h2d_bytes: s.h2dBytes,
            kv_disk_bytes: s.kvDiskBytes,
            io_wait_s: s.ioWaitS,
            disk_busy_s: s.diskBusyS,
            compute_s: s.computeS,
            kv_cache_hit_tokens: result.kvCacheHitTokens ?? 0,
            decode_disk_read_bytes_per_token: (s.diskReadBytes - afterPrefill.diskReadBytes) / steps,
            decode_h2d_bytes_per_token: (s.h2dBytes - afterPrefill.h2dBytes) / steps,
            expert_loads: s.expertLoads,
            expert_hits: s.expertHits,
            backend: model.backend.name,
            ...(warnings.length ? { warnings } : {}),
          }) + "\n",
        );
      } else {
        process.stdout.write("\n");
        const hit = result.kvCacheHitTokens ? `, ${result.kvCacheHitTokens} from the KV cache` : "";
        process.stderr.write(
          `[${result.promptTokens} prompt tokens${hit}, ${result.tokens.length} new, ${result.finishReason}; first token ${result.ttftS.toFixed(2)} s, ${result.decodeSPerToken > 0 ? (1 / result.decodeSPerToken).toFixed(1) : "-"} tokens/s]\n`,
        );
      }
      if (interrupted.aborted) process.exitCode = 130; // stopped by Ctrl-C: what was generated is printed, as a shell expects
    } finally {
      await model.close();
    }
  });
}
