// Where a prefill's GPU time goes, on the GPU machine: every kernel and copy on the compute stream is timed and summed by
// name, and the time the stream sat idle (waiting for the host or for weights) is what is left of the span.
// Usage: node dist/bench/profile-prefill.js MODEL_DIR PROMPT_FILE [--vram 8GB] [--ram 64GB|auto] [--context 33k] [--chunk N|auto]
//          [--small-uploads kernel|copy-engine] [--prefetch-stream own|shared] [--out FILE] [--repeat N] [--links]
// --repeat: the prompt N times in one process (each profiled; FILE-2.json and on for the later ones); --links: first
// measures the disk (page cache dropped) and the host->GPU link with the same backend, as `layerwise bench` does.
import { readFileSync, writeFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { CudaBackend } from "../src/backend/cuda/index.js";
import { dropCaches } from "../src/bench/machine.js";
import { measureDisk, measureHostToDevice } from "../src/bench/bandwidth.js";
import { LayerwiseModel } from "../src/engine/model.js";
import { findShards } from "../src/model/checkpoint.js";
import { parseBytes, parseCount } from "../src/util/bytes.js";
import { runnerTimes, type HostInterval } from "../src/util/host-time.js";

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    "prefetch-stream": { type: "string", default: "shared" },
    vram: { type: "string", default: "8GB" },
    ram: { type: "string", default: "64GB" },
    context: { type: "string", default: "33k" },
    chunk: { type: "string" },
    "small-uploads": { type: "string", default: "kernel" },
    out: { type: "string" },
    repeat: { type: "string", default: "1" },
    links: { type: "boolean", default: false },
  },
});
const [dir, promptFile] = positionals;
if (!dir || !promptFile)
  throw new Error(
    "usage: profile-prefill MODEL_DIR PROMPT_FILE [--vram 8GB] [--ram 64GB|auto] [--context 33k] [--chunk N|auto] [--small-uploads kernel|copy-engine] [--prefetch-stream own|shared] [--out FILE] [--repeat N] [--links]",
  );
const prompt = readFileSync(promptFile, "utf8");

const backend = CudaBackend.create();
if (values["small-uploads"] !== "kernel" && values["small-uploads"] !== "copy-engine")
  throw new Error("--small-uploads is kernel or copy-engine");
backend.smallUploads = values["small-uploads"] === "kernel" ? "kernel" : "copy engine";
if (values["prefetch-stream"] !== "own" && values["prefetch-stream"] !== "shared")
  throw new Error("--prefetch-stream is own or shared");
backend.prefetchStream = values["prefetch-stream"];
if (values.links) {
  const { files: shards } = await findShards(dir);
  const cold = await dropCaches();
  const disk = await measureDisk(backend, shards, 2 ** 33);
  const h2d = await measureHostToDevice(backend, 256 << 20, 8);
  console.log(
    `links first: disk ${disk.gbps.toFixed(2)} GB/s (${disk.method}${cold ? ", page cache dropped" : ""}), host->GPU ${h2d.gbps.toFixed(1)} GB/s`,
  );
}
const model = await LayerwiseModel.load(dir, {
  backend,
  vram: parseBytes(values.vram!),
  ...(values.ram === "auto" ? {} : { ram: parseBytes(values.ram!) }), // auto: half the free RAM, as the bench
  context: parseCount(values.context!),
  prefillChunk: values.chunk === undefined || values.chunk === "auto" ? undefined : parseCount(values.chunk),
});
try {
  for (let run = 1; run <= Number(values.repeat); run++) await profileRun(run);
} finally {
  await model.close();
  await backend.dispose();
}

