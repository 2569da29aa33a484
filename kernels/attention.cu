// Causal attention over KV blocks that may live anywhere on the device (the engine passes a list of block pointers).
//
// seqs: 5 ints per sequence: first q row, q rows, position of the first q row, first block, block count.
// block_ptrs: K and V device pointers per block; block_pos: start position and valid length per block.
// A query at position p sees keys at positions p - window + 1 .. p (window 0 = all). Scores are scaled, then soft-capped.
//
// attn_simt: any head_dim, any KV dtype. One CTA per (key split, head, query row); partial results (unnormalized output,
//   max, sum) per split, merged by attn_merge_splits into the output and each row's log-sum-exp (flash-decoding).
// attn_tc: prefill with tensor cores (WMMA) for head_dim 64/128/256 and 16-bit KV: 64 query rows per CTA, one warp per
//   16 rows, KV in tiles, online softmax (FlashAttention-1 style, output accumulated in shared memory).
#include <mma.h>
#include "common.cuh"
using namespace nvcuda;

struct SeqView {
  int q_row, q_rows, q_pos, block_begin, block_count;
};

__device__ __forceinline__ SeqView seq_at(const int *seqs, int s) {
  return {seqs[5 * s], seqs[5 * s + 1], seqs[5 * s + 2], seqs[5 * s + 3], seqs[5 * s + 4]};
}

__device__ __forceinline__ float cap(float s, float softcap) { return softcap > 0.f ? softcap * tanhf(s / softcap) : s; }

// ---------------- general kernel with key splits ----------------

constexpr int SIMT_WARPS = 4;
constexpr int MAX_DIMS_PER_LANE = 8; // head_dim <= 256

template <typename T>
__device__ void attn_simt(float *part_o, float *part_ml, const float *q, const int *seqs, int n_seqs, const unsigned long long *block_ptrs,
                          const int *block_pos, int heads, int kv_heads, int head_dim, int kv_cols, float scale, int window, float softcap,
                          int splits) {
  __shared__ float sm_m[SIMT_WARPS], sm_l[SIMT_WARPS];
  __shared__ float sm_o[SIMT_WARPS][MAX_DIMS_PER_LANE * 32];
  const int split = blockIdx.x, head = blockIdx.y, row = blockIdx.z;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int kvh = head / (heads / kv_heads);
  int s = 0;
  while (s < n_seqs && !(row >= seqs[5 * s] && row < seqs[5 * s] + seqs[5 * s + 1])) s++;
  float m = -INFINITY, l = 0.f, acc[MAX_DIMS_PER_LANE], qv[MAX_DIMS_PER_LANE];
#pragma unroll
  for (int j = 0; j < MAX_DIMS_PER_LANE; j++) {
    const int d = lane + 32 * j;
    acc[j] = 0.f;
    qv[j] = (s < n_seqs && d < head_dim) ? q[(size_t)row * heads * head_dim + head * head_dim + d] * scale : 0.f;
  }
  if (s < n_seqs) {
    const SeqView sv = seq_at(seqs, s);
    const int pos = sv.q_pos + row - sv.q_row;
    const int lo = window > 0 ? pos - window + 1 : INT_MIN;
    int total = 0;
    for (int b = 0; b < sv.block_count; b++) total += block_pos[2 * (sv.block_begin + b) + 1];
    const int per_split = (total + splits - 1) / splits;
    const int per_warp = (per_split + SIMT_WARPS - 1) / SIMT_WARPS;
    const int i0 = split * per_split + warp * per_warp;
    const int i1 = min(min(i0 + per_warp, (split + 1) * per_split), total);
    // Walk to the block holding key i0, then through keys i0 .. i1-1.
    int b = 0, before = 0;
    while (b < sv.block_count && before + block_pos[2 * (sv.block_begin + b) + 1] <= i0) before += block_pos[2 * (sv.block_begin + b++) + 1];
    for (int i = i0; i < i1 && b < sv.block_count;) {
      const int bi = sv.block_begin + b;
      const int start = block_pos[2 * bi], len = block_pos[2 * bi + 1];
      const T *kb = reinterpret_cast<const T *>(block_ptrs[2 * bi]) + kvh * head_dim;
      const T *vb = reinterpret_cast<const T *>(block_ptrs[2 * bi + 1]) + kvh * head_dim;
      const int jEnd = min(len, before + len > i1 ? i1 - before : len);
      for (int j = i - before; j < jEnd; j++) {
        const int kp = start + j;
        if (kp > pos || kp < lo) continue;
        float dot = 0.f;
#pragma unroll
        for (int t = 0; t < MAX_DIMS_PER_LANE; t++) {
          const int d = lane + 32 * t;
          if (d < head_dim) dot += qv[t] * to_f32(kb[(size_t)j * kv_cols + d]);
        }
        const float sc = cap(warp_sum(dot), softcap);
        const float m_new = fmaxf(m, sc);
        const float c = expf(m - m_new), p = expf(sc - m_new);
        l = l * c + p;
#pragma unroll
        for (int t = 0; t < MAX_DIMS_PER_LANE; t++) {
          const int d = lane + 32 * t;
          if (d < head_dim) acc[t] = acc[t] * c + p * to_f32(vb[(size_t)j * kv_cols + d]);
        }
        m = m_new;
      }
      i = before + jEnd;
      before += len;
      b++;
    }
  }
  // Merge the warps of this CTA.
  if (lane == 0) sm_m[warp] = m, sm_l[warp] = l;
#pragma unroll
  for (int t = 0; t < MAX_DIMS_PER_LANE; t++) sm_o[warp][lane + 32 * t] = acc[t];
  __syncthreads();
  if (warp != 0) return;
  float M = -INFINITY;
  for (int w = 0; w < SIMT_WARPS; w++) M = fmaxf(M, sm_m[w]);
  float L = 0.f, o[MAX_DIMS_PER_LANE] = {};
  for (int w = 0; w < SIMT_WARPS; w++) {
    const float f = M == -INFINITY ? 0.f : expf(sm_m[w] - M);
    L += sm_l[w] * f;
#pragma unroll
    for (int t = 0; t < MAX_DIMS_PER_LANE; t++) o[t] += sm_o[w][lane + 32 * t] * f;
  }
  const size_t slot = ((size_t)row * heads + head) * splits + split;
#pragma unroll
  for (int t = 0; t < MAX_DIMS_PER_LANE; t++) {
    const int d = lane + 32 * t;
    if (d < head_dim) part_o[slot * head_dim + d] = o[t];
  }
  if (lane == 0) part_ml[2 * slot] = M, part_ml[2 * slot + 1] = L;
}

