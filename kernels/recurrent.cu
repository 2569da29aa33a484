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

// One block per (value head, sequence) (grid x and z), one thread per value column j holding S[:, j] (KD floats) in registers.
// Per row: q and k of the head's key head are L2-normalized into shared memory, then each thread decays its column,
// reads S^T k, applies the delta and writes (S^T q)_j.
template <int KD>
__device__ void gated_delta_rule(float *out, const float *qkv, const float *a, const float *b, const float *a_log, const float *dt_bias,
                                 const int *seqs, const unsigned long long *states, int k_heads, int v_heads, int v_dim) {
  __shared__ float q[KD], k[KD], red[2][32], scalars[2];
  const int h = blockIdx.x, s = blockIdx.z, j = threadIdx.x, lane = j & 31, warp = j >> 5, warps = (blockDim.x + 31) >> 5;
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

// The same rule in chunks of DC rows, for prefill. With G_t the running sum of a chunk's log-decays and S0 the state
// before it:   u_t   = beta_t (v_t - e^G_t S0^T k_t) - sum_{s<t} beta_t e^(G_t - G_s) (k_t . k_s) u_s   (forward substitution)
//              out_t = e^G_t S0^T q_t + sum_{s<=t} e^(G_t - G_s) (q_t . k_s) u_s
//              S     = e^G_last S0 + sum_t e^(G_last - G_t) k_t u_t^T
// Value columns evolve independently, so a block of 8 warps takes DVB of them: grid (value heads, column blocks,
// sequences). Lanes index columns (or the key row s), warps rows; rows of q and k are padded to an odd stride.
constexpr int DC = 32, DVB = 32;

template <int KD>
__device__ void gated_delta_chunked(float *out, const float *qkv, const float *a, const float *b, const float *a_log, const float *dt_bias,
                                    const int *seqs, const unsigned long long *states, int k_heads, int v_heads, int v_dim) {
  constexpr int QLD = KD + 1, ALD = DC + 1;
  extern __shared__ float smem[];
  float *qs = smem, *ks = qs + DC * QLD;  // [DC][QLD]: normalized q (times 1/sqrt(KD)) and k
  float *S = ks + DC * QLD;               // [KD][DVB]: this block's columns of the state
  float *A = S + KD * DVB;                // [DC][ALD]: beta_t e^(G_t - G_s) k_t . k_s for s < t
  float *QK = A + DC * ALD;               // [DC][ALD]: e^(G_t - G_s) q_t . k_s for s <= t
  float *U = QK + DC * ALD;               // [DC][DVB]: r_t, then u_t
  float *G = U + DC * DVB, *beta = G + DC, *eG = beta + DC, *toLast = eG + DC;
  const int h = blockIdx.x, s = blockIdx.z, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int j = blockIdx.y * DVB + lane, kh = h / (v_heads / k_heads), cols = 2 * k_heads * KD + v_heads * v_dim;
  const bool jin = j < v_dim;
  const int row0 = seqs[2 * s], rows = seqs[2 * s + 1];
  float *state = reinterpret_cast<float *>(states[s]) + (size_t)h * KD * v_dim;
  for (int i = warp; i < KD; i += 8) S[i * DVB + lane] = jin ? state[(size_t)i * v_dim + j] : 0.f;
  const float a_scale = expf(a_log[h]);

  for (int c0 = 0; c0 < rows; c0 += DC) {
    const int n = min(DC, rows - c0);
    for (int t = warp; t < DC; t += 8) {
      float *qr = qs + t * QLD, *kr = ks + t * QLD;
      if (t < n) {
        const float *x = qkv + (size_t)(row0 + c0 + t) * cols;
        float qq = 0.f, kk = 0.f;
        for (int i = lane; i < KD; i += 32) {
          const float qv = x[kh * KD + i], kv = x[k_heads * KD + kh * KD + i];
          qr[i] = qv, kr[i] = kv, qq += qv * qv, kk += kv * kv;
        }
        const float qscale = rsqrtf(warp_sum(qq) + 1e-6f) * rsqrtf((float)KD), kscale = rsqrtf(warp_sum(kk) + 1e-6f);
        for (int i = lane; i < KD; i += 32) qr[i] *= qscale, kr[i] *= kscale;
        if (lane == 0) {
          const size_t at = (size_t)(row0 + c0 + t) * v_heads + h;
          const float z = a[at] + dt_bias[h];
          G[t] = -a_scale * (z > 20.f ? z : log1pf(expf(z)));
          beta[t] = 1.f / (1.f + expf(-b[at]));
        }
      } else {
        for (int i = lane; i < KD; i += 32) qr[i] = 0.f, kr[i] = 0.f;
        if (lane == 0) G[t] = 0.f, beta[t] = 0.f;
      }
    }
    __syncthreads();
    if (warp == 0) {
      const float g = warp_inclusive_sum(G[lane]);
      const float last = __shfl_sync(0xffffffffu, g, n - 1);
      G[lane] = g, eG[lane] = expf(g), toLast[lane] = expf(last - g);
    }
    __syncthreads();

    for (int t = warp; t < DC; t += 8) {
      float kk = 0.f, qk = 0.f;
      if (lane <= t) {
        for (int i = 0; i < KD; i++) {
          const float kv = ks[lane * QLD + i];
          kk += ks[t * QLD + i] * kv, qk += qs[t * QLD + i] * kv;
        }
      }
      const float e = lane <= t ? expf(G[t] - G[lane]) : 0.f;
      A[t * ALD + lane] = lane < t ? beta[t] * e * kk : 0.f;
      QK[t * ALD + lane] = e * qk;
    }
    float inter[DC / 8]; // e^G_t S0^T q_t of this thread's rows t = warp + 8 m
#pragma unroll
    for (int m = 0; m < DC / 8; m++) {
      const int t = warp + 8 * m;
      float sk = 0.f, sq = 0.f;
      for (int i = 0; i < KD; i++) {
        const float sv = S[i * DVB + lane];
        sk += ks[t * QLD + i] * sv, sq += qs[t * QLD + i] * sv;
      }
      const float v = t < n && jin ? qkv[(size_t)(row0 + c0 + t) * cols + 2 * k_heads * KD + h * v_dim + j] : 0.f;
      U[t * DVB + lane] = beta[t] * (v - eG[t] * sk);
      inter[m] = eG[t] * sq;
    }
    __syncthreads();
    if (warp == 0) { // a column's u_t needs only that column's earlier rows: one thread walks it, no barriers
      for (int t = 1; t < n; t++) {
        float u = U[t * DVB + lane];
        for (int r = 0; r < t; r++) u -= A[t * ALD + r] * U[r * DVB + lane];
        U[t * DVB + lane] = u;
      }
    }
    __syncthreads();

#pragma unroll
    for (int m = 0; m < DC / 8; m++) {
      const int t = warp + 8 * m;
      if (t >= n || !jin) continue;
      float o = inter[m];
      for (int r = 0; r <= t; r++) o += QK[t * ALD + r] * U[r * DVB + lane];
      out[((size_t)(row0 + c0 + t) * v_heads + h) * v_dim + j] = o;
    }
    for (int i = warp; i < KD; i += 8) {
      float acc = eG[n - 1] * S[i * DVB + lane];
      for (int t = 0; t < n; t++) acc += toLast[t] * ks[t * QLD + i] * U[t * DVB + lane];
      S[i * DVB + lane] = acc;
    }
    __syncthreads(); // the next chunk rewrites q, k, U and the row scalars
  }
  if (jin)
    for (int i = warp; i < KD; i += 8) state[(size_t)i * v_dim + j] = S[i * DVB + lane];
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
  }                                                                                                                           \
  extern "C" __global__ void __launch_bounds__(256) gated_delta_chunked_##KD(float *out, const float *qkv, const float *a, const float *b, \
      const float *a_log, const float *dt_bias, const int *seqs, const unsigned long long *states, int k_heads, int v_heads, int v_dim) { \
    gated_delta_chunked<KD>(out, qkv, a, b, a_log, dt_bias, seqs, states, k_heads, v_heads, v_dim);                           \
  }
DELTA(16) DELTA(32) DELTA(64) DELTA(128)
