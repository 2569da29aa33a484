// The NVIDIA driver API (libcuda) through koffi: the calls layerwise needs, every CUresult checked and named.
import koffi, { type LibraryHandle } from "koffi";
import { BackendError } from "../../errors.js";

/** Device pointers, streams, events, modules and functions are opaque 64-bit values. */
export type Handle = bigint;

export const CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 16;
export const CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75;
export const CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76;
export const CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN = 97;
export const CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8;
const CU_STREAM_NON_BLOCKING = 1;
const CU_TENSOR_MAP_DATA_TYPE_FLOAT16 = 6;
const CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 = 9;
const CU_TENSOR_MAP_SWIZZLE_128B = 3;
const CU_TENSOR_MAP_L2_PROMOTION_L2_256B = 3;
const CU_EVENT_DISABLE_TIMING = 2;
const CU_MEMHOSTALLOC_DEVICEMAP = 2;
const CU_MEM_ALLOCATION_TYPE_PINNED = 1;
const CU_MEM_LOCATION_TYPE_DEVICE = 1;
const CU_MEM_ACCESS_FLAGS_PROT_READWRITE = 3;
export const CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED = 102;
const CUDA_SUCCESS = 0;
const CUDA_ERROR_OUT_OF_MEMORY = 2;
const CUDA_ERROR_NOT_READY = 600;

/** The committed PTX is ISA 9.0 (nvcc 13.0): the driver must support CUDA 13.0 (R580 or newer) to compile it. */
export const minDriverVersion = 13000;

type Fn = (...args: unknown[]) => number;

/** CUmemAllocationProp (32 bytes): pinned device memory on `device`, no shareable handle, no flags. */
function allocationProp(device: number): Uint8Array {
  const prop = new Int32Array(8);
  prop[0] = CU_MEM_ALLOCATION_TYPE_PINNED;
  prop[2] = CU_MEM_LOCATION_TYPE_DEVICE;
  prop[3] = device;
  return new Uint8Array(prop.buffer);
}

export class Driver {
  /** The libcuda functions declared in the constructor, by name. */
  private readonly fns: Record<string, Fn & { async: (...args: unknown[]) => void }>;

