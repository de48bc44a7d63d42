import { describe, expect, it } from "vitest";
import { F16_TO_F32, f16BitsToNumber, f32ToF16Bits } from "./half.js";
import { E4M3_TO_F32, e4m3BitsToNumber, f32ToE4m3Bits } from "./e4m3.js";
import { gaussian, seededRandom } from "./synthetic-kv.js";

describe("f16 (IEEE 754 binary16)", () => {
  it("encodes the published reference values", () => {
    // Values from IEEE 754-2008 binary16 (also tabulated in Wikipedia, "Half-precision floating-point format").
    const cases: [number, number][] = [
      [0, 0x0000],
      [-0, 0x8000],
      [1, 0x3c00],
      [-2, 0xc000],
      [65504, 0x7bff], // largest finite
      [2 ** -14, 0x0400], // smallest normal
      [2 ** -24, 0x0001], // smallest subnormal
      [0.333251953125, 0x3555], // nearest to 1/3
      [Infinity, 0x7c00],
      [-Infinity, 0xfc00],
    ];
    for (const [x, bits] of cases) expect(f32ToF16Bits(x)).toBe(bits);
    expect(f32ToF16Bits(1 / 3)).toBe(0x3555);
  });

  it("rounds ties to even and overflows to infinity", () => {
    expect(f32ToF16Bits(1 + 2 ** -11)).toBe(0x3c00); // tie between 0x3c00 and 0x3c01 -> even
    expect(f32ToF16Bits(1 + 3 * 2 ** -11)).toBe(0x3c02); // tie between 0x3c01 and 0x3c02 -> even
    expect(f32ToF16Bits(2 ** -25)).toBe(0x0000); // tie between 0 and the smallest subnormal
    expect(f32ToF16Bits(3 * 2 ** -25)).toBe(0x0002); // tie between 1 and 2 subnormal steps
    expect(f32ToF16Bits(65519)).toBe(0x7bff);
    expect(f32ToF16Bits(65520)).toBe(0x7c00); // tie between 65504 and 2^16 -> infinity
    expect(f32ToF16Bits(2 ** -14 - 2 ** -25)).toBe(0x0400); // subnormal rounding carries into the smallest normal
    expect(Number.isNaN(F16_TO_F32[f32ToF16Bits(NaN)]!)).toBe(true);
  });

  it("table equals the slow decode and every finite pattern round-trips", () => {
    const bad: number[] = [];
    for (let h = 0; h < 65536; h++) {
      const v = f16BitsToNumber(h);
      if (Number.isNaN(v)) {
        if (!Number.isNaN(F16_TO_F32[h]!)) bad.push(h);
      } else if (F16_TO_F32[h] !== v || f32ToF16Bits(v) !== h) {
        bad.push(h);
      }
    }
    expect(bad).toEqual([]);
  });

  it("encodes random values to the nearest neighbour", () => {
    const g = gaussian(seededRandom(1));
    for (let i = 0; i < 20000; i++) {
      const x = Math.fround(g() * 2 ** Math.floor(g() * 8));
      if (Math.abs(x) > 65504) continue;
      const h = f32ToF16Bits(x);
      const err = Math.abs(F16_TO_F32[h]! - x);
      // neighbours one pattern up and down (same sign side) are not closer
      for (const n of [h - 1, h + 1]) {
        if ((n & 0x7fff) >= 0x7c00 || n < 0 || (n & 0x8000) !== (h & 0x8000)) continue;
        if (err > Math.abs(F16_TO_F32[n]! - x)) expect.fail(`${x} encoded to ${h}, but ${n} is closer`);
      }
    }
  });
});

describe("fp8 e4m3 (OCP FN)", () => {
  it("encodes the values of the OCP OFP8 specification table", () => {
    // OCP 8-bit Floating Point Specification (OFP8) rev 1.0, table 1 (E4M3): max normal
    // S.1111.110 = 448, min normal S.0001.000 = 2^-6, max subnormal S.0000.111 = 0.875 * 2^-6,
    // min subnormal S.0000.001 = 2^-9, NaN S.1111.111, no infinities.
    expect(f32ToE4m3Bits(448)).toBe(0x7e);
    expect(f32ToE4m3Bits(-448)).toBe(0xfe);
    expect(f32ToE4m3Bits(2 ** -6)).toBe(0x08);
    expect(f32ToE4m3Bits(0.875 * 2 ** -6)).toBe(0x07);
    expect(f32ToE4m3Bits(2 ** -9)).toBe(0x01);
    expect(f32ToE4m3Bits(1)).toBe(0x38); // exponent 7 (= bias), mantissa 0
    expect(f32ToE4m3Bits(240)).toBe(0x77); // 1.875 * 2^7
    expect(f32ToE4m3Bits(NaN) & 0x7f).toBe(0x7f);
    expect(Number.isNaN(E4M3_TO_F32[0x7f]!)).toBe(true);
    expect(Number.isNaN(E4M3_TO_F32[0xff]!)).toBe(true);
  });

  it("saturates out-of-range values (no infinities) and rounds ties to even", () => {
    expect(f32ToE4m3Bits(1000)).toBe(0x7e);
    expect(f32ToE4m3Bits(Infinity)).toBe(0x7e);
    expect(f32ToE4m3Bits(-1e30)).toBe(0xfe);
    expect(f32ToE4m3Bits(1 + 1 / 16)).toBe(0x38); // tie between 1 and 1.125 -> even mantissa 0
    expect(f32ToE4m3Bits(1 + 3 / 16)).toBe(0x3a); // tie between 1.125 and 1.25 -> even mantissa 2
    expect(f32ToE4m3Bits(2 ** -10)).toBe(0x00); // tie between 0 and 2^-9 -> even
  });

  it("every finite code round-trips; random values go to the nearest code (brute force)", () => {
    const finite: number[] = [];
    for (let b = 0; b < 256; b++) {
      const v = e4m3BitsToNumber(b);
      expect(Object.is(E4M3_TO_F32[b], v) || (Number.isNaN(v) && Number.isNaN(E4M3_TO_F32[b]!))).toBe(true);
      if (Number.isNaN(v)) continue;
      finite.push(v);
      expect(f32ToE4m3Bits(v)).toBe(b);
    }
    const g = gaussian(seededRandom(2));
    for (let i = 0; i < 5000; i++) {
      const x = Math.fround(g() * 2 ** Math.floor(g() * 4));
      let best = Infinity;
      for (const v of finite) best = Math.min(best, Math.abs(v - x));
      if (Math.abs(x) <= 448) expect(Math.abs(E4M3_TO_F32[f32ToE4m3Bits(x)]! - x)).toBe(best);
    }
  });
});
