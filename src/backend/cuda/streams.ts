// The CUDA backend's streams, the events between them, and its copies to and from the device. Every wait of one stream
// for another is made here, by these rules:
// - compute: every op's kernels, and its small uploads (ids, positions, block lists) through the pinned upload ring, in
//   op order. A freed buffer is reused in compute order, so compute needs no wait to reuse memory it freed.
// - copies to the device take `neededCopies` (what compute needs next: hidden states, KV blocks, a layer waited for),
//   or `prefetchCopies` for copies that read ahead where prefetchStream is "own" (else those queue on neededCopies too).
//   A copy first waits for a fence on compute: the caller's, or else all compute so far (the buffer may be one compute
//   just freed) and the latest copy to the host (its source may be what that copy writes). An event after the copy
//   marks the buffer (DeviceBuffer.pendingCopy); the first op that reads the buffer makes compute wait for it, once
//   (waitForCopiesInto), as does freeing the buffer (an upload in flight must land before the memory is reused).
// - copies to the host take `hostCopies`, each after a fence on all compute so far, so compute need not wait for them.
//   `lastCopyToHost` is recorded again after each; an event after the copy marks the source buffer
//   (DeviceBuffer.pendingRead), and the pool reuses its memory only once that event has happened.
// - events come from a ring: one is recorded again only once its last record has happened (see ringEvent).
// - while a profile runs, each enqueue on compute sits between two timing events, and the host's waits are timed.
import type { CopyQueue, Fence, Tensor } from "../ops.js";
import { Driver, type Handle } from "./driver.js";
import { orderedArgs } from "./kernel-params.js";
import { threadsPerBlock, type Kernels } from "./kernels.js";
import { StreamProfile, type StreamReport } from "./stream-profile.js";
import { asCudaTensor, type CudaHostBuffer, type CudaTensor } from "./tensor.js";
import { UploadRing } from "./upload-ring.js";

interface CudaFence extends Fence {
  readonly event: Handle;
}

const ringSize = 1024;
/** Pinned bytes for small uploads (see UploadRing): two halves of 2 MB, several prefill layers' worth of ids and block lists. */
const uploadRingBytes = 4 << 20;

export class Streams {
  readonly compute: Handle;
  /** Copies to the device that compute needs next (hidden states, KV blocks, a layer waited for). */
  private readonly neededCopies: Handle;
  /** Copies to the device that read ahead (weights for later layers), where prefetchStream is "own": then neededCopies never waits behind them. */
  private readonly prefetchCopies: Handle;
  /** Copies to the host, on their own stream so that compute need not wait for them. */
  private readonly hostCopies: Handle;
  /** Recorded again on hostCopies after each copy (a wait on it waits for the latest). */
  private readonly lastCopyToHost: Handle;
  private readonly events: Handle[] = [];
  private nextEvent = 0;
  private eventsHandedOut = 0;
  private fenceCount = 0;
  private readonly uploadRingHost: Handle;
  private readonly uploadRing: UploadRing;
  /**
   * How small uploads (ids, positions, block lists) reach the device: a kernel reading the pinned ring where the host
   * wrote them, or the copy engine, whose queue they would share with the copy stream's weight and activation copies.
   */
  smallUploads: "kernel" | "copy engine" = "kernel";
  /** Whether prefetch copies (weights read ahead) take a stream of their own, or queue with the copies compute needs next. */
  prefetchStream: "own" | "shared" = "shared";
  private profile?: StreamProfile;

