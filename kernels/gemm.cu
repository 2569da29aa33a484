// Prefill GEMM on tensor cores: y[M, N] = xh[M, K] * w[N, K]^T + bias, with xh the activations already in the weights'
// 16-bit type (cast_rows does that). A CTA of WARPS_M x WARPS_N warps computes a BM x BN tile, K in steps of BK through
// a STAGES-deep cp.async pipeline; ldmatrix feeds mma.m16n8k16. Needs K % 8 == 0 (16-byte rows); other shapes use
// gemm_tc in matmul.cu. Two tiles of 128 x 128 (warps of 64 x 32): the deep one takes K 64 at a time (half the barriers
// per MMA; 1.1-1.2x the other on an H200) and needs 110 KB of shared memory, which GPUs with less (consumer cards have
// 99 KB) replace by the 32-deep one. A 128 x 256 tile and a 4-stage deep one measured slower there.
// MXFP4 weights (K % 32 == 0, the 32-deep tile): each B tile row is one group of 32, decoded to bf16 in shared memory
// (exact: an e2m1 value times a power of two), so the weights stay packed in device memory.
#include "mma.cuh"

template <int BM_, int BN_, int WARPS_M, int WARPS_N, int STAGES_, int BK_ = 32> struct GemmTile {
  static constexpr int BM = BM_, BN = BN_, BK = BK_, STAGES = STAGES_;
  static constexpr int LD = BK + 8; // +8: rows 80 (or 144) bytes apart, ldmatrix conflict-free
  static constexpr int THREADS = 32 * WARPS_M * WARPS_N, WN_WARPS = WARPS_N;
  static constexpr int WM = BM / WARPS_M, WN = BN / WARPS_N, MI = WM / 16, NI = WN / 8;
  // Dynamic shared memory (kernels.ts mirrors it).
  static constexpr int SMEM = STAGES * (BM + BN) * LD * 2;
};
using SquareTile = GemmTile<128, 128, 2, 4, 3>;
using DeepTile = GemmTile<128, 128, 2, 4, 3, 64>;

// Decodes row group `kt` of MXFP4 rows n0.. into a bf16 tile: two threads a row, 16 values each.
__device__ __forceinline__ void load_mxfp4_tile(bf16 *tile, const uint8_t *w, int n0, int N, int K, int kt) {
  constexpr int GLD = SquareTile::LD;
  const int r = threadIdx.x >> 1, half = threadIdx.x & 1, n = n0 + r;
  uint32_t out[8] = {};
  if (n < N) {
    const uint2 raw = *reinterpret_cast<const uint2 *>(w + (size_t)n * (K / 2) + kt * 16 + half * 8);
    const float scale = e8m0_scale(w[(size_t)N * (K / 2) + (size_t)n * (K / 32) + kt]);
    const uint32_t words[2] = {raw.x, raw.y};
#pragma unroll
    for (int i = 0; i < 8; i++) {
      const uint32_t b = (words[i / 4] >> (8 * (i % 4))) & 0xff;
      out[i] = pack2<bf16>(fp4_value(b & 15) * scale, fp4_value(b >> 4) * scale);
    }
  }
  uint4 *dst = reinterpret_cast<uint4 *>(tile + r * GLD + half * 16);
  dst[0] = make_uint4(out[0], out[1], out[2], out[3]);
  dst[1] = make_uint4(out[4], out[5], out[6], out[7]);
}