// Output rows and log-sum-exps from the splits' partial results. One block per (row, head).
extern "C" __global__ void attn_merge_splits(float *out, float *lse, const float *part_o, const float *part_ml, int row_heads, int head_dim,
                                             int splits) {
  const int rh = blockIdx.x;
  if (rh >= row_heads) return;
  const float *ml = part_ml + (size_t)rh * splits * 2;
  float M = -INFINITY;
  for (int s = 0; s < splits; s++) M = fmaxf(M, ml[2 * s]);
  float L = 0.f;
  for (int s = 0; s < splits; s++) L += M == -INFINITY ? 0.f : ml[2 * s + 1] * expf(ml[2 * s] - M);
  for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float o = 0.f;
    for (int s = 0; s < splits; s++)
      if (ml[2 * s] != -INFINITY) o += part_o[((size_t)rh * splits + s) * head_dim + d] * expf(ml[2 * s] - M);
    out[(size_t)rh * head_dim + d] = L > 0.f ? o / L : 0.f;
  }
  if (threadIdx.x == 0 && lse) lse[rh] = L > 0.f ? M + logf(L) : -INFINITY;
}

// ---------------- prefill with tensor cores ----------------

// Shared memory layout of attn_tc; src/backend/cuda/kernels.ts mirrors SMEM to set the launch's dynamic size.
template <int HD> struct TcShape {
  static constexpr int BQ = 64, BKV = HD <= 128 ? 64 : 32;
  static constexpr int LDQ = HD + 8, LDS = BKV + 4, LDP = BKV + 8, LDO = HD + 4;
  static constexpr int round(int bytes) { return (bytes + 127) / 128 * 128; }
  static constexpr int Q_BYTES = round(BQ * LDQ * 2), KV_BYTES = round(BKV * LDQ * 2);
  static constexpr int S_BYTES = round(4 * 16 * LDS * 4), P_BYTES = round(4 * 16 * LDP * 2), O_BYTES = round(4 * 16 * LDO * 4);
  static constexpr int STAT_BYTES = round(2 * BQ * 4);
  static constexpr int SMEM = Q_BYTES + 2 * KV_BYTES + S_BYTES + P_BYTES + O_BYTES + STAT_BYTES;
};

