// The one 16-bit copy of an activation that the CUDA backend keeps from one op to the next: tensor-core matmuls take
// their input in bf16 or f16, and matmuls of one input in a row (q, k and v; gate and up) share one cast of it. RMSNorm
// and the gated activation write the next matmul's 16-bit input beside their f32 output (a "twin") and keep it here too.
//
// When the cast is dropped (its 16-bit tensor freed at once):
// - at every enqueue through the ComputeQueue of an op other than a matmul, kernel or copy (CudaBackend.upload too):
//   any such op may write the tensor the cast was made from (`cast: "forget"`); a matmul's enqueues keep it
//   (`cast: "keep"`), as a matmul writes only its output;
// - when the tensor it was made from is freed (Allocations.free);
// - when a copy to the device is about to write that tensor's buffer (CudaBackend.copyToDevice), and whenever rows are
//   written (CudaRows.writeRows);
// - when a matmul wants a cast of another tensor or type (it forgets this one, then remembers its own).
// Work the driver is given directly on the compute stream (zeros' memset, CudaRows.rows' copy, the output of attention
// with no keys) and copies to the host leave it.
import type { DeviceBuffer } from "./memory.js";
import type { CudaTensor, HalfType } from "./tensor.js";

export class CastCache {
  private kept?: { readonly x: CudaTensor; readonly half: HalfType; readonly xh: CudaTensor };
  /**
   * The 16-bit type of the latest cast remembered, kept after it is forgotten: what the next matmul of the same rows
   * likely wants, so RMSNorm and the gated activation write their twins in it. (They write them only in this type, so
   * remembering a twin leaves it as it was: it changes only when a matmul casts to the other type.)
   */
  private latestHalf?: HalfType;

  /** `free` gives a forgotten cast's 16-bit tensor back (Allocations.free). */
  constructor(private readonly free: (xh: CudaTensor) => void) {}

  get lastHalf(): HalfType | undefined {
    return this.latestHalf;
  }

  /** The kept cast of `x` to `half`, if it is the one kept. */
  find(x: CudaTensor, half: HalfType): CudaTensor | undefined {
    return this.kept?.x === x && this.kept.half === half ? this.kept.xh : undefined;
  }

  /** Keeps `xh`, a copy of `x` in `half`, until forgotten; it becomes the cache's to free. Nothing is kept when called. */
  remember(x: CudaTensor, half: HalfType, xh: CudaTensor): void {
    this.kept = { x, half, xh };
    this.latestHalf = half;
  }

  /** Drops the kept cast, if any, and frees its 16-bit tensor. */
  forget(): void {
    if (!this.kept) return;
    const { xh } = this.kept;
    this.kept = undefined;
    this.free(xh);
  }

  /** Forgets the kept cast if it was made from `t` (t is being freed). */
  forgetIfMadeFrom(t: CudaTensor): void {
    if (this.kept?.x === t) this.forget();
  }

  /** Forgets the kept cast if the tensor it was made from lies in `buffer` (a copy is about to write it). */
  forgetIfIn(buffer: DeviceBuffer): void {
    if (this.kept?.x.buffer === buffer) this.forget();
  }
}
