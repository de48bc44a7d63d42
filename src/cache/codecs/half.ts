// IEEE 754 binary16 ("f16") conversion for the f16 codec and for the int4 codec's per-group
// parameters: encoding rounds to nearest, ties to even (as the hardware and numpy do); decoding is a
// 65536-entry table (256 KiB, built once) so that kernels pay one indexed load per value.

// Scratch views for reading an f32's bits without allocating; module-level because the conversion
// is synchronous and JS is single-threaded per realm (workers get their own module instance).
const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

/** f16 bits -> value, for every 16-bit pattern. */ // [65536]
export const F16_TO_F32: Float32Array = buildDecodeTable();

function buildDecodeTable(): Float32Array {
  const table = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) table[h] = f16BitsToNumber(h);
  return table;
}

/** Slow, obviously-correct decode (builds the table; tests use it as a reference). */
export function f16BitsToNumber(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24; // subnormal (and signed zero)
  if (exp === 0x1f) return mant === 0 ? sign * Infinity : NaN;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/**
 * Value -> f16 bits, round to nearest even; overflow gives +-Infinity (IEEE semantics), NaN a quiet
 * NaN. The value is first rounded to f32, which cannot change the f16 result: f32 keeps 13 more
 * mantissa bits, so a double can only land on an f16 tie after f32 rounding if it was within
 * 2^-24 relative of it, and such doubles do not occur from f32 model activations.
 */
export function f32ToF16Bits(x: number): number {
  scratchF32[0] = x;
  const u = scratchU32[0]!;
  const sign = (u >>> 16) & 0x8000;
  const a = u & 0x7fffffff;
  if (a >= 0x7f800000) return a === 0x7f800000 ? sign | 0x7c00 : sign | 0x7e00; // inf / NaN
  if (a < 0x38800000) {
    // Below the smallest normal f16 (2^-14): the result is a multiple of 2^-24 (subnormal); 1024
    // such steps carry into the smallest normal, whose bit pattern is exactly 0x0400.
    scratchU32[0] = a;
    const steps = scratchF32[0]! * 16777216; // exact in a double
    let r = Math.round(steps);
    if (r - steps === 0.5 && (r & 1) === 1) r -= 1; // Math.round rounds ties up; make them even
    return sign | r;
  }
  // Normal: re-bias the exponent (127 -> 15, i.e. subtract 112 << 23) and round the 23-bit mantissa
  // to 10 bits; a carry out of the mantissa correctly bumps the exponent, up to 0x7c00 (Infinity).
  const r = (a - 0x38000000 + 0xfff + ((a >>> 13) & 1)) >>> 13;
  return sign | (r > 0x7c00 ? 0x7c00 : r);
}

/** Rounds a value to the nearest f16 and back (what the f16 codec stores). */
export function roundToF16(x: number): number {
  return F16_TO_F32[f32ToF16Bits(x)]!;
}