template <typename T, int HD>
__device__ void attn_tc(float *out, float *lse, const float *q, const int *seqs, const unsigned long long *block_ptrs, const int *block_pos,
                        int heads, int kv_heads, int kv_cols, float scale, int window, float softcap) {
  using S = TcShape<HD>;
  constexpr int BQ = S::BQ, BKV = S::BKV, LDQ = S::LDQ, LDS = S::LDS, LDP = S::LDP, LDO = S::LDO;
  extern __shared__ __align__(128) unsigned char smem[];
  T *Qs = reinterpret_cast<T *>(smem);
  T *Ks = reinterpret_cast<T *>(smem + S::Q_BYTES);
  T *Vs = reinterpret_cast<T *>(smem + S::Q_BYTES + S::KV_BYTES);
  float *Ss = reinterpret_cast<float *>(smem + S::Q_BYTES + 2 * S::KV_BYTES);
  T *Ps = reinterpret_cast<T *>(smem + S::Q_BYTES + 2 * S::KV_BYTES + S::S_BYTES);
  float *Os = reinterpret_cast<float *>(smem + S::Q_BYTES + 2 * S::KV_BYTES + S::S_BYTES + S::P_BYTES);
  float *Ms = reinterpret_cast<float *>(smem + S::Q_BYTES + 2 * S::KV_BYTES + S::S_BYTES + S::P_BYTES + S::O_BYTES);
  float *Ls = Ms + BQ;

  const SeqView sv = seq_at(seqs, blockIdx.z);
  const int head = blockIdx.y, tile0 = blockIdx.x * BQ;
  if (tile0 >= sv.q_rows) return;
  const int rows = min(BQ, sv.q_rows - tile0);
  const int row0 = sv.q_row + tile0, pos0 = sv.q_pos + tile0;
  const int kvh = head / (heads / kv_heads);
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int q_stride = heads * HD;

  for (int i = tid; i < BQ * HD; i += blockDim.x) {
    const int r = i / HD, d = i % HD;
    Qs[r * LDQ + d] = from_f32<T>(r < rows ? q[(size_t)(row0 + r) * q_stride + head * HD + d] * scale : 0.f);
  }
  for (int i = tid; i < 4 * 16 * LDO; i += blockDim.x) Os[i] = 0.f;
  for (int i = tid; i < BQ; i += blockDim.x) Ms[i] = -INFINITY, Ls[i] = 0.f;

  const int max_pos = pos0 + rows - 1;
  const int min_pos = window > 0 ? pos0 - window + 1 : INT_MIN;
  float *Sw = Ss + warp * 16 * LDS;
  T *Pw = Ps + warp * 16 * LDP;
  float *Ow = Os + warp * 16 * LDO;
  const int r = lane >> 1, half = lane & 1; // softmax: two lanes per row
  const int qp = pos0 + warp * 16 + r;
  const bool warp_active = warp * 16 < rows;

  for (int b = 0; b < sv.block_count; b++) {
    const int bi = sv.block_begin + b;
    const int start = block_pos[2 * bi], len = block_pos[2 * bi + 1];
    if (start > max_pos) break;
    if (start + len - 1 < min_pos) continue;
    const T *kb = reinterpret_cast<const T *>(block_ptrs[2 * bi]) + kvh * HD;
    const T *vb = reinterpret_cast<const T *>(block_ptrs[2 * bi + 1]) + kvh * HD;
    for (int kt = 0; kt < len; kt += BKV) {
      if (start + kt > max_pos) break;
      if (start + kt + BKV - 1 < min_pos) continue;
      __syncthreads(); // the previous tile is no longer read
      constexpr int VEC = 8; // 16 bytes of 16-bit values
      for (int i = tid; i < BKV * HD / VEC; i += blockDim.x) {
        const int kr = i / (HD / VEC), c = (i % (HD / VEC)) * VEC;
        uint4 kvk = make_uint4(0, 0, 0, 0), kvv = make_uint4(0, 0, 0, 0);
        if (kt + kr < len) {
          kvk = *reinterpret_cast<const uint4 *>(kb + (size_t)(kt + kr) * kv_cols + c);
          kvv = *reinterpret_cast<const uint4 *>(vb + (size_t)(kt + kr) * kv_cols + c);
        }
        *reinterpret_cast<uint4 *>(Ks + kr * LDQ + c) = kvk;
        *reinterpret_cast<uint4 *>(Vs + kr * LDQ + c) = kvv;
      }
      __syncthreads();
      if (!warp_active) continue;
      // S = Q K^T for this warp's 16 rows.
#pragma unroll
      for (int n = 0; n < BKV / 16; n++) {
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> sacc;
        wmma::fill_fragment(sacc, 0.f);
#pragma unroll
        for (int k = 0; k < HD / 16; k++) {
          wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
          wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> bk;
          wmma::load_matrix_sync(a, Qs + warp * 16 * LDQ + k * 16, LDQ);
          wmma::load_matrix_sync(bk, Ks + n * 16 * LDQ + k * 16, LDQ);
          wmma::mma_sync(sacc, a, bk, sacc);
        }
        wmma::store_matrix_sync(Sw + n * 16, sacc, LDS, wmma::mem_row_major);
      }
      __syncwarp();
      // Online softmax, two lanes per row, each over half the tile's keys.
      float mx = -INFINITY;
      constexpr int HALF = BKV / 2;
      for (int c = half * HALF; c < (half + 1) * HALF; c++) {
        const int kp = start + kt + c;
        float s = cap(Sw[r * LDS + c], softcap);
        if (kt + c >= len || kp > qp || kp < qp - (window > 0 ? window : INT_MAX) + 1) s = -INFINITY;
        Sw[r * LDS + c] = s;
        mx = fmaxf(mx, s);
      }
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      const float m_old = Ms[warp * 16 + r];
      const float m_new = fmaxf(m_old, mx);
      const float rescale = m_new == -INFINITY ? 1.f : expf(m_old - m_new);
      float sum = 0.f;
      for (int c = half * HALF; c < (half + 1) * HALF; c++) {
        const float p = m_new == -INFINITY ? 0.f : expf(Sw[r * LDS + c] - m_new);
        Pw[r * LDP + c] = from_f32<T>(p);
        sum += p;
      }
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      for (int d = half * (HD / 2); d < (half + 1) * (HD / 2); d++) Ow[r * LDO + d] *= rescale;
      __syncwarp();
      if (half == 0) Ms[warp * 16 + r] = m_new, Ls[warp * 16 + r] = Ls[warp * 16 + r] * rescale + sum;
      // O += P V.
#pragma unroll
      for (int n = 0; n < HD / 16; n++) {
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> oacc;
        wmma::load_matrix_sync(oacc, Ow + n * 16, LDO, wmma::mem_row_major);
#pragma unroll
        for (int k = 0; k < BKV / 16; k++) {
          wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> p;
          wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> v;
          wmma::load_matrix_sync(p, Pw + k * 16, LDP);
          wmma::load_matrix_sync(v, Vs + k * 16 * LDQ + n * 16, LDQ);
          wmma::mma_sync(oacc, p, v, oacc);
        }
        wmma::store_matrix_sync(Ow + n * 16, oacc, LDO, wmma::mem_row_major);
      }
      __syncwarp();
    }
  }
  if (!warp_active) return;
  const int rr = warp * 16 + r;
  if (rr >= rows) return;
  const float L = Ls[rr];
  for (int d = half * (HD / 2); d < (half + 1) * (HD / 2); d++) out[(size_t)(row0 + rr) * q_stride + head * HD + d] = L > 0.f ? Ow[r * LDO + d] / L : 0.f;
  if (half == 0 && lse) lse[(size_t)(row0 + rr) * heads + head] = L > 0.f ? Ms[rr] + logf(L) : -INFINITY;
}

