// The CUDA backend's tensors and pinned host buffers: allocation from the pool, views, scopes, and frees, with the
// memory figures they move.
import { tensorBytes, type DType } from "../dtype.js";
import type { HostBuffer, MemoryStats, Tensor } from "../ops.js";
import { ScopeStack } from "../scope.js";
import type { CastCache } from "./cast-cache.js";
import { Driver } from "./driver.js";
import type { DevicePool } from "./memory.js";
import type { Streams } from "./streams.js";
import { asCudaTensor, CudaTensor, type CudaHostBuffer } from "./tensor.js";

export interface AllocationsParts {
  readonly driver: Driver;
  readonly pool: DevicePool;
  readonly streams: Streams;
  /** Forgotten when the tensor its cast was made from is freed. */
  readonly casts: CastCache;
  /** The backend's figures, which alloc and free keep. */
  readonly memory: MemoryStats;
  /** The device memory the context holds (read at each alloc: known only once the backend is set up). */
  readonly contextBytes: () => number;
}

export class Allocations {
  private readonly scopes = new ScopeStack<CudaTensor>((t) => this.free(t));
  private readonly liveTensors = new Set<CudaTensor>();
  private readonly liveHostBuffers = new Set<CudaHostBuffer>();

  constructor(private readonly parts: AllocationsParts) {}

  alloc(shape: readonly number[], dtype: DType): CudaTensor {
    const { pool, memory } = this.parts;
    const bytes = tensorBytes(shape, dtype);
    const t = new CudaTensor(shape, dtype, pool.alloc(Math.max(bytes, 1)), 0, true);
    this.liveTensors.add(t);
    memory.deviceBytes += bytes;
    memory.deviceBytesPeak = Math.max(memory.deviceBytesPeak, this.parts.contextBytes() + pool.reservedPeak);
    return t;
  }

  /** An op's f32 result, owned by the innermost open scope (the caller's to free where none is open). */
  allocOutput(shape: readonly number[]): CudaTensor {
    return this.scopes.add(this.alloc(shape, "f32"));
  }

  view(base: Tensor, byteOffset: number, shape: readonly number[], dtype: DType): CudaTensor {
    const b = asCudaTensor(base);
    if (byteOffset < 0 || b.offset + byteOffset + tensorBytes(shape, dtype) > b.buffer.bytes)
      throw new RangeError(`view at byte ${byteOffset} overruns a ${b.buffer.bytes}-byte buffer`);
    return new CudaTensor(shape, dtype, b.buffer, b.offset + byteOffset, false);
  }

  free(t: Tensor): void {
    const c = asCudaTensor(t);
    this.parts.casts.forgetIfMadeFrom(c);
    if (!c.owner || !this.liveTensors.delete(c)) return;
    this.parts.memory.deviceBytes -= c.byteLength;
    this.parts.streams.waitForCopiesInto([c]); // an upload still in flight must land before the buffer is reused
    this.parts.pool.release(c.buffer); // reused in stream order by later ops on the compute stream
  }

  /** Frees temporaries an op made (small uploads, f32 copies) once the ops that use them are enqueued, unless a scope owns them. */
  freeAfterEnqueue(...ts: CudaTensor[]): void {
    if (!this.scopes.open) for (const t of ts) this.free(t);
  }

  pushScope(): void {
    this.scopes.push();
  }

  popScope(keep: readonly Tensor[] = []): void {
    this.scopes.pop(keep);
  }

  allocHost(byteLength: number): CudaHostBuffer {
    const { driver, memory } = this.parts;
    const ptr = driver.hostAlloc(Math.max(byteLength, 1));
    const b: CudaHostBuffer = { ptr, bytes: Driver.view(ptr, byteLength) };
    this.liveHostBuffers.add(b);
    memory.hostBytes += byteLength;
    memory.hostBytesPeak = Math.max(memory.hostBytesPeak, memory.hostBytes);
    return b;
  }

  freeHost(b: HostBuffer): void {
    const h = b as CudaHostBuffer;
    if (!this.liveHostBuffers.delete(h)) return;
    this.parts.memory.hostBytes -= h.bytes.byteLength;
    this.parts.driver.hostFree(h.ptr);
  }

  /** Frees every tensor, then every host buffer, still held (dispose, after a sync). */
  freeAll(): void {
    for (const t of [...this.liveTensors]) this.free(t);
    for (const b of [...this.liveHostBuffers]) this.freeHost(b);
  }
}
