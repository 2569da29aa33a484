// Shared helpers of layerwise's kernels: element types and their f32 conversions, warp reductions.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

typedef __nv_bfloat16 bf16;
typedef __half f16;

template <typename T> __device__ __forceinline__ float to_f32(T v);
template <> __device__ __forceinline__ float to_f32<float>(float v) { return v; }
template <> __device__ __forceinline__ float to_f32<bf16>(bf16 v) { return __bfloat162float(v); }
template <> __device__ __forceinline__ float to_f32<f16>(f16 v) { return __half2float(v); }

template <typename T> __device__ __forceinline__ T from_f32(float v);
template <> __device__ __forceinline__ float from_f32<float>(float v) { return v; }
template <> __device__ __forceinline__ bf16 from_f32<bf16>(float v) { return __float2bfloat16_rn(v); }
template <> __device__ __forceinline__ f16 from_f32<f16>(float v) { return __float2half_rn(v); }

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Inclusive prefix sum across a warp: lane i gets the sum of lanes 0..i.
template <typename T> __device__ __forceinline__ T warp_inclusive_sum(T v) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const T up = __shfl_up_sync(0xffffffffu, v, o);
    if (lane >= o) v += up;
  }
  return v;
}

// Sum over a block of up to 1024 threads; every thread gets the result. `scratch` holds 32 floats.
__device__ __forceinline__ float block_sum(float v, float *scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : 0.f;
  return warp_sum(v);
}

// MXFP4 (OCP microscaling): e2m1 values, two per byte (low nibble first), 32 per group sharing an e8m0 exponent.
// A matrix [N, K] holds every row's packed bytes (K / 2 per row), then every row's K / 32 scale bytes.
__device__ __forceinline__ float fp4_value(uint32_t nibble) {
  const uint32_t e = (nibble >> 1) & 3, m = nibble & 1;
  const float mag = e == 0 ? 0.5f * m : __uint_as_float(((e + 126) << 23) | (m << 22));
  return (nibble & 8) ? -mag : mag;
}
__device__ __forceinline__ float e8m0_scale(uint8_t s) { return ldexpf(1.f, (int)s - 127); }

// Instantiates a templated kernel for f32, bf16 and f16 weights under names ending in _f32, _bf16, _f16.
#define FOR_WEIGHT_TYPES(M) M(float, f32) M(bf16, bf16) M(f16, f16)
