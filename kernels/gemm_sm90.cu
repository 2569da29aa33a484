// Prefill GEMM with Hopper's warpgroup MMA and Tensor Memory Accelerator (sm_90a PTX: kernels.ts loads this module only
// on compute capability 9.0): y[M, N] = xh[M, K] * w[N, K]^T + bias, the same contract as gemm_mma in gemm.cu.
// A CTA of three warpgroups computes a 128 x 256 tile. The first warpgroup (one thread of it) only issues TMA copies of
// the A and B tiles, K 64 at a time (a tile row is then 128 bytes), into a 4-stage ring; the other two each compute 64
// rows x 256 columns with two wgmma.m64n128k16 a k-step, both operands read from shared memory through matrix
// descriptors. Per stage, a "full" mbarrier counts the copies' bytes in and an "empty" one the 8 consumer warps'
// releases, so loads run as far ahead as the ring allows, with no CTA-wide barrier in the loop, and each warpgroup keeps
// one K tile's MMAs running while it issues the next. The TMA writes each box in the 128-byte swizzle the descriptors
// name (16-byte chunk c of tile row r at chunk c ^ (r % 8), rows 128 bytes apart, 8-row groups 1024 bytes apart) and
// zero-fills rows and columns outside the matrices. Needs K % 8 == 0 and 16-byte aligned matrices (the tensor maps,
// which kernels.ts encodes, are kernel parameters). On an H200 this runs 1.7x the mma.sync tiles of gemm.cu; a
// cp.async version of the same tile (every thread copying, a CTA barrier a K tile) reached 0.85x of it.
#include "mma.cuh"

constexpr int HBM = 128, HBN = 256, HBK = 64, HSTAGES = 4;
constexpr int A_BYTES = HBM * HBK * 2, B_BYTES = HBN * HBK * 2, STAGE_BYTES = A_BYTES + B_BYTES;
// Dynamic shared memory (kernels.ts mirrors it): HSTAGES A and B tiles, and 1 KB to align them to the swizzle's 1024 bytes.

__device__ __forceinline__ uint64_t swizzled_descriptor(uint32_t smem) {
  return (uint64_t)((smem & 0x3FFFF) >> 4) | ((uint64_t)(16 >> 4) << 16) | ((uint64_t)(1024 >> 4) << 32) | (1ull << 62);
}

// D[64 x 128] += A[64 x 16] * B[128 x 16]^T, both K-major in shared memory; d is this thread's 64 accumulators.
template <typename T> __device__ __forceinline__ void wgmma_m64n128k16(float (&d)[64], uint64_t a, uint64_t b);
#define WGMMA_M64N128K16(T, PTX_TYPE)                                                                                      \
  template <> __device__ __forceinline__ void wgmma_m64n128k16<T>(float (&d)[64], uint64_t a, uint64_t b) {                \
    asm volatile("wgmma.mma_async.sync.aligned.m64n128k16.f32." PTX_TYPE "." PTX_TYPE " {"                                 \
                 "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "                                  \
                 "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "                        \
                 "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "                        \
                 "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"                          \
                 "}, %64, %65, 1, 1, 1, 0, 0;\n"                                                                           \
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),         \
                   "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),   \
                   "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), \
                   "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), \
                   "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), \
                   "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), \
                   "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), \
                   "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])  \
                 : "l"(a), "l"(b));                                                                                        \
  }
WGMMA_M64N128K16(bf16, "bf16")
WGMMA_M64N128K16(f16, "f16")

// One K tile (64 deep) of a warpgroup's 64 rows: 4 k-steps, each a wgmma per 128 columns, committed as one group.
template <typename T, int HALVES>
__device__ __forceinline__ void mma_k_tile(float (&d)[HALVES][64], uint32_t a, uint32_t b) {
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#pragma unroll
  for (int kk = 0; kk < 4; kk++)
#pragma unroll
    for (int h = 0; h < HALVES; h++) wgmma_m64n128k16<T>(d[h], swizzled_descriptor(a + kk * 32), swizzled_descriptor(b + h * 128 * 128 + kk * 32));
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}

// A warpgroup's 64 x (128 HALVES) accumulators (rows from row0, columns from n0) plus bias into y. Accumulator i holds
// row (lane / 4) + 8 * ((i / 2) % 2) of its warp's 16 and column 8 * (i / 4) + 2 * (lane % 4) + i % 2.
template <int HALVES>
__device__ __forceinline__ void store_tile(float *y, const float (&d)[HALVES][64], const float *bias, int row0, int n0, int M, int N) {
  const int warp = (threadIdx.x >> 5) & 3, lane = threadIdx.x & 31;
  const int row = row0 + warp * 16 + (lane >> 2);
#pragma unroll
  for (int h = 0; h < HALVES; h++)
#pragma unroll
    for (int i = 0; i < 64; i += 2) {
      const int m = row + 8 * ((i >> 1) & 1), n = n0 + h * 128 + 8 * (i >> 2) + 2 * (lane & 3);
      if (m >= M) continue;
      if (n < N) y[(size_t)m * N + n] = d[h][i] + (bias ? bias[n] : 0.f);
      if (n + 1 < N) y[(size_t)m * N + n + 1] = d[h][i + 1] + (bias ? bias[n + 1] : 0.f);
    }
}

