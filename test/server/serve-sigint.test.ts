// `layerwise serve` stops on Ctrl-C while an idle client and a slow-body client are connected.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { connect } from "node:net";
import { describe, it } from "node:test";
import { backendCases, cliPath, tinyModel } from "../helpers.js";

for (const { name: backend } of backendCases) {
  describe(`serve and Ctrl-C (${backend})`, () => {
    it("exits 0 promptly with an idle connection, a kept-alive one and a slow body connected", async (t) => {
      const dir = await tinyModel({ preset: "tiny-llama", layers: 1 });
      const child = spawn(process.execPath, [cliPath, "serve", dir, "--backend", backend, "--port", "0"], {
        stdio: ["ignore", "ignore", "pipe"],
      });
      let stderr = "";
      child.stderr.on("data", (d) => (stderr += d));
      const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
      try {
        const url = await new Promise<URL>((resolve, reject) => {
          child.stderr.on("data", () => {
            const m = /at (http:\/\/\S+)\/v1/.exec(stderr);
            if (m) resolve(new URL(m[1]!));
          });
          void exited.then(() => reject(new Error(`serve exited early: ${stderr}`)));
        });
        const open = (send: string) =>
          new Promise<void>((resolve) => {
            const s = connect(Number(url.port), url.hostname, () => (send && s.write(send), resolve()));
            s.on("error", () => {});
          });
        await open(""); // idle: connected, sends nothing
        await open('POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n{"model":'); // slow body
        await open("GET /health HTTP/1.1\r\nhost: x\r\n\r\n"); // answered, then kept alive
        await new Promise((r) => setTimeout(r, 200));
        const t0 = performance.now();
        child.kill("SIGINT");
        // A hang guard, not a timing assertion: before the fix this waited for minutes.
        const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
        const code = await exited;
        clearTimeout(timer);
        t.diagnostic(`serve exited ${(performance.now() - t0).toFixed(0)} ms after SIGINT`);
        assert.equal(code, 0, stderr);
      } finally {
        child.kill("SIGKILL");
      }
    });
  });
}
