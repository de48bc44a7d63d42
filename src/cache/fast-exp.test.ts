// expNonPositive against Math.exp (the reference) and against exact values of e^x.
import { describe, expect, it } from "vitest";
import { expNonPositive, FAST_EXP_MIN } from "./fast-exp.js";

describe("expNonPositive", () => {
  it("matches Math.exp to 1e-8 relative over [FAST_EXP_MIN, 0]", () => {
    let maxRel = 0;
    for (let i = 0; i <= 200000; i++) {
      const x = (FAST_EXP_MIN * i) / 200000;
      const want = Math.exp(x);
      maxRel = Math.max(maxRel, Math.abs(expNonPositive(x) - want) / want);
    }
    expect(maxRel).toBeLessThan(1e-8);
  });
  it("hits exact points: e^0 = 1, e^-ln2 = 1/2, e^-1 = 0.36787944117144233 (1/e)", () => {
    expect(expNonPositive(0)).toBe(1);
    expect(Math.abs(expNonPositive(-Math.LN2) / 0.5 - 1)).toBeLessThan(1e-8);
    expect(Math.abs(expNonPositive(-1) / 0.36787944117144233 - 1)).toBeLessThan(1e-8);
    expect(Math.abs(expNonPositive(-20 * Math.LN2) / 2 ** -20 - 1)).toBeLessThan(1e-8);
  });
  it("underflows to 0 below the f32 range and keeps NaN and -Infinity meaningful", () => {
    expect(expNonPositive(-104)).toBe(0);
    expect(expNonPositive(-Infinity)).toBe(0);
    expect(expNonPositive(NaN)).toBeNaN();
    expect(Math.fround(Math.exp(FAST_EXP_MIN - 1))).toBe(0); // why the cut-off is safe for f32 scores
  });
});
