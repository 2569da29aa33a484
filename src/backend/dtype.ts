// Element types of tensors and the conversions between the 16-bit float formats and f32.

/** Element types of activations, KV and ordinary weights. */
export type FloatDType = "f32" | "f16" | "bf16";
/** Every tensor format: the float types, and MXFP4 weights (groups of 32 4-bit values sharing a power-of-two scale). */
export type DType = FloatDType | "mxfp4";

export const dtypeBytes: Record<FloatDType, number> = { f32: 4, f16: 2, bf16: 2 };

/**
 * Bytes of a tensor. An MXFP4 matrix [rows, cols] (cols a multiple of 32) stores all its rows' packed values
 * (two per byte, low nibble first), then one e8m0 scale byte per group of 32: rows * cols / 2 + rows * cols / 32.
 */
export function tensorBytes(shape: readonly number[], dtype: DType): number {
  const n = shape.reduce((a, b) => a * b, 1);
  return dtype === "mxfp4" ? n / 2 + n / 32 : n * dtypeBytes[dtype];
}

/** The 16 values of an e2m1 (FP4) nibble. */
export const fp4Values = Float32Array.from([0, 0.5, 1, 1.5, 2, 3, 4, 6, -0, -0.5, -1, -1.5, -2, -3, -4, -6]);

/** Row `r` of an MXFP4 matrix [rows, cols] held in `bytes` (layout of tensorBytes), as f32 in `out`. */
export function mxfp4Row(bytes: Uint8Array, rows: number, cols: number, r: number, out: Float32Array): Float32Array {
  const packed = r * (cols / 2);
  const scales = rows * (cols / 2) + r * (cols / 32);
  for (let g = 0; g < cols / 32; g++) {
    const scale = 2 ** (bytes[scales + g]! - 127);
    for (let i = 0; i < 16; i++) {
      const b = bytes[packed + g * 16 + i]!;
      out[g * 32 + 2 * i] = fp4Values[b & 15]! * scale;
      out[g * 32 + 2 * i + 1] = fp4Values[b >> 4]! * scale;
    }
  }
  return out;
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

let bf16Table: Float32Array | undefined;
let f16Table: Float32Array | undefined;

/** All 65536 bf16 values as f32; bf16 is the top half of an f32. */
export function bf16ToF32Table(): Float32Array {
  if (!bf16Table) {
    bf16Table = new Float32Array(65536);
    const bits = new Uint32Array(bf16Table.buffer);
    for (let i = 0; i < 65536; i++) bits[i] = i << 16;
  }
  return bf16Table;
}

/** All 65536 IEEE half values as f32. */
export function f16ToF32Table(): Float32Array {
  if (!f16Table) {
    f16Table = new Float32Array(65536);
    for (let i = 0; i < 65536; i++) f16Table[i] = halfToFloat(i);
  }
  return f16Table;
}

function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

/** Round-to-nearest-even f32 -> bf16 bits, as torch does. */
export function f32ToBf16(x: number): number {
  f32[0] = x;
  const bits = u32[0]!;
  if ((bits & 0x7f800000) === 0x7f800000 && bits & 0x7fffff) return (bits >>> 16) | 0x40; // keep NaN a NaN
  return ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff;
}

/** Round-to-nearest-even f32 -> IEEE half bits. */
export function f32ToF16(x: number): number {
  f32[0] = x;
  const bits = u32[0]!;
  const sign = (bits >>> 16) & 0x8000;
  const exp = (bits >>> 23) & 0xff;
  let mant = bits & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    const rest = mant & ((1 << shift) - 1);
    let out = mant >>> shift;
    if (rest > half || (rest === half && out & 1)) out++;
    return sign | out;
  }
  const rest = mant & 0x1fff;
  let out = (e << 10) | (mant >>> 13);
  if (rest > 0x1000 || (rest === 0x1000 && out & 1)) out++;
  return sign | out;
}

/** Converts raw little-endian bytes of the given dtype to f32. */
export function toF32(bytes: Uint8Array, dtype: FloatDType): Float32Array {
  if (dtype === "f32") {
    const out = new Float32Array(bytes.byteLength / 4);
    new Uint8Array(out.buffer).set(bytes);
    return out;
  }
  const table = dtype === "bf16" ? bf16ToF32Table() : f16ToF32Table();
  const n = bytes.byteLength / 2;
  const src =
    bytes.byteOffset % 2 === 0
      ? new Uint16Array(bytes.buffer, bytes.byteOffset, n)
      : new Uint16Array(bytes.slice().buffer);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = table[src[i]!]!;
  return out;
}

/** Converts f32 values to raw bytes of the given dtype. */
export function fromF32(values: Float32Array, dtype: FloatDType): Uint8Array {
  if (dtype === "f32")
    return new Uint8Array(values.buffer.slice(values.byteOffset, values.byteOffset + values.byteLength));
  const out = new Uint16Array(values.length);
  const convert = dtype === "bf16" ? f32ToBf16 : f32ToF16;
  for (let i = 0; i < values.length; i++) out[i] = convert(values[i]!);
  return new Uint8Array(out.buffer);
}

/** Rows up to which a GPU matmul keeps its activations in f32 (CUDA cores still keep up with memory there). */
export const f32MatmulRows = { mxfp4: 16, other: 4 } as const;

/**
 * The 16-bit type a GPU matmul of x [rows, k] by w [n, k] rounds its activations to for tensor cores, or undefined where
 * it keeps them in f32: few rows (decode of one to four sequences, memory bound; MXFP4 up to 16), f32 weights, k not a
 * multiple of 8, or fewer than 128 outputs (a router's logits, which decide discrete routes and cost little). The CPU
 * backend can apply the same rounding, so GPU results can be checked against it exactly.
 */
export function tensorCoreInput(rows: number, k: number, n: number, dtype: DType): "bf16" | "f16" | undefined {
  if (
    rows <= (dtype === "mxfp4" ? f32MatmulRows.mxfp4 : f32MatmulRows.other) ||
    k % 8 !== 0 ||
    n < 128 ||
    dtype === "f32"
  )
    return undefined;
  return dtype === "mxfp4" ? "bf16" : dtype;
}
