// exp(x) for the softmax's x <= 0 (and SiLU's sigmoid). Math.exp is an out-of-line call in V8;
// this inlines. Measured on node 20 (about 2.5 ns per element) against Math.exp (12-14 ns) and against
// this file's previous degree-7 Cody-Waite polynomial (7.3 ns). stories260K decode spent about a
// third of its CPU in the attention softmax's Math.exp. Relative error below 1e-9 (f32 rounding
// is 6e-8), checked against Math.exp in fast-exp.test.ts.
//
// Method: table-driven range reduction x = (k / 32) ln2 + r, |r| <= ln2 / 64, then exp(r) by its
// degree-3 Taylor polynomial (truncation r^4/4! < 6e-10), times 2^(k/32) from one table over the
// whole domain (4,800 doubles, 38 KB; softmax inputs cluster near 0, so the touched part stays in
// L1; measured 2x faster than splitting 2^(k/32) into two small tables). The one-product
// reduction k * (ln2 / 32) is off by ~1e-14 absolute (no Cody-Waite split needed at this accuracy).

const K_PER_X = 32 * 1.4426950408889634; // 32 log2 e
const LN2_32 = Math.LN2 / 32;
const C3 = 1 / 6;
/** Below this exp(x) < 2^-148, zero in f32 (the scores' type). */
export const FAST_EXP_MIN = -103;
// Smallest k: (FAST_EXP_MIN * K_PER_X - 0.5) | 0 = -4755; the bias leaves margin.
const POW2_BIAS = 4800;
const POW2 = new Float64Array(POW2_BIAS + 2); // POW2[k + POW2_BIAS] = 2^(k/32), k in [-4800, 1]
for (let i = 0; i < POW2.length; i++) POW2[i] = Math.pow(2, (i - POW2_BIAS) / 32);

/** exp(x) for x <= 0 (x > 0 is outside the domain); x < FAST_EXP_MIN gives 0, NaN gives NaN. */
export function expNonPositive(x: number): number {
  if (x < FAST_EXP_MIN) return 0;
  // y = 32 x log2 e <= 0: truncating y - 0.5 toward zero rounds y to the nearest integer.
  const k = (x * K_PER_X - 0.5) | 0;
  const r = x - k * LN2_32;
  return (1 + r + r * r * (0.5 + r * C3)) * POW2[k + POW2_BIAS]!;
}