  private constructor(lib: LibraryHandle) {
    const decl = {
      cuInit: "int cuInit(uint32_t flags)",
      cuDriverGetVersion: "int cuDriverGetVersion(_Out_ int *version)",
      cuGetErrorName: "int cuGetErrorName(int error, _Out_ const char **name)",
      cuGetErrorString: "int cuGetErrorString(int error, _Out_ const char **text)",
      cuDeviceGetCount: "int cuDeviceGetCount(_Out_ int *count)",
      cuDeviceGet: "int cuDeviceGet(_Out_ int *device, int ordinal)",
      cuDeviceGetName: "int cuDeviceGetName(_Out_ uint8_t *name, int len, int device)",
      cuDeviceGetAttribute: "int cuDeviceGetAttribute(_Out_ int *value, int attribute, int device)",
      cuDevicePrimaryCtxRetain: "int cuDevicePrimaryCtxRetain(_Out_ uint64_t *ctx, int device)",
      cuDevicePrimaryCtxRelease: "int cuDevicePrimaryCtxRelease_v2(int device)",
      cuCtxSetCurrent: "int cuCtxSetCurrent(uint64_t ctx)",
      cuMemGetInfo: "int cuMemGetInfo_v2(_Out_ uint64_t *free, _Out_ uint64_t *total)",
      cuMemAlloc: "int cuMemAlloc_v2(_Out_ uint64_t *ptr, uint64_t bytes)",
      cuMemFree: "int cuMemFree_v2(uint64_t ptr)",
      cuMemGetAllocationGranularity:
        "int cuMemGetAllocationGranularity(_Out_ uint64_t *granularity, const uint8_t *prop, int option)",
      cuMemAddressReserve:
        "int cuMemAddressReserve(_Out_ uint64_t *ptr, uint64_t size, uint64_t alignment, uint64_t addr, uint64_t flags)",
      cuMemAddressFree: "int cuMemAddressFree(uint64_t ptr, uint64_t size)",
      cuMemCreate: "int cuMemCreate(_Out_ uint64_t *handle, uint64_t size, const uint8_t *prop, uint64_t flags)",
      cuMemRelease: "int cuMemRelease(uint64_t handle)",
      cuMemMap: "int cuMemMap(uint64_t ptr, uint64_t size, uint64_t offset, uint64_t handle, uint64_t flags)",
      cuMemUnmap: "int cuMemUnmap(uint64_t ptr, uint64_t size)",
      cuMemSetAccess: "int cuMemSetAccess(uint64_t ptr, uint64_t size, const uint8_t *desc, uint64_t count)",
      cuMemHostAlloc: "int cuMemHostAlloc(_Out_ uint64_t *ptr, uint64_t bytes, uint32_t flags)",
      cuMemFreeHost: "int cuMemFreeHost(uint64_t ptr)",
      cuMemHostGetDevicePointer: "int cuMemHostGetDevicePointer_v2(_Out_ uint64_t *dptr, uint64_t ptr, uint32_t flags)",
      cuMemcpyHtoDAsync: "int cuMemcpyHtoDAsync_v2(uint64_t dst, uint64_t src, uint64_t bytes, uint64_t stream)",
      cuMemcpyHtoDAsyncFrom: "int cuMemcpyHtoDAsync_v2(uint64_t dst, const void *src, uint64_t bytes, uint64_t stream)",
      cuMemcpyDtoHAsync: "int cuMemcpyDtoHAsync_v2(uint64_t dst, uint64_t src, uint64_t bytes, uint64_t stream)",
      cuMemcpyDtoDAsync: "int cuMemcpyDtoDAsync_v2(uint64_t dst, uint64_t src, uint64_t bytes, uint64_t stream)",
      cuMemsetD8Async: "int cuMemsetD8Async(uint64_t dst, uint8_t value, uint64_t count, uint64_t stream)",
      cuStreamCreate: "int cuStreamCreate(_Out_ uint64_t *stream, uint32_t flags)",
      cuStreamDestroy: "int cuStreamDestroy_v2(uint64_t stream)",
      cuStreamSynchronize: "int cuStreamSynchronize(uint64_t stream)",
      cuStreamWaitEvent: "int cuStreamWaitEvent(uint64_t stream, uint64_t event, uint32_t flags)",
      cuEventCreate: "int cuEventCreate(_Out_ uint64_t *event, uint32_t flags)",
      cuEventDestroy: "int cuEventDestroy_v2(uint64_t event)",
      cuEventRecord: "int cuEventRecord(uint64_t event, uint64_t stream)",
      cuEventQuery: "int cuEventQuery(uint64_t event)",
      cuEventSynchronize: "int cuEventSynchronize(uint64_t event)",
      cuEventElapsedTime: "int cuEventElapsedTime_v2(_Out_ float *ms, uint64_t start, uint64_t end)",
      cuModuleLoadData: "int cuModuleLoadData(_Out_ uint64_t *module, const char *image)",
      cuModuleUnload: "int cuModuleUnload(uint64_t module)",
      cuModuleGetFunction: "int cuModuleGetFunction(_Out_ uint64_t *fn, uint64_t module, const char *name)",
      cuFuncSetAttribute: "int cuFuncSetAttribute(uint64_t fn, int attribute, int value)",
      cuTensorMapEncodeTiled:
        "int cuTensorMapEncodeTiled(uint64_t map, int dataType, uint32_t rank, uint64_t address, const uint64_t *dims, const uint64_t *strides, const uint32_t *box, const uint32_t *elementStrides, int interleave, int swizzle, int l2Promotion, int oobFill)",
      cuLaunchKernel:
        "int cuLaunchKernel(uint64_t fn, uint32_t gx, uint32_t gy, uint32_t gz, uint32_t bx, uint32_t by, uint32_t bz, uint32_t smem, uint64_t stream, uint64_t params, uint64_t extra)",
    };
    this.fns = {};
    for (const [name, proto] of Object.entries(decl)) this.fns[name] = lib.func(proto) as never;
  }