// A CUtensorMap, passed by value as a __grid_constant__ kernel parameter.
struct alignas(64) TensorMap {
  unsigned char bytes[128];
};

__device__ __forceinline__ void mbarrier_init(uint64_t *bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(count) : "memory");
}
__device__ __forceinline__ void mbarrier_expect_bytes(uint64_t *bar, int bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbarrier_arrive(uint64_t *bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_addr(bar)) : "memory");
}
// Waits until the barrier's phase of this parity has completed.
__device__ __forceinline__ void mbarrier_wait(uint64_t *bar, int parity) {
  asm volatile("{\n .reg .pred done;\n WAIT:\n mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n @!done bra WAIT;\n}\n" ::"r"(smem_addr(bar)), "r"(parity)
               : "memory");
}
// Box (64 columns from column k, rows from row) of a 2-D tensor map into shared memory; completes bytes on bar.
__device__ __forceinline__ void tma_load(void *dst, const TensorMap &map, int k, int row, uint64_t *bar) {
  asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::"r"(smem_addr(dst)),
               "l"(reinterpret_cast<uint64_t>(&map)), "r"(k), "r"(row), "r"(smem_addr(bar))
               : "memory");
}

template <typename T>
__device__ void gemm_tma(float *y, const TensorMap &x_map, const TensorMap &w_map, const float *bias, int M, int N, int K) {
  constexpr int BM = HBM, BN = HBN, BK = HBK, STAGES = HSTAGES, HALVES = BN / 128;
  extern __shared__ unsigned char smem_raw[];
  __shared__ uint64_t full[STAGES], empty[STAGES];
  unsigned char *smem = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
  const int tid = threadIdx.x, wg = tid >> 7;
  const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
  const int tiles = (K + BK - 1) / BK;
  auto a_tile = [&](int stage) { return smem + stage * STAGE_BYTES; };
  auto b_tile = [&](int stage) { return smem + stage * STAGE_BYTES + A_BYTES; };
  if (tid == 0) {
    for (int s = 0; s < STAGES; s++) mbarrier_init(&full[s], 1), mbarrier_init(&empty[s], 8);
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();

  if (wg == 0) {
    if (tid != 0) return;
    // Tile kt = s + j STAGES waits for the consumers' j-th release of stage s (phase j - 1).
    for (int kt = 0; kt < tiles; kt++) {
      const int s = kt % STAGES;
      if (kt >= STAGES) mbarrier_wait(&empty[s], (kt / STAGES - 1) & 1);
      mbarrier_expect_bytes(&full[s], STAGE_BYTES);
      tma_load(a_tile(s), x_map, kt * BK, m0, &full[s]);
      tma_load(b_tile(s), w_map, kt * BK, n0, &full[s]);
    }
    return;
  }
  const int group = wg - 1, lane = tid & 31;
  float d[HALVES][64];
#pragma unroll
  for (int h = 0; h < HALVES; h++)
#pragma unroll
    for (int i = 0; i < 64; i++) d[h][i] = 0.f;
  for (int kt = 0; kt < tiles; kt++) {
    const int s = kt % STAGES;
    mbarrier_wait(&full[s], (kt / STAGES) & 1);
    mma_k_tile<T>(d, smem_addr(a_tile(s)) + group * 64 * 128, smem_addr(b_tile(s)));
    asm volatile("wgmma.wait_group.sync.aligned 1;\n" ::: "memory"); // tile kt - 1's MMAs are done: release its stage
    if (kt > 0 && lane == 0) mbarrier_arrive(&empty[(kt - 1) % STAGES]);
  }
  asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
  store_tile(y, d, bias, m0 + group * 64, n0, M, N);
}

#define GEMM_TMA(T, NAME)                                                                                                     \
  extern "C" __global__ void __launch_bounds__(384, 1) gemm_tma_##NAME(float *y, const __grid_constant__ TensorMap x_map,     \
      const __grid_constant__ TensorMap w_map, const float *bias, int M, int N, int K) {                                        \
    gemm_tma<T>(y, x_map, w_map, bias, M, N, K);                                                                              \
  }
GEMM_TMA(bf16, bf16)
GEMM_TMA(f16, f16)
