// Prefill attention on tensor cores, FlashAttention-2 style: per CTA 64 or 128 query rows of one head, 4 warps;
// scores and the output stay in registers (mma.m16n8k16), KV tiles stream through shared memory with cp.async,
// double-buffered, across the blocks the engine lists. Same contract as attn_simt in attention.cu (seqs, blocks,
// causal, sliding window, soft cap), for 16-bit KV and head_dim 64, 128 or 256.
#include "mma.cuh"

// A CTA is 4 warps; each takes MT m-tiles of 16 query rows: BQ = 64 MT rows. With MT = 2 (head_dim 64 and 128) every K
// and V fragment a warp loads from shared memory serves two MMAs, which halves the shared-memory reads per MMA.
// BKV keys a KV tile (64; 32 at head_dim 256 for registers). The kernel bench measured 128 x 32 tiles slower.
template <int HD, int MT_> struct FlashShape {
  static constexpr int MT = MT_, BQ = 64 * MT, BKV = HD <= 128 ? 64 : 32, LD = HD + 8; // rows (HD+8)*2 bytes apart: ldmatrix conflict-free
  // Dynamic shared memory (kernels.ts mirrors it): Q, then K and V for two stages, (BQ + 4 * BKV) * LD * 2 bytes.
};

// 2^x on the special function unit; results below 2^-126 flush to zero (a probability that small adds nothing).
__device__ __forceinline__ float exp2_ftz(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

template <typename T, int HD, int MT_>
__device__ void flash(float *out, float *lse, const float *q, const int *seqs, const unsigned long long *block_ptrs, const int *block_pos,
                      const float *sinks, int heads, int kv_heads, int kv_cols, float scale, int window, float softcap) {
  using S = FlashShape<HD, MT_>;
  constexpr int MT = S::MT, BQ = S::BQ, BKV = S::BKV, LD = S::LD, THREADS = 128;
  constexpr float LOG2E = 1.4426950408889634f;
  extern __shared__ __align__(128) unsigned char smem[];
  T *Qs = reinterpret_cast<T *>(smem);
  T *KVs = Qs + BQ * LD; // stage s: K at KVs + (2s) * BKV * LD, V at KVs + (2s + 1) * BKV * LD

  // Causal rows late in a sequence see the most keys: their CTAs start first, so the last wave is of short ones.
  const int seq = blockIdx.z, head = blockIdx.y, tile0 = (gridDim.x - 1 - blockIdx.x) * BQ;
  const int q_row0 = seqs[5 * seq], q_rows = seqs[5 * seq + 1], q_pos = seqs[5 * seq + 2], b_begin = seqs[5 * seq + 3], b_count = seqs[5 * seq + 4];
  if (tile0 >= q_rows) return;
  const int rows = min(BQ, q_rows - tile0), row0 = q_row0 + tile0, pos0 = q_pos + tile0;
  const int kvh = head / (heads / kv_heads);
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int stride = heads * HD;

  // Q, scaled, in the KV type. Unrolled so a thread's loads are in flight together: one at a time, the 32-64 loads
  // of this prologue took as long as tens of KV tiles, a large share of a CTA's time at 8k tokens.
#pragma unroll 16
  for (int i = tid; i < BQ * HD / 2; i += THREADS) {
    const int r = (2 * i) / HD, d = (2 * i) % HD;
    float2 v = make_float2(0.f, 0.f);
    if (r < rows) v = *reinterpret_cast<const float2 *>(q + (size_t)(row0 + r) * stride + head * HD + d);
    *reinterpret_cast<uint32_t *>(Qs + r * LD + d) = pack2<T>(v.x * scale, v.y * scale);
  }

  const int max_pos = pos0 + rows - 1;
  const int min_pos = window > 0 ? pos0 - window + 1 : INT_MIN;
  // KV tiles in order: (block, offset). A tile is skipped when every key is after the last query or before the window.
  int cb = 0, ck = 0;
  auto advance = [&](int &b, int &k) {
    for (;;) {
      k += BKV;
      while (b < b_count && k >= block_pos[2 * (b_begin + b) + 1]) b++, k = 0;
      if (b >= b_count) return;
      const int start = block_pos[2 * (b_begin + b)];
      if (start + k > max_pos) { b = b_count; return; }
      if (start + k + BKV - 1 >= min_pos) return;
    }
  };
  ck = -BKV;
  advance(cb, ck);
  auto load = [&](int stage, int b, int k) {
    const int bi = b_begin + b, len = block_pos[2 * bi + 1];
    const T *kb = reinterpret_cast<const T *>(block_ptrs[2 * bi]) + kvh * HD;
    const T *vb = reinterpret_cast<const T *>(block_ptrs[2 * bi + 1]) + kvh * HD;
    T *ks = KVs + (2 * stage) * BKV * LD, *vs = ks + BKV * LD;
    for (int i = tid; i < BKV * HD / 8; i += blockDim.x) {
      const int r = i / (HD / 8), c = (i % (HD / 8)) * 8;
      const bool ok = k + r < len;
      const size_t off = (size_t)(ok ? k + r : 0) * kv_cols + c;
      cp_async16(ks + r * LD + c, kb + off, ok);
      cp_async16(vs + r * LD + c, vb + off, ok);
    }
  };

  // Per m-tile t (this thread's rows: lane / 4 and lane / 4 + 8 of it): m is each row's running max of the scores, l its sum of exp.
  float o[MT][HD / 8][4] = {};
  float m[MT][2], l[MT][2] = {};
#pragma unroll
  for (int t = 0; t < MT; t++) m[t][0] = m[t][1] = -INFINITY;
  int stage = 0;
  if (cb < b_count) load(0, cb, ck);
  cp_async_commit();
  while (cb < b_count) {
    int nb = cb, nk = ck;
    advance(nb, nk);
    if (nb < b_count) load(stage ^ 1, nb, nk); // the next tile streams in while this one computes
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    const T *ks = KVs + (2 * stage) * BKV * LD, *vs = ks + BKV * LD;
    const int start = block_pos[2 * (b_begin + cb)] + ck;
    const int valid = block_pos[2 * (b_begin + cb) + 1] - ck;
    // A warp skips a tile none of its rows sees (the CTA's last tiles are past the diagonal for its first warps).
    const int warp_first = pos0 + warp * MT * 16, warp_last = warp_first + MT * 16 - 1;
    if (start <= warp_last && (window <= 0 || start + BKV - 1 > warp_first - window)) {
      float s[MT][BKV / 8][4] = {};
#pragma unroll
      for (int kk = 0; kk < HD; kk += 16) {
        uint32_t a[MT][4];
#pragma unroll
        for (int t = 0; t < MT; t++) ldmatrix_x4(a[t], Qs + ((warp * MT + t) * 16 + (lane & 15)) * LD + kk + (lane >> 4) * 8);
#pragma unroll
        for (int nj = 0; nj < BKV / 16; nj++) {
          uint32_t b[4];
          ldmatrix_x4(b, ks + (nj * 16 + (lane & 7) + (lane >> 4) * 8) * LD + kk + ((lane >> 3) & 1) * 8);
#pragma unroll
          for (int t = 0; t < MT; t++) {
            mma16816<T>(s[t][2 * nj], a[t], b[0], b[1]);
            mma16816<T>(s[t][2 * nj + 1], a[t], b[2], b[3]);
          }
        }
      }
#pragma unroll
      for (int t = 0; t < MT; t++) {
        // Soft cap, mask, online softmax per row (a row's 4 values per tile column block live in the 4 threads of a quad).
        // Most tiles are wholly visible to every row of this m-tile (before the diagonal, inside the window): no mask there.
        const int tile_pos = pos0 + (warp * MT + t) * 16;
        const bool visible = valid >= BKV && start + BKV - 1 <= tile_pos && (window <= 0 || start > tile_pos + 15 - window);
        if (softcap > 0.f) {
#pragma unroll
          for (int ni = 0; ni < BKV / 8; ni++)
#pragma unroll
            for (int e = 0; e < 4; e++) s[t][ni][e] = softcap * tanhf(s[t][ni][e] / softcap);
        }
        if (!visible) {
#pragma unroll
          for (int ni = 0; ni < BKV / 8; ni++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
              const int c = ni * 8 + (lane & 3) * 2 + (e & 1), kp = start + c, qpos = tile_pos + (lane >> 2) + 8 * (e >> 1);
              if (c >= valid || kp > qpos || (window > 0 && kp <= qpos - window)) s[t][ni][e] = -INFINITY;
            }
        }
        float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
        for (int ni = 0; ni < BKV / 8; ni++)
#pragma unroll
          for (int e = 0; e < 4; e++) mx[e >> 1] = fmaxf(mx[e >> 1], s[t][ni][e]);
        float rescale[2], mlog[2];
#pragma unroll
        for (int h = 0; h < 2; h++) {
          mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 1));
          mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 2));
          const float mn = fmaxf(m[t][h], mx[h]);
          rescale[h] = mn == -INFINITY ? 1.f : exp2_ftz((m[t][h] - mn) * LOG2E);
          m[t][h] = mn;
          mlog[h] = mn == -INFINITY ? 0.f : mn * LOG2E; // p = 2^(s log2 e - m log2 e): one FMA and one ex2 a score
          l[t][h] *= rescale[h];
        }
#pragma unroll
        for (int ni = 0; ni < BKV / 8; ni++)
#pragma unroll
          for (int e = 0; e < 4; e++) {
            const int h = e >> 1;
            const float p = exp2_ftz(fmaf(s[t][ni][e], LOG2E, -mlog[h])); // a masked score (-inf) gives 0
            s[t][ni][e] = p;
            l[t][h] += p;
          }
        if (__any_sync(0xffffffffu, rescale[0] != 1.f || rescale[1] != 1.f)) // once the maxima settle, most tiles change none
#pragma unroll
          for (int nd = 0; nd < HD / 8; nd++) o[t][nd][0] *= rescale[0], o[t][nd][1] *= rescale[0], o[t][nd][2] *= rescale[1], o[t][nd][3] *= rescale[1];
      }
      // O += P V: the score accumulators of two adjacent 8-key blocks are exactly an A fragment of 16 keys.