  /** `kernels` copies small uploads out of the ring where smallUploads is "kernel" (copy_words). */
  constructor(
    private readonly driver: Driver,
    kernels: Kernels,
  ) {
    this.compute = driver.streamCreate();
    this.neededCopies = driver.streamCreate();
    this.prefetchCopies = driver.streamCreate();
    this.hostCopies = driver.streamCreate();
    this.lastCopyToHost = driver.eventCreate();
    for (let i = 0; i < ringSize; i++) this.events.push(driver.eventCreate());
    this.uploadRingHost = driver.hostAlloc(uploadRingBytes, true);
    const uploadRingDevice = driver.hostDevicePointer(this.uploadRingHost);
    this.uploadRing = new UploadRing(
      driver,
      Driver.view(this.uploadRingHost, uploadRingBytes),
      (dst, offset, bytes, stream) => {
        if (this.smallUploads === "copy engine")
          return driver.copyHtoDAsync(dst, this.uploadRingHost + BigInt(offset), bytes, stream);
        const words = Math.ceil(bytes / 4);
        const args = orderedArgs("copy_words", "copy_words", { dst, src: uploadRingDevice + BigInt(offset), n: words });
        kernels.launch(
          "copy_words",
          [Math.min(64, Math.ceil(words / threadsPerBlock)), 1, 1],
          [threadsPerBlock, 1, 1],
          0,
          stream,
          args,
        );
      },
    );
  }

  /**
   * The next event of the ring, to record. A promise or a stream wait may still refer to its last record (a copy's
   * `done`, checked a layer later): that record must have happened before the event is recorded again, or a wait on
   * it would end at the new record, which may come first on another stream. So a reused event that has not happened
   * yet is waited for here (it was recorded ringSize events ago, far behind what the GPU works on, so this is rare).
   */
  private ringEvent(): Handle {
    const e = this.events[this.nextEvent]!;
    this.nextEvent = (this.nextEvent + 1) % ringSize;
    if (this.eventsHandedOut++ >= ringSize && !this.driver.eventDone(e)) this.driver.eventSynchronize(e);
    return e;
  }

  /** Marks the compute enqueued so far. */
  fence(): Fence {
    const event = this.ringEvent();
    this.driver.eventRecord(event, this.compute);
    return { id: ++this.fenceCount, event } as CudaFence;
  }

  /** Enqueues `work` on the compute stream, between timing events named `name` while a profile runs. */
  enqueue(name: string, work: () => void): void {
    if (this.profile) this.profile.time(name, work);
    else work();
  }

  /** Enqueues on compute the copy of small host data to `dst`: through the pinned ring where it fits, else straight from `bytes`. */
  uploadSmall(dst: Handle, bytes: Uint8Array): void {
    if (bytes.byteLength <= this.uploadRing.maxBytes) this.uploadRing.copy(dst, bytes, this.compute);
    else this.driver.copyHtoDAsyncFrom(dst, bytes, bytes.byteLength, this.compute);
  }

  /** Backend.copyToDevice, on a copy stream (the rules above); resolves once the copy is done. */
  copyToDevice(
    dst: CudaTensor,
    dstOffset: number,
    src: CudaHostBuffer,
    srcOffset: number,
    length: number,
    after?: Fence,
    queue: CopyQueue = "needed",
  ): Promise<void> {
    const stream = queue === "prefetch" && this.prefetchStream === "own" ? this.prefetchCopies : this.neededCopies;
    this.driver.streamWaitEvent(stream, ((after ?? this.fence()) as CudaFence).event);
    if (!after) this.driver.streamWaitEvent(stream, this.lastCopyToHost);
    this.driver.copyHtoDAsync(dst.ptr + BigInt(dstOffset), src.ptr + BigInt(srcOffset), length, stream);
    const done = this.ringEvent();
    this.driver.eventRecord(done, stream);
    dst.buffer.pendingCopy = done;
    return lazy(() => this.waitFor("copy to device", done));
  }

  /** Backend.copyToHost, on hostCopies after the compute so far; resolves once the host may read `dst`. */
  copyToHost(
    src: CudaTensor,
    srcOffset: number,
    dst: CudaHostBuffer,
    dstOffset: number,
    length: number,
  ): Promise<void> {
    this.waitForCopiesInto([src]);
    // On its own stream, after the compute so far; the pool reuses src's memory only once this copy is done.
    this.driver.streamWaitEvent(this.hostCopies, (this.fence() as CudaFence).event);
    this.driver.copyDtoHAsync(dst.ptr + BigInt(dstOffset), src.ptr + BigInt(srcOffset), length, this.hostCopies);
    const done = this.ringEvent();
    this.driver.eventRecord(done, this.hostCopies);
    this.driver.eventRecord(this.lastCopyToHost, this.hostCopies);
    const read = this.driver.eventCreate();
    this.driver.eventRecord(read, this.hostCopies);
    if (src.buffer.pendingRead !== undefined) this.driver.eventDestroy(src.buffer.pendingRead); // the new copy ends later on the same stream
    src.buffer.pendingRead = read;
    return lazy(() => this.waitFor("copy to host", done));
  }

