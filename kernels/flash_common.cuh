// What both prefill attention kernels share (flash.cu on mma.sync, flash_sm90.cu on wgmma): the walk over a sequence's
// KV tiles, the online softmax of one 16-row m-tile's scores, and the store of its output rows. Scores and outputs are
// in the m16n8 accumulator layout both MMAs give: s[ni][e] is row (lane / 4) + 8 (e / 2) of the m-tile and column
// 8 ni + 2 (lane % 4) + e % 2, so a row's values live in the 4 threads of a quad.
#pragma once
#include "mma.cuh"

constexpr float LOG2E = 1.4426950408889634f;

// 2^x on the special function unit; results below 2^-126 flush to zero (a probability that small adds nothing).
__device__ __forceinline__ float exp2_ftz(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// The KV tiles of BKV keys a CTA visits, in order, as (block, offset): a tile is skipped when every key is after the
// CTA's last query or before its window.
template <int BKV> struct KvTiles {
  const int *block_pos;
  int begin, count, max_pos, min_pos;

  __device__ __forceinline__ int start(int b) const { return block_pos[2 * (begin + b)]; }
  __device__ __forceinline__ int length(int b) const { return block_pos[2 * (begin + b) + 1]; }
  // From (b, k) to the next tile to visit; b == count when there is none.
  __device__ __forceinline__ void advance(int &b, int &k) const {
    for (;;) {
      k += BKV;
      while (b < count && k >= length(b)) b++, k = 0;
      if (b >= count) return;
      if (start(b) + k > max_pos) { b = count; return; }
      if (start(b) + k + BKV - 1 >= min_pos) return;
    }
  }
};

// Runs body(stage, start, valid) on each KV tile in turn (keys start.., `valid` of them present) while load(stage, b, k)
// brings the next one into the other of two shared-memory stages. TENSOR_CORES_READ_SMEM: wgmma reads the tiles, so
// each thread's copies are made visible to the async proxy first.
template <bool TENSOR_CORES_READ_SMEM, int BKV, typename Load, typename Body>
__device__ __forceinline__ void for_each_kv_tile(const KvTiles<BKV> &tiles, Load load, Body body) {
  int cb = 0, ck = -BKV, stage = 0;
  tiles.advance(cb, ck);
  if (cb < tiles.count) load(0, cb, ck);
  cp_async_commit();
  while (cb < tiles.count) {
    int nb = cb, nk = ck;
    tiles.advance(nb, nk);
    if (nb < tiles.count) load(stage ^ 1, nb, nk); // the next tile streams in while this one computes
    cp_async_commit();
    cp_async_wait<1>();
    if constexpr (TENSOR_CORES_READ_SMEM) asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
    __syncthreads();
    body(stage, tiles.start(cb) + ck, tiles.length(cb) - ck);
    __syncthreads(); // everyone is done with this stage before it is loaded again
    stage ^= 1;
    cb = nb, ck = nk;
  }
  cp_async_wait<0>();
}

// One m-tile's scores of a KV tile (keys start .. start + 8 NI - 1, `valid` of them present; queries from tile_pos) to
// probabilities, updating each row's running max m and sum l; rescale gets what the row's output is multiplied by.
// Most tiles are wholly visible to every row (before the diagonal, inside the window): no mask there.
template <int NI>
__device__ __forceinline__ void softmax_tile(float (&s)[NI][4], float (&m)[2], float (&l)[2], float (&rescale)[2], int tile_pos, int start, int valid,
                                             int window, float softcap) {
  const int lane = threadIdx.x & 31;
  const bool visible = valid >= 8 * NI && start + 8 * NI - 1 <= tile_pos && (window <= 0 || start > tile_pos + 15 - window);
  if (softcap > 0.f) {
#pragma unroll
    for (int ni = 0; ni < NI; ni++)
#pragma unroll
      for (int e = 0; e < 4; e++) s[ni][e] = softcap * tanhf(s[ni][e] / softcap);
  }
  if (!visible) {
#pragma unroll
    for (int ni = 0; ni < NI; ni++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int c = ni * 8 + (lane & 3) * 2 + (e & 1), kp = start + c, qpos = tile_pos + (lane >> 2) + 8 * (e >> 1);
        if (c >= valid || kp > qpos || (window > 0 && kp <= qpos - window)) s[ni][e] = -INFINITY;
      }
  }
  float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
  for (int ni = 0; ni < NI; ni++)
#pragma unroll
    for (int e = 0; e < 4; e++) mx[e >> 1] = fmaxf(mx[e >> 1], s[ni][e]);
  float mlog[2];
#pragma unroll
  for (int h = 0; h < 2; h++) {
    mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 1));
    mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 2));
    const float mn = fmaxf(m[h], mx[h]);
    rescale[h] = mn == -INFINITY ? 1.f : exp2_ftz((m[h] - mn) * LOG2E);
    m[h] = mn;
    mlog[h] = mn == -INFINITY ? 0.f : mn * LOG2E; // p = 2^(s log2 e - m log2 e): one FMA and one ex2 a score
    l[h] *= rescale[h];
  }
#pragma unroll
  for (int ni = 0; ni < NI; ni++)
#pragma unroll
    for (int e = 0; e < 4; e++) {
      const int h = e >> 1;
      const float p = exp2_ftz(fmaf(s[ni][e], LOG2E, -mlog[h])); // a masked score (-inf) gives 0
      s[ni][e] = p;
      l[h] += p;
    }
}

// The output rows times their rescale; once the maxima settle, most tiles change none of a warp's rows.
template <int ND> __device__ __forceinline__ void rescale_rows(float (&o)[ND][4], const float (&rescale)[2]) {
  if (__any_sync(0xffffffffu, rescale[0] != 1.f || rescale[1] != 1.f))
#pragma unroll
    for (int nd = 0; nd < ND; nd++) o[nd][0] *= rescale[0], o[nd][1] *= rescale[0], o[nd][2] *= rescale[1], o[nd][3] *= rescale[1];
}

// One m-tile's rows (first row r0 of the CTA's `rows`, which start at global row row0) normalized into out, and their
// log-sum-exps into lse; a sink joins the denominator only.
template <int HD>
__device__ __forceinline__ void store_rows(float *out, float *lse, const float (&o)[HD / 8][4], float (&m)[2], float (&l)[2], const float *sinks, int head,
                                           int heads, int r0, int rows, int row0) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int h = 0; h < 2; h++) {
    l[h] += __shfl_xor_sync(0xffffffffu, l[h], 1);
    l[h] += __shfl_xor_sync(0xffffffffu, l[h], 2);
    float keep = 1.f;
    if (sinks) {
      const float s = sinks[head], mn = fmaxf(m[h], s);
      keep = m[h] == -INFINITY ? 0.f : __expf(m[h] - mn);
      l[h] = l[h] * keep + __expf(s - mn);
      m[h] = mn;
    }
    const int r = r0 + (lane >> 2) + h * 8;
    if (r >= rows) continue;
    float *dst = out + (size_t)(row0 + r) * heads * HD + head * HD;
    const float inv = l[h] > 0.f ? keep / l[h] : 0.f;
#pragma unroll
    for (int nd = 0; nd < HD / 8; nd++) {
      const int d = nd * 8 + (lane & 3) * 2;
      *reinterpret_cast<float2 *>(dst + d) = make_float2(o[nd][2 * h] * inv, o[nd][2 * h + 1] * inv);
    }
    if (lse && (lane & 3) == 0) lse[(size_t)(row0 + r) * heads + head] = l[h] > 0.f ? m[h] + logf(l[h]) : -INFINITY;
  }
}
