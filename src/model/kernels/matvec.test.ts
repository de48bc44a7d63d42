import { describe, expect, it } from "vitest";
import { f32ToF16Bits } from "../../cache/codecs/half.js";
import { quantizeQ4_K, quantizeQ8_0 } from "../../../test/fixtures/quantize.js";
import { quantizeIQ4_NL, quantizeIQ4_XS, quantizeQ2_K, quantizeQ3_K } from "../../../test/fixtures/quantize-low-bit.js";
import { matvec, matvecReference, type WeightMatrix } from "./matvec.js";
import { dequantizeRow, WEIGHT_TYPES, type WeightTypeName } from "./quant-rows.js";

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const BLOCK: Record<WeightTypeName, [number, number]> = {
  F32: [1, 4], F16: [1, 2], BF16: [1, 2], Q8_0: [32, 34], Q4_0: [32, 18], Q4_1: [32, 20], Q5_0: [32, 22], Q5_1: [32, 24],
  Q2_K: [256, 84], Q3_K: [256, 110], Q4_K: [256, 144], Q5_K: [256, 176], Q6_K: [256, 210], IQ4_NL: [32, 18], IQ4_XS: [256, 136],
};

/** Random valid blocks: random bytes, with every f16 scale field overwritten by a sane value. */
function randomMatrix(type: WeightTypeName, rows: number, cols: number, rand: () => number): WeightMatrix {
  const [bs, ts] = BLOCK[type];
  const rowBytes = (cols / bs) * ts;
  const u8 = new Uint8Array(rows * rowBytes);
  for (let i = 0; i < u8.length; i++) u8[i] = Math.floor(rand() * 256);
  const half = (o: number, v: number) => { const h = f32ToF16Bits(v); u8[o] = h & 0xff; u8[o + 1] = h >> 8; };
  const nBlocks = u8.length / ts;
  for (let b = 0; b < nBlocks; b++) {
    const o = b * ts;
    if (type === "F32") new DataView(u8.buffer).setFloat32(o, rand() * 2 - 1, true);
    else if (type === "F16") half(o, rand() * 2 - 1);
    else if (type === "BF16") { const f = new Float32Array([rand() * 2 - 1]); const u = new Uint32Array(f.buffer)[0]!; u8[o] = (u >>> 16) & 0xff; u8[o + 1] = u >>> 24; }
    else if (type === "Q6_K") half(o + 208, rand() * 0.01);
    else if (type === "Q2_K") { half(o + 80, rand() * 0.02); half(o + 82, rand() * 0.02); }
    else if (type === "Q3_K") half(o + 108, rand() * 0.02);
    else {
      half(o, rand() * 0.02);
      if (type === "Q4_1" || type === "Q5_1" || type === "Q4_K" || type === "Q5_K") half(o + 2, rand() * 0.02);
    }
  }
  return { name: type, type, rows, cols, rowBytes, u8, i8: new Int8Array(u8.buffer), f32: type === "F32" ? new Float32Array(u8.buffer) : null };
}

describe("matvec kernels against dequantize-then-multiply", () => {
  for (const type of WEIGHT_TYPES) {
    it(`${type}: within 1e-5 relative of the reference`, () => {
      const rand = rng(7);
      const rows = 24, cols = 512;
      const w = randomMatrix(type, rows, cols, rand);
      const x = new Float32Array(cols);
      for (let i = 0; i < cols; i++) x[i] = rand() * 2 - 1;
      const fast = new Float32Array(rows), ref = new Float32Array(rows);
      matvec(fast, x, w);
      matvecReference(ref, x, w);
      let scale = 0;
      for (let r = 0; r < rows; r++) scale = Math.max(scale, Math.abs(ref[r]!));
      expect(scale).toBeGreaterThan(0);
      for (let r = 0; r < rows; r++) expect(Math.abs(fast[r]! - ref[r]!)).toBeLessThan(1e-5 * scale);
    });
  }
});

