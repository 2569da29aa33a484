// Device memory for KV blocks, reserved when the model loads (the plan's share), so device use does not depend on the context.
import type { DType } from "../backend/dtype.js";
import type { Backend, Tensor } from "../backend/ops.js";

export interface DeviceBlock {
  readonly k: Tensor;
  readonly v: Tensor;
}

export class KvBlockPool {
  private readonly free = new Map<number, DeviceBlock[]>();

  constructor(
    private readonly backend: Backend,
    private readonly blockTokens: number,
    private readonly dtype: DType,
  ) {}

  /** Allocates `count` blocks of `kvCols` columns up front. */
  reserve(kvCols: number, count: number): void {
    for (let i = 0; i < count; i++) this.put(kvCols, this.make(kvCols));
  }

  take(kvCols: number): DeviceBlock {
    return this.free.get(kvCols)?.pop() ?? this.make(kvCols);
  }

  put(kvCols: number, b: DeviceBlock): void {
    const list = this.free.get(kvCols);
    if (list) list.push(b);
    else this.free.set(kvCols, [b]);
  }

  dispose(): void {
    for (const list of this.free.values()) for (const b of list.splice(0)) this.backend.free(b.k), this.backend.free(b.v);
  }

  private make(kvCols: number): DeviceBlock {
    const shape = [this.blockTokens, kvCols];
    return { k: this.backend.alloc(shape, this.dtype), v: this.backend.alloc(shape, this.dtype) };
  }
}
