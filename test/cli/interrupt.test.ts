// Ctrl-C (SIGINT) stops `run` and `chat` mid-generation on the CPU backend, whose math never waits on I/O by itself.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { join } from "node:path";
import { describe, it } from "node:test";
import { backendCases, cliPath, tempDir, tinyModel } from "../helpers.js";

interface Exit {
  code: number | null;
  stdout: string;
  stderr: string;
  /** From the SIGINT to the exit. */
  afterSignalMs: number;
}

/** Starts the CLI, sends SIGINT once `ready` sees its output, and resolves at exit (a hang fails the test at its timeout). */
function interruptCli(
  args: string[],
  ready: (stdout: string) => boolean,
  o: { input?: string; then?: (stdin: NodeJS.WritableStream) => void } = {},
): Promise<Exit> {
  const child = spawn(process.execPath, [cliPath, ...args], { stdio: ["pipe", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  let signalledAt = 0;
  child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  child.stdout.on("data", (d: Buffer) => {
    stdout += d.toString();
    if (!signalledAt && ready(stdout)) {
      signalledAt = performance.now();
      child.kill("SIGINT");
      o.then?.(child.stdin);
    }
  });
  if (o.input !== undefined) child.stdin.write(o.input);
  return new Promise((resolve) =>
    child.on("exit", (code) => resolve({ code, stdout, stderr, afterSignalMs: performance.now() - signalledAt })),
  );
}

for (const { name: backend } of backendCases) {
  describe(`Ctrl-C (${backend})`, { timeout: 60_000 }, () => {
    for (const kvCache of [false, true]) {
      it(`run${kvCache ? " --kv-cache" : ""} stops generating, prints what it has, exits 130`, async () => {
        const model = await tinyModel({ preset: "tiny-llama", layers: 2 });
        const cache = kvCache ? ["--kv-cache", join(await tempDir(), "kv")] : [];
        const r = await interruptCli(
          [
            "run",
            model,
            "--prompt",
            "hello",
            "--max-tokens",
            "16000",
            "--temperature",
            "0",
            "--backend",
            backend,
            ...cache,
          ],
          (out) => out.length > 0,
        );
        assert.equal(r.code, 130, r.stderr);
        const summary = /\[(\d+) prompt tokens(?:, \d+ from the KV cache)?, (\d+) new, abort;/.exec(r.stderr);
        assert.ok(summary, r.stderr);
        assert.ok(Number(summary[2]) < 16000, `stopped after ${summary[2]} tokens`);
        process.stderr.write(
          `# ${backend} run${kvCache ? " --kv-cache" : ""}: exited ${r.afterSignalMs.toFixed(0)} ms after SIGINT\n`,
        );
      });
    }

    it("chat stops the answer being written and goes on; at the prompt it quits with 130", async () => {
      const model = await tinyModel({ preset: "tiny-llama", layers: 2 });
      const args = ["chat", model, "--max-tokens", "16000", "--temperature", "0", "--backend", backend];
      const turn = await interruptCli(args, (out) => out.length > 0, {
        input: "tell me a story\n",
        then: (stdin) => stdin.end("/exit\n"),
      });
      assert.equal(turn.code, 0, turn.stderr);
      assert.match(turn.stderr, /interrupted/);
      process.stderr.write(
        `# ${backend} chat: the turn ended and chat exited ${turn.afterSignalMs.toFixed(0)} ms after SIGINT\n`,
      );

      // At the prompt: the first turn ends by its token limit, then SIGINT while chat waits for the next line.
      const idle = await interruptCli(
        ["chat", model, "--max-tokens", "3", "--temperature", "0", "--backend", backend],
        (out) => out.includes("\n"),
        { input: "hi\n" },
      );
      assert.equal(idle.code, 130, idle.stderr);
    });
  });
}
