// The `layerwise` command: parses flags, calls the library, prints results or a clear error (main.ts loads it).
import { readFileSync } from "node:fs";
import { Command, CommanderError } from "commander";
import { registerBatch } from "./batch.js";
import { registerBench } from "./bench.js";
import { registerChat } from "./chat.js";
import { registerDemo } from "./demo.js";
import { registerInspect } from "./inspect.js";
import { registerMakeTestModel } from "./make-test-model.js";
import { registerPlan } from "./plan.js";
import { printError } from "./output.js";
import { registerRun } from "./run.js";
import { registerServe } from "./serve.js";

const pkg = JSON.parse(readFileSync(new URL("../../../package.json", import.meta.url), "utf8")) as { version: string };

const program = new Command()
  .name("layerwise")
  .description(
    "Run large Hugging Face language models with long contexts on small GPUs, streaming weights layer by layer.",
  )
  .version(pkg.version)
  .showHelpAfterError()
  .exitOverride();

registerRun(program);
registerChat(program);
registerInspect(program);
registerPlan(program);
registerMakeTestModel(program);
registerDemo(program);
registerBench(program);
registerServe(program);
registerBatch(program);

// A reader that stops early (`| head`) is not an error.
process.stdout.on("error", (e: NodeJS.ErrnoException) => {
  if (e.code === "EPIPE") process.exit(0);
  throw e;
});

try {
  await program.parseAsync(process.argv);
} catch (e) {
  if (e instanceof CommanderError) process.exit(e.exitCode);
  const flags = process.argv.slice(2);
  printError(e, { json: flags.includes("--json"), debug: flags.includes("--debug") });
  process.exit(1);
}
