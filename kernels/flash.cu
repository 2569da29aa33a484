// Prefill attention on tensor cores, FlashAttention-2 style: per CTA 64 or 128 query rows of one head, 4 warps;
// scores and the output stay in registers (mma.m16n8k16), KV tiles stream through shared memory with cp.async,
// double-buffered, across the blocks the engine lists. Same contract as attn_simt in attention.cu (seqs, blocks,
// causal, sliding window, soft cap), for 16-bit KV and head_dim 64, 128 or 256.
#include "flash_common.cuh"

// A CTA is 4 warps; each takes MT m-tiles of 16 query rows: BQ = 64 MT rows. With MT = 2 (head_dim 64 and 128) every K
// and V fragment a warp loads from shared memory serves two MMAs, which halves the shared-memory reads per MMA.
// BKV keys a KV tile (64; 32 at head_dim 256 for registers). The kernel bench measured 128 x 32 tiles slower.
template <int HD, int MT_> struct FlashShape {
  static constexpr int MT = MT_, BQ = 64 * MT, BKV = HD <= 128 ? 64 : 32, LD = HD + 8; // rows (HD+8)*2 bytes apart: ldmatrix conflict-free
  // Dynamic shared memory (kernels.ts mirrors it): Q, then K and V for two stages, (BQ + 4 * BKV) * LD * 2 bytes.
};

template <typename T, int HD, int MT_>
__device__ void flash(float *out, float *lse, const float *q, const int *seqs, const unsigned long long *block_ptrs, const int *block_pos,
                      const float *sinks, int heads, int kv_heads, int kv_cols, float scale, int window, float softcap) {
  using S = FlashShape<HD, MT_>;
  constexpr int MT = S::MT, BQ = S::BQ, BKV = S::BKV, LD = S::LD, THREADS = 128;
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

  const KvTiles<BKV> tiles{block_pos, b_begin, b_count, pos0 + rows - 1, window > 0 ? pos0 - window + 1 : INT_MIN};
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
  for_each_kv_tile<false>(tiles, load, [&](int stage, int start, int valid) {
    const T *ks = KVs + (2 * stage) * BKV * LD, *vs = ks + BKV * LD;
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
        float rescale[2];
        softmax_tile(s[t], m[t], l[t], rescale, pos0 + (warp * MT + t) * 16, start, valid, window, softcap);
        rescale_rows(o[t], rescale);
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
  });
#pragma unroll
  for (int t = 0; t < MT; t++) store_rows<HD>(out, lse, o[t], m[t], l[t], sinks, head, heads, (warp * MT + t) * 16, rows, row0);
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