template <typename Tile, typename T, bool MXFP4>
__device__ void gemm_mma(float *y, const T *x, const void *wraw, const float *bias, int M, int N, int K) {
  constexpr int BM = Tile::BM, BN = Tile::BN, BK = Tile::BK, STAGES = Tile::STAGES, LD = Tile::LD, MI = Tile::MI, NI = Tile::NI;
  static_assert(!MXFP4 || (BN * 2 == Tile::THREADS && BK == 32), "the MXFP4 tile loader takes two threads a row of 32");
  const T *w = reinterpret_cast<const T *>(wraw);
  extern __shared__ __align__(128) unsigned char smem[];
  T *As = reinterpret_cast<T *>(smem);
  T *Bs = As + STAGES * BM * LD;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int wm = ((unsigned)warp / Tile::WN_WARPS) * Tile::WM, wn = ((unsigned)warp % Tile::WN_WARPS) * Tile::WN;
  const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
  const int tiles = (K + BK - 1) / BK;

  auto load = [&](int stage, int kt) {
    const int k0 = kt * BK;
    constexpr int CHUNKS = BK / 8; // 16-byte pieces of a row
#pragma unroll
    for (int i = 0; i < BM * CHUNKS / Tile::THREADS; i++) {
      const int chunk = tid + i * Tile::THREADS, r = (unsigned)chunk / CHUNKS, c = ((unsigned)chunk % CHUNKS) * 8;
      const bool kin = k0 + c < K;
      cp_async16(As + (stage * BM + r) * LD + c, x + (size_t)min(m0 + r, M - 1) * K + (kin ? k0 + c : 0), m0 + r < M && kin);
    }
    if constexpr (MXFP4) {
      load_mxfp4_tile(Bs + stage * BN * LD, reinterpret_cast<const uint8_t *>(wraw), n0, N, K, kt);
    } else {
#pragma unroll
      for (int i = 0; i < BN * CHUNKS / Tile::THREADS; i++) {
        const int chunk = tid + i * Tile::THREADS, r = (unsigned)chunk / CHUNKS, c = ((unsigned)chunk % CHUNKS) * 8;
        const bool kin = k0 + c < K;
        cp_async16(Bs + (stage * BN + r) * LD + c, w + (size_t)min(n0 + r, N - 1) * K + (kin ? k0 + c : 0), n0 + r < N && kin);
      }
    }
  };

  float acc[MI][NI][4] = {};
#pragma unroll
  for (int s = 0; s < STAGES - 1; s++) {
    if (s < tiles) load(s, s);
    cp_async_commit();
  }
  for (int kt = 0; kt < tiles; kt++) {
    cp_async_wait<STAGES - 2>();
    __syncthreads();
    if (kt + STAGES - 1 < tiles) load((kt + STAGES - 1) % STAGES, kt + STAGES - 1);
    cp_async_commit();
    const T *a = As + (kt % STAGES) * BM * LD;
    const T *b = Bs + (kt % STAGES) * BN * LD;
#pragma unroll
    for (int kk = 0; kk < BK; kk += 16) {
      uint32_t af[MI][4], bfr[NI / 2][4];
#pragma unroll
      for (int mi = 0; mi < MI; mi++) ldmatrix_x4(af[mi], a + (wm + mi * 16 + (lane & 15)) * LD + kk + (lane >> 4) * 8);
#pragma unroll
      for (int nj = 0; nj < NI / 2; nj++) ldmatrix_x4(bfr[nj], b + (wn + nj * 16 + (lane & 7) + (lane >> 4) * 8) * LD + kk + ((lane >> 3) & 1) * 8);
#pragma unroll
      for (int mi = 0; mi < MI; mi++)
#pragma unroll
        for (int ni = 0; ni < NI; ni++) mma16816<T>(acc[mi][ni], af[mi], bfr[ni >> 1][(ni & 1) * 2], bfr[ni >> 1][(ni & 1) * 2 + 1]);
    }
  }
  cp_async_wait<0>();
#pragma unroll
  for (int mi = 0; mi < MI; mi++)
#pragma unroll
    for (int ni = 0; ni < NI; ni++)
#pragma unroll
      for (int h = 0; h < 2; h++) {
        const int m = m0 + wm + mi * 16 + (lane >> 2) + h * 8;
        const int n = n0 + wn + ni * 8 + (lane & 3) * 2;
        if (m >= M) continue;
        if (n < N) y[(size_t)m * N + n] = acc[mi][ni][2 * h] + (bias ? bias[n] : 0.f);
        if (n + 1 < N) y[(size_t)m * N + n + 1] = acc[mi][ni][2 * h + 1] + (bias ? bias[n + 1] : 0.f);
      }
}

