// Causal attention over KV blocks that may live anywhere on the device (the engine passes a list of block pointers).
//
// seqs: 5 ints per sequence: first q row, q rows, position of the first q row, first block, block count.
// block_ptrs: K and V device pointers per block; block_pos: start position and valid length per block.
// A query at position p sees keys at positions p - window + 1 .. p (window 0 = all). Scores are scaled, then soft-capped.
//
// attn_simt: decode and any head_dim or KV dtype. One CTA per (key split, head, query row); partial results (unnormalized
//   output, max, sum) per split, merged by attn_merge_splits into the output and each row's log-sum-exp (flash-decoding).
// Prefill with 16-bit KV and head_dim 64/128/256 runs flash.cu instead.
#include "common.cuh"

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

// Output rows and log-sum-exps from the splits' partial results, plus each head's sink logit (null: none) in the
// denominator. One block per (row, head).
extern "C" __global__ void attn_merge_splits(float *out, float *lse, const float *part_o, const float *part_ml, const float *sinks, int heads,
                                             int row_heads, int head_dim, int splits) {
  const int rh = blockIdx.x;
  if (rh >= row_heads) return;
  const float *ml = part_ml + (size_t)rh * splits * 2;
  float M = sinks ? sinks[rh % heads] : -INFINITY;
  for (int s = 0; s < splits; s++) M = fmaxf(M, ml[2 * s]);
  float L = sinks ? expf(sinks[rh % heads] - M) : 0.f;
  for (int s = 0; s < splits; s++) L += M == -INFINITY ? 0.f : ml[2 * s + 1] * expf(ml[2 * s] - M);
  for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float o = 0.f;
    for (int s = 0; s < splits; s++)
      if (ml[2 * s] != -INFINITY) o += part_o[((size_t)rh * splits + s) * head_dim + d] * expf(ml[2 * s] - M);
    out[(size_t)rh * head_dim + d] = L > 0.f ? o / L : 0.f;
  }
  if (threadIdx.x == 0 && lse) lse[rh] = L > 0.f ? M + logf(L) : -INFINITY;
}

#define SIMT(T, NAME)                                                                                                         \
  extern "C" __global__ void __launch_bounds__(128) attn_simt_##NAME(float *part_o, float *part_ml, const float *q, const int *seqs, \
      int n_seqs, const unsigned long long *block_ptrs, const int *block_pos, int heads, int kv_heads, int head_dim, int kv_cols,     \
      float scale, int window, float softcap, int splits) {                                                                   \
    attn_simt<T>(part_o, part_ml, q, seqs, n_seqs, block_ptrs, block_pos, heads, kv_heads, head_dim, kv_cols, scale, window, softcap, splits); \
  }
FOR_WEIGHT_TYPES(SIMT)
