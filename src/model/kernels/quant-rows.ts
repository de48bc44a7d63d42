// Row kernels for GGUF weight types: a dot product that reads the quantized blocks in place
// (dotRow) and a naive dequantize (dequantizeRow) beside it as the reference the tests compare
// against. Block layouts are ggml's (ggml/src/ggml-common.h); all values little-endian.
// `src` is the tensor's bytes; `off` the byte offset of the row; `n` values per row.

import { F16_TO_F32 } from "../../cache/codecs/half.js";
import { UnsupportedTensorTypeError } from "../../errors.js";

/** Weight types kvbound can run. */
export type WeightTypeName =
  | "F32" | "F16" | "BF16" | "Q8_0" | "Q4_0" | "Q4_1" | "Q5_0" | "Q5_1"
  | "Q2_K" | "Q3_K" | "Q4_K" | "Q5_K" | "Q6_K" | "IQ4_NL" | "IQ4_XS";
export const WEIGHT_TYPES: readonly WeightTypeName[] = [
  "F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS",
];

/**
 * The 16 non-uniform levels of IQ4_NL and IQ4_XS (ggml-common.h kvalues_iq4nl): a 4-bit index
 * decodes to d * KVALUES_IQ4NL[index].
 */
export const KVALUES_IQ4NL: Int8Array = Int8Array.of(-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113);

/**
 * Q3_K's 6-bit scale of 16-value group j (0..15), as ggml's dequantize_row_q3_K unpacks
 * scales[12]: low 4 bits from byte j (j < 8) or the high nibble of byte j - 8, high 2 bits from
 * byte 8 + j % 4 at bit 2 * (j / 4); the result is signed, minus 32.
 */
export function q3KScale(src: Uint8Array, scalesOff: number, j: number): number {
  const lo = j < 8 ? src[scalesOff + j]! & 0xf : src[scalesOff + j - 8]! >> 4;
  const hi = (src[scalesOff + 8 + (j & 3)]! >> (2 * (j >> 2))) & 3;
  return (lo | (hi << 4)) - 32;
}

/** IQ4_XS's 6-bit scale of 32-value sub-block ib (0..7), signed (ls - 32), as dequantize_row_iq4_xs reads it. */
export function iq4XsScale(src: Uint8Array, blockOff: number, ib: number): number {
  const scalesH = src[blockOff + 2]! | (src[blockOff + 3]! << 8);
  const ls = ((src[blockOff + 4 + (ib >> 1)]! >> (4 * (ib & 1))) & 0xf) | (((scalesH >> (2 * ib)) & 3) << 4);
  return ls - 32;
}

const bf16Scratch = new Float32Array(1);
const bf16ScratchU32 = new Uint32Array(bf16Scratch.buffer);

function f16(src: Uint8Array, o: number): number {
  return F16_TO_F32[src[o]! | (src[o + 1]! << 8)]!;
}

function bf16(src: Uint8Array, o: number): number {
  bf16ScratchU32[0] = (src[o]! | (src[o + 1]! << 8)) << 16;
  return bf16Scratch[0]!;
}

/** Q4_K / Q5_K 6-bit scale and min of sub-block j (ggml's get_scale_min_k4). Returns scale | (min << 8). */
function scaleMinK4(src: Uint8Array, scalesOff: number, j: number): number {
  if (j < 4) return (src[scalesOff + j]! & 63) | ((src[scalesOff + j + 4]! & 63) << 8);
  const sc = (src[scalesOff + j + 4]! & 0xf) | ((src[scalesOff + j - 4]! >> 6) << 4);
  const m = (src[scalesOff + j + 4]! >> 4) | ((src[scalesOff + j]! >> 6) << 4);
  return sc | (m << 8);
}