  static load(): Driver {
    let lib: LibraryHandle;
    try {
      lib = koffi.load("libcuda.so.1");
    } catch (e) {
      throw new BackendError(
        "CUDA_DRIVER_MISSING",
        `the NVIDIA driver library libcuda.so.1 could not be loaded: ${(e as Error).message}`,
        "install the NVIDIA driver, or use --backend cpu",
      );
    }
    return new Driver(lib);
  }

  /** Throws a BackendError naming the call and the driver's error for anything but CUDA_SUCCESS. */
  check(result: number, call: string, detail?: () => string): void {
    if (result === CUDA_SUCCESS) return;
    const name = [""];
    const text = [""];
    this.fns.cuGetErrorName!(result, name);
    this.fns.cuGetErrorString!(result, text);
    const extra = detail ? `; ${detail()}` : "";
    throw new BackendError(
      result === CUDA_ERROR_OUT_OF_MEMORY ? "CUDA_OUT_OF_MEMORY" : "CUDA_ERROR",
      `${call} failed: ${name[0] ?? result} (${text[0] ?? "?"})${extra}`,
      result === CUDA_ERROR_OUT_OF_MEMORY ? "give a smaller --vram or --prefill-chunk so the plan fits" : undefined,
    );
  }

  /** Calls `name` with out-parameters, checks the result and returns the outs' first elements. */
  private call(name: string, ...args: unknown[]): void {
    this.check(this.fns[name]!(...args), name);
  }

  private outParam<T>(name: string, ...rest: unknown[]): T {
    const box: unknown[] = [0];
    this.call(name, box, ...rest);
    return box[0] as T;
  }

  init(): void {
    this.call("cuInit", 0);
  }
  driverVersion(): number {
    return this.outParam<number>("cuDriverGetVersion");
  }
  deviceCount(): number {
    return this.outParam<number>("cuDeviceGetCount");
  }
  device(ordinal: number): number {
    return this.outParam<number>("cuDeviceGet", ordinal);
  }
  deviceName(device: number): string {
    const buf = new Uint8Array(256);
    this.call("cuDeviceGetName", buf, 256, device);
    return new TextDecoder().decode(buf.subarray(0, buf.indexOf(0)));
  }
  attribute(device: number, attribute: number): number {
    return this.outParam<number>("cuDeviceGetAttribute", attribute, device);
  }
  retainPrimaryContext(device: number): Handle {
    const ctx = this.outParam<bigint>("cuDevicePrimaryCtxRetain", device);
    this.call("cuCtxSetCurrent", ctx);
    return ctx;
  }
  releasePrimaryContext(device: number): void {
    this.call("cuDevicePrimaryCtxRelease", device);
  }
  memInfo(): { free: number; total: number } {
    const free = [0n];
    const total = [0n];
    this.call("cuMemGetInfo", free, total);
    return { free: Number(free[0]), total: Number(total[0]) };
  }
  /** Device memory; on failure says how much was asked and how much was free. */
  memAlloc(bytes: number): Handle {
    const box = [0n];
    const r = this.fns.cuMemAlloc!(box, bytes);
    this.check(r, `cuMemAlloc of ${bytes} bytes`, () => {
      const { free, total } = this.memInfo();
      return `${free} bytes free of ${total}`;
    });
    return BigInt(box[0]!);
  }
  memFree(ptr: Handle): void {
    this.call("cuMemFree", ptr);
  }

  // Virtual memory: an address range reserved once, with physical memory mapped into it in granules (see DeviceArena).