#define SIMT(T, NAME)                                                                                                         \
  extern "C" __global__ void __launch_bounds__(128) attn_simt_##NAME(float *part_o, float *part_ml, const float *q, const int *seqs, \
      int n_seqs, const unsigned long long *block_ptrs, const int *block_pos, int heads, int kv_heads, int head_dim, int kv_cols,     \
      float scale, int window, float softcap, int splits) {                                                                   \
    attn_simt<T>(part_o, part_ml, q, seqs, n_seqs, block_ptrs, block_pos, heads, kv_heads, head_dim, kv_cols, scale, window, softcap, splits); \
  }
FOR_WEIGHT_TYPES(SIMT)

#define TC(T, NAME, HD)                                                                                                       \
  extern "C" __global__ void __launch_bounds__(128) attn_tc_##NAME##_##HD(float *out, float *lse, const float *q, const int *seqs,    \
      const unsigned long long *block_ptrs, const int *block_pos, int heads, int kv_heads, int kv_cols, float scale, int window,  \
      float softcap) {                                                                                                        \
    attn_tc<T, HD>(out, lse, q, seqs, block_ptrs, block_pos, heads, kv_heads, kv_cols, scale, window, softcap);                \
  }
TC(bf16, bf16, 64) TC(bf16, bf16, 128) TC(bf16, bf16, 256)
TC(f16, f16, 64) TC(f16, f16, 128) TC(f16, f16, 256)
