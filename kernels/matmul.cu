// y[M, N] = x[M, K] (f32) times w[N, K]^T (the checkpoint's dtype) plus bias[N]: the HF Linear layout.
// Few rows (decode): one warp per output column streams its weight row once (memory bound).
// Many rows: gemm.cu's tensor-core GEMM, or the exact FMA tiles below for f32 weights and odd shapes.
#include "common.cuh"

// ---- decode: up to MAXM rows; a warp streams the weight rows of COLS output columns once (memory bound) ----
// With several rows, each activation load serves COLS weight rows: one column a warp re-read every row of x per weight
// (64 bytes of x per 2 of weights at 16 rows) and ran at a tenth of the memory's speed.
template <typename T, int MAXM, int COLS>
__device__ void gemv(float *y, const float *x, const T *w, const float *bias, int M, int N, int K) {
  constexpr int VEC = 16 / sizeof(T); // weights per 16-byte load
  const int lane = threadIdx.x & 31;
  const int n0 = (blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5)) * COLS;
  if (n0 >= N) return;
  const int cols = min(COLS, N - n0);
  float acc[COLS][MAXM];
#pragma unroll
  for (int c = 0; c < COLS; c++)
#pragma unroll
    for (int m = 0; m < MAXM; m++) acc[c][m] = 0.f;
  const bool vec = (K % VEC) == 0 && ((uintptr_t)w & 15) == 0 && ((uintptr_t)x & 15) == 0;
  int k0 = 0;
  if (vec) {
#pragma unroll 2
    for (int k = lane * VEC; k < K; k += 32 * VEC) {
      float wf[COLS][VEC];
#pragma unroll
      for (int c = 0; c < COLS; c++) {
        const uint4 raw = c < cols ? __ldg(reinterpret_cast<const uint4 *>(w + (size_t)(n0 + c) * K + k)) : make_uint4(0, 0, 0, 0);
        const T *wv = reinterpret_cast<const T *>(&raw);
#pragma unroll
        for (int i = 0; i < VEC; i++) wf[c][i] = to_f32(wv[i]);
      }
#pragma unroll
      for (int m = 0; m < MAXM; m++) {
        if (m < M) {
          const float4 *xv = reinterpret_cast<const float4 *>(x + (size_t)m * K + k);
          float4 xx[VEC / 4];
#pragma unroll
          for (int i = 0; i < VEC / 4; i++) xx[i] = __ldg(xv + i);
#pragma unroll
          for (int c = 0; c < COLS; c++) {
            float s = 0.f;
#pragma unroll
            for (int i = 0; i < VEC / 4; i++) s += xx[i].x * wf[c][4 * i] + xx[i].y * wf[c][4 * i + 1] + xx[i].z * wf[c][4 * i + 2] + xx[i].w * wf[c][4 * i + 3];
            acc[c][m] += s;
          }
        }
      }
    }
    k0 = K; // the vector loop covered everything
  }
  for (int k = k0 + lane; k < K; k += 32) {
#pragma unroll
    for (int c = 0; c < COLS; c++) {
      const float wf = c < cols ? to_f32(w[(size_t)(n0 + c) * K + k]) : 0.f;
#pragma unroll
      for (int m = 0; m < MAXM; m++)
        if (m < M) acc[c][m] += x[(size_t)m * K + k] * wf;
    }
  }
#pragma unroll
  for (int c = 0; c < COLS; c++) {
    const float b = bias && c < cols ? bias[n0 + c] : 0.f;
#pragma unroll
    for (int m = 0; m < MAXM; m++) {
      const float s = warp_sum(acc[c][m]);
      if (lane == 0 && m < M && c < cols) y[(size_t)m * N + n0 + c] = s + b;
    }
  }
}

