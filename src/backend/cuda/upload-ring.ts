// Pinned host memory for the small uploads ops make (token ids, positions, block lists). A copy from pageable memory may
// make the driver wait for the stream before it returns, which would keep the host in step with the GPU op by op.
import type { Driver, Handle } from "./driver.js";

/** The driver calls the ring makes. */
export type RingDriver = Pick<Driver, "eventCreate" | "eventRecord" | "eventSynchronize" | "eventDestroy">;

/** Enqueues on `stream` the copy of `bytes` bytes at `offset` in the ring to device address `dst`. */
export type RingCopy = (dst: Handle, offset: number, bytes: number, stream: Handle) => void;

export class UploadRing {
  private half = 0;
  private head = 0;
  /** Per half: recorded on the stream after the last copy from it, when the ring moved to the other half. */
  private readonly lastCopyFromHalf: Handle[];
  private readonly lastCopyRecorded = [false, false];

  /** `view` is the pinned memory; `copyOut` copies from it to the device. */
  constructor(
    private readonly driver: RingDriver,
    private readonly view: Uint8Array,
    private readonly copyOut: RingCopy,
  ) {
    this.lastCopyFromHalf = [driver.eventCreate(), driver.eventCreate()];
  }

  /** Bytes one copy may take at most; larger data is copied another way. */
  get maxBytes(): number {
    return this.view.byteLength / 2;
  }

  /** Copies `data` to device address `dst` in order on `stream` (the only stream the ring serves). */
  copy(dst: Handle, data: Uint8Array, stream: Handle): void {
    const n = data.byteLength;
    if (n > this.maxBytes) throw new RangeError(`UploadRing: ${n} bytes is more than half the ring`);
    if (this.head + n > (this.half + 1) * this.maxBytes) {
      this.driver.eventRecord(this.lastCopyFromHalf[this.half]!, stream);
      this.lastCopyRecorded[this.half] = true;
      this.half ^= 1;
      this.head = this.half * this.maxBytes;
      // The copies that read this half were enqueued a half's worth of uploads ago: normally long done.
      if (this.lastCopyRecorded[this.half]) this.driver.eventSynchronize(this.lastCopyFromHalf[this.half]!);
    }
    this.view.set(data, this.head);
    this.copyOut(dst, this.head, n, stream);
    this.head += Math.ceil(n / 16) * 16;
  }

  dispose(): void {
    for (const e of this.lastCopyFromHalf) this.driver.eventDestroy(e);
  }
}
