// Memory for KV blocks, reserved when the model loads (the plan's shares): device blocks, and pinned host buffers for the
// RAM tier. Nothing is allocated on the hot path, and memory use does not depend on the context.
import type { FloatDType } from "../backend/dtype.js";
import type { Backend, HostBuffer, Tensor } from "../backend/ops.js";
import { kvBytesBeyondReserve } from "./planner.js";

export interface DeviceBlock {
  readonly k: Tensor;
  readonly v: Tensor;
}

export class KvBlockPool {
  private readonly free = new Map<number, DeviceBlock[]>();
  private readonly freeHost = new Map<number, HostBuffer[]>();
  /** Per column count: device blocks that exist (in use or free), and how many the plan reserved (none: no limit). */
  private readonly made = new Map<number, number>();
  private readonly reserved = new Map<number, number>();

  constructor(
    private readonly backend: Backend,
    private readonly blockTokens: number,
    private readonly dtype: FloatDType,
  ) {}

  /** Allocates `count` blocks of `kvCols` columns up front. */
  reserve(kvCols: number, count: number): void {
    this.reserved.set(kvCols, (this.reserved.get(kvCols) ?? 0) + count);
    for (let i = 0; i < count; i++) this.put(kvCols, this.make(kvCols));
  }

  /** Device bytes of the blocks that exist beyond the reserve (decode's larger share), as the planner counts them (decodeExtraKvBytesAt). */
  extraDeviceBytes(): number {
    return kvBytesBeyondReserve(
      { kvBlockTokens: this.blockTokens, kvDtype: this.dtype, deviceBytesFor: (n) => this.backend.deviceBytesFor(n) },
      this.made,
      this.reserved,
    );
  }

  take(kvCols: number): DeviceBlock {
    return this.free.get(kvCols)?.pop() ?? this.make(kvCols);
  }

  /**
   * Takes a block back. Where the plan reserved blocks, one beyond the reserve (made for decode's larger share) goes back
   * to the backend, whose memory prefill's activations need.
   */
  put(kvCols: number, b: DeviceBlock): void {
    if ((this.made.get(kvCols) ?? 0) > (this.reserved.get(kvCols) ?? Infinity)) {
      this.made.set(kvCols, this.made.get(kvCols)! - 1);
      this.backend.free(b.k);
      this.backend.free(b.v);
      return;
    }
    const list = this.free.get(kvCols);
    if (list) list.push(b);
    else this.free.set(kvCols, [b]);
  }

  /** Allocates `count` pinned host buffers of `bytes` (a block's K and V) up front. */
  reserveHost(bytes: number, count: number): void {
    for (let i = 0; i < count; i++) this.putHost(this.backend.allocHost(bytes));
  }

  takeHost(bytes: number): HostBuffer {
    return this.freeHost.get(bytes)?.pop() ?? this.backend.allocHost(bytes);
  }

  putHost(b: HostBuffer): void {
    const list = this.freeHost.get(b.bytes.byteLength);
    if (list) list.push(b);
    else this.freeHost.set(b.bytes.byteLength, [b]);
  }

  dispose(): void {
    for (const list of this.free.values())
      for (const b of list.splice(0)) (this.backend.free(b.k), this.backend.free(b.v));
    for (const list of this.freeHost.values()) for (const b of list.splice(0)) this.backend.freeHost(b);
  }

  private make(kvCols: number): DeviceBlock {
    this.made.set(kvCols, (this.made.get(kvCols) ?? 0) + 1);
    const shape = [this.blockTokens, kvCols];
    return { k: this.backend.alloc(shape, this.dtype), v: this.backend.alloc(shape, this.dtype) };
  }
}
