// Matrix-vector products over GGUF weights that read quantized blocks in place. A weight matrix
// is `rows` rows of `cols` values (ggml ne0 = cols); `matvec(out, x, w)` computes
// out[r] = dot(row r, x). The per-type loops sit in one function each so that the type switch
// happens once per matrix, not once per row; `matvecReference` (dequantize, then multiply) is the
// naive reference the tests hold them to.

import { F16_TO_F32 } from "../../cache/codecs/half.js";
import { UnsupportedTensorTypeError } from "../../errors.js";
import { dequantizeRow, KVALUES_IQ4NL, q3KScale, type WeightTypeName } from "./quant-rows.js";

export interface WeightMatrix {
  readonly name: string;
  readonly type: WeightTypeName;
  readonly rows: number;
  readonly cols: number;
  /** Bytes of one row. */
  readonly rowBytes: number;
  /** The tensor's bytes (a view into the loaded file, never a copy). */
  readonly u8: Uint8Array;
  /** Signed view of the same bytes (Q8_0, Q6_K scales). */
  readonly i8: Int8Array;
  /** Float view when the type is F32 (the bytes are 4-byte aligned). */
  readonly f32: Float32Array | null;
}

export function matvec(out: Float32Array, x: Float32Array, w: WeightMatrix): void {
  switch (w.type) {
    case "F32": return matvecF32(out, x, w);
    case "F16": return matvecF16(out, x, w);
    case "Q8_0": return matvecQ8_0(out, x, w);
    case "Q4_0": return matvecQ4_0(out, x, w);
    case "Q5_0": return matvecQ5_0(out, x, w);
    case "Q4_K": return matvecQ4_K(out, x, w);
    case "Q6_K": return matvecQ6_K(out, x, w);
    case "Q2_K": return matvecQ2_K(out, x, w);
    case "Q3_K": return matvecQ3_K(out, x, w);
    case "IQ4_NL": return matvecIQ4_NL(out, x, w);
    case "IQ4_XS": return matvecIQ4_XS(out, x, w);
    case "BF16":
    case "Q4_1":
    case "Q5_1":
    case "Q5_K":
      return matvecViaRows(out, x, w);
    default:
      w.type satisfies never;
      throw new UnsupportedTensorTypeError(w.name, w.type);
  }
}

/** Naive reference: dequantize each row to f32, then a plain dot in float64. */
export function matvecReference(out: Float32Array, x: Float32Array, w: WeightMatrix): void {
  const row = new Float32Array(w.cols);
  for (let r = 0; r < w.rows; r++) {
    dequantizeRow(w.type, w.u8, r * w.rowBytes, row, 0, w.cols);
    let s = 0;
    for (let i = 0; i < w.cols; i++) s += row[i]! * x[i]!;
    out[r] = s;
  }
}

function matvecF32(out: Float32Array, x: Float32Array, w: WeightMatrix): void {
  const a = w.f32!;
  const n = w.cols;
  for (let r = 0; r < w.rows; r++) {
    const o = r * n;
    let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    let i = 0;
    for (; i + 3 < n; i += 4) {
      s0 += a[o + i]! * x[i]!;
      s1 += a[o + i + 1]! * x[i + 1]!;
      s2 += a[o + i + 2]! * x[i + 2]!;
      s3 += a[o + i + 3]! * x[i + 3]!;
    }
    for (; i < n; i++) s0 += a[o + i]! * x[i]!;
    out[r] = s0 + s1 + s2 + s3;
  }
}

function matvecF16(out: Float32Array, x: Float32Array, w: WeightMatrix): void {
  const u8 = w.u8;
  const n = w.cols;
  for (let r = 0; r < w.rows; r++) {
    const o = r * w.rowBytes;
    let s = 0;
    for (let i = 0; i < n; i++) s += F16_TO_F32[u8[o + 2 * i]! | (u8[o + 2 * i + 1]! << 8)]! * x[i]!;
    out[r] = s;
  }
}

// block_q8_0: f16 d, int8 qs[32] (34 bytes)
function matvecQ8_0(out: Float32Array, x: Float32Array, w: WeightMatrix): void {
  const u8 = w.u8, i8 = w.i8;
  const nb = w.cols >> 5;
  for (let r = 0; r < w.rows; r++) {
    let o = r * w.rowBytes;
    let s = 0;
    for (let b = 0, xi = 0; b < nb; b++, o += 34, xi += 32) {
      const d = F16_TO_F32[u8[o]! | (u8[o + 1]! << 8)]!;
      const q = o + 2;
      let a0 = 0, a1 = 0;
      for (let j = 0; j < 32; j += 2) {
        a0 += i8[q + j]! * x[xi + j]!;
        a1 += i8[q + j + 1]! * x[xi + j + 1]!;
      }
      s += d * (a0 + a1);
    }
    out[r] = s;
  }
}

