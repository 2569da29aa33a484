// Worker thread for FillPool: fills one random segment per message.
import { parentPort } from "node:worker_threads";
import { fillSegment, type SegmentJob } from "./fill.js";

parentPort!.on("message", (job: SegmentJob) => {
  try {
    const bytes = fillSegment(job);
    parentPort!.postMessage({ bytes }, [bytes.buffer as ArrayBuffer]);
  } catch (e) {
    parentPort!.postMessage({ error: (e as Error).message });
  }
});