  /** The granule physical memory on `device` is created and mapped in. */
  memGranularity(device: number): number {
    return Number(this.outParam<bigint>("cuMemGetAllocationGranularity", allocationProp(device), 0));
  }
  memAddressReserve(bytes: number): Handle {
    return BigInt(this.outParam<bigint>("cuMemAddressReserve", bytes, 0, 0, 0));
  }
  memAddressFree(ptr: Handle, bytes: number): void {
    this.call("cuMemAddressFree", ptr, bytes);
  }
  /** Maps `bytes` of new physical memory on `device` at `ptr` (reserved, unmapped) and lets the device read and write it. */
  memMapNew(ptr: Handle, bytes: number, device: number): Handle {
    const box = [0n];
    this.check(this.fns.cuMemCreate!(box, bytes, allocationProp(device), 0), `cuMemCreate of ${bytes} bytes`, () => {
      const { free, total } = this.memInfo();
      return `${free} bytes free of ${total}`;
    });
    const handle = BigInt(box[0]!);
    try {
      this.call("cuMemMap", ptr, bytes, 0, handle, 0);
      const desc = new Int32Array([CU_MEM_LOCATION_TYPE_DEVICE, device, CU_MEM_ACCESS_FLAGS_PROT_READWRITE]);
      this.call("cuMemSetAccess", ptr, bytes, new Uint8Array(desc.buffer), 1);
    } catch (e) {
      this.fns.cuMemUnmap!(ptr, bytes);
      this.fns.cuMemRelease!(handle);
      throw e;
    }
    return handle;
  }
  /** Undoes memMapNew; the device must be done with the memory. */
  memUnmapRelease(ptr: Handle, bytes: number, handle: Handle): void {
    this.call("cuMemUnmap", ptr, bytes);
    this.call("cuMemRelease", handle);
  }
  /** Pinned host memory; `mapped`: kernels may also read it, at hostDevicePointer(ptr). */
  hostAlloc(bytes: number, mapped = false): Handle {
    return BigInt(this.outParam<bigint>("cuMemHostAlloc", bytes, mapped ? CU_MEMHOSTALLOC_DEVICEMAP : 0));
  }
  hostDevicePointer(ptr: Handle): Handle {
    return BigInt(this.outParam<bigint>("cuMemHostGetDevicePointer", ptr, 0));
  }
  hostFree(ptr: Handle): void {
    this.call("cuMemFreeHost", ptr);
  }
  copyHtoDAsync(dst: Handle, src: Handle, bytes: number, stream: Handle): void {
    this.call("cuMemcpyHtoDAsync", dst, src, bytes, stream);
  }
  /** From JS memory (pageable): the driver consumes the source before returning. */
  copyHtoDAsyncFrom(dst: Handle, src: Uint8Array, bytes: number, stream: Handle): void {
    this.call("cuMemcpyHtoDAsyncFrom", dst, src, bytes, stream);
  }
  copyDtoHAsync(dst: Handle, src: Handle, bytes: number, stream: Handle): void {
    this.call("cuMemcpyDtoHAsync", dst, src, bytes, stream);
  }
  copyDtoDAsync(dst: Handle, src: Handle, bytes: number, stream: Handle): void {
    this.call("cuMemcpyDtoDAsync", dst, src, bytes, stream);
  }
  memsetAsync(dst: Handle, value: number, bytes: number, stream: Handle): void {
    this.call("cuMemsetD8Async", dst, value, bytes, stream);
  }
  streamCreate(): Handle {
    return BigInt(this.outParam<bigint>("cuStreamCreate", CU_STREAM_NON_BLOCKING));
  }
  streamDestroy(stream: Handle): void {
    this.call("cuStreamDestroy", stream);
  }
  /** Blocks this thread until the stream's work so far is done. */
  streamSynchronize(stream: Handle): void {
    this.call("cuStreamSynchronize", stream);
  }
  streamWaitEvent(stream: Handle, event: Handle): void {
    this.call("cuStreamWaitEvent", stream, event, 0);
  }
  eventCreate(timing = false): Handle {
    return BigInt(this.outParam<bigint>("cuEventCreate", timing ? 0 : CU_EVENT_DISABLE_TIMING));
  }
  eventDestroy(event: Handle): void {
    this.call("cuEventDestroy", event);
  }
  eventRecord(event: Handle, stream: Handle): void {
    this.call("cuEventRecord", event, stream);
  }
  /** Blocks this thread until the event has happened (for waits that are normally already over). */
  eventSynchronize(event: Handle): void {
    this.call("cuEventSynchronize", event);
  }
  eventDone(event: Handle): boolean {
    const r = this.fns.cuEventQuery!(event);
    if (r === CUDA_ERROR_NOT_READY) return false;
    this.check(r, "cuEventQuery");
    return true;
  }
  /**
   * Resolves once the event has happened. Polls from this thread (the context is current here, not on worker
   * threads): at once, then each turn of the event loop for a short while, then every millisecond.
   */
  eventWait(event: Handle): Promise<void> {
    if (this.eventDone(event)) return Promise.resolve();
    const start = performance.now();
    return new Promise((resolve, reject) => {
      const poll = () => {
        try {
          if (this.eventDone(event)) return resolve();
        } catch (e) {
          return reject(e);
        }
        if (performance.now() - start < 0.5) setImmediate(poll);
        else setTimeout(poll, 1);
      };
      setImmediate(poll);
    });
  }
  elapsedMs(start: Handle, end: Handle): number {
    return this.outParam<number>("cuEventElapsedTime", start, end);
  }
  moduleLoad(image: string, name: string): Handle {
    const box = [0n];
    this.check(this.fns.cuModuleLoadData!(box, image), `cuModuleLoadData(${name})`);
    return BigInt(box[0]!);
  }
  moduleUnload(module: Handle): void {
    this.call("cuModuleUnload", module);
  }
  function(module: Handle, name: string): Handle {
    const box = [0n];
    this.check(this.fns.cuModuleGetFunction!(box, module, name), `cuModuleGetFunction(${name})`);
    return BigInt(box[0]!);
  }
  setFunctionAttribute(fn: Handle, attribute: number, value: number, name: string): void {
    this.check(this.fns.cuFuncSetAttribute!(fn, attribute, value), `cuFuncSetAttribute(${name})`);
  }
  launch(
    fn: Handle,
    grid: readonly [number, number, number],
    block: readonly [number, number, number],
    smem: number,
    stream: Handle,
    params: Handle,
    name: string,
  ): void {
    this.check(
      this.fns.cuLaunchKernel!(fn, grid[0], grid[1], grid[2], block[0], block[1], block[2], smem, stream, params, 0n),
      `launch of ${name} grid [${grid}] block [${block}]`,
    );
  }

