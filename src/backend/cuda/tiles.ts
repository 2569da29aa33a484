// Which tile the CUDA backend's tensor-core GEMM and prefill attention take: the one chosen (benchmarks and tests set
// it), where this GPU has its kernel, else the next more portable one.
import { flashKernel, flashTiles, gemmKernel, type FlashTile, type GemmTile, type Kernels } from "./kernels.js";

export class TileChoice {
  /**
   * The tensor-core GEMM's tile for 16-bit weights: the wgmma + TMA one on Hopper (compute capability 9.0), elsewhere the
   * deep one where shared memory allows (MXFP4 and smaller GPUs take the square one). The kernel bench compares them.
   */
  gemmTile: GemmTile = "hopper";
  /**
   * The prefill attention tile: the wgmma one on Hopper for head_dim 128, elsewhere "tall" (head_dim 64/128), else
   * "short"; prompts shorter than a tile's rows take "short". The kernel bench compares them.
   */
  flashTile: FlashTile = "hopper";

  constructor(private readonly kernels: Pick<Kernels, "has">) {}

  /** Whether this GPU has the tensor-core GEMM of a tile (wgmma ones: Hopper only; the deep one: 110 KB of shared memory). */
  hasGemmTile(tile: GemmTile): boolean {
    return this.kernels.has(gemmKernel(tile, "bf16"));
  }

  /** The GEMM tile matmul takes for weights of a dtype: the chosen one where this GPU has it, else the next more portable one; MXFP4 has only the square one. */
  gemmTileFor(dtype: string): GemmTile {
    if (dtype === "mxfp4") return "square";
    return ([this.gemmTile, "deep", "square"] as const).find((t) => this.kernels.has(gemmKernel(t, dtype))) ?? "square";
  }

  /** The prefill attention tile for a KV dtype, head dim and longest prompt: the chosen one where it fits, else the next more portable one. */
  flashTileFor(kvDtype: string, headDim: number, maxQRows: number): FlashTile {
    const fits = (t: FlashTile) => maxQRows >= flashTiles[t].rows && this.kernels.has(flashKernel(t, kvDtype, headDim));
    return ([this.flashTile, "tall"] as const).find(fits) ?? "short";
  }
}
