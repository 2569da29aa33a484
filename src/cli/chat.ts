// `layerwise chat MODEL`: a conversation in the terminal through the model's chat template; the KV of earlier turns is kept.
import { createInterface } from "node:readline/promises";
import type { Command } from "commander";
import { LayerwiseModel } from "../engine/model.js";
import type { ChatMessage } from "../model/chat-template.js";
import { addGenerateFlags, generateOptions, loadOptions, type GenerateFlags } from "./options.js";

interface ChatFlags extends GenerateFlags {
  system?: string;
}

export function registerChat(program: Command): void {
  addGenerateFlags(
    program
      .command("chat")
      .description("talk with an instruct model (one line per message; /reset starts over, /exit or Ctrl-D quits)")
      .argument("<model>", "Hugging Face model folder with a chat template")
      .option("--system <text>", "system message"),
  ).action(async (dir: string, flags: ChatFlags) => {
    const gen = generateOptions(flags);
    const model = await LayerwiseModel.load(dir, {
      ...loadOptions(flags),
      onWarning: (code, message) => process.stderr.write(`warning [${code}]: ${message}\n`),
    });
    if (model.backendNote) process.stderr.write(`${model.backendNote}\n`);
    const seq = model.createSequence();
    const rl = createInterface({ input: process.stdin, output: process.stdout, terminal: process.stdin.isTTY });
    const messages: ChatMessage[] = flags.system ? [{ role: "system", content: flags.system }] : [];
    let turn: AbortController | undefined;
    let quitByInterrupt = false;
    // Ctrl-C stops the answer being written; at the prompt (or twice during an answer) it quits. A terminal's Ctrl-C
    // reaches readline; a signal from elsewhere (kill -INT, a piped stdin) reaches the process.
    const onInterrupt = () => {
      if (turn && !turn.signal.aborted) {
        process.stderr.write("\n(interrupted; Ctrl-C again to quit)\n");
        turn.abort();
        return;
      }
      quitByInterrupt = true;
      turn?.abort();
      rl.close();
    };
    rl.on("SIGINT", onInterrupt);
    process.on("SIGINT", onInterrupt);
    try {
      if (process.stdin.isTTY) process.stderr.write("(chat: /reset starts over, /exit quits)\n");
      rl.setPrompt("> ");
      // The iterator buffers lines that arrive while the model is busy (piped input), unlike rl.question.
      const lines = rl[Symbol.asyncIterator]();
      for (;;) {
        if (process.stdin.isTTY) rl.prompt();
        const next = await lines.next();
        if (next.done) break;
        const line: string = next.value;
        if (line.trim() === "/exit") break;
        if (line.trim() === "/reset") {
          messages.splice(flags.system ? 1 : 0);
          await seq.rewind(0);
          continue;
        }
        if (!line.trim()) continue;
        messages.push({ role: "user", content: line });
        const ids = await model.encodePrompt({ messages });
        // Reuse the KV of the conversation so far: rewind to the longest shared prefix, feed only the rest.
        let shared = 0;
        while (shared < seq.length && shared < ids.length - 1 && seq.tokens[shared] === ids[shared]) shared++;
        shared = await seq.rewind(shared);
        turn = new AbortController();
        const result = await model.complete(
          { ids: ids.slice(shared) },
          { ...gen, signal: turn.signal, onText: (p) => process.stdout.write(p) },
          seq,
        );
        turn = undefined;
        process.stdout.write("\n");
        messages.push({ role: "assistant", content: result.text });
        if (quitByInterrupt) break;
      }
      if (quitByInterrupt) process.exitCode = 130;
    } finally {
      process.off("SIGINT", onInterrupt);
      rl.close();
      seq.dispose();
      await model.close();
    }
  });
}
