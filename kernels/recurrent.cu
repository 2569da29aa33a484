// Recurrent layers (Qwen3-Next's linear attention): the depthwise causal conv with its carried inputs, and the gated
// delta rule, each sequence of a batch walking its rows in order over its own state.
#include "common.cuh"

// One thread per (channel, sequence): the last K - 1 inputs ride in registers; state [channels, K - 1] is read first
// and written back last. seqs: (row, rows) per sequence; states: a device pointer per sequence.
template <typename T, int K>
__device__ void causal_conv1d(float *out, const float *x, const T *w, const int *seqs, const unsigned long long *states, int channels) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x, s = blockIdx.y;
  if (c >= channels) return;
  const int row0 = seqs[2 * s], rows = seqs[2 * s + 1];
  float *state = reinterpret_cast<float *>(states[s]) + (size_t)c * (K - 1);
  float hist[K], wk[K];
#pragma unroll
  for (int j = 0; j < K; j++) wk[j] = to_f32(w[(size_t)c * K + j]);
#pragma unroll
  for (int j = 0; j < K - 1; j++) hist[j] = state[j];
  for (int r = 0; r < rows; r++) {
    hist[K - 1] = x[(size_t)(row0 + r) * channels + c];
    float acc = 0.f;
#pragma unroll
    for (int j = 0; j < K; j++) acc += wk[j] * hist[j];
    out[(size_t)(row0 + r) * channels + c] = acc / (1.f + expf(-acc));
#pragma unroll
    for (int j = 0; j < K - 1; j++) hist[j] = hist[j + 1];
  }
#pragma unroll
  for (int j = 0; j < K - 1; j++) state[j] = hist[j];
}

// One block per (value head, sequence), one thread per value column j holding S[:, j] (KD floats) in registers.
// Per row: q and k of the head's key head are L2-normalized into shared memory, then each thread decays its column,
// reads S^T k, applies the delta and writes (S^T q)_j.
template <int KD>
__device__ void gated_delta_rule(float *out, const float *qkv, const float *a, const float *b, const float *a_log, const float *dt_bias,
                                 const int *seqs, const unsigned long long *states, int k_heads, int v_heads, int v_dim) {
  __shared__ float q[KD], k[KD], red[2][32], scalars[2];
  const int h = blockIdx.x, s = blockIdx.y, j = threadIdx.x, lane = j & 31, warp = j >> 5, warps = (blockDim.x + 31) >> 5;
  const int kh = h / (v_heads / k_heads), cols = 2 * k_heads * KD + v_heads * v_dim;
  const int row0 = seqs[2 * s], rows = seqs[2 * s + 1];
  float *state = reinterpret_cast<float *>(states[s]) + (size_t)h * KD * v_dim;
  float S[KD];
  if (j < v_dim) {
#pragma unroll
    for (int i = 0; i < KD; i++) S[i] = state[(size_t)i * v_dim + j];
  }
  for (int r = 0; r < rows; r++) {
    const float *x = qkv + (size_t)(row0 + r) * cols;
    float qq = 0.f, kk = 0.f;
    for (int i = j; i < KD; i += blockDim.x) {
      q[i] = x[kh * KD + i];
      k[i] = x[k_heads * KD + kh * KD + i];
      qq += q[i] * q[i];
      kk += k[i] * k[i];
    }
    qq = warp_sum(qq), kk = warp_sum(kk);
    if (lane == 0) red[0][warp] = qq, red[1][warp] = kk;
    __syncthreads();
    if (j == 0) {
      float sq = 0.f, sk = 0.f;
      for (int w = 0; w < warps; w++) sq += red[0][w], sk += red[1][w];
      const float t = a[(size_t)(row0 + r) * v_heads + h] + dt_bias[h];
      const float softplus = t > 20.f ? t : log1pf(expf(t));
      scalars[0] = rsqrtf(sq + 1e-6f) * rsqrtf((float)KD); // q's norm and scale
      scalars[1] = rsqrtf(sk + 1e-6f);
      red[0][0] = expf(-expf(a_log[h]) * softplus);                 // decay
      red[1][0] = 1.f / (1.f + expf(-b[(size_t)(row0 + r) * v_heads + h])); // beta
    }
    __syncthreads();
    const float qs = scalars[0], ks = scalars[1], decay = red[0][0], beta = red[1][0];
    if (j < v_dim) {
      float kv = 0.f;
#pragma unroll
      for (int i = 0; i < KD; i++) {
        S[i] *= decay;
        kv += S[i] * k[i];
      }
      const float delta = (x[2 * k_heads * KD + h * v_dim + j] - kv * ks) * beta;
      float o = 0.f;
#pragma unroll
      for (int i = 0; i < KD; i++) {
        S[i] += k[i] * ks * delta;
        o += S[i] * q[i];
      }
      out[((size_t)(row0 + r) * v_heads + h) * v_dim + j] = o * qs;
    }
    __syncthreads(); // q, k and the scalars are rewritten by the next row
  }
  if (j < v_dim) {
#pragma unroll
    for (int i = 0; i < KD; i++) state[(size_t)i * v_dim + j] = S[i];
  }
}

#define CONV(T, NAME)                                                                                                         \
  extern "C" __global__ void causal_conv1d_4_##NAME(float *out, const float *x, const T *w, const int *seqs, const unsigned long long *states, int channels) { \
    causal_conv1d<T, 4>(out, x, w, seqs, states, channels);                                                                   \
  }
FOR_WEIGHT_TYPES(CONV)

#define DELTA(KD)                                                                                                             \
  extern "C" __global__ void __launch_bounds__(256) gated_delta_rule_##KD(float *out, const float *qkv, const float *a, const float *b, \
      const float *a_log, const float *dt_bias, const int *seqs, const unsigned long long *states, int k_heads, int v_heads, int v_dim) { \
    gated_delta_rule<KD>(out, qkv, a, b, a_log, dt_bias, seqs, states, k_heads, v_heads, v_dim);                              \
  }
DELTA(16) DELTA(32) DELTA(64) DELTA(128)
