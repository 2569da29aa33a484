// How long GET /health takes while `layerwise serve` tokenizes huge prompts (issue 23: a 3.9 MB body used to hold it
// for 40 s). The server runs in its own process, so the client's clock is not held by the server's event loop.
// Usage: node dist/bench/health-latency.js [--tokenizer DIR] [--prompts 4] [--mb 3.9] [--context 200000]
// Without --tokenizer: tiny-llama's byte-level BPE. --tokenizer DIR: that folder's tokenizer.json and
// tokenizer_config.json (a Llama 3 one) on Llama-3.2-1B-shaped weights cut to one layer (its prompts are refused
// before any weight is used). --context sets max_position_embeddings: large enough that the byte check lets the text
// through, so it is really tokenized (then refused as too many tokens). What is timed: each /health round trip on
// loopback, polled every 20 ms from the first huge request until the last one is answered.
import { spawn } from "node:child_process";
import { copyFile, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { Worker } from "node:worker_threads";
import { makeTestModel } from "../src/testmodel/write.js";
import { Random } from "../src/util/random.js";

const { values } = parseArgs({
  options: {
    tokenizer: { type: "string" },
    prompts: { type: "string", default: "4" },
    mb: { type: "string", default: "3.9" },
    context: { type: "string", default: "200000" },
  },
});
const prompts = Number(values.prompts);
const promptBytes = Math.round(Number(values.mb) * 1e6);
const cli = fileURLToPath(new URL("../src/cli/main.js", import.meta.url));

const work = await mkdtemp(join(tmpdir(), "lw-health-"));
const dir = join(work, "model");
// A real tokenizer needs weights of its vocabulary's size: Llama-3.2-1B's shapes (one layer) for Llama 3's.
await makeTestModel({
  preset: values.tokenizer ? "llama-3.2-1b" : "tiny-llama",
  layers: 1,
  dtype: values.tokenizer ? "bf16" : "f32",
  out: dir,
});
if (values.tokenizer)
  for (const f of ["tokenizer.json", "tokenizer_config.json"]) await copyFile(join(values.tokenizer, f), join(dir, f));
const config = JSON.parse(await readFile(join(dir, "config.json"), "utf8"));
config.max_position_embeddings = Number(values.context);
await writeFile(join(dir, "config.json"), JSON.stringify(config));

// Words of random letters: few repeat, so the tokenizer's word cache does not help (the slow case).
const random = new Random(23);
const words: string[] = [];
let length = 0;
while (length < promptBytes) {
  const w = Array.from({ length: 2 + Math.floor(random.next() * 8) }, () =>
    String.fromCharCode(97 + Math.floor(random.next() * 26)),
  ).join("");
  words.push(w);
  length += w.length + 1;
}
const prompt = words.join(" ").slice(0, promptBytes);

const server = spawn(
  process.execPath,
  [cli, "serve", dir, "--backend", "cpu", "--port", "0", "--context", "16384", "--max-body", "8MB"],
  { stdio: ["ignore", "ignore", "pipe"] },
);
let stderr = "";
const url = await new Promise<string>((resolve, reject) => {
  server.stderr.on("data", (d) => {
    stderr += d;
    const m = /at (http:\/\/\S+)\/v1/.exec(stderr);
    if (m) resolve(m[1]!);
  });
  server.once("exit", () => reject(new Error(stderr)));
});

try {
  let healthErrors = 0;
  const health = async () => {
    const t0 = performance.now();
    try {
      await (await fetch(`${url}/health`)).text();
    } catch {
      healthErrors++; // a reset connection (the server closed a kept-alive socket under the request)
    }
    return performance.now() - t0;
  };
  const idle = await health();
  // The huge requests go from a thread of their own: sending them must not hold the clock of the /health poller.
  const sender = new Worker(
    `const { parentPort, workerData: { url, body, prompts } } = require("node:worker_threads");
    const t0 = performance.now();
    for (let i = 0; i < prompts; i++)
      fetch(url + "/v1/completions", { method: "POST", body, headers: { "content-type": "application/json" } }).then(async (r) => {
        const text = await r.text();
        parentPort.postMessage({ status: r.status, ms: performance.now() - t0, code: /"code":"(\\w+)"/.exec(text)?.[1] });
      });`,
    { eval: true, workerData: { url, body: JSON.stringify({ model: "model", prompt, max_tokens: 1 }), prompts } },
  );
  const answers: { status: number; ms: number; code?: string }[] = [];
  sender.on("message", (a) => answers.push(a));
  const t0 = performance.now();
  const latencies: number[] = [];
  let worst = { ms: 0, atS: 0 };
  while (answers.length < prompts) {
    const ms = await health();
    latencies.push(ms);
    if (ms > worst.ms) worst = { ms, atS: (performance.now() - t0) / 1000 };
    await new Promise((r) => setTimeout(r, 20));
  }
  await sender.terminate();
  latencies.sort((a, b) => a - b);
  const q = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))]!;
  const row = {
    tokenizer: values.tokenizer ? join(values.tokenizer, "tokenizer.json") : "tiny-llama",
    prompts,
    promptBytes,
    healthIdleMs: +idle.toFixed(1),
    healthSamples: latencies.length,
    healthP50Ms: +q(0.5).toFixed(1),
    healthP99Ms: +q(0.99).toFixed(1),
    healthMaxMs: +latencies[latencies.length - 1]!.toFixed(1),
    healthMaxAtS: +worst.atS.toFixed(2),
    healthErrors,
    answers: answers.map((a) => `${a.status} ${a.code ?? ""} after ${(a.ms / 1000).toFixed(1)} s`),
  };
  console.log(
    `| prompts | MB each | /health p50 | p99 | max | samples | failed | huge requests answered |\n|---|---|---|---|---|---|---|---|`,
  );
  console.log(
    `| ${prompts} | ${(promptBytes / 1e6).toFixed(1)} | ${row.healthP50Ms} ms | ${row.healthP99Ms} ms | ${row.healthMaxMs} ms | ${latencies.length} | ${healthErrors} | ${row.answers.join("; ")} |`,
  );
  console.log(JSON.stringify(row));
} finally {
  server.kill("SIGKILL");
  await rm(work, { recursive: true, force: true });
}
