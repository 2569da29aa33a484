// Loads the committed PTX modules and launches their kernels with packed arguments.
import { readFileSync } from "node:fs";
import { BackendError } from "../../errors.js";
import { CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, Driver, type Handle } from "./driver.js";

/** A TMA descriptor of a row-major 16-bit matrix, read in boxes of 64 columns x boxRows rows (encoded at launch). */
export interface TensorMapArg {
  dtype: "bf16" | "f16";
  ptr: Handle;
  rows: number;
  cols: number;
  boxRows: number;
}
/** `ptrs`: an array of pointers passed by value (a struct of them in the kernel, as many as it declares). */
export type KernelArg =
  | { ptr: Handle }
  | { ptrs: readonly Handle[] }
  | { i32: number }
  | { i64: number }
  | { f32: number }
  | { tensorMap: TensorMapArg };

const modules = ["elementwise", "matmul", "gemm", "attention", "flash", "recurrent", "sampling"] as const;
/** Modules of sm_90a PTX (wgmma), which only Hopper GPUs (compute capability 9.0) can load. */
const hopperModules = ["gemm_sm90", "flash_sm90"] as const;
const kernelDir = new URL("../../../../kernels/", import.meta.url);

/** Dynamic shared memory of the kernels that need more than the default; mirrors the constants in kernels/gemm.cu, gemm_sm90.cu and recurrent.cu. */
// kernel: the name before the dtype; threads a CTA; tma: x and w go as tensor maps (TensorMapArg), not pointers.
// pad: 16-bit values after each tile row (rows apart by depth + pad, so ldmatrix is conflict-free); align: bytes added
// to align the tiles (Hopper's wgmma reads swizzled, unpadded tiles from a 1 KB boundary, kernels/gemm_sm90.cu).
export const gemmTiles = {
  square: {
    kernel: "gemm_mma_",
    rows: 128,
    cols: 128,
    depth: 32,
    stages: 3,
    pad: 8,
    align: 0,
    threads: 256,
    tma: false,
  },
  deep: {
    kernel: "gemm_mma_deep_",
    rows: 128,
    cols: 128,
    depth: 64,
    stages: 3,
    pad: 8,
    align: 0,
    threads: 256,
    tma: false,
  },
  hopper: {
    kernel: "gemm_tma_",
    rows: 128,
    cols: 256,
    depth: 64,
    stages: 4,
    pad: 0,
    align: 1024,
    threads: 384,
    tma: true,
  },
} as const;
export type GemmTile = keyof typeof gemmTiles;
export function gemmSmem(tile: GemmTile): number {
  const t = gemmTiles[tile];
  return t.stages * (t.rows + t.cols) * (t.depth + t.pad) * 2 + t.align;
}
/** The tensor-core GEMM kernel of a tile for 16-bit weights. */
export function gemmKernel(tile: GemmTile, dtype: string): string {
  return `${gemmTiles[tile].kernel}${dtype}`;
}
/**
 * Prefill attention tiles (mirror FlashShape in kernels/flash.cu and the constants of kernels/flash_sm90.cu): query rows
 * x keys a KV tile, threads a CTA, the head dims built, and the shared memory layout (16-bit values after each row, bytes
 * added for alignment). "short" (keys 32 at head_dim 256) and "tall" (32 rows a warp) run on mma.sync; "hopper" on
 * wgmma, compute capability 9.0 only.
 */
export const flashTiles = {
  short: { kernel: "flash_", rows: 64, keys: 64, threads: 128, headDims: [64, 128, 256], pad: 8, align: 0 },
  tall: { kernel: "flash_tall_", rows: 128, keys: 64, threads: 128, headDims: [64, 128], pad: 8, align: 0 },
  hopper: { kernel: "flash_wgmma_", rows: 128, keys: 128, threads: 256, headDims: [128], pad: 0, align: 1024 },
} as const;
export type FlashTile = keyof typeof flashTiles;
export function flashKernel(tile: FlashTile, dtype: string, headDim: number): string {
  return `${flashTiles[tile].kernel}${dtype}_${headDim}`;
}
export function flashSmem(headDim: number, tile: FlashTile): number {
  const t = flashTiles[tile];
  const keys = headDim <= 128 ? t.keys : 32;
  return (t.rows + 4 * keys) * (headDim + t.pad) * 2 + t.align;
}

/** A launch's grid or block dimensions. */
export type Dim3 = readonly [number, number, number];
/** Threads a block of the elementwise kernels (and most others) takes. */
export const threadsPerBlock = 256;
/** Blocks of threadsPerBlock over n elements, at most 65535 (the kernels loop over what is left). */
export const gridFor = (n: number) => Math.max(1, Math.min(65535, Math.ceil(n / threadsPerBlock)));
/** Grid and block of a kernel that loops over n elements (grid-stride). */
export function overElements(n: number): { grid: Dim3; block: Dim3 } {
  return { grid: [gridFor(n), 1, 1], block: [threadsPerBlock, 1, 1] };
}

/** Output columns a warp of the decode GEMV takes; mirrors gemv_cols in kernels/matmul.cu (MXFP4: one). */
export function gemvColumns(maxRows: number, dtype: string): number {
  return maxRows === 1 || dtype === "mxfp4" ? 1 : 4;
}

