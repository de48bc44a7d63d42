// Shared pieces of the attention kernels (attention.as and one file per codec). Every pointer is a
// byte offset into this module's memory, laid out by the JS side (store-memory.ts); nothing here
// allocates.
//
// Run table (RunTable in ../attention.ts, allocated in this memory): four i32 arrays of `cap`
// entries, one after another: page, slotStart, length, index (retained index of the run's first
// token). Runs are in retained order.
//
// Store descriptor (i32 fields at `desc`, written by store-memory.ts from PageStore.kernelLayout()):
//   0 data     byte offset of the values / codes [nPages][pageSize][nHeadKv][headDim]
//   1 scales   byte offset of the f32 scales [nPages][pageSize][nHeadKv] (int8, fp8; else 0)
//   2 tokenStride  elements between consecutive slots (nHeadKv * headDim)
//   3 pageStride   elements between pages (pageSize * tokenStride)
//   4 headDim, 5 pageSize, 6 nHeadKv
//   7 q16      byte offset of the store's kernel scratch: the query rows rounded to int16 (int8's
//              integer dots), int4's packed weights, or an f16 / fp8 key or two values decoded to f32
//   8.. codec-specific fields (int4.as)

export const DESC_DATA: i32 = 0;
export const DESC_SCALES: i32 = 4;
export const DESC_TOKEN_STRIDE: i32 = 8;
export const DESC_PAGE_STRIDE: i32 = 12;
export const DESC_HEAD_DIM: i32 = 16;
export const DESC_PAGE_SIZE: i32 = 20;
export const DESC_N_HEAD_KV: i32 = 24;
export const DESC_Q16: i32 = 28;

@inline export function runPage(rt: usize, cap: i32, r: i32): i32 {
  return load<i32>(rt + (<usize>r << 2));
}
@inline export function runSlot(rt: usize, cap: i32, r: i32): i32 {
  return load<i32>(rt + (<usize>cap << 2) + (<usize>r << 2));
}
@inline export function runLength(rt: usize, cap: i32, r: i32): i32 {
  return load<i32>(rt + (<usize>cap << 3) + (<usize>r << 2));
}
@inline export function runIndex(rt: usize, cap: i32, r: i32): i32 {
  return load<i32>(rt + <usize>cap * 12 + (<usize>r << 2));
}

/** Sum of the four lanes. */
@inline export function hsum(v: v128): f32 {
  const s = f32x4.add(v, v128.shuffle<f32>(v, v, 2, 3, 0, 1));
  return f32x4.extract_lane(f32x4.add(s, v128.shuffle<f32>(s, s, 1, 0, 3, 2)), 0);
}

/** [sum(a), sum(b), sum(c), sum(d)]: four horizontal sums in one vector. */
@inline export function hsum4(a: v128, b: v128, c: v128, d: v128): v128 {
  const ab = f32x4.add(v128.shuffle<f32>(a, b, 0, 4, 2, 6), v128.shuffle<f32>(a, b, 1, 5, 3, 7)); // a01 b01 a23 b23
  const cd = f32x4.add(v128.shuffle<f32>(c, d, 0, 4, 2, 6), v128.shuffle<f32>(c, d, 1, 5, 3, 7));
  return f32x4.add(v128.shuffle<f32>(ab, cd, 0, 1, 4, 5), v128.shuffle<f32>(ab, cd, 2, 3, 6, 7));
}

/** Four f16 (bits at p) -> f32x4, exact for every f16 including subnormals, infinities and NaN:
 *  the exponent and mantissa shifted into f32 position and rescaled by 2^112 (15 -> 127 bias). */
@inline export function f16x4(p: usize): v128 {
  const h = i32x4.extend_low_i16x8_u(v128.load64_zero(p));
  const mag = v128.and(h, i32x4.splat(0x7fff));
  let f = f32x4.mul(i32x4.shl(mag, 13), f32x4.splat(5.192296858534828e33)); // 2^112
  // Exponent 31 (inf / NaN) must stay inf / NaN rather than become 65536 * 1.m.
  const special = i32x4.ge_s(mag, i32x4.splat(0x7c00));
  f = v128.or(f, v128.and(special, i32x4.splat(0x7f800000)));
  return v128.or(f, i32x4.shl(v128.and(h, i32x4.splat(0x8000)), 16));
}

/** Four int8 codes at p -> f32x4. */
@inline export function i8x4(p: usize): v128 {
  return f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(i16x8.extend_low_i8x16_s(v128.load32_zero(p))));
}

/** Four OCP e4m3 (FN) codes at p -> f32x4: exponent and mantissa shifted into f32 position and
 *  rescaled by 2^120 (7 -> 127 bias), which also decodes subnormals. The codec never writes the
 *  NaN code (it saturates at 448), so 0x7f/0xff are not special-cased. */
@inline export function e4m3x4(p: usize): v128 {
  const b = i32x4.extend_low_i16x8_u(i16x8.extend_low_i8x16_u(v128.load32_zero(p)));
  const f = f32x4.mul(i32x4.shl(v128.and(b, i32x4.splat(0x7f)), 20), f32x4.splat(1.329227995784916e36)); // 2^120
  return v128.or(f, i32x4.shl(v128.and(b, i32x4.splat(0x80)), 24));
}

/**
 * e^x for x <= 0 (softmax after subtracting the row max), four lanes: x = n ln2 + r with
 * |r| <= ln2/2, e^r by Cephes expf's degree-6 polynomial (relative error ~1e-7), times 2^n built in
 * the exponent bits. Below -87.3 the result would be subnormal: it is flushed to 0.
 */
@inline export function expNonPositive4(x: v128): v128 {
  const tiny = f32x4.lt(x, f32x4.splat(-87.3));
  const n = f32x4.nearest(f32x4.mul(x, f32x4.splat(1.4426950408889634)));
  let r = f32x4.sub(x, f32x4.mul(n, f32x4.splat(0.693359375)));
  r = f32x4.sub(r, f32x4.mul(n, f32x4.splat(-2.12194440e-4)));
  let p = f32x4.splat(1.9875691500e-4);
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(1.3981999507e-3));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(8.3334519073e-3));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(4.1665795894e-2));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(1.6666665459e-1));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(5.0000001201e-1));
  p = f32x4.add(f32x4.add(f32x4.mul(f32x4.mul(p, r), r), r), f32x4.splat(1));
  const pow2n = i32x4.shl(i32x4.add(i32x4.trunc_sat_f32x4_s(n), i32x4.splat(127)), 23);
  return v128.andnot(f32x4.mul(p, pow2n), tiny);
}
