import { describe, expect, it } from "vitest";
import { f32ToF16Bits } from "../../cache/codecs/half.js";
import { quantizeQ4_K, quantizeQ8_0 } from "../../../test/fixtures/quantize.js";
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
  Q4_K: [256, 144], Q5_K: [256, 176], Q6_K: [256, 210],
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
