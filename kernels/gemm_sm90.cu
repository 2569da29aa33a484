// Prefill GEMM with Hopper's warpgroup MMA (sm_90a PTX: kernels.ts loads this module only on compute capability 9.0):
// y[M, N] = xh[M, K] * w[N, K]^T + bias, the same contract as gemm_mma in gemm.cu. A CTA of two warpgroups computes a
// 128 x 128 tile, each warpgroup 64 rows with wgmma.m64n128k16, both operands read from shared memory through matrix
// descriptors. K comes 64 at a time (a tile row is then 128 bytes) through an HSTAGES-deep cp.async pipeline, stored in
// the 128-byte swizzle the descriptors name: 16-byte chunk c of tile row r lands at chunk c ^ (r % 8), rows 128 bytes
// apart, 8-row groups 1024 bytes apart. Needs K % 8 == 0.
#include "mma.cuh"

constexpr int HBM = 128, HBN = 128, HBK = 64, HSTAGES = 4;
constexpr int HTILE = HBM * HBK * 2; // bytes of an A or a B tile (HBM == HBN)
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

template <typename T>
__device__ void gemm_wgmma(float *y, const T *x, const T *w, const float *bias, int M, int N, int K) {
  extern __shared__ unsigned char smem_raw[];
  unsigned char *smem = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
  const int tid = threadIdx.x, group = tid >> 7, warp = (tid >> 5) & 3, lane = tid & 31;
  const int m0 = blockIdx.y * HBM, n0 = blockIdx.x * HBN;
  const int tiles = (K + HBK - 1) / HBK;
  auto a_tile = [&](int stage) { return smem + stage * 2 * HTILE; };
  auto b_tile = [&](int stage) { return smem + stage * 2 * HTILE + HTILE; };

  auto load = [&](int stage, int kt) {
    const int k0 = kt * HBK;
#pragma unroll
    for (int i = 0; i < HBM * 8 / 256; i++) {
      const int chunk = tid + i * 256, r = chunk >> 3, c = chunk & 7, k = k0 + c * 8;
      const int at = r * 128 + ((c ^ (r & 7)) << 4);
      const bool kin = k < K;
      cp_async16(a_tile(stage) + at, x + (size_t)min(m0 + r, M - 1) * K + (kin ? k : 0), m0 + r < M && kin);
      cp_async16(b_tile(stage) + at, w + (size_t)min(n0 + r, N - 1) * K + (kin ? k : 0), n0 + r < N && kin);
    }
  };

  float d[64];
#pragma unroll
  for (int i = 0; i < 64; i++) d[i] = 0.f;
#pragma unroll
  for (int s = 0; s < HSTAGES - 1; s++) {
    if (s < tiles) load(s, s);
    cp_async_commit();
  }
  for (int kt = 0; kt < tiles; kt++) {
    cp_async_wait<HSTAGES - 2>();
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); // this thread's copies, visible to the tensor cores
    __syncthreads(); // every thread's copies of tile kt are in; every warpgroup is done with tile kt - 1's stage
    if (kt + HSTAGES - 1 < tiles) load((kt + HSTAGES - 1) % HSTAGES, kt + HSTAGES - 1);
    cp_async_commit();
    const uint32_t a = smem_addr(a_tile(kt % HSTAGES)) + group * 64 * 128, b = smem_addr(b_tile(kt % HSTAGES));
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#pragma unroll
    for (int kk = 0; kk < HBK / 16; kk++) wgmma_m64n128k16<T>(d, swizzled_descriptor(a + kk * 32), swizzled_descriptor(b + kk * 32));
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
    asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
  }
  cp_async_wait<0>();
  // Accumulator i holds row (lane / 4) + 8 * ((i / 2) % 2) of this warp's 16 and column 8 * (i / 4) + 2 * (lane % 4) + i % 2.
  const int row = m0 + group * 64 + warp * 16 + (lane >> 2);
#pragma unroll
  for (int i = 0; i < 64; i += 2) {
    const int m = row + 8 * ((i >> 1) & 1), n = n0 + 8 * (i >> 2) + 2 * (lane & 3);
    if (m >= M) continue;
    if (n < N) y[(size_t)m * N + n] = d[i] + (bias ? bias[n] : 0.f);
    if (n + 1 < N) y[(size_t)m * N + n + 1] = d[i + 1] + (bias ? bias[n + 1] : 0.f);
  }
}

#define GEMM_WGMMA(T, NAME)                                                                                                   \
  extern "C" __global__ void __launch_bounds__(256) gemm_wgmma_##NAME(float *y, const T *x, const T *w, const float *bias, int M, int N, int K) { \
    gemm_wgmma<T>(y, x, w, bias, M, N, K);                                                                                    \
  }
GEMM_WGMMA(bf16, bf16)
GEMM_WGMMA(f16, f16)
