// How the CLI reports: errors as message + hint (or JSON), stats lines on stderr, Ctrl-C as a cancel.
import { LayerwiseError } from "../errors.js";

/** Hints for system errors no layerwise code turned into its own (the rest look like bugs). */
const systemHints: Record<string, string> = {
  ENOSPC: "a disk is full: free space (or point the output elsewhere) and run again",
  EDQUOT: "a disk quota is used up: free space (or point the output elsewhere) and run again",
  EACCES: "permission denied: check who owns the path in the message",
  EROFS: "the file system is read-only: point the output elsewhere",
};

export function printError(e: unknown, o: { json?: boolean; debug?: boolean }): void {
  const code = (e as { code?: string }).code;
  const err =
    e instanceof LayerwiseError
      ? e.toJSON()
      : {
          code: code ?? "INTERNAL",
          message: (e as Error)?.message ?? String(e),
          hint: (code && systemHints[code]) || "this looks like a bug in layerwise; rerun with --debug and report it",
        };
  if (o.json) process.stdout.write(JSON.stringify({ error: err }) + "\n");
  else process.stderr.write(`error [${err.code}]: ${err.message}\n${err.hint ? `  hint: ${err.hint}\n` : ""}`);
  if (o.debug && e instanceof Error) process.stderr.write(`${e.stack}\n`);
}

/** An AbortSignal that Ctrl-C trips once (the run stops cleanly); a second Ctrl-C exits at once. */
export function interruptSignal(): AbortSignal {
  const controller = new AbortController();
  process.on("SIGINT", () => {
    if (controller.signal.aborted) process.exit(130);
    process.stderr.write("\n(interrupted: stopping; Ctrl-C again to quit now)\n");
    controller.abort();
  });
  return controller.signal;
}

export function peakRamBytes(): number {
  return process.resourceUsage().maxRSS * 1024;
}