describe("block decoding by hand", () => {
  it("Q8_0: d * q", () => {
    const u8 = new Uint8Array(34);
    u8.set([0x00, 0x38]); // f16 0.5
    u8[2] = 4; u8[3] = 0xfe; // 4, -2
    const out = new Float32Array(32);
    dequantizeRow("Q8_0", u8, 0, out, 0, 32);
    expect([out[0], out[1], out[2]]).toEqual([2, -1, 0]);
  });

  it("Q4_K: sub-block 5 uses the packed high bits of its scale and min", () => {
    const u8 = new Uint8Array(144);
    u8.set([0x00, 0x3c, 0x00, 0x40]); // d = 1, dmin = 2
    // sub-block 5: sc = (scales[9] & 15) | ((scales[1] >> 6) << 4), m = (scales[9] >> 4) | ((scales[5] >> 6) << 4)
    u8[4 + 9] = 0x23; // sc low 3, m low 2
    u8[4 + 1] = 0x40; // sc high 1 -> sc = 16 + 3 = 19
    u8[4 + 5] = 0x80; // m high 2 -> m = 32 + 2 = 34
    // value 32*5 + 0 is the high nibble of qs[64 + 0] (pair 2)
    u8[16 + 64] = 0x70; // q = 7
    const out = new Float32Array(256);
    dequantizeRow("Q4_K", u8, 0, out, 0, 256);
    expect(out[160]).toBe(1 * 19 * 7 - 2 * 34);
  });

  // The next four are written from ggml-common.h's block structs and ggml-quants.c's
  // dequantize_row_* loops, bit by bit, independently of the decoder's index arithmetic.
  it("Q2_K: byte g of scales is group g's scale (low nibble) and min (high); value 128h + 32k + l is bits 2k of qs[32h + l]", () => {
    const u8 = new Uint8Array(84);
    u8.set([0x00, 0x3c, 0x00, 0x40], 80); // d = 1, dmin = 2 (after scales[16], qs[64])
    u8[5] = 0x37; // group 5 (values 80..95): sc 7, m 3
    u8[16 + 16] = 0x20; // value 80 = 32*2 + 16: qs[16] bits 4-5 = 2
    u8[12] = 0x9f; // group 12 (values 192..207): sc 15, m 9
    u8[16 + 32 + 8] = 0xc0 | 0x20; // value 200 = 128 + 64 + 8: qs[32 + 8] bits 4-5 = 2 (bits 6-7 belong to value 232)
    const out = new Float32Array(256);
    dequantizeRow("Q2_K", u8, 0, out, 0, 256);
    expect(out[80]).toBe(1 * 7 * 2 - 2 * 3);
    expect(out[81]).toBe(-2 * 3); // q = 0
    expect(out[200]).toBe(15 * 2 - 2 * 9);
    expect(out[232]).toBe(0); // group 14: scale and min 0, whatever qs[40] bits 6-7 (3) say
  });

  it("Q3_K: 6-bit scales split over scales[12], the high bit of value i in hmask[i % 32] bit i / 32 (clear subtracts 4)", () => {
    const u8 = new Uint8Array(110);
    u8.set([0x00, 0x38], 108); // d = 0.5 (after hmask[32], qs[64], scales[12])
    // group 13: low 4 bits = scales[13 - 8] >> 4, high 2 bits = scales[8 + 13 % 4] bits 2*(13/4) = 6..7
    u8[96 + 5] = 0x90; // 9
    u8[96 + 9] = 0x80; // 2 -> 9 | 32 = 41, scale 41 - 32 = 9
    // value 210 = 128 + 64 + 18: qs[32 + 18] bits 4-5, hmask[18] bit 6
    u8[32 + 32 + 18] = 3 << 4; // q = 3, high bit clear -> 3 - 4 = -1
    u8[32 + 32 + 19] = 1 << 4; // value 211: q = 1
    u8[19] = 1 << 6; // high bit set -> 1
    // group 0: all scale bits 0 -> -32; value 0: qs[0] bits 0-1 = 2, hmask[0] bit 0 set -> 2
    u8[32] = 2;
    u8[0] = 1;
    const out = new Float32Array(256);
    dequantizeRow("Q3_K", u8, 0, out, 0, 256);
    expect(out[210]).toBe(0.5 * 9 * -1);
    expect(out[211]).toBe(0.5 * 9 * 1);
    expect(out[0]).toBe(0.5 * -32 * 2);
    expect(out[1]).toBe(0.5 * -32 * -4); // q 0, high bit clear
  });

  it("IQ4_NL and IQ4_XS: nibbles index kvalues_iq4nl; IQ4_XS sub-block scale ls = scales_l nibble | scales_h bits << 4, minus 32", () => {
    const nl = new Uint8Array(18);
    nl.set([0x00, 0x38, 0x0f]); // d = 0.5; qs[0]: low nibble 15 (value 0), high nibble 0 (value 16)
    const a = new Float32Array(32);
    dequantizeRow("IQ4_NL", nl, 0, a, 0, 32);
    expect([a[0], a[16], a[1]]).toEqual([0.5 * 113, 0.5 * -127, 0.5 * -127]);

    const xs = new Uint8Array(136);
    xs.set([0x00, 0x34]); // d = 0.25
    xs[2] = 0x00; xs[3] = 2 << 2; // scales_h: sub-block 5's 2 bits at bit 10 -> 2
    xs[4 + 2] = 0x30; // scales_l[5 / 2] high nibble (odd sub-block): 3 -> ls = 3 | 2 << 4 = 35
    xs[8 + 5 * 16] = 0xf8; // sub-block 5, byte 0: value 160 = level 8 (1), value 176 = level 15 (113)
    const b = new Float32Array(256);
    dequantizeRow("IQ4_XS", xs, 0, b, 0, 256);
    expect([b[160], b[176]]).toEqual([0.25 * 3 * 1, 0.25 * 3 * 113]);
    expect(b[0]).toBe(0.25 * -32 * -127); // sub-block 0: ls 0 -> -32, level 0
  });

  it("Q2_K, Q3_K, IQ4_NL and IQ4_XS encoders give blocks the decoder reads back close to the input", () => {
    const rand = rng(5);
    const x = new Float32Array(512);
    for (let i = 0; i < x.length; i++) x[i] = (rand() * 2 - 1) * 0.1;
    // Worst-case error per value: half a step of the level grid (range / levels) plus the scale rounding.
    for (const [type, enc, tol] of [["Q2_K", quantizeQ2_K, 0.2 / 3], ["Q3_K", quantizeQ3_K, 0.1 / 3], ["IQ4_NL", quantizeIQ4_NL, 0.2 / 12], ["IQ4_XS", quantizeIQ4_XS, 0.2 / 10]] as const) {
      const bytes = enc(x);
      expect(bytes.length).toBe((512 / BLOCK[type][0]) * BLOCK[type][1]);
      const back = new Float32Array(512);
      dequantizeRow(type, bytes, 0, back, 0, 512);
      let err = 0, sse = 0, ss = 0;
      for (let i = 0; i < 512; i++) {
        err = Math.max(err, Math.abs(back[i]! - x[i]!));
        sse += (back[i]! - x[i]!) ** 2;
        ss += x[i]! ** 2;
      }
      expect(err, type).toBeLessThan(tol);
      expect(Math.sqrt(sse / ss), type).toBeLessThan(type === "Q2_K" ? 0.35 : 0.2);
    }
  });

  it("Q8_0 and Q4_K encoders give blocks the decoder reads back close to the input", () => {
    const rand = rng(3);
    const x = new Float32Array(512);
    for (let i = 0; i < x.length; i++) x[i] = (rand() * 2 - 1) * 0.1;
    for (const [type, enc, tol] of [["Q8_0", quantizeQ8_0, 0.1 / 127], ["Q4_K", quantizeQ4_K, 0.2 / 15]] as const) {
      const bytes = enc(x);
      const back = new Float32Array(512);
      dequantizeRow(type, bytes, 0, back, 0, 512);
      for (let i = 0; i < 512; i++) expect(Math.abs(back[i]! - x[i]!)).toBeLessThan(tol);
    }
  });
});
