// y[M, N] = x[M, K] (f32) times w[N, K]^T (the checkpoint's dtype) plus bias[N]: the HF Linear layout.
// Few rows (decode): one warp per output column streams its weight row once (memory bound).
// Many rows (prefill): tensor-core tiles (WMMA) with x rounded to the weight's 16-bit type, f32 accumulation;
// f32 weights (small test models) use plain FMA tiles so they match the f32 reference.
#include <mma.h>
#include "common.cuh"
using namespace nvcuda;

// ---- decode: up to MAXM rows, one warp per output column ----
template <typename T, int MAXM>
__device__ void gemv(float *y, const float *x, const T *w, const float *bias, int M, int N, int K) {
  constexpr int VEC = 16 / sizeof(T); // weights per 16-byte load
  const int lane = threadIdx.x & 31;
  const int n = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (n >= N) return;
  const T *wr = w + (size_t)n * K;
  float acc[MAXM];
#pragma unroll
  for (int m = 0; m < MAXM; m++) acc[m] = 0.f;
  const bool vec = (K % VEC) == 0 && ((uintptr_t)w & 15) == 0 && ((uintptr_t)x & 15) == 0;
  int k0 = 0;
  if (vec) {
#pragma unroll 4
    for (int k = lane * VEC; k < K; k += 32 * VEC) {
      const uint4 raw = __ldg(reinterpret_cast<const uint4 *>(wr + k));
      const T *wv = reinterpret_cast<const T *>(&raw);
      float wf[VEC];
#pragma unroll
      for (int i = 0; i < VEC; i++) wf[i] = to_f32(wv[i]);
#pragma unroll
      for (int m = 0; m < MAXM; m++) {
        if (m < M) {
          const float4 *xv = reinterpret_cast<const float4 *>(x + (size_t)m * K + k);
          float s = 0.f;
#pragma unroll
          for (int i = 0; i < VEC / 4; i++) {
            const float4 xx = __ldg(xv + i);
            s += xx.x * wf[4 * i] + xx.y * wf[4 * i + 1] + xx.z * wf[4 * i + 2] + xx.w * wf[4 * i + 3];
          }
          acc[m] += s;
        }
      }
    }
    k0 = K; // the vector loop covered everything
  }
  for (int k = k0 + lane; k < K; k += 32) {
    const float wf = to_f32(wr[k]);
#pragma unroll
    for (int m = 0; m < MAXM; m++)
      if (m < M) acc[m] += x[(size_t)m * K + k] * wf;
  }
  const float b = bias ? bias[n] : 0.f;
#pragma unroll
  for (int m = 0; m < MAXM; m++) {
    const float s = warp_sum(acc[m]);
    if (lane == 0 && m < M) y[(size_t)m * N + n] = s + b;
  }
}

// ---- prefill: 128 x 128 tiles, 8 warps of 64 x 32, K in steps of 32 ----
constexpr int BM = 128, BN = 128, BK = 32, LDS = BK + 8;

template <typename T>
__device__ void gemm_tc(float *y, const float *x, const T *w, const float *bias, int M, int N, int K) {
  __shared__ __align__(32) T As[BM * LDS];
  __shared__ __align__(32) T Bs[BN * LDS];
  __shared__ __align__(32) float Cs[8][16 * 16];
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int wm = warp >> 2, wn = warp & 3;
  const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[4][2];
#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int j = 0; j < 2; j++) wmma::fill_fragment(acc[i][j], 0.f);
  for (int k0 = 0; k0 < K; k0 += BK) {
#pragma unroll
    for (int i = 0; i < (BM * BK) / 256; i++) {
      const int idx = tid + i * 256, r = idx / BK, c = idx % BK;
      const int gm = m0 + r, gk = k0 + c;
      As[r * LDS + c] = from_f32<T>(gm < M && gk < K ? x[(size_t)gm * K + gk] : 0.f);
      const int gn = n0 + r;
      Bs[r * LDS + c] = gn < N && gk < K ? w[(size_t)gn * K + gk] : from_f32<T>(0.f);
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < BK; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a[4];
      wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> b[2];
#pragma unroll
      for (int i = 0; i < 4; i++) wmma::load_matrix_sync(a[i], As + (wm * 64 + i * 16) * LDS + kk, LDS);
#pragma unroll
      for (int j = 0; j < 2; j++) wmma::load_matrix_sync(b[j], Bs + (wn * 32 + j * 16) * LDS + kk, LDS);
#pragma unroll
      for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 2; j++) wmma::mma_sync(acc[i][j], a[i], b[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; i++) {
#pragma unroll
    for (int j = 0; j < 2; j++) {
      wmma::store_matrix_sync(Cs[warp], acc[i][j], 16, wmma::mem_row_major);
      __syncwarp();
      for (int e = lane; e < 256; e += 32) {
        const int gm = m0 + wm * 64 + i * 16 + e / 16, gn = n0 + wn * 32 + j * 16 + e % 16;
        if (gm < M && gn < N) y[(size_t)gm * N + gn] = Cs[warp][e] + (bias ? bias[gn] : 0.f);
      }
      __syncwarp();
    }
  }
}

// ---- f32 weights: 64 x 64 tiles of FMAs, 4 x 4 outputs per thread ----
extern "C" __global__ void __launch_bounds__(256) gemm_simt_f32(float *y, const float *x, const float *w, const float *bias, int M, int N, int K) {
  __shared__ float As[16][64 + 4];
  __shared__ float Bs[16][64 + 4];
  const int tid = threadIdx.x, tr = tid / 16, tc = tid % 16;
  const int m0 = blockIdx.y * 64, n0 = blockIdx.x * 64;
  float acc[4][4] = {};
  for (int k0 = 0; k0 < K; k0 += 16) {
#pragma unroll
    for (int i = 0; i < 4; i++) {
      const int idx = tid + i * 256, r = idx / 16, c = idx % 16;
      As[c][r] = m0 + r < M && k0 + c < K ? x[(size_t)(m0 + r) * K + k0 + c] : 0.f;
      Bs[c][r] = n0 + r < N && k0 + c < K ? w[(size_t)(n0 + r) * K + k0 + c] : 0.f;
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < 16; k++) {
      float a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; i++) a[i] = As[k][tr * 4 + i], b[i] = Bs[k][tc * 4 + i];
#pragma unroll
      for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] += a[i] * b[j];
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int j = 0; j < 4; j++) {
      const int gm = m0 + tr * 4 + i, gn = n0 + tc * 4 + j;
      if (gm < M && gn < N) y[(size_t)gm * N + gn] = acc[i][j] + (bias ? bias[gn] : 0.f);
    }
}

#define GEMV(T, NAME, MAXM)                                                                                                   \
  extern "C" __global__ void __launch_bounds__(256) gemv##MAXM##_##NAME(float *y, const float *x, const T *w, const float *bias, int M, int N, int K) { \
    gemv<T, MAXM>(y, x, w, bias, M, N, K);                                                                                    \
  }
#define GEMVS(T, NAME) GEMV(T, NAME, 1) GEMV(T, NAME, 4) GEMV(T, NAME, 16)
FOR_WEIGHT_TYPES(GEMVS)

#define GEMM_TC(T, NAME)                                                                                                      \
  extern "C" __global__ void __launch_bounds__(256) gemm_tc_##NAME(float *y, const float *x, const T *w, const float *bias, int M, int N, int K) { \
    gemm_tc<T>(y, x, w, bias, M, N, K);                                                                                       \
  }
GEMM_TC(bf16, bf16)
GEMM_TC(f16, f16)