// block_q4_0: f16 d, uint8 qs[16]; value j = (qs[j] & 15) - 8, value j+16 = (qs[j] >> 4) - 8
function matvecQ4_0(out: Float32Array, x: Float32Array, w: WeightMatrix): void {
  const u8 = w.u8;
  const nb = w.cols >> 5;
  for (let r = 0; r < w.rows; r++) {
    let o = r * w.rowBytes;
    let s = 0;
    for (let b = 0, xi = 0; b < nb; b++, o += 18, xi += 32) {
      const d = F16_TO_F32[u8[o]! | (u8[o + 1]! << 8)]!;
      let acc = 0, sumx = 0;
      for (let j = 0; j < 16; j++) {
        const q = u8[o + 2 + j]!;
        const xa = x[xi + j]!, xb = x[xi + j + 16]!;
        acc += (q & 15) * xa + (q >> 4) * xb;
        sumx += xa + xb;
      }
      s += d * (acc - 8 * sumx);
    }
    out[r] = s;
  }
}

// block_q5_0: f16 d, u32 qh (5th bits), u8 qs[16]; value = ((nibble | high << 4) - 16) * d
function matvecQ5_0(out: Float32Array, x: Float32Array, w: WeightMatrix): void {
  const u8 = w.u8;
  const nb = w.cols >> 5;
  for (let r = 0; r < w.rows; r++) {
    let o = r * w.rowBytes;
    let s = 0;
    for (let b = 0, xi = 0; b < nb; b++, o += 22, xi += 32) {
      const d = F16_TO_F32[u8[o]! | (u8[o + 1]! << 8)]!;
      const qh = u8[o + 2]! | (u8[o + 3]! << 8) | (u8[o + 4]! << 16) | (u8[o + 5]! << 24);
      let acc = 0, sumx = 0;
      for (let j = 0; j < 16; j++) {
        const q = u8[o + 6 + j]!;
        const xa = x[xi + j]!, xb = x[xi + j + 16]!;
        acc += ((q & 15) | (((qh >>> j) & 1) << 4)) * xa + ((q >> 4) | (((qh >>> (j + 16)) & 1) << 4)) * xb;
        sumx += xa + xb;
      }
      s += d * (acc - 16 * sumx);
    }
    out[r] = s;
  }
}

// block_q4_K: f16 d, f16 dmin, u8 scales[12] (8 x 6-bit scale + 6-bit min), u8 qs[128] (144 bytes).
// Sub-block j (32 values) decodes to d*sc_j*q - dmin*m_j, so its dot is d*sc_j*sum(q*x) - dmin*m_j*sum(x).
function matvecQ4_K(out: Float32Array, x: Float32Array, w: WeightMatrix): void {
  const u8 = w.u8;
  const nb = w.cols >> 8;
  for (let r = 0; r < w.rows; r++) {
    let o = r * w.rowBytes;
    let s = 0;
    for (let b = 0; b < nb; b++, o += 144) {
      const d = F16_TO_F32[u8[o]! | (u8[o + 1]! << 8)]!;
      const dmin = F16_TO_F32[u8[o + 2]! | (u8[o + 3]! << 8)]!;
      const sc = o + 4;
      let qs = o + 16;
      let xi = b << 8;
      for (let j = 0; j < 8; j += 2, qs += 32, xi += 64) {
        // get_scale_min_k4 for sub-blocks j and j + 1
        let sc0: number, m0: number, sc1: number, m1: number;
        if (j < 4) {
          sc0 = u8[sc + j]! & 63; m0 = u8[sc + j + 4]! & 63;
          sc1 = u8[sc + j + 1]! & 63; m1 = u8[sc + j + 5]! & 63;
        } else {
          sc0 = (u8[sc + j + 4]! & 0xf) | ((u8[sc + j - 4]! >> 6) << 4); m0 = (u8[sc + j + 4]! >> 4) | ((u8[sc + j]! >> 6) << 4);
          sc1 = (u8[sc + j + 5]! & 0xf) | ((u8[sc + j - 3]! >> 6) << 4); m1 = (u8[sc + j + 5]! >> 4) | ((u8[sc + j + 1]! >> 6) << 4);
        }
        let a0 = 0, a1 = 0, s0 = 0, s1 = 0;
        for (let l = 0; l < 32; l++) {
          const q = u8[qs + l]!;
          const x0 = x[xi + l]!, x1 = x[xi + 32 + l]!;
          a0 += (q & 15) * x0; s0 += x0;
          a1 += (q >> 4) * x1; s1 += x1;
        }
        s += d * (sc0 * a0 + sc1 * a1) - dmin * (m0 * s0 + m1 * s1);
      }
    }
    out[r] = s;
  }
}

