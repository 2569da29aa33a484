// Loads the committed PTX modules and launches their kernels with packed arguments.
import { readFileSync } from "node:fs";
import { BackendError } from "../../errors.js";
import { CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, Driver, type Handle } from "./driver.js";

export type KernelArg = { ptr: Handle } | { i32: number } | { i64: number } | { f32: number };

const modules = ["elementwise", "matmul", "gemm", "attention", "flash", "recurrent", "sampling"] as const;
/** Modules of sm_90a PTX (wgmma), which only Hopper GPUs (compute capability 9.0) can load. */
const hopperModules = ["gemm_sm90"] as const;
const kernelDir = new URL("../../../../kernels/", import.meta.url);

/** Dynamic shared memory of the kernels that need more than the default; mirrors the constants in kernels/gemm.cu, flash.cu and recurrent.cu. */
// pad: 16-bit values after each tile row (rows apart by depth + pad, so ldmatrix is conflict-free); align: bytes added
// to align the tiles (Hopper's wgmma reads swizzled, unpadded tiles from a 1 KB boundary, kernels/gemm_sm90.cu).
export const gemmTiles = {
  square: { rows: 128, cols: 128, depth: 32, stages: 3, pad: 8, align: 0 },
  deep: { rows: 128, cols: 128, depth: 64, stages: 3, pad: 8, align: 0 },
  hopper: { rows: 128, cols: 128, depth: 64, stages: 4, pad: 0, align: 1024 },
} as const;
export type GemmTile = keyof typeof gemmTiles;
export function gemmSmem(tile: GemmTile): number {
  const t = gemmTiles[tile];
  return t.stages * (t.rows + t.cols) * (t.depth + t.pad) * 2 + t.align;
}
/** The tensor-core GEMM kernel of a tile for 16-bit weights. */
export function gemmKernel(tile: GemmTile, dtype: string): string {
  return tile === "hopper" ? `gemm_wgmma_${dtype}` : `gemm_mma_${tile === "square" ? "" : `${tile}_`}${dtype}`;
}
/** Query rows a flash attention CTA takes: 64, or 128 ("tall", head_dim 64 and 128). */
export type FlashRows = 64 | 128;
export function flashSmem(headDim: number, rows: FlashRows = 64): number {
  const bkv = headDim <= 128 ? 64 : 32;
  return (rows + 4 * bkv) * (headDim + 8) * 2;
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
    if (hopper) for (const name of hopperModules) {
      try {
        this.load(name);
      } catch {}
    }
    const needs: [string, number][] = [];
    needs.push(["gemm_mma_mxfp4", gemmSmem("square")]);
    for (const dtype of ["bf16", "f16"]) {
      for (const tile of ["square", "deep", "hopper"] as const) if (this.fns.has(gemmKernel(tile, dtype))) needs.push([gemmKernel(tile, dtype), gemmSmem(tile)]);
      for (const hd of [64, 128, 256]) needs.push([`flash_${dtype}_${hd}`, flashSmem(hd)]);
      for (const hd of [64, 128]) needs.push([`flash_tall_${dtype}_${hd}`, flashSmem(hd, 128)]);
    }
    for (const kDim of deltaRuleKeyDims) needs.push([`gated_delta_chunked_${kDim}`, deltaChunkSmem(kDim)]);
    for (const [name, smem] of needs) {
      if (smem <= maxSharedOptin) driver.setFunctionAttribute(this.fn(name), CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, smem, name);
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
      throw new BackendError("CUDA_KERNELS_MISSING", `kernels/${name}.ptx cannot be read: ${(e as Error).message}`, "reinstall layerwise, or run npm run build:kernels where nvcc is installed");
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
    if (f === undefined) throw new BackendError("CUDA_KERNEL_MISSING", `kernel ${name} is not in the loaded PTX`, "run npm run build:kernels and reinstall");
    return f;
  }

  launch(name: string, grid: readonly [number, number, number], block: readonly [number, number, number], smem: number, stream: Handle, args: readonly KernelArg[]): void {
    const v = this.argView;
    args.forEach((a, i) => {
      const at = 8 * i;
      if ("ptr" in a) v.setBigUint64(at, a.ptr, true);
      else if ("i32" in a) v.setInt32(at, a.i32, true);
      else if ("i64" in a) v.setBigInt64(at, BigInt(a.i64), true);
      else v.setFloat32(at, a.f32, true);
      v.setBigUint64(2048 + at, this.argBase + BigInt(at), true);
    });
    this.driver.launch(this.fn(name), grid, block, smem, stream, this.argBase + 2048n, name);
  }

  dispose(): void {
    for (const m of this.loaded.splice(0)) this.driver.moduleUnload(m);
    this.driver.hostFree(this.argBase);
  }
}