// ---- decode with MXFP4 weights: one warp per output row, each lane a group of 32 weights (16 bytes and a scale) ----
template <int MAXM>
__device__ void gemv_mxfp4(float *y, const float *x, const uint8_t *w, const float *bias, int M, int N, int K) {
  const int lane = threadIdx.x & 31;
  const int n = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (n >= N) return;
  const int groups = K / 32;
  const uint8_t *packed = w + (size_t)n * (K / 2);
  const uint8_t *scales = w + (size_t)N * (K / 2) + (size_t)n * groups;
  float acc[MAXM];
#pragma unroll
  for (int m = 0; m < MAXM; m++) acc[m] = 0.f;
  for (int g = lane; g < groups; g += 32) {
    const uint4 raw = __ldg(reinterpret_cast<const uint4 *>(packed + g * 16));
    const float scale = e8m0_scale(scales[g]);
    const uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
    float wf[32];
#pragma unroll
    for (int i = 0; i < 16; i++) {
      const uint32_t b = (words[i / 4] >> (8 * (i % 4))) & 0xff;
      wf[2 * i] = fp4_value(b & 15) * scale;
      wf[2 * i + 1] = fp4_value(b >> 4) * scale;
    }
#pragma unroll
    for (int m = 0; m < MAXM; m++) {
      if (m < M) {
        const float4 *xv = reinterpret_cast<const float4 *>(x + (size_t)m * K + g * 32);
        float s = 0.f;
#pragma unroll
        for (int i = 0; i < 8; i++) {
          const float4 xx = __ldg(xv + i);
          s += xx.x * wf[4 * i] + xx.y * wf[4 * i + 1] + xx.z * wf[4 * i + 2] + xx.w * wf[4 * i + 3];
        }
        acc[m] += s;
      }
    }
  }
  const float b = bias ? bias[n] : 0.f;
#pragma unroll
  for (int m = 0; m < MAXM; m++) {
    const float s = warp_sum(acc[m]);
    if (lane == 0 && m < M) y[(size_t)m * N + n] = s + b;
  }
}

// ---- many rows, exact f32 math: f32 weights (test models) and shapes the tensor-core GEMM cannot take (K % 8 != 0) ----
// 64 x 64 tiles of FMAs, 4 x 4 outputs per thread.
template <typename T>
__device__ void gemm_simt(float *y, const float *x, const T *w, const float *bias, int M, int N, int K) {
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
      Bs[c][r] = n0 + r < N && k0 + c < K ? to_f32(w[(size_t)(n0 + r) * K + k0 + c]) : 0.f;
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

// Output columns a warp takes (kernels.ts mirrors it): one for a single row, four for more.
__host__ __device__ constexpr int gemv_cols(int maxm) { return maxm == 1 ? 1 : 4; }
#define GEMV(T, NAME, MAXM)                                                                                                   \
  extern "C" __global__ void __launch_bounds__(256) gemv##MAXM##_##NAME(float *y, const float *x, const T *w, const float *bias, int M, int N, int K) { \
    gemv<T, MAXM, gemv_cols(MAXM)>(y, x, w, bias, M, N, K);                                                                   \
  }
#define GEMVS(T, NAME) GEMV(T, NAME, 1) GEMV(T, NAME, 4) GEMV(T, NAME, 16)
FOR_WEIGHT_TYPES(GEMVS)

#define GEMV_MXFP4(MAXM)                                                                                                      \
  extern "C" __global__ void __launch_bounds__(256) gemv##MAXM##_mxfp4(float *y, const float *x, const uint8_t *w, const float *bias, int M, int N, int K) { \
    gemv_mxfp4<MAXM>(y, x, w, bias, M, N, K);                                                                                 \
  }
GEMV_MXFP4(1) GEMV_MXFP4(4) GEMV_MXFP4(16)

#define GEMM_SIMT(T, NAME)                                                                                                    \
  extern "C" __global__ void __launch_bounds__(256) gemm_simt_##NAME(float *y, const float *x, const T *w, const float *bias, int M, int N, int K) { \
    gemm_simt<T>(y, x, w, bias, M, N, K);                                                                                     \
  }
FOR_WEIGHT_TYPES(GEMM_SIMT)
