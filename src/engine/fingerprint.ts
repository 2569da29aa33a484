// A model's identity for the persistent KV cache: config, tensor headers and samples of every tensor's bytes.
import { createHash } from "node:crypto";
import type { Checkpoint } from "../model/checkpoint.js";

const sampleBytes = 64;

/** Same weights, same fingerprint; a fine-tune with the same shapes differs in its sampled bytes. */
export async function modelFingerprint(ckpt: Checkpoint, extra: string): Promise<string> {
  const h = createHash("sha256");
  h.update(JSON.stringify(ckpt.rawConfig));
  h.update(extra);
  const tensors = [...ckpt.tensors.values()].sort((a, b) => (a.name < b.name ? -1 : 1));
  for (const t of tensors) {
    h.update(`${t.name}|${t.dtype}|${t.shape.join(",")}|${t.byteLength}\n`);
    const n = Math.min(sampleBytes, t.byteLength);
    h.update(await ckpt.readRange(t.file, t.start, n));
    h.update(await ckpt.readRange(t.file, t.start + t.byteLength - n, n));
  }
  return h.digest("hex");
}