  /**
   * Writes at `map` (128 bytes of host memory, 64-aligned) the TMA descriptor of a row-major 16-bit matrix [rows, cols]
   * at device address `address`, read in boxes of 64 columns x `boxRows` rows with the 128-byte swizzle; reads outside
   * the matrix give zeros. Needs cols % 8 == 0 and a 16-byte aligned address.
   */
  encodeTensorMap(
    map: Handle,
    dtype: "bf16" | "f16",
    address: Handle,
    rows: number,
    cols: number,
    boxRows: number,
  ): void {
    const dataType = dtype === "bf16" ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16;
    const dims = new BigUint64Array([BigInt(cols), BigInt(rows)]);
    const strides = new BigUint64Array([BigInt(cols * 2)]);
    const r = this.fns.cuTensorMapEncodeTiled!(
      map,
      dataType,
      2,
      address,
      dims,
      strides,
      new Uint32Array([64, boxRows]),
      new Uint32Array([1, 1]),
      0,
      CU_TENSOR_MAP_SWIZZLE_128B,
      CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
      0,
    );
    this.check(r, `cuTensorMapEncodeTiled of a [${rows}, ${cols}] ${dtype} matrix at 0x${address.toString(16)}`);
  }

  /** JS view of host memory the driver allocated. */
  static view(ptr: Handle, bytes: number): Uint8Array {
    return new Uint8Array(koffi.view(ptr, bytes));
  }
}