#pragma unroll
      for (int j = 0; j < BKV / 16; j++) {
        uint32_t a[MT][4];
#pragma unroll
        for (int t = 0; t < MT; t++) {
          a[t][0] = pack2<T>(s[t][2 * j][0], s[t][2 * j][1]);
          a[t][1] = pack2<T>(s[t][2 * j][2], s[t][2 * j][3]);
          a[t][2] = pack2<T>(s[t][2 * j + 1][0], s[t][2 * j + 1][1]);
          a[t][3] = pack2<T>(s[t][2 * j + 1][2], s[t][2 * j + 1][3]);
        }
#pragma unroll
        for (int nd = 0; nd < HD / 16; nd++) {
          uint32_t b[4];
          ldmatrix_x4_trans(b, vs + (j * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * LD + nd * 16 + (lane >> 4) * 8);
#pragma unroll
          for (int t = 0; t < MT; t++) {
            mma16816<T>(o[t][2 * nd], a[t], b[0], b[1]);
            mma16816<T>(o[t][2 * nd + 1], a[t], b[2], b[3]);
          }
        }
      }
    }
    __syncthreads(); // everyone is done with this stage before it is loaded again
    stage ^= 1;
    cb = nb, ck = nk;
  }
  cp_async_wait<0>();
#pragma unroll
  for (int t = 0; t < MT; t++)
