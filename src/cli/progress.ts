// A prefill progress bar on stderr (terminals only): tokens done, tokens/s and ETA.
import { SingleBar } from "cli-progress";

/** Returns the callback the engine reports the prefill's done fraction to, and a function that ends the bar. */
export function prefillProgress(
  promptTokens: number,
  enabled: boolean,
): { onProgress?: (done: number) => void; stop: () => void } {
  if (!enabled || !process.stderr.isTTY || promptTokens < 512) return { stop: () => {} };
  const start = performance.now();
  const bar = new SingleBar({
    format: "prefill |{bar}| {percentage}% | {tokens}/{total} tokens | {rate} tokens/s | ETA {eta_formatted}",
    stream: process.stderr,
    hideCursor: true,
    clearOnComplete: true,
    etaBuffer: 4,
    barCompleteChar: "\u2588",
    barIncompleteChar: "\u2591",
  });
  bar.start(promptTokens, 0, { tokens: 0, rate: "-" });
  return {
    onProgress: (done) => {
      const tokens = Math.round(done * promptTokens);
      const s = (performance.now() - start) / 1000;
      bar.update(tokens, { tokens, rate: s > 0 ? Math.round(tokens / s).toLocaleString("en") : "-" });
    },
    stop: () => bar.stop(),
  };
}
