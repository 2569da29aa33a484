// `layerwise make-test-model`: a deterministic random-weight checkpoint with a real model's shapes.
import type { Command } from "commander";
import type { FloatDType } from "../backend/dtype.js";
import { UsageError } from "../errors.js";
import { presets } from "../testmodel/presets.js";
import { makeTestModel } from "../testmodel/write.js";
import { formatBytes, parseBytes } from "../util/bytes.js";
import { numberFlag } from "./options.js";

interface Flags {
  arch?: string;
  preset?: string;
  dtype: string;
  layers?: string;
  out: string;
  seed: string;
  shardSize?: string;
  mergeFormat: string;
  json?: boolean;
}

export function registerMakeTestModel(program: Command): void {
  program
    .command("make-test-model")
    .description("write a random-weight checkpoint with the exact shapes of a real model")
    .option(
      "--arch <arch>",
      "architecture (llama, qwen3, gemma3, gpt-oss, qwen3-next); picks tiny-<arch> when no preset is given",
    )
    .option("--preset <name>", `shapes to copy: ${Object.keys(presets).join(", ")}`)
    .option("--dtype <dtype>", "bf16, f16 or f32", "bf16")
    .option("--layers <n>", "fewer decoder layers than the real model")
    .requiredOption("--out <dir>", "new folder to write")
    .option("--seed <n>", "random seed", "0")
    .option("--shard-size <size>", "largest safetensors shard, e.g. 4GB")
    .option("--merge-format <format>", "tokenizer.json merges as arrays (new) or strings (old)", "arrays")
    .option("--json", "print what was written as JSON")
    .action(async (flags: Flags) => {
      const dtype = flags.dtype as FloatDType;
      if (!["bf16", "f16", "f32"].includes(dtype))
        throw new UsageError("BAD_FLAG", `--dtype ${flags.dtype} is not bf16, f16 or f32`);
      if (flags.mergeFormat !== "arrays" && flags.mergeFormat !== "strings")
        throw new UsageError("BAD_FLAG", `--merge-format ${flags.mergeFormat} is not arrays or strings`);
      const preset = flags.preset ?? (flags.arch ? `tiny-${flags.arch}` : undefined);
      if (!preset)
        throw new UsageError("NO_PRESET", "give --preset or --arch", `presets: ${Object.keys(presets).join(", ")}`);
      const info = await makeTestModel({
        preset,
        arch: flags.arch,
        dtype,
        layers: numberFlag(flags.layers, "--layers", { integer: true }),
        out: flags.out,
        seed: numberFlag(flags.seed, "--seed", { integer: true }),
        shardBytes: flags.shardSize ? parseBytes(flags.shardSize, "--shard-size") : undefined,
        mergeFormat: flags.mergeFormat,
      });
      if (flags.json) process.stdout.write(JSON.stringify(info) + "\n");
      else
        process.stdout.write(
          `wrote ${info.dir}: ${preset}, ${(info.parameterCount / 1e6).toFixed(1)}M parameters, ${formatBytes(info.bytes)} (${info.files.join(", ")})\n`,
        );
    });
}
