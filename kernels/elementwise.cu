// Elementwise and per-row kernels: embedding gather, RMSNorm, RoPE, gated activations, residual add, scale,
// cache writes and the merge of attention parts. Activations are f32; weights and KV keep their dtype.
#include "common.cuh"

template <typename T>
__device__ void embed(float *out, const T *table, const int *ids, int hidden) {
  const int row = blockIdx.x;
  const T *src = table + (size_t)ids[row] * hidden;
  for (int i = threadIdx.x; i < hidden; i += blockDim.x) out[(size_t)row * hidden + i] = to_f32(src[i]);
}

// One block per group of `group` values: y = x / rms(x) * (offset + w); with a `twin`, y also in T (16 bits: the next
// tensor-core matmul's input, as cast_rows would make it).
template <typename T>
__device__ void rms_norm(float *out, const float *x, const T *w, int group, float eps, float offset, T *twin) {
  __shared__ float scratch[32];
  const size_t base = (size_t)blockIdx.x * group;
  float ss = 0.f;
  for (int i = threadIdx.x; i < group; i += blockDim.x) {
    const float v = x[base + i];
    ss += v * v;
  }
  const float r = rsqrtf(block_sum(ss, scratch) / group + eps);
  for (int i = threadIdx.x; i < group; i += blockDim.x) {
    const float y = (x[base + i] * r) * (offset + to_f32(w[i]));
    out[base + i] = y;
    if (twin) twin[base + i] = from_f32<T>(y);
  }
}

// Thread per (row, head, i < half): rotate_half RoPE on the first 2*half dims of each head; the rest pass through.
extern "C" __global__ void rope(float *out, const float *x, const int *positions, const float *inv_freq, int rows, int heads, int head_dim,
                                int half, float scale) {
  const int n = rows * heads * half;
  for (int t = blockIdx.x * blockDim.x + threadIdx.x; t < n; t += gridDim.x * blockDim.x) {
    const int i = t % half, rh = t / half, row = rh / heads;
    const size_t base = (size_t)rh * head_dim;
    const float angle = (float)positions[row] * inv_freq[i]; // formed in f32 as torch does
    float s, c;
    sincosf(angle, &s, &c);
    c *= scale;
    s *= scale;
    const float x1 = x[base + i], x2 = x[base + i + half];
    out[base + i] = x1 * c - x2 * s;
    out[base + i + half] = x2 * c + x1 * s;
  }
  const int pass = head_dim - 2 * half; // partial rotary: copy the unrotated tail of each head
  if (pass > 0) {
    const int m = rows * heads * pass;
    for (int t = blockIdx.x * blockDim.x + threadIdx.x; t < m; t += gridDim.x * blockDim.x) {
      const size_t idx = (size_t)(t / pass) * head_dim + 2 * half + t % pass;
      out[idx] = x[idx];
    }
  }
}

// act(gate) * up; act 0 = silu, 1 = gelu with the tanh approximation, 2 = sigmoid (an output gate).
// out = act(gate) * up; with a `twin` (twin_kind 1: bf16, 2: f16) also in 16 bits, the next tensor-core matmul's input
// as cast_rows would make it.
extern "C" __global__ void gated_act(float *out, const float *gate, const float *up, long long n, int act, void *twin, int twin_kind) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    const float g = gate[i];
    float a;
    if (act == 0) a = g / (1.f + expf(-g));
    else if (act == 2) a = 1.f / (1.f + expf(-g));
    else a = 0.5f * g * (1.f + tanhf(0.7978845608028654f * (g + 0.044715f * g * g * g)));
    const float y = a * up[i];
    out[i] = y;
    if (twin_kind == 1) static_cast<bf16 *>(twin)[i] = from_f32<bf16>(y);
    else if (twin_kind == 2) static_cast<f16 *>(twin)[i] = from_f32<f16>(y);
  }
}

extern "C" __global__ void add_f32(float *out, const float *a, const float *b, long long n) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) out[i] = a[i] + b[i];
}

extern "C" __global__ void scale_f32(float *out, const float *x, float s, long long n) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) out[i] = x[i] * s;
}

extern "C" __global__ void softcap_f32(float *out, const float *x, float cap, long long n) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) out[i] = cap * tanhf(x[i] / cap);
}

