// `layerwise demo`: proves the install works with no download: writes a tiny model to a temp folder, runs it, removes it.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Command } from "commander";
import { LayerwiseModel } from "../engine/model.js";
import { makeTestModel } from "../testmodel/write.js";
import { addModelFlags, loadOptions, type ModelFlags } from "./options.js";

export function registerDemo(program: Command): void {
  addModelFlags(program.command("demo").description("write a tiny random-weight model to a temp folder and generate with it (no download)")).action(async (flags: ModelFlags) => {
    const dir = await mkdtemp(join(tmpdir(), "layerwise-demo-"));
    try {
      const info = await makeTestModel({ preset: "tiny-llama", dtype: "bf16", out: dir });
      process.stderr.write(`wrote a ${(info.parameterCount / 1e6).toFixed(2)}M-parameter random-weight Llama to ${dir}\n`);
      const model = await LayerwiseModel.load(dir, loadOptions(flags));
      try {
        const prompt = "The model reads the document, then it answers the question.";
        const r = await model.complete(prompt, { maxTokens: 24, temperature: 0 });
        const summary = { backend: model.backend.name, prompt, prompt_tokens: r.promptTokens, tokens: r.tokens.length, text: r.text, ttft_s: r.ttftS, decode_s_per_token: r.decodeSPerToken };
        if (flags.json) process.stdout.write(JSON.stringify(summary) + "\n");
        else {
          process.stdout.write(`prompt: ${prompt}\noutput (random weights, so not language): ${JSON.stringify(r.text)}\n`);
          process.stdout.write(`${r.promptTokens} prompt tokens, ${r.tokens.length} generated on ${model.backend.name}; the pipeline works. Next: layerwise run <your model folder> --prompt "..."\n`);
        }
      } finally {
        await model.close();
      }
    } finally {
      await rm(dir, { recursive: true, force: true }); // a temp folder this command made
    }
  });
}