#pragma unroll
    for (int h = 0; h < 2; h++) {
      l[t][h] += __shfl_xor_sync(0xffffffffu, l[t][h], 1);
      l[t][h] += __shfl_xor_sync(0xffffffffu, l[t][h], 2);
      float keep = 1.f; // a sink joins the denominator only
      if (sinks) {
        const float s = sinks[head], mn = fmaxf(m[t][h], s);
        keep = m[t][h] == -INFINITY ? 0.f : __expf(m[t][h] - mn);
        l[t][h] = l[t][h] * keep + __expf(s - mn);
        m[t][h] = mn;
      }
      const int r = (warp * MT + t) * 16 + (lane >> 2) + h * 8;
      if (r >= rows) continue;
      float *dst = out + (size_t)(row0 + r) * stride + head * HD;
      const float inv = l[t][h] > 0.f ? keep / l[t][h] : 0.f;
#pragma unroll
      for (int nd = 0; nd < HD / 8; nd++) {
        const int d = nd * 8 + (lane & 3) * 2;
        *reinterpret_cast<float2 *>(dst + d) = make_float2(o[t][nd][2 * h] * inv, o[t][nd][2 * h + 1] * inv);
      }
      if (lse && (lane & 3) == 0) lse[(size_t)(row0 + r) * heads + head] = l[t][h] > 0.f ? m[t][h] + logf(l[t][h]) : -INFINITY;
    }
}

#define FLASH_KERNEL(T, NAME, HD, MT, PREFIX)                                                                                 \
  extern "C" __global__ void __launch_bounds__(128) PREFIX##NAME##_##HD(float *out, float *lse, const float *q, const int *seqs, \
      const unsigned long long *block_ptrs, const int *block_pos, const float *sinks, int heads, int kv_heads, int kv_cols,      \
      float scale, int window, float softcap) {                                                                               \
    flash<T, HD, MT>(out, lse, q, seqs, block_ptrs, block_pos, sinks, heads, kv_heads, kv_cols, scale, window, softcap);       \
  }
// Tiles (kernels.ts lists them): 64 query rows; 128 ("tall", head_dim 64 and 128).
#define FLASH(T, NAME, HD) FLASH_KERNEL(T, NAME, HD, 1, flash_)
#define FLASH_TALL(T, NAME, HD) FLASH_KERNEL(T, NAME, HD, 2, flash_tall_)
FLASH(bf16, bf16, 64) FLASH(bf16, bf16, 128) FLASH(bf16, bf16, 256)
FLASH(f16, f16, 64) FLASH(f16, f16, 128) FLASH(f16, f16, 256)
FLASH_TALL(bf16, bf16, 64) FLASH_TALL(bf16, bf16, 128) FLASH_TALL(f16, f16, 64) FLASH_TALL(f16, f16, 128)
