// The baseline: transformers + accelerate offload (device_map="auto") on the main checkpoint under the same VRAM cap.
import { runPythonTool } from "./machine.js";
import type { BaselineFigures } from "./results.js";
import type { BenchSetup } from "./setup.js";

/** tools/bench/accelerate_baseline.py at each context up to 32768, or why it did not run. */
export function accelerateBaseline(
  bench: BenchSetup,
  contexts: readonly number[],
): BaselineFigures[] | { error: string } {
  const upTo32k = contexts.filter((c) => c <= 32768);
  const out = runPythonTool("accelerate_baseline.py", [
    bench.main.dir,
    ...upTo32k.map(String),
    "--vram",
    `${Math.floor(bench.vramBytes / 2 ** 30)}GiB`,
    "--tokens",
    "4",
  ]);
  const baseline = (out ?? "")
    .trim()
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l) as BaselineFigures);
  for (const b of baseline)
    bench.log(
      `accelerate ${b.context} tokens: first token ${b.ttft_s.toFixed(2)} s, decode ${b.decode_s_per_token.toFixed(3)} s/token, peak VRAM ${(b.peak_vram_bytes / 1e9).toFixed(1)} GB`,
    );
  return baseline.length
    ? baseline
    : { error: "python3 with torch, transformers and accelerate is needed for the baseline" };
}
