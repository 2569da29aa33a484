// Measures the links weights and KV cross: disk reads (O_DIRECT where possible) and host -> device copies.
import { stat } from "node:fs/promises";
import type { Backend } from "../backend/ops.js";
import { DiskReader } from "../model/disk-reader.js";

export interface LinkSpeed {
  gbps: number;
  bytes: number;
  seconds: number;
  /** How it was measured, e.g. "O_DIRECT" or "buffered (page cache may inflate it)". */
  method: string;
}

/**
 * Sequential reads of up to `maxBytes` of `files`, one after another (a checkpoint's shards: the streamer reads them
 * all), in 16 MiB pieces with several in flight: the best of each of `depths` pieces in flight at most (a disk's limit is
 * what it reaches at its best; a floor measured at a queue depth it does not like would come out below what streaming
 * reaches).
 */
export async function measureDisk(
  backend: Backend,
  files: readonly string[],
  maxBytes = 1 << 30,
  depths: readonly number[] = [8, 32],
): Promise<LinkSpeed & { depth: number }> {
  const step = 256 << 20;
  const reads: { file: string; offset: number; bytes: number }[] = [];
  let bytes = 0;
  for (const file of files) {
    const size = Math.floor((await stat(file)).size / 4096) * 4096;
    for (let offset = 0; offset < size && bytes < maxBytes; offset += step) {
      const n = Math.min(step, size - offset, maxBytes - bytes);
      reads.push({ file, offset, bytes: n });
      bytes += n;
    }
  }
  // Buffers enough for `depth` pieces, and one more, so a read is always queued behind the one finishing (as the
  // streamer keeps reads in flight): one at a time, the disk would idle at every buffer's end.
  const readAll = async (depth: number): Promise<number> => {
    const buffers = Array.from({ length: Math.ceil((depth * (16 << 20)) / step) + 1 }, () => backend.allocHost(step));
    const reader = new DiskReader({ direct: backend.caps.directIo, maxInFlight: depth });
    const pending: Promise<void>[] = [];
    try {
      const t0 = performance.now();
      for (const [i, r] of reads.entries()) {
        if (pending.length === buffers.length) await pending.shift(); // the read that used this buffer
        pending.push(reader.read(r.file, r.offset, r.bytes, buffers[i % buffers.length]!.bytes.subarray(0, r.bytes)));
      }
      await Promise.all(pending);
      return (performance.now() - t0) / 1000;
    } finally {
      await Promise.allSettled(pending);
      await reader.close();
      for (const b of buffers) backend.freeHost(b);
    }
  };
  let best: { seconds: number; depth: number } | undefined;
  for (const depth of depths) {
    const seconds = await readAll(depth);
    if (!best || seconds < best.seconds) best = { seconds, depth };
  }
  const method = backend.caps.directIo ? "O_DIRECT" : "buffered (page cache may inflate it)";
  return { gbps: bytes / best!.seconds / 1e9, bytes, seconds: best!.seconds, depth: best!.depth, method };
}

/**
 * Copies from host buffers (pinned where the backend can) to the device: `repeats` copies a round, the best of `rounds`
 * (a round now and then comes out 10-15% slow on the GPU machine, where decode itself then moves bytes faster).
 */
export async function measureHostToDevice(
  backend: Backend,
  bytes = 256 << 20,
  repeats = 4,
  rounds = 3,
): Promise<LinkSpeed> {
  const host = backend.allocHost(bytes);
  host.bytes.fill(1);
  const device = backend.alloc([bytes / 4], "f32");
  try {
    await backend.copyToDevice(device, 0, host, 0, bytes); // warm-up
    let seconds = Infinity;
    for (let round = 0; round < rounds; round++) {
      const t0 = performance.now();
      for (let i = 0; i < repeats; i++) await backend.copyToDevice(device, 0, host, 0, bytes);
      seconds = Math.min(seconds, (performance.now() - t0) / 1000);
    }
    return {
      gbps: (bytes * repeats) / seconds / 1e9,
      bytes: bytes * repeats,
      seconds,
      method: backend.name === "cuda" ? "pinned cuMemcpyHtoDAsync" : "memcpy (CPU backend)",
    };
  } finally {
    backend.free(device);
    backend.freeHost(host);
  }
}
