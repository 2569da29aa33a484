// The bench's random-weight checkpoints: written once per preset (and layer count) and reused, removed after use.
import { readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { makeTestModel, testModelMarker } from "../testmodel/write.js";

/** The checkpoint of `preset` (cut to `layers` where given) under `dir`: the one there if complete, else written now. */
export async function ensureCheckpoint(
  preset: string,
  dir: string,
  log: (l: string) => void,
  layers?: number,
): Promise<string> {
  const out = join(dir, layers ? `${preset}-${layers}l` : preset);
  const marker = await readFile(join(out, testModelMarker), "utf8").then(
    (t) => JSON.parse(t) as { preset: string; dtype: string; complete?: boolean },
    () => undefined,
  );
  if (marker?.preset === preset && marker.dtype === "bf16" && marker.complete !== false) return out;
  const t0 = performance.now();
  await makeTestModel({ preset, dtype: "bf16", out, ...(layers ? { layers } : {}) });
  log(`wrote ${preset} to ${out} in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  return out;
}

/**
 * Removes a checkpoint this benchmark wrote once its workloads are done, except the main one (later workloads use it):
 * every model kept would not fit the disks these runs get (64 GB on the GPU machine).
 */
export async function removeCheckpoint(dir: string, main: string): Promise<void> {
  if (dir === main) return;
  const ours = await readFile(join(dir, testModelMarker), "utf8").then(
    () => true,
    () => false,
  );
  if (ours) await rm(dir, { recursive: true, force: true });
}

/** A checkpoint's config.json (the numbers the bench reads from it). */
export async function readConfig(dir: string): Promise<Record<string, number>> {
  return JSON.parse(await readFile(join(dir, "config.json"), "utf8")) as Record<string, number>;
}