  /** The compute stream waits for pending copies to the device into these tensors' buffers (each waited for once). */
  waitForCopiesInto(ts: readonly (Tensor | undefined)[]): void {
    for (const t of ts) {
      if (!t) continue;
      const b = asCudaTensor(t).buffer;
      if (b.pendingCopy !== undefined) {
        this.driver.streamWaitEvent(this.compute, b.pendingCopy);
        b.pendingCopy = undefined;
      }
    }
  }

  /** Waits for all compute and copies to the host enqueued so far. */
  async sync(): Promise<void> {
    const e = this.ringEvent();
    this.driver.eventRecord(e, this.compute);
    await this.waitFor("sync", e);
    const h = this.ringEvent();
    this.driver.eventRecord(h, this.hostCopies);
    await this.waitFor("sync", h);
  }

  /** Blocks the host until every stream has finished all it was given (the arena unmaps memory only then). */
  drain(): void {
    for (const stream of [this.compute, this.neededCopies, this.prefetchCopies, this.hostCopies])
      this.driver.streamSynchronize(stream);
  }

  /** GPU milliseconds per repetition of the work `enqueue` puts on the compute stream (benchmarks). */
  async timeMs(enqueue: () => void, reps: number): Promise<number> {
    const start = this.driver.eventCreate(true);
    const end = this.driver.eventCreate(true);
    try {
      this.driver.eventRecord(start, this.compute);
      for (let i = 0; i < reps; i++) enqueue();
      this.driver.eventRecord(end, this.compute);
      await this.driver.eventWait(end);
      return this.driver.elapsedMs(start, end) / reps;
    } finally {
      this.driver.eventDestroy(start);
      this.driver.eventDestroy(end);
    }
  }

  /** Starts timing every kernel and copy on the compute stream (profiling runs; each op then costs two events). */
  startProfile(): void {
    this.profile ??= new StreamProfile(this.driver, this.compute);
  }

  /** GPU time by kernel since startProfile (or the last report), and how long the compute stream sat idle. */
  async profileReport(): Promise<StreamReport> {
    if (!this.profile) throw new Error("profileReport: startProfile was not called");
    return this.profile.report();
  }

  /** Resolves once `event` has happened; while a profile runs, the wait is timed as a wait for `what`. */
  private waitFor(what: string, event: Handle): Promise<void> {
    return this.profile
      ? this.profile.hostWait(what, () => this.driver.eventWait(event))
      : this.driver.eventWait(event);
  }

  /** Destroys the events, the upload ring and the streams (after a sync: nothing may be in flight). */
  dispose(): void {
    for (const e of this.events) this.driver.eventDestroy(e);
    this.uploadRing.dispose();
    this.driver.hostFree(this.uploadRingHost);
    this.driver.streamDestroy(this.compute);
    this.driver.streamDestroy(this.neededCopies);
    this.driver.streamDestroy(this.prefetchCopies);
    this.driver.streamDestroy(this.hostCopies);
    this.driver.eventDestroy(this.lastCopyToHost);
  }
}

/** A promise-like that only starts waiting (on a worker thread) when someone awaits it. */
function lazy(start: () => Promise<void>): Promise<void> {
  let p: Promise<void> | undefined;
  const get = () => (p ??= start());
  return {
    then: (a, b) => get().then(a, b),
    catch: (b) => get().catch(b),
    finally: (f) => get().finally(f),
    [Symbol.toStringTag]: "LazyPromise",
  } as Promise<void>;
}