/** Most ids the top_k kernel ranks per row; mirrors TOPK_MAX in kernels/sampling.cu. */
export const topKMax = 2048;

/** Key head dims the gated delta rule kernels are built for. */
export const deltaRuleKeyDims = [16, 32, 64, 128] as const;
export function deltaChunkSmem(kDim: number): number {
  const rows = 32;
  const columns = 32;
  return 4 * (2 * rows * (kDim + 1) + kDim * columns + 2 * rows * (rows + 1) + rows * columns + 4 * rows);
}

export class Kernels {
  private readonly fns = new Map<string, Handle>();
  private readonly loaded: Handle[] = [];
  /** Pinned scratch for launch arguments: values in the first half, pointers to them in the second. */
  private readonly argBase: Handle;
  private readonly argView: DataView;

  constructor(
    private readonly driver: Driver,
    maxSharedOptin: number,
    hopper: boolean,
  ) {
    for (const name of modules) this.load(name);
    // Optional: without them the portable kernels run (a driver too old for sm_90a PTX, say).
    if (hopper)
      for (const name of hopperModules) {
        try {
          this.load(name);
        } catch {}
      }
    const needs: [string, number][] = [];
    needs.push(["gemm_mma_mxfp4", gemmSmem("square")]);
    for (const dtype of ["bf16", "f16"]) {
      for (const tile of Object.keys(gemmTiles) as GemmTile[])
        if (this.fns.has(gemmKernel(tile, dtype))) needs.push([gemmKernel(tile, dtype), gemmSmem(tile)]);
      for (const tile of Object.keys(flashTiles) as FlashTile[])
        for (const hd of flashTiles[tile].headDims)
          if (this.fns.has(flashKernel(tile, dtype, hd)))
            needs.push([flashKernel(tile, dtype, hd), flashSmem(hd, tile)]);
    }
    for (const kDim of deltaRuleKeyDims) needs.push([`gated_delta_chunked_${kDim}`, deltaChunkSmem(kDim)]);
    for (const [name, smem] of needs) {
      if (smem <= maxSharedOptin)
        driver.setFunctionAttribute(this.fn(name), CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, smem, name);
      else this.fns.delete(name); // too little shared memory on this GPU: the exact fallback kernels run instead
    }
    this.argBase = driver.hostAlloc(4096);
    this.argView = new DataView(Driver.view(this.argBase, 4096).buffer);
  }

  private load(name: string): void {
    let ptx: string;
    try {
      ptx = readFileSync(new URL(`${name}.ptx`, kernelDir), "utf8");
    } catch (e) {
      throw new BackendError(
        "CUDA_KERNELS_MISSING",
        `kernels/${name}.ptx cannot be read: ${(e as Error).message}`,
        "reinstall layerwise, or run npm run build:kernels where nvcc is installed",
      );
    }
    const module = this.driver.moduleLoad(ptx, `${name}.ptx`);
    this.loaded.push(module);
    for (const m of ptx.matchAll(/\.entry\s+(\w+)\s*\(/g)) this.fns.set(m[1]!, this.driver.function(module, m[1]!));
  }

  has(name: string): boolean {
    return this.fns.has(name);
  }

  private fn(name: string): Handle {
    const f = this.fns.get(name);
    if (f === undefined)
      throw new BackendError(
        "CUDA_KERNEL_MISSING",
        `kernel ${name} is not in the loaded PTX`,
        "run npm run build:kernels and reinstall",
      );
    return f;
  }

  launch(name: string, grid: Dim3, block: Dim3, smem: number, stream: Handle, args: readonly KernelArg[]): void {
    const v = this.argView;
    let at = 0;
    args.forEach((a, i) => {
      at = "tensorMap" in a ? Math.ceil(at / 64) * 64 : at; // a CUtensorMap parameter is 128 bytes, 64-aligned
      if ("ptr" in a) v.setBigUint64(at, a.ptr, true);
      else if ("ptrs" in a) a.ptrs.forEach((p, j) => v.setBigUint64(at + 8 * j, p, true));
      else if ("i32" in a) v.setInt32(at, a.i32, true);
      else if ("i64" in a) v.setBigInt64(at, BigInt(a.i64), true);
      else if ("f32" in a) v.setFloat32(at, a.f32, true);
      else
        this.driver.encodeTensorMap(
          this.argBase + BigInt(at),
          a.tensorMap.dtype,
          a.tensorMap.ptr,
          a.tensorMap.rows,
          a.tensorMap.cols,
          a.tensorMap.boxRows,
        );
      v.setBigUint64(2048 + 8 * i, this.argBase + BigInt(at), true);
      at += "tensorMap" in a ? 128 : "ptrs" in a ? 8 * a.ptrs.length : 8;
    });
    this.driver.launch(this.fn(name), grid, block, smem, stream, this.argBase + 2048n, name);
  }

  dispose(): void {
    for (const m of this.loaded.splice(0)) this.driver.moduleUnload(m);
    this.driver.hostFree(this.argBase);
  }
}
