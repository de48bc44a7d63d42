// The q8 activation path in plain JS: the references the wasm kernels (../wasm/kernels.as) are held
// to. llama.cpp quantizes the input vector of a Q8_0 matmul to Q8_0 once (quantize_row_q8_0) and
// then dots int8 x int8 per block (ggml_vec_dot_q8_0_q8_0); these do the same, naively.

import { F16_TO_F32, f32ToF16Bits } from "../../cache/codecs/half.js";
import type { WeightMatrix } from "./matvec.js";

/** Q8_0 activations of a vector of n (n % 32 == 0) values: qs [n] int8, d [n/32] (f16-rounded). */
export function quantizeRowQ8_0Reference(x: Float32Array, xOff: number, n: number, qs: Int8Array, d: Float32Array): void {
  for (let b = 0; b < n / 32; b++) {
    let amax = 0;
    for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[xOff + b * 32 + j]!));
    const id = amax !== 0 ? Math.fround(127 / amax) : 0;
    d[b] = F16_TO_F32[f32ToF16Bits(Math.fround(amax / 127))]!;
    for (let j = 0; j < 32; j++) qs[b * 32 + j] = roundHalfEven(Math.fround(x[xOff + b * 32 + j]! * id));
  }
}

function roundHalfEven(v: number): number {
  const f = Math.floor(v);
  const diff = v - f;
  if (diff > 0.5) return f + 1;
  if (diff < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/** out[r] = sum_b d_w * d_x * sum_j qw * qx for a Q8_0 GGUF matrix and Q8_0 activations (naive). */
export function matvecQ8_0Q8Reference(out: Float32Array, w: WeightMatrix, qs: Int8Array, d: Float32Array): void {
  const nb = w.cols / 32;
  for (let r = 0; r < w.rows; r++) {
    let s = 0;
    for (let b = 0; b < nb; b++) {
      const o = r * w.rowBytes + b * 34;
      const dw = F16_TO_F32[w.u8[o]! | (w.u8[o + 1]! << 8)]!;
      let isum = 0;
      for (let j = 0; j < 32; j++) isum += w.i8[o + 2 + j]! * qs[b * 32 + j]!;
      s += dw * d[b]! * isum;
    }
    out[r] = s;
  }
}