// gpt-oss experts: interleaved [gate, up] columns to (clamp(up) + 1) * g * sigmoid(alpha * g), g = min(gate, limit).
extern "C" __global__ void clamped_swiglu(float *out, const float *x, long long n, float alpha, float limit) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    const float g = fminf(x[2 * i], limit), u = fminf(fmaxf(x[2 * i + 1], -limit), limit);
    out[i] = (u + 1.f) * (g / (1.f + expf(-alpha * g)));
  }
}

// dst[i] = src[i] for n 32-bit words: small uploads read from mapped pinned memory by the SMs, so they need no copy
// engine (whose queue is behind the large weight and activation copies of the copy stream).
extern "C" __global__ void copy_words(unsigned *dst, const unsigned *src, int n) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) dst[i] = src[i];
}

// out[i] = x[rows[i]] (rows of `cols`).
extern "C" __global__ void gather_rows(float *out, const float *x, const int *rows, int n, int cols) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < (long long)n * cols; i += (long long)gridDim.x * blockDim.x)
    out[i] = x[(size_t)rows[i / cols] * cols + i % cols];
}

// acc[rows[i]] += scales[i] * y[i]; the rows of one call are distinct (one expert's tokens).
extern "C" __global__ void accumulate_rows(float *acc, const float *y, const int *rows, const float *scales, int n, int cols) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < (long long)n * cols; i += (long long)gridDim.x * blockDim.x)
    acc[(size_t)rows[i / cols] * cols + i % cols] += scales[i / cols] * y[i];
}

// Tensors of one shape taken as consecutive rows (a KV cache's blocks), by value: one launch writes a chunk's rows into
// all the blocks they span. Mirrors maxRowBlocks in src/backend/cuda/index.ts.
#define MAX_ROW_BLOCKS 64
struct RowBlocks {
  void *p[MAX_ROW_BLOCKS];
};

// `rows` f32 rows of `cols` into cache tensors of type T and `block_rows` rows each: row r goes to row
// (first + r) % block_rows of tensor (first + r) / block_rows. rows * cols < 2^31 (the caller splits larger writes).
template <typename T>
__device__ void write_rows(RowBlocks dst, int first, int block_rows, const float *src, int rows, int cols) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < rows * cols; i += gridDim.x * blockDim.x) {
    const int r = first + i / cols;
    T *block = static_cast<T *>(dst.p[r / block_rows]);
    block[(size_t)(r % block_rows) * cols + i % cols] = from_f32<T>(src[i]);
  }
}

// Combines two attention parts over disjoint keys from their normalized outputs and log-sum-exps.
extern "C" __global__ void merge_attention(float *out, float *lse, const float *oa, const float *la, const float *ob, const float *lb,
                                           int row_heads, int head_dim) {
  const int rh = blockIdx.x;
  if (rh >= row_heads) return;
  const float a = la[rh], b = lb[rh], m = fmaxf(a, b);
  const float wa = m == -INFINITY ? 0.f : expf(a - m), wb = m == -INFINITY ? 0.f : expf(b - m);
  const float z = wa + wb;
  for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
    const size_t i = (size_t)rh * head_dim + d;
    out[i] = z > 0.f ? (wa * oa[i] + wb * ob[i]) / z : 0.f;
  }
  if (threadIdx.x == 0) lse[rh] = z > 0.f ? m + logf(z) : -INFINITY;
}

template <typename T>
__device__ void to_f32(float *out, const T *x, long long n) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) out[i] = ::to_f32(x[i]);
}

#define INSTANTIATE(T, NAME)                                                                                                  \
  extern "C" __global__ void embed_##NAME(float *out, const T *table, const int *ids, int hidden) { embed<T>(out, table, ids, hidden); } \
  extern "C" __global__ void rms_norm_##NAME(float *out, const float *x, const T *w, int group, float eps, float offset, T *twin) { \
    rms_norm<T>(out, x, w, group, eps, offset, twin);                                                                         \
  }                                                                                                                           \
  extern "C" __global__ void write_rows_##NAME(RowBlocks dst, int first, int block_rows, const float *src, int rows, int cols) { \
    write_rows<T>(dst, first, block_rows, src, rows, cols);                                                                   \
  }                                                                                                                           \
  extern "C" __global__ void cast_f32_##NAME(float *out, const T *x, long long n) { to_f32<T>(out, x, n); }
FOR_WEIGHT_TYPES(INSTANTIATE)
