// Temporary folders a command makes for itself (batch's prefix KV cache goes in one): each holds an owner file with the
// pid that made it, so a later run removes those whose process is gone (a SIGKILL skips every cleanup).
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

const ownerFile = "layerwise-scratch-owner.json";

/** A new scratch folder `<tmp>/<prefix>XXXXXX`, after removing the ones earlier runs left behind. */
export async function makeScratchDir(prefix: string): Promise<string> {
  await removeAbandoned(prefix);
  const dir = await mkdtemp(join(tmpdir(), prefix));
  try {
    await writeFile(join(dir, ownerFile), JSON.stringify({ pid: process.pid }));
  } catch (e) {
    await removeScratchDir(dir).catch(() => {});
    throw e;
  }
  return dir;
}

export async function removeScratchDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}

/** Scratch folders of this prefix whose owner process no longer runs. Folders without an owner file are left alone. */
async function removeAbandoned(prefix: string): Promise<void> {
  const names = await readdir(tmpdir()).catch(() => [] as string[]);
  for (const name of names.filter((n) => n.startsWith(prefix))) {
    const dir = join(tmpdir(), name);
    const owner = await readFile(join(dir, ownerFile), "utf8")
      .then((t) => (JSON.parse(t) as { pid?: unknown }).pid)
      .catch(() => undefined); // no owner file, or not ours: left alone
    if (typeof owner === "number" && Number.isInteger(owner) && owner > 0 && !isRunning(owner))
      await removeScratchDir(dir).catch(() => {});
  }
}

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM"; // alive, someone else's
  }
}