/** Naive reference: decodes `n` values of a row into `out[outOff..)`. */
export function dequantizeRow(wtype: WeightTypeName, src: Uint8Array, off: number, out: Float32Array, outOff: number, n: number): void {
  switch (wtype) {
    case "F32": {
      const dv = new DataView(src.buffer, src.byteOffset + off, n * 4);
      for (let i = 0; i < n; i++) out[outOff + i] = dv.getFloat32(i * 4, true);
      return;
    }
    case "F16":
      for (let i = 0; i < n; i++) out[outOff + i] = f16(src, off + 2 * i);
      return;
    case "BF16":
      for (let i = 0; i < n; i++) out[outOff + i] = bf16(src, off + 2 * i);
      return;
    case "Q8_0":
      for (let b = 0; b < n / 32; b++) {
        const o = off + b * 34;
        const d = f16(src, o);
        for (let j = 0; j < 32; j++) out[outOff + b * 32 + j] = d * ((src[o + 2 + j]! << 24) >> 24);
      }
      return;
    case "Q4_0":
    case "Q4_1": {
      const bytes = wtype === "Q4_0" ? 18 : 20;
      for (let b = 0; b < n / 32; b++) {
        const o = off + b * bytes;
        const d = f16(src, o);
        const m = wtype === "Q4_1" ? f16(src, o + 2) : -8 * d;
        const qs = o + bytes - 16;
        for (let j = 0; j < 16; j++) {
          out[outOff + b * 32 + j] = d * (src[qs + j]! & 0xf) + m;
          out[outOff + b * 32 + j + 16] = d * (src[qs + j]! >> 4) + m;
        }
      }
      return;
    }
    case "Q5_0":
    case "Q5_1": {
      const bytes = wtype === "Q5_0" ? 22 : 24;
      for (let b = 0; b < n / 32; b++) {
        const o = off + b * bytes;
        const d = f16(src, o);
        const m = wtype === "Q5_1" ? f16(src, o + 2) : -16 * d;
        const qhOff = o + bytes - 20;
        const qh = (src[qhOff]! | (src[qhOff + 1]! << 8) | (src[qhOff + 2]! << 16) | (src[qhOff + 3]! << 24)) >>> 0;
        const qs = o + bytes - 16;
        for (let j = 0; j < 16; j++) {
          const h0 = ((qh >>> j) << 4) & 0x10;
          const h1 = (qh >>> (j + 12)) & 0x10;
          out[outOff + b * 32 + j] = d * ((src[qs + j]! & 0xf) | h0) + m;
          out[outOff + b * 32 + j + 16] = d * ((src[qs + j]! >> 4) | h1) + m;
        }
      }
      return;
    }
    case "Q4_K":
    case "Q5_K": {
      const bytes = wtype === "Q4_K" ? 144 : 176;
      for (let b = 0; b < n / 256; b++) {
        const o = off + b * bytes;
        const d = f16(src, o);
        const dmin = f16(src, o + 2);
        const scales = o + 4;
        const qh = o + 16; // Q5_K only
        let qs = wtype === "Q4_K" ? o + 16 : o + 48;
        let y = outOff + b * 256;
        for (let j = 0, is = 0, u1 = 1, u2 = 2; j < 256; j += 64, is += 2, u1 <<= 2, u2 <<= 2) {
          const a = scaleMinK4(src, scales, is);
          const c = scaleMinK4(src, scales, is + 1);
          const d1 = d * (a & 0xff), m1 = dmin * (a >> 8);
          const d2 = d * (c & 0xff), m2 = dmin * (c >> 8);
          for (let l = 0; l < 32; l++) {
            const hi = wtype === "Q5_K" && src[qh + l]! & u1 ? 16 : 0;
            out[y++] = d1 * ((src[qs + l]! & 0xf) + hi) - m1;
          }
          for (let l = 0; l < 32; l++) {
            const hi = wtype === "Q5_K" && src[qh + l]! & u2 ? 16 : 0;
            out[y++] = d2 * ((src[qs + l]! >> 4) + hi) - m2;
          }
          qs += 32;
        }
      }
      return;
    }
    case "Q6_K":
      for (let b = 0; b < n / 256; b++) {
        const o = off + b * 210;
        const d = f16(src, o + 208);
        let ql = o, qh = o + 128, sc = o + 192;
        let y = outOff + b * 256;
        for (let half = 0; half < 2; half++) {
          for (let l = 0; l < 32; l++) {
            const is = l >> 4;
            const q1 = ((src[ql + l]! & 0xf) | (((src[qh + l]! >> 0) & 3) << 4)) - 32;
            const q2 = ((src[ql + l + 32]! & 0xf) | (((src[qh + l]! >> 2) & 3) << 4)) - 32;
            const q3 = ((src[ql + l]! >> 4) | (((src[qh + l]! >> 4) & 3) << 4)) - 32;
            const q4 = ((src[ql + l + 32]! >> 4) | (((src[qh + l]! >> 6) & 3) << 4)) - 32;
            out[y + l] = d * ((src[sc + is]! << 24) >> 24) * q1;
            out[y + l + 32] = d * ((src[sc + is + 2]! << 24) >> 24) * q2;
            out[y + l + 64] = d * ((src[sc + is + 4]! << 24) >> 24) * q3;
            out[y + l + 96] = d * ((src[sc + is + 6]! << 24) >> 24) * q4;
          }
          y += 128; ql += 64; qh += 32; sc += 8;
        }
      }
      return;
    case "Q2_K":
      // block_q2_K: u8 scales[16] (low nibble scale, high nibble min, per 16 values), u8 qs[64]
      // (2-bit), f16 d, f16 dmin (84 bytes). ggml-quants.c dequantize_row_q2_K: in each 128-value
      // half, value 32j + l takes bits 2j..2j+1 of qs[l] (l < 32); y = d*sc*q - dmin*m.
      for (let b = 0; b < n / 256; b++) {
        const o = off + b * 84;
        const d = f16(src, o + 80);
        const dmin = f16(src, o + 82);
        for (let i = 0; i < 256; i++) {
          const sc = src[o + (i >> 4)]!;
          const q = (src[o + 16 + ((i >> 7) << 5) + (i & 31)]! >> (2 * ((i >> 5) & 3))) & 3;
          out[outOff + b * 256 + i] = d * (sc & 0xf) * q - dmin * (sc >> 4);
        }
      }
      return;
    case "Q3_K":
      // block_q3_K: u8 hmask[32], u8 qs[64] (low 2 bits), u8 scales[12] (16 x 6 bits), f16 d (110
      // bytes). ggml-quants.c dequantize_row_q3_K: value i's low bits as Q2_K's; its high bit is
      // bit i / 32 of hmask[i % 32], and a clear bit subtracts 4: y = d * (sc - 32) * (q - 4*!h).
      for (let b = 0; b < n / 256; b++) {
        const o = off + b * 110;
        const d = f16(src, o + 108);
        for (let i = 0; i < 256; i++) {
          const q = (src[o + 32 + ((i >> 7) << 5) + (i & 31)]! >> (2 * ((i >> 5) & 3))) & 3;
          const h = (src[o + (i & 31)]! >> (i >> 5)) & 1;
          out[outOff + b * 256 + i] = d * q3KScale(src, o + 96, i >> 4) * (q - (h ? 0 : 4));
        }
      }
      return;
    case "IQ4_NL":
      // block_iq4_nl: f16 d, u8 qs[16] (18 bytes); value j = d * kvalues[qs[j] & 15], j + 16 the high nibble.
      for (let b = 0; b < n / 32; b++) {
        const o = off + b * 18;
        const d = f16(src, o);
        for (let j = 0; j < 16; j++) {
          out[outOff + b * 32 + j] = d * KVALUES_IQ4NL[src[o + 2 + j]! & 0xf]!;
          out[outOff + b * 32 + j + 16] = d * KVALUES_IQ4NL[src[o + 2 + j]! >> 4]!;
        }
      }
      return;
    case "IQ4_XS":
      // block_iq4_xs: f16 d, u16 scales_h, u8 scales_l[4], u8 qs[128] (136 bytes); sub-block ib of
      // 32 values is IQ4_NL's layout with scale d * (ls - 32) (dequantize_row_iq4_xs).
      for (let b = 0; b < n / 256; b++) {
        const o = off + b * 136;
        const d = f16(src, o);
        for (let ib = 0; ib < 8; ib++) {
          const dl = d * iq4XsScale(src, o, ib);
          const qs = o + 8 + ib * 16, y = outOff + b * 256 + ib * 32;
          for (let j = 0; j < 16; j++) {
            out[y + j] = dl * KVALUES_IQ4NL[src[qs + j]! & 0xf]!;
            out[y + j + 16] = dl * KVALUES_IQ4NL[src[qs + j]! >> 4]!;
          }
        }
      }
      return;
    default:
      wtype satisfies never;
      throw new UnsupportedTensorTypeError("(row)", wtype);
  }
}