// block_q6_K: u8 ql[128], u8 qh[64], i8 scales[16], f16 d (210 bytes); 16 groups of 16 values.
function matvecQ6_K(out: Float32Array, x: Float32Array, w: WeightMatrix): void {
  const u8 = w.u8, i8 = w.i8;
  const nb = w.cols >> 8;
  for (let r = 0; r < w.rows; r++) {
    let o = r * w.rowBytes;
    let s = 0;
    for (let b = 0; b < nb; b++, o += 210) {
      const d = F16_TO_F32[u8[o + 208]! | (u8[o + 209]! << 8)]!;
      let ql = o, qh = o + 128, sc = o + 192, xi = b << 8;
      for (let half = 0; half < 2; half++, ql += 64, qh += 32, sc += 8, xi += 128) {
        for (let g = 0; g < 2; g++) {
          let a1 = 0, a2 = 0, a3 = 0, a4 = 0;
          for (let l = g * 16; l < g * 16 + 16; l++) {
            const h = u8[qh + l]!;
            const lo = u8[ql + l]!, lo2 = u8[ql + l + 32]!;
            a1 += (((lo & 15) | ((h & 3) << 4)) - 32) * x[xi + l]!;
            a2 += (((lo2 & 15) | (((h >> 2) & 3) << 4)) - 32) * x[xi + l + 32]!;
            a3 += (((lo >> 4) | (((h >> 4) & 3) << 4)) - 32) * x[xi + l + 64]!;
            a4 += (((lo2 >> 4) | (((h >> 6) & 3) << 4)) - 32) * x[xi + l + 96]!;
          }
          s += d * (i8[sc + g]! * a1 + i8[sc + g + 2]! * a2 + i8[sc + g + 4]! * a3 + i8[sc + g + 6]! * a4);
        }
      }
    }
    out[r] = s;
  }
}

// block_q2_K: u8 scales[16] (scale | min << 4), u8 qs[64], f16 d, f16 dmin (84 bytes); 16 groups
// of 16. In each 128-value half, byte l of the half's 32 holds values l, l+32, l+64, l+96 (2 bits
// each); group g decodes to d*sc_g*q - dmin*m_g, so its dot is d*sc_g*sum(q*x) - dmin*m_g*sum(x).
function matvecQ2_K(out: Float32Array, x: Float32Array, w: WeightMatrix): void {
  const u8 = w.u8;
  const nb = w.cols >> 8;
  for (let r = 0; r < w.rows; r++) {
    let o = r * w.rowBytes;
    let s = 0;
    for (let b = 0; b < nb; b++, o += 84) {
      const d = F16_TO_F32[u8[o + 80]! | (u8[o + 81]! << 8)]!;
      const dmin = F16_TO_F32[u8[o + 82]! | (u8[o + 83]! << 8)]!;
      let isum = 0, msum = 0;
      for (let half = 0; half < 2; half++) {
        const qs = o + 16 + half * 32, xh = (b << 8) + half * 128;
        for (let j = 0; j < 4; j++) {
          const shift = 2 * j;
          const g = half * 8 + 2 * j; // groups g (bytes 0..15) and g + 1 (bytes 16..31)
          const xi = xh + 32 * j;
          let a0 = 0, a1 = 0, s0 = 0, s1 = 0;
          for (let l = 0; l < 16; l++) {
            const x0 = x[xi + l]!, x1 = x[xi + 16 + l]!;
            a0 += ((u8[qs + l]! >> shift) & 3) * x0; s0 += x0;
            a1 += ((u8[qs + 16 + l]! >> shift) & 3) * x1; s1 += x1;
          }
          const sc0 = u8[o + g]!, sc1 = u8[o + g + 1]!;
          isum += (sc0 & 15) * a0 + (sc1 & 15) * a1;
          msum += (sc0 >> 4) * s0 + (sc1 >> 4) * s1;
        }
      }
      s += d * isum - dmin * msum;
    }
    out[r] = s;
  }
}

