// FP8 E4M3 in the OCP "FN" variant (OCP 8-bit Floating Point Specification, OFP8 rev 1.0, 2023):
// 1 sign, 4 exponent (bias 7), 3 mantissa bits; no infinities; S.1111.111 is NaN; max normal
// S.1111.110 = 448; min normal 2^-6; subnormals step 2^-9. Encoding rounds to nearest even and
// saturates to +-448 (the OFP8 "saturating" conversion mode), so no finite input becomes NaN.

const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

export const E4M3_MAX = 448;

/** E4M3 bits -> value, for every 8-bit pattern. */ // [256]
export const E4M3_TO_F32: Float32Array = buildTable();

function buildTable(): Float32Array {
  const t = new Float32Array(256);
  for (let b = 0; b < 256; b++) t[b] = e4m3BitsToNumber(b);
  return t;
}

/** Slow, obviously-correct decode (builds the table; tests use it as a reference). */
export function e4m3BitsToNumber(b: number): number {
  const sign = b & 0x80 ? -1 : 1;
  const exp = (b >> 3) & 0xf;
  const mant = b & 7;
  if ((b & 0x7f) === 0x7f) return NaN;
  if (exp === 0) return sign * mant * 2 ** -9;
  return sign * (1 + mant / 8) * 2 ** (exp - 7);
}

/** Value -> E4M3 bits: nearest, ties to even, saturating at +-448; NaN -> 0x7f. */
export function f32ToE4m3Bits(x: number): number {
  scratchF32[0] = x;
  const u = scratchU32[0]!;
  const sign = (u >>> 24) & 0x80;
  const a = u & 0x7fffffff;
  if (a > 0x7f800000) return sign | 0x7f;
  if (a < 0x3c800000) {
    // Below 2^-6: a multiple of 2^-9 (subnormal); 8 steps carry into the min normal, bits 0x08.
    scratchU32[0] = a;
    const steps = scratchF32[0]! * 512;
    let r = Math.round(steps);
    if (r - steps === 0.5 && (r & 1) === 1) r -= 1;
    return sign | r;
  }
  // Re-bias the exponent (127 -> 7: subtract 120 << 23) and round 23 mantissa bits to 3.
  const r = (a - 0x3c000000 + 0x7ffff + ((a >>> 20) & 1)) >>> 20;
  return sign | (r > 0x7e ? 0x7e : r);
}