// Decode batches (5-64 rows, xh already 16-bit): f32 FMAs run out near 16 rows (each weight serves every row), so the
// rows go through mma.m16n8k16 as MT m-tiles of 16, the weights read straight from global memory, once. A CTA takes 32
// output columns; its 8 warps split K (warp w takes the 32-deep k steps w, w + 8, ...) and add their partial tiles in
// shared memory in a fixed order (a tree), so results do not depend on timing. Within a k step the order of k is
// permuted (a sum does not care): lane (g, t) loads k 8t .. 8t + 7 of weight row g with one 16-byte load, and takes the
// same 8 k of its x rows; the first MMA gets k 8t .. 8t + 3, the second 8t + 4 .. 8t + 7. Needs K % 8 == 0.
template <typename T, int MT>
__device__ void gemm_skinny(float *y, const T *x, const T *w, const float *bias, int M, int N, int K) {
  constexpr int NT = 4, COLS = 8 * NT, WARPS = 8;
  __shared__ float part[WARPS / 2][MT * 16][COLS + 1];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int n0 = blockIdx.x * COLS;
  float acc[MT][NT][4] = {};
  const uint4 zero = make_uint4(0, 0, 0, 0);
#pragma unroll 2
  for (int step = warp; step * 32 < K; step += WARPS) {
    const int k = step * 32 + t * 8;
    const bool kin = k < K;
    uint4 wv[NT];
#pragma unroll
    for (int nt = 0; nt < NT; nt++) {
      const int n = n0 + nt * 8 + g;
      wv[nt] = kin && n < N ? __ldg(reinterpret_cast<const uint4 *>(w + (size_t)n * K + k)) : zero;
    }
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
      const int r = mt * 16 + g;
      const uint4 x0 = kin && r < M ? __ldg(reinterpret_cast<const uint4 *>(x + (size_t)r * K + k)) : zero;
      const uint4 x1 = kin && r + 8 < M ? __ldg(reinterpret_cast<const uint4 *>(x + (size_t)(r + 8) * K + k)) : zero;
      const uint32_t a0[4] = {x0.x, x1.x, x0.y, x1.y}, a1[4] = {x0.z, x1.z, x0.w, x1.w};
#pragma unroll
      for (int nt = 0; nt < NT; nt++) {
        mma16816<T>(acc[mt][nt], a0, wv[nt].x, wv[nt].y);
        mma16816<T>(acc[mt][nt], a1, wv[nt].z, wv[nt].w);
      }
    }
  }
  // Accumulator e of (mt, nt): row mt * 16 + g + 8 * (e / 2), column nt * 8 + 2t + e % 2.
  for (int level = WARPS / 2; level >= 1; level /= 2) {
    if (warp >= level && warp < 2 * level)
#pragma unroll
      for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
          for (int e = 0; e < 4; e++) part[warp - level][mt * 16 + g + 8 * (e >> 1)][nt * 8 + 2 * t + (e & 1)] = acc[mt][nt][e];
    __syncthreads();
    if (warp < level)
#pragma unroll
      for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
          for (int e = 0; e < 4; e++) acc[mt][nt][e] += part[warp][mt * 16 + g + 8 * (e >> 1)][nt * 8 + 2 * t + (e & 1)];
    __syncthreads();
  }
  if (warp != 0) return;
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int m = mt * 16 + g + 8 * (e >> 1), n = n0 + nt * 8 + 2 * t + (e & 1);
        if (m < M && n < N) y[(size_t)m * N + n] = acc[mt][nt][e] + (bias ? bias[n] : 0.f);
      }
}

// f32 activations to the weights' 16-bit type, for the tensor-core GEMM.
template <typename T>
__device__ void cast_rows(T *out, const float *x, long long n) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) out[i] = from_f32<T>(x[i]);
}

#define GEMM_MMA(T, NAME)                                                                                                     \
  extern "C" __global__ void __launch_bounds__(256) gemm_mma_##NAME(float *y, const T *x, const T *w, const float *bias, int M, int N, int K) { \
    gemm_mma<SquareTile, T, false>(y, x, w, bias, M, N, K);                                                                   \
  }                                                                                                                           \
  extern "C" __global__ void __launch_bounds__(256) gemm_mma_deep_##NAME(float *y, const T *x, const T *w, const float *bias, int M, int N, int K) { \
    gemm_mma<DeepTile, T, false>(y, x, w, bias, M, N, K);                                                                     \
  }                                                                                                                           \
  extern "C" __global__ void cast_rows_##NAME(T *out, const float *x, long long n) { cast_rows<T>(out, x, n); }            \
  GEMM_SKINNY(T, NAME, 1) GEMM_SKINNY(T, NAME, 2) GEMM_SKINNY(T, NAME, 4)
// gemm_skinny<MT>: up to 16 MT rows.
#define GEMM_SKINNY(T, NAME, MT)                                                                                              \
  extern "C" __global__ void __launch_bounds__(256) gemm_skinny##MT##_##NAME(float *y, const T *x, const T *w, const float *bias, int M, int N, int K) { \
    gemm_skinny<T, MT>(y, x, w, bias, M, N, K);                                                                               \
  }
GEMM_MMA(bf16, bf16)
GEMM_MMA(f16, f16)

// Activations in bf16, weights MXFP4.
extern "C" __global__ void __launch_bounds__(256) gemm_mma_mxfp4(float *y, const bf16 *x, const uint8_t *w, const float *bias, int M, int N, int K) {
  gemm_mma<SquareTile, bf16, true>(y, x, w, bias, M, N, K);
}
