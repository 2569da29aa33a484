// Hopper's warpgroup MMA (sm_90a): shared-memory matrix descriptors for the 128-byte swizzle, and
// wgmma.m64n128k16 with f32 accumulators, A from shared memory or from registers. A 16-bit tile of 128-byte rows is
// stored with 16-byte chunk c of row r at chunk c ^ (r % 8), from a 1024-byte aligned base.
#pragma once
#include "mma.cuh"

// The 64 accumulator operands of an m64n128 wgmma, and their places in its operand list.
#define WGMMA_D64_SLOTS                                                                                                       \
  "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, "   \
  "%26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, "    \
  "%50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
#define WGMMA_D64(d)                                                                                                          \
  "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]),      \
      "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]),    \
      "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),    \
      "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]),    \
      "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]),    \
      "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]),    \
      "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])

// A 128-byte swizzled operand at shared address smem: the descriptor's leading and stride byte offsets.
__device__ __forceinline__ uint64_t smem_descriptor(uint32_t smem, uint32_t leading, uint32_t stride) {
  return (uint64_t)((smem & 0x3FFFF) >> 4) | ((uint64_t)(leading >> 4) << 16) | ((uint64_t)(stride >> 4) << 32) | (1ull << 62);
}
// K-major operand: rows of K contiguous, 8-row groups 1024 bytes apart.
__device__ __forceinline__ uint64_t swizzled_descriptor(uint32_t smem) { return smem_descriptor(smem, 16, 1024); }
// N-major B operand: 16-byte chunks of N contiguous, K rows 128 bytes apart, 8-row groups of K `k_group` bytes apart and
// 64-column blocks of N `n_block` bytes apart.
__device__ __forceinline__ uint64_t n_major_descriptor(uint32_t smem, uint32_t n_block, uint32_t k_group) { return smem_descriptor(smem, n_block, k_group); }

// D[64 x 128] += A[64 x 16] * B[128 x 16]^T, both K-major in shared memory; d is this thread's 64 accumulators:
// accumulator i holds row (lane / 4) + 8 * ((i / 2) % 2) of its warp's 16 and column 8 * (i / 4) + 2 * (lane % 4) + i % 2.
template <typename T> __device__ __forceinline__ void wgmma_m64n128k16(float (&d)[64], uint64_t a, uint64_t b);
#define WGMMA_M64N128K16(T, PTX_TYPE)                                                                                      \
  template <> __device__ __forceinline__ void wgmma_m64n128k16<T>(float (&d)[64], uint64_t a, uint64_t b) {                \
    asm volatile("wgmma.mma_async.sync.aligned.m64n128k16.f32." PTX_TYPE "." PTX_TYPE " {"                                 \
                 WGMMA_D64_SLOTS                                                                                          \
                 "}, %64, %65, 1, 1, 1, 0, 0;\n"                                                                           \
                 : WGMMA_D64(d)                                                                                             \
                 : "l"(a), "l"(b));                                                                                        \
  }
WGMMA_M64N128K16(bf16, "bf16")
WGMMA_M64N128K16(f16, "f16")

// D[64 x 128] += A[64 x 16] * B[16 x 128], A from registers (the m16n8k16 A fragment of each warp's 16 rows), B N-major.
template <typename T> __device__ __forceinline__ void wgmma_m64n128k16_rs(float (&d)[64], const uint32_t (&a)[4], uint64_t b);
#define WGMMA_M64N128K16_RS(T, PTX_TYPE)                                                                                   \
  template <> __device__ __forceinline__ void wgmma_m64n128k16_rs<T>(float (&d)[64], const uint32_t (&a)[4], uint64_t b) { \
    asm volatile("wgmma.mma_async.sync.aligned.m64n128k16.f32." PTX_TYPE "." PTX_TYPE " {"                                 \
                 WGMMA_D64_SLOTS                                                                                          \
                 "}, {%64, %65, %66, %67}, %68, 1, 1, 1, 1;\n"                                                             \
                 : WGMMA_D64(d)                                                                                           \
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b));                                                   \
  }
WGMMA_M64N128K16_RS(bf16, "bf16")
WGMMA_M64N128K16_RS(f16, "f16")
