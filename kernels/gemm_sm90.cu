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
#include "wgmma.cuh"

constexpr int BM = 128, BN = 256, BK = 64, STAGES = 4, HALVES = BN / 128;
constexpr int A_BYTES = BM * BK * 2, B_BYTES = BN * BK * 2, STAGE_BYTES = A_BYTES + B_BYTES;
// Dynamic shared memory (kernels.ts mirrors it): STAGES A and B tiles, and 1 KB to align them to the swizzle's 1024 bytes.


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
