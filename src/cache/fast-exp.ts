// exp(x) for the softmax's x <= 0, about 2x faster than Math.exp in V8 (measured 6 vs 12-14 ns per
// element on node 20: Math.exp is an out-of-line call; this inlines). stories260K decode spent
// about a third of its CPU in the attention softmax's Math.exp. Relative error below 1e-8 (f32
// rounding is 6e-8), checked against Math.exp in fast-exp.test.ts.
//
// Method: Cody-Waite range reduction x = k ln2 + r, |r| <= ln2/2, then exp(r) by its degree-7
// Taylor polynomial (truncation r^8/8! < 6e-9) evaluated in Estrin's scheme (shorter dependency
// chain than Horner), times 2^k from a table.

const LOG2E = 1.4426950408889634;
const LN2_HI = 0.6931471803691238; // ln 2 split so that k * LN2_HI is exact for |k| < 2^11
const LN2_LO = 1.9082149292705877e-10;
const C3 = 1 / 6, C4 = 1 / 24, C5 = 1 / 120, C6 = 1 / 720, C7 = 1 / 5040;
/** Below this exp(x) < 2^-148, zero in f32 (the scores' type). */
export const FAST_EXP_MIN = -103;
const POW2_BIAS = 160;
const POW2 = new Float64Array(POW2_BIAS + 2); // POW2[k + POW2_BIAS] = 2^k, k in [-160, 1]
for (let i = 0; i < POW2.length; i++) POW2[i] = Math.pow(2, i - POW2_BIAS);

/** exp(x) for x <= 0 (x > 0 is outside the domain); x < FAST_EXP_MIN gives 0, NaN gives NaN. */
export function expNonPositive(x: number): number {
  if (x < FAST_EXP_MIN) return 0;
  // y = x log2 e <= 0: truncating y - 0.5 toward zero rounds y to the nearest integer.
  const k = (x * LOG2E - 0.5) | 0;
  const r = x - k * LN2_HI - k * LN2_LO;
  const r2 = r * r;
  const p = 1 + r + r2 * (0.5 + r * C3 + r2 * (C4 + r * C5 + r2 * (C6 + r * C7)));
  return p * POW2[k + POW2_BIAS]!;
}