// block_q3_K: u8 hmask[32], u8 qs[64], u8 scales[12] (16 x 6 bits, q3KScale), f16 d (110 bytes).
// Value 32k + l of a 128-value half: 2 low bits as Q2_K's, minus 4 unless bit (4*half + k) of
// hmask[l] is set; group g decodes to d*(sc_g - 32)*q.
const q3Scales = new Int8Array(16);
function matvecQ3_K(out: Float32Array, x: Float32Array, w: WeightMatrix): void {
  const u8 = w.u8;
  const nb = w.cols >> 8;
  const sc = q3Scales;
  for (let r = 0; r < w.rows; r++) {
    let o = r * w.rowBytes;
    let s = 0;
    for (let b = 0; b < nb; b++, o += 110) {
      const d = F16_TO_F32[u8[o + 108]! | (u8[o + 109]! << 8)]!;
      for (let g = 0; g < 16; g++) sc[g] = q3KScale(u8, o + 96, g);
      let isum = 0;
      for (let half = 0; half < 2; half++) {
        const qs = o + 32 + half * 32, xh = (b << 8) + half * 128;
        for (let j = 0; j < 4; j++) {
          const shift = 2 * j, hbit = 4 * half + j;
          const xi = xh + 32 * j;
          // q + 4 = low bits | high bit << 2 (0..7): sum((q + 4) * x) - 4 * sum(x).
          let a0 = 0, a1 = 0, s0 = 0, s1 = 0;
          for (let l = 0; l < 16; l++) {
            const x0 = x[xi + l]!, x1 = x[xi + 16 + l]!;
            a0 += (((u8[qs + l]! >> shift) & 3) | (((u8[o + l]! >> hbit) & 1) << 2)) * x0; s0 += x0;
            a1 += (((u8[qs + 16 + l]! >> shift) & 3) | (((u8[o + 16 + l]! >> hbit) & 1) << 2)) * x1; s1 += x1;
          }
          const g = half * 8 + 2 * j;
          isum += sc[g]! * (a0 - 4 * s0) + sc[g + 1]! * (a1 - 4 * s1);
        }
      }
      s += d * isum;
    }
    out[r] = s;
  }
}

/** sum_j kvalues[nibble j] * x[xi + j] over one 32-value IQ4 block's 16 bytes of nibbles at u8[qs] (low nibbles first). */
function iq4Dot(u8: Uint8Array, qs: number, x: Float32Array, xi: number): number {
  const kv = KVALUES_IQ4NL;
  let a0 = 0, a1 = 0;
  for (let j = 0; j < 16; j++) {
    const q = u8[qs + j]!;
    a0 += kv[q & 15]! * x[xi + j]!;
    a1 += kv[q >> 4]! * x[xi + j + 16]!;
  }
  return a0 + a1;
}

// block_iq4_nl: f16 d, u8 qs[16] (18 bytes); value j = d * kvalues[qs[j] & 15], value j + 16 the high nibble.
function matvecIQ4_NL(out: Float32Array, x: Float32Array, w: WeightMatrix): void {
  const u8 = w.u8;
  const nb = w.cols >> 5;
  for (let r = 0; r < w.rows; r++) {
    let o = r * w.rowBytes;
    let s = 0;
    for (let b = 0, xi = 0; b < nb; b++, o += 18, xi += 32) {
      s += F16_TO_F32[u8[o]! | (u8[o + 1]! << 8)]! * iq4Dot(u8, o + 2, x, xi);
    }
    out[r] = s;
  }
}

// block_iq4_xs: f16 d, u16 scales_h, u8 scales_l[4], u8 qs[128] (136 bytes); sub-block ib (32
// values) is an IQ4_NL block with scale d * (ls_ib - 32), ls_ib = 4 bits of scales_l | 2 of scales_h.
function matvecIQ4_XS(out: Float32Array, x: Float32Array, w: WeightMatrix): void {
  const u8 = w.u8;
  const nb = w.cols >> 8;
  for (let r = 0; r < w.rows; r++) {
    let o = r * w.rowBytes;
    let s = 0;
    for (let b = 0; b < nb; b++, o += 136) {
      const d = F16_TO_F32[u8[o]! | (u8[o + 1]! << 8)]!;
      const scalesH = u8[o + 2]! | (u8[o + 3]! << 8);
      let isum = 0;
      for (let ib = 0; ib < 8; ib++) {
        const ls = ((u8[o + 4 + (ib >> 1)]! >> (4 * (ib & 1))) & 15) | (((scalesH >> (2 * ib)) & 3) << 4);
        isum += (ls - 32) * iq4Dot(u8, o + 8 + ib * 16, x, (b << 8) + ib * 32);
      }
      s += d * isum;
    }
    out[r] = s;
  }
}

// Types without a dedicated kernel yet decode one block-aligned row at a time into a scratch row
// sized for the widest matrix seen, then dot it: still no copy of the matrix.
let scratch = new Float32Array(0);
function matvecViaRows(out: Float32Array, x: Float32Array, w: WeightMatrix): void {
  if (scratch.length < w.cols) scratch = new Float32Array(w.cols);
  const row = scratch;
  const n = w.cols;
  for (let r = 0; r < w.rows; r++) {
    dequantizeRow(w.type, w.u8, r * w.rowBytes, row, 0, n);
    let s = 0;
    for (let i = 0; i < n; i++) s += row[i]! * x[i]!;
    out[r] = s;
  }
}
