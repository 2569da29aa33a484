// What the bench asks of the machine it runs on: the page cache (read, dropped), folder sizes, the Python tools.
import { execFileSync } from "node:child_process";
import { readFile, readdir, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";

/** Bytes in the page cache (Linux), or undefined: a run from disk with O_DIRECT should leave it as it was. */
export async function pageCacheBytes(): Promise<number | undefined> {
  const info = await readFile("/proc/meminfo", "utf8").catch(() => "");
  const kb = /^Cached:\s+(\d+) kB/m.exec(info)?.[1];
  return kb === undefined ? undefined : Number(kb) * 1024;
}

/** Drops the page cache (root on Linux) so reads really come from the disk; false where that is not allowed. */
export async function dropCaches(): Promise<boolean> {
  try {
    execFileSync("sync");
    await writeFile("/proc/sys/vm/drop_caches", "3");
    return true;
  } catch {
    return false;
  }
}

export async function dirBytes(dir: string): Promise<number> {
  let n = 0;
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true }))
    if (e.isFile()) n += (await stat(join(e.parentPath ?? (e as unknown as { path: string }).path, e.name))).size;
  return n;
}

const tool = (name: string) => new URL(`../../../tools/bench/${name}`, import.meta.url).pathname;

/** Runs tools/bench/`script` with python3 and returns what it printed, or undefined where it failed (no torch, say). */
export function runPythonTool(script: string, args: string[]): string | undefined {
  try {
    return execFileSync("python3", [tool(script), ...args], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
      maxBuffer: 16 << 20,
    });
  } catch {
    return undefined;
  }
}
