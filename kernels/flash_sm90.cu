// Prefill attention on Hopper's warpgroup MMA (sm_90a PTX: kernels.ts loads this module only on compute capability 9.0),
// the contract of flash.cu for head_dim 128 and 16-bit KV. A CTA of two warpgroups takes 128 query rows (64 each) and
// walks KV tiles of 128 keys: S = Q K^T with wgmma.m64n128k16 from shared memory; the online softmax in registers (the
// accumulators are in the layout flash_common.cuh works on); O += P V with P's bf16 fragments from registers and V read
// N-major, so no transpose is needed. Q, K and V tiles are two halves of 64 dims, rows of 128 bytes in the 128-byte
// swizzle (wgmma.cuh), K and V double-buffered through cp.async.
#include "flash_common.cuh"
#include "wgmma.cuh"

constexpr int WQ = 128, WKV = 128, WHD = 128;
constexpr int HALF_TILE = 128 * 128; // bytes of 128 rows x 64 dims
// Dynamic shared memory (kernels.ts mirrors it): Q, then K and V for two stages, each two halves, and 1 KB to align them
// to the swizzle's 1024 bytes: (128 + 4 x 128) rows x 256 bytes + 1024.

// Byte offset of 16-byte chunk c (of 16 across the 128 dims) of row r in a tile of two halves.
__device__ __forceinline__ int swizzled(int r, int c) { return (c >> 3) * HALF_TILE + r * 128 + (((c & 7) ^ (r & 7)) << 4); }

template <typename T>
__device__ void flash_wgmma(float *out, float *lse, const float *q, const int *seqs, const unsigned long long *block_ptrs, const int *block_pos,
                            const float *sinks, int heads, int kv_heads, int kv_cols, float scale, int window, float softcap) {
  constexpr int THREADS = 256;
  extern __shared__ unsigned char smem_raw[];
  unsigned char *smem = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
  unsigned char *Qs = smem;
  auto k_tile = [&](int stage) { return smem + (2 + 4 * stage) * HALF_TILE; };
  auto v_tile = [&](int stage) { return smem + (4 + 4 * stage) * HALF_TILE; };

  const int seq = blockIdx.z, head = blockIdx.y, tile0 = (gridDim.x - 1 - blockIdx.x) * WQ; // longest CTAs first
  const int q_row0 = seqs[5 * seq], q_rows = seqs[5 * seq + 1], q_pos = seqs[5 * seq + 2], b_begin = seqs[5 * seq + 3], b_count = seqs[5 * seq + 4];
  if (tile0 >= q_rows) return;
  const int rows = min(WQ, q_rows - tile0), row0 = q_row0 + tile0, pos0 = q_pos + tile0;
  const int kvh = head / (heads / kv_heads);
  const int tid = threadIdx.x, group = tid >> 7, warp = (tid >> 5) & 3;

  // Q, scaled, in the KV type (loads unrolled so they are in flight together).
#pragma unroll 16
  for (int i = tid; i < WQ * WHD / 2; i += THREADS) {
    const int r = (2 * i) / WHD, d = (2 * i) % WHD;
    float2 v = make_float2(0.f, 0.f);
    if (r < rows) v = *reinterpret_cast<const float2 *>(q + (size_t)(row0 + r) * heads * WHD + head * WHD + d);
    *reinterpret_cast<uint32_t *>(Qs + swizzled(r, d >> 3) + (d & 7) * 2) = pack2<T>(v.x * scale, v.y * scale);
  }

  const KvTiles<WKV> tiles{block_pos, b_begin, b_count, pos0 + rows - 1, window > 0 ? pos0 - window + 1 : INT_MIN};
  auto load = [&](int stage, int b, int k) {
    const int bi = b_begin + b, len = tiles.length(b);
    const T *kb = reinterpret_cast<const T *>(block_ptrs[2 * bi]) + kvh * WHD;
    const T *vb = reinterpret_cast<const T *>(block_ptrs[2 * bi + 1]) + kvh * WHD;
    for (int i = tid; i < WKV * 16; i += THREADS) {
      const int r = i >> 4, c = i & 15;
      const bool ok = k + r < len;
      const size_t off = (size_t)(ok ? k + r : 0) * kv_cols + c * 8;
      cp_async16(k_tile(stage) + swizzled(r, c), kb + off, ok);
      cp_async16(v_tile(stage) + swizzled(r, c), vb + off, ok);
    }
  };

  // This thread's rows: lane / 4 and lane / 4 + 8 of its warp's 16, in its warpgroup's 64.
  float o[WHD / 8][4] = {};
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  const int group_first = pos0 + group * 64, group_last = group_first + 63;
  for_each_kv_tile<true>(tiles, load, [&](int stage, int start, int valid) {
    // A warpgroup skips a tile none of its rows sees.
    if (start <= group_last && (window <= 0 || start + WKV - 1 > group_first - window)) {
      float s[WKV / 8][4] = {};
      const uint32_t qs = smem_addr(Qs) + group * 64 * 128, ks = smem_addr(k_tile(stage)), vs = smem_addr(v_tile(stage));
      asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#pragma unroll
      for (int kk = 0; kk < WHD / 16; kk++) {
        const uint32_t at = (kk >> 2) * HALF_TILE + (kk & 3) * 32;
        wgmma_m64n128k16<T>(reinterpret_cast<float(&)[64]>(s), swizzled_descriptor(qs + at), swizzled_descriptor(ks + at));
      }
      asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
      asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
      float rescale[2];
      softmax_tile(s, m, l, rescale, group_first + warp * 16, start, valid, window, softcap);
      rescale_rows(o, rescale);
      // O += P V, 16 keys a step: the scores of two adjacent 8-key blocks are the A fragment; V's 16 key rows are two
      // 8-row groups 1024 bytes apart, its dims two 64-column blocks a half tile apart.
      asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#pragma unroll
      for (int j = 0; j < WKV / 16; j++) {
        const uint32_t a[4] = {pack2<T>(s[2 * j][0], s[2 * j][1]), pack2<T>(s[2 * j][2], s[2 * j][3]), pack2<T>(s[2 * j + 1][0], s[2 * j + 1][1]),
                               pack2<T>(s[2 * j + 1][2], s[2 * j + 1][3])};
        wgmma_m64n128k16_rs<T>(reinterpret_cast<float(&)[64]>(o), a, n_major_descriptor(vs + j * 2048, HALF_TILE, 1024));
      }
      asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
      asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
    }
  });
  store_rows<WHD>(out, lse, o, m, l, sinks, head, heads, group * 64 + warp * 16, rows, row0);
}

#define FLASH_WGMMA(T, NAME)                                                                                                  \
  extern "C" __global__ void __launch_bounds__(256) flash_wgmma_##NAME##_128(float *out, float *lse, const float *q, const int *seqs, \
      const unsigned long long *block_ptrs, const int *block_pos, const float *sinks, int heads, int kv_heads, int kv_cols,      \
      float scale, int window, float softcap) {                                                                               \
    flash_wgmma<T>(out, lse, q, seqs, block_ptrs, block_pos, sinks, heads, kv_heads, kv_cols, scale, window, softcap);        \
  }
FLASH_WGMMA(bf16, bf16)
FLASH_WGMMA(f16, f16)