async function profileRun(run: number): Promise<void> {
  const allocsBefore = { ...backend.allocatorStats };
  backend.startProfile();
  runnerTimes.on = true;
  const result = await model.complete(prompt, { maxTokens: 1, temperature: 0 });
  const report = await backend.profileReport();
  const hostIntervals = [...runnerTimes.times.intervals, ...report.hostWaitIntervals];
  const stats = model.stats();
  const summary = {
    chunk: model.plan.input.prefillChunk,
    small_uploads: backend.smallUploads,
    prefetch_stream: backend.prefetchStream,
    prompt_tokens: result.promptTokens,
    ttft_s: result.ttftS,
    io_wait_s: stats.ioWaitS,
    peak_vram_bytes: stats.peakVramBytes,
    gpu_span_s: report.spanMs / 1000,
    gpu_busy_s: report.busyMs / 1000,
    gpu_idle_s: (report.spanMs - report.busyMs) / 1000,
    driver_allocs: backend.allocatorStats.driverAllocs - allocsBefore.driverAllocs,
    driver_frees: backend.allocatorStats.driverFrees - allocsBefore.driverFrees,
    pool_copy_waits: backend.allocatorStats.copyWaits - allocsBefore.copyWaits,
    pool_copy_wait_s: (backend.allocatorStats.copyWaitMs - allocsBefore.copyWaitMs) / 1000,
    pool_overrun: backend.allocatorOverrun ?? null,
    arena: backend.allocatorStats.arena ?? null,
    host_time: runnerTimes.times.take().map((t) => ({ label: t.what, count: t.count, s: t.ms / 1000 })),
    host_waits: report.hostWaits.map((w) => ({ what: w.what, count: w.count, s: w.ms / 1000 })),
    idle_between: report.gaps
      .slice(0, 12)
      .map((g) => ({ between: g.between, count: g.count, s: g.ms / 1000, device_wait_s: g.deviceWaitMs / 1000 })),
    worst_gaps: report.worstGaps.map((g) => ({
      op: g.index,
      ops: g.ops,
      between: g.between,
      ms: g.ms,
      device_wait: g.deviceWait,
      host_between_enqueues_ms: g.enqueuedMs - g.previousEnqueuedMs,
      host_doing: hostDoing(hostIntervals, g.previousEnqueuedMs, g.enqueuedMs),
    })),
    by_name: report.byName.map((k) => ({
      name: k.name,
      count: k.count,
      s: k.ms / 1000,
      idle_before_s: k.idleBeforeMs / 1000,
    })),
  };
  if (values.out)
    writeFileSync(
      run === 1 ? values.out : values.out.replace(/(\.json)?$/, `-${run}$1`),
      JSON.stringify(summary, null, 2) + "\n",
    );
  console.log(
    `run ${run}: prefill chunk ${summary.chunk}, small uploads by ${backend.smallUploads}, prefetch stream ${backend.prefetchStream}`,
  );
  console.log(
    `first token ${result.ttftS.toFixed(3)} s, peak VRAM ${stats.peakVramBytes} bytes; compute stream span ${(report.spanMs / 1000).toFixed(3)} s, busy ${(report.busyMs / 1000).toFixed(3)} s, idle ${((report.spanMs - report.busyMs) / 1000).toFixed(3)} s; ${summary.driver_allocs} cuMemAlloc, ${summary.driver_frees} cuMemFree, ${summary.pool_copy_waits} waits for a copy to the host before reusing memory (${summary.pool_copy_wait_s.toFixed(3)} s)`,
  );
  console.log(`arena (virtual memory): ${JSON.stringify(summary.arena)}`);
  if (summary.pool_overrun)
    console.log(
      `device pool over its limit by ${summary.pool_overrun.bytes} bytes at most: ${JSON.stringify(summary.pool_overrun)}`,
    );
  for (const t of summary.host_time) console.log(`host time in ${t.label}: ${t.count} times, ${t.s.toFixed(3)} s`);
  for (const w of report.hostWaits)
    console.log(`host waited for ${w.what}: ${w.count} times, ${(w.ms / 1000).toFixed(3)} s`);
  for (const g of report.gaps.slice(0, 8))
    console.log(
      `idle ${g.between}: ${g.count} times, ${(g.ms / 1000).toFixed(3)} s (${(g.deviceWaitMs / 1000).toFixed(3)} s of it waiting on another stream)`,
    );
  for (const g of summary.worst_gaps) {
    const doing = Object.entries(g.host_doing)
      .map(([what, ms]) => `${what} ${ms.toFixed(1)} ms`)
      .join(", ");
    console.log(
      `gap of ${g.ms.toFixed(2)} ms before op ${g.op}/${g.ops} (${g.between}${g.device_wait ? ", waiting on another stream" : ""}); ${g.host_between_enqueues_ms.toFixed(1)} ms between the two enqueues, host in: ${doing || "nothing timed"}`,
    );
  }
  for (const k of report.byName.slice(0, 30))
    console.log(
      `${k.name.padEnd(36)} ${String(k.count).padStart(7)} ${(k.ms / 1000).toFixed(3).padStart(8)} s ${((1000 * k.ms) / k.count).toFixed(1).padStart(9)} us each, idle before ${(k.idleBeforeMs / 1000).toFixed(3)} s`,
    );
}

/**
 * Host time by label within [fromMs, toMs], overlapping pieces of one label counted once (copies are awaited together):
 * what the host was doing between enqueueing the two ops around a gap.
 */
function hostDoing(intervals: readonly HostInterval[], fromMs: number, toMs: number): Record<string, number> {
  const clipped = new Map<string, [number, number][]>();
  for (const t of intervals) {
    const start = Math.max(fromMs, t.startMs);
    const end = Math.min(toMs, t.endMs);
    if (end > start) clipped.set(t.what, [...(clipped.get(t.what) ?? []), [start, end]]);
  }
  const by: Record<string, number> = {};
  for (const [what, pieces] of clipped) {
    let ms = 0;
    let reached = -Infinity;
    for (const [start, end] of pieces.sort((a, b) => a[0] - b[0])) {
      ms += Math.max(0, end - Math.max(start, reached));
      reached = Math.max(reached, end);
    }
    if (ms > 0.05) by[what] = ms;
  }
  return by;
}
