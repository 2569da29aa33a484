// Random tensor contents: fixed-size segments, each from its own seed, so any number of worker threads gives the same bytes.
import { cpus } from "node:os";
import { Worker } from "node:worker_threads";
import { f32ToBf16, f32ToF16, type FloatDType } from "../backend/dtype.js";
import { Random } from "../util/random.js";

export interface Distribution {
  /** Values are uniform in center ± halfWidth, quantized to 65536 levels. */
  readonly center: number;
  readonly halfWidth: number;
}

/** The float types, or raw bytes (MXFP4 blocks and scales: integers uniform over the distribution's range). */
export type FillDType = FloatDType | "u8";

export interface SegmentJob {
  readonly seed: number;
  readonly count: number;
  readonly dist: Distribution;
  readonly dtype: FillDType;
}

export const segmentValues = 1 << 22;

/** The 65536 values a 16-bit random draw maps to, already in the output dtype. */
function levels(dist: Distribution, dtype: FillDType): Float32Array | Uint16Array | Uint8Array {
  const f32 = Float32Array.from(
    { length: 65536 },
    (_, r) => dist.center + (((r + 0.5) / 65536) * 2 - 1) * dist.halfWidth,
  );
  if (dtype === "f32") return f32;
  if (dtype === "u8") return Uint8Array.from(f32, (v) => Math.min(255, Math.max(0, Math.floor(v))));
  const convert = dtype === "bf16" ? f32ToBf16 : f32ToF16;
  return Uint16Array.from(f32, convert);
}

export function fillSegment(job: SegmentJob): Uint8Array {
  const table = levels(job.dist, job.dtype);
  const out =
    job.dtype === "f32"
      ? new Float32Array(job.count)
      : job.dtype === "u8"
        ? new Uint8Array(job.count)
        : new Uint16Array(job.count);
  const random = new Random(job.seed);
  let i = 0;
  for (; i + 1 < job.count; i += 2) {
    const r = random.nextU32();
    out[i] = table[r & 0xffff]!;
    out[i + 1] = table[r >>> 16]!;
  }
  if (i < job.count) out[i] = table[random.nextU32() & 0xffff]!;
  return new Uint8Array(out.buffer);
}

/** Runs segment jobs on worker threads, results in job order. */
export class FillPool {
  private readonly workers: Worker[] = [];
  private readonly idle: Worker[] = [];
  private readonly queue: { job: SegmentJob; resolve: (b: Uint8Array) => void; reject: (e: unknown) => void }[] = [];

  constructor(size = Math.max(1, Math.min(16, cpus().length))) {
    for (let i = 0; i < size; i++) {
      const w = new Worker(new URL("./fill-worker.js", import.meta.url));
      w.unref();
      this.workers.push(w);
      this.idle.push(w);
    }
  }

  run(job: SegmentJob): Promise<Uint8Array> {
    return new Promise((resolve, reject) => {
      this.queue.push({ job, resolve, reject });
      this.pump();
    });
  }

  private pump(): void {
    while (this.idle.length && this.queue.length) {
      const w = this.idle.pop()!;
      const { job, resolve, reject } = this.queue.shift()!;
      const done = (msg: { bytes?: Uint8Array; error?: string }) => {
        w.off("error", fail);
        this.idle.push(w);
        if (msg.bytes) resolve(msg.bytes);
        else reject(new Error(msg.error));
        this.pump();
      };
      const fail = (e: unknown) => {
        w.off("message", done);
        reject(e);
      };
      w.once("message", done);
      w.once("error", fail);
      w.postMessage(job);
    }
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}
