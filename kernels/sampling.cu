// What sampling needs of the logits, on the GPU, so only a few ids cross to the host: the repetition penalty in place,
// and the k best of each row, ranked as a stable descending sort would (equal values: lower column first; NaN counts
// as -inf, as the CPU backend ranks it).
#include "common.cuh"

constexpr int TOPK_THREADS = 1024, TOPK_MAX = 2048; // kernels.ts mirrors TOPK_MAX

extern "C" __global__ void penalize(float *x, const int *ids, int n, float factor) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float v = x[ids[i]];
  x[ids[i]] = v < 0.f ? v * factor : v / factor;
}

// Unsigned keys in the order of the floats they come from.
__device__ __forceinline__ uint32_t order_key(float v) {
  if (v != v) v = -INFINITY;
  const uint32_t u = __float_as_uint(v);
  return (u & 0x80000000u) ? ~u : u | 0x80000000u;
}

// Exclusive prefix sum over the block; `total` gets the sum. scratch: 32 ints.
__device__ __forceinline__ int block_exclusive_scan(int v, int *scratch, int &total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int incl = warp_inclusive_sum(v);
  __syncthreads();
  if (lane == 31) scratch[warp] = incl;
  __syncthreads();
  if (warp == 0) scratch[lane] = warp_inclusive_sum(scratch[lane]); // inclusive over warps
  __syncthreads();
  total = scratch[31];
  return incl - v + (warp > 0 ? scratch[warp - 1] : 0);
}

// One block per row of x [rows, cols]: a 4-pass radix select finds the k-th best key, a pass in column order collects
// the keys above it and the first of those equal to it, and a bitonic sort ranks them. out_ids / out_values: [rows, k].
extern "C" __global__ void __launch_bounds__(TOPK_THREADS) top_k(int *out_ids, float *out_values, const float *x, int cols, int k) {
  __shared__ int hist[256];
  __shared__ int scratch[32];
  __shared__ unsigned long long ranked[TOPK_MAX];
  __shared__ uint32_t prefix_s, need_s;
  const float *row = x + (size_t)blockIdx.x * cols;
  const int tid = threadIdx.x;

  uint32_t prefix = 0, mask = 0, need = k; // need: how many of the keys matching prefix on mask are still to take
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int i = tid; i < 256; i += TOPK_THREADS) hist[i] = 0;
    __syncthreads();
    for (int i = tid; i < cols; i += TOPK_THREADS) {
      const uint32_t key = order_key(row[i]);
      if ((key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 255], 1);
    }
    __syncthreads();
    if (tid == 0) {
      uint32_t above = 0;
      int d = 255;
      for (; d > 0 && above + hist[d] < need; d--) above += hist[d];
      prefix_s = prefix | ((uint32_t)d << shift);
      need_s = need - above;
    }
    __syncthreads();
    prefix = prefix_s, need = need_s, mask |= 255u << shift;
  }
  // prefix is now the k-th best key: k - need keys are above it, and the first `need` equal to it complete the k.
  const int above = k - (int)need;
  int above_base = 0, equal_base = 0;
  for (int i0 = 0; i0 < cols; i0 += TOPK_THREADS) {
    const int i = i0 + tid;
    const uint32_t key = i < cols ? order_key(row[i]) : 0;
    const int is_above = i < cols && key > prefix, is_equal = i < cols && key == prefix;
    int total;
    const int at = block_exclusive_scan(is_above | (is_equal << 16), scratch, total);
    const unsigned long long entry = ((unsigned long long)key << 32) | (0xffffffffu - (uint32_t)i);
    if (is_above) ranked[above_base + (at & 0xffff)] = entry;
    if (is_equal && equal_base + (at >> 16) < (int)need) ranked[above + equal_base + (at >> 16)] = entry;
    above_base += total & 0xffff, equal_base += total >> 16;
  }
  int size = 1;
  while (size < k) size <<= 1;
  for (int i = k + tid; i < size; i += TOPK_THREADS) ranked[i] = 0; // below every real entry
  __syncthreads();
  // Bitonic sort, descending.
  for (int len = 2; len <= size; len <<= 1) {
    for (int stride = len >> 1; stride > 0; stride >>= 1) {
      for (int i = tid; i < size; i += TOPK_THREADS) {
        const int j = i ^ stride;
        if (j > i) {
          const bool descending = (i & len) == 0;
          const unsigned long long a = ranked[i], b = ranked[j];
          if ((a < b) == descending) ranked[i] = b, ranked[j] = a;
        }
      }
      __syncthreads();
    }
  }
  for (int i = tid; i < k; i += TOPK_THREADS) {
    const int col = (int)(0xffffffffu - (uint32_t)(ranked[i] & 0xffffffffu));
    out_ids[(size_t)blockIdx.x * k + i] = col;
    out_values[(size_t)blockIdx.x * k + i] = row[col];
  }
}
