// A weight matrix bound to the kernel that multiplies it: the WebAssembly SIMD kernels when the
// matrix was copied into the model's wasm memory (F32 as is; Q8_0, Q4_0, Q5_0, IQ4_NL as int8 +
// the file's f16 scale per 32, IQ4_XS as int8 + f32 scale per 32; Q6_K, Q3_K as int8 + f32 scale
// per 16, Q2_K with an f32 offset per 16
// too; Q4_K as nibbles + f32 scale and offset), else the JS matvec over the file's bytes. `Acts` are activation buffers [rows][width] that live in wasm memory when
// the model has one (so the kernels read them in place) and in plain arrays otherwise. A wasm
// matmul is described as a RowCall (which kernel, and how far each argument moves per output row
// and per token), so that the arena can split it by rows over its threads.

import type { WasmArena } from "../wasm/wasm-kernels.js";
import { ROW_KERNEL as K, SCRATCH_ARG, type RowCall } from "../../wasm/row-call.js";
import { F16_TO_F32 } from "../../cache/codecs/half.js";
import { TensorDataError } from "../../errors.js";
import { matvec, type WeightMatrix } from "./matvec.js";
import { iq4XsScale, KVALUES_IQ4NL, q3KScale } from "./quant-rows.js";

import { PACKED_ROWS, packedRowBytes, type Q8Scratch } from "../../wasm/model-layout.js";

export { q8ScratchBytes, wasmBytes, type Q8Scratch } from "../../wasm/model-layout.js";

export type Linear =
  | { readonly kind: "js"; readonly w: WeightMatrix }
  | { readonly kind: "wasm-f32"; readonly w: WeightMatrix; readonly ptr: number }
  /**
   * int8 qs at `qs` and one f16 scale per 32 values at `d` (Q8_0, Q4_0, Q5_0, IQ4_NL), both in the
   * q8 group layout (q8BlockIndex). Needs Q8_0 activations.
   */
  | { readonly kind: "wasm-q8"; readonly w: WeightMatrix; readonly qs: number; readonly d: number }
  /** wasm-q8's layout with f32 scales, and Q8_K activations (IQ4_XS, whose vec_dot_type is Q8_K). */
  | { readonly kind: "wasm-q8k"; readonly w: WeightMatrix; readonly qs: number; readonly d: number }
  /**
   * int8 qs at `qs`, one f32 scale per 16 values at `d` (Q6_K, Q3_K); Q2_K also one f32 offset per
   * 16 values at `c` (0: none); all in the q8 group layout (q8BlockIndex), a block's two scales (and
   * offsets) side by side at twice its index. Needs Q8_K activations (actQuant).
   */
  | { readonly kind: "wasm-q8g16"; readonly w: WeightMatrix; readonly qs: number; readonly d: number; readonly c: number }
  /** nibbles qs [rows][cols/2] at `qs`; per 32 values a = d*scale at `a`, c = -dmin*min at `c` (f32). Needs Q8_K activations (actQuant). */
  | { readonly kind: "wasm-q4k"; readonly w: WeightMatrix; readonly qs: number; readonly a: number; readonly c: number };

/**
 * Where block `b` (of `nb` a row) of row `row` of a q8 matrix of `rows` rows lives (kernels.as "q8
 * matrix"): rows in groups of 4 (the last group: rows % 4), block-interleaved inside a group. It is
 * the index of the block's 32 int8 values (times 32: their byte offset in qs) and of its scale.
 */
export function q8BlockIndex(row: number, b: number, rows: number, nb: number): number {
  const g0 = row & ~3;
  return g0 * nb + b * Math.min(4, rows - g0) + (row & 3);
}

/** Copies `w` into the arena (reserve first, commit, then call this with the reserved offset). */
export function bindWasm(w: WeightMatrix, arena: WasmArena, at: number): Linear {
  fillWasmRows(w, arena, at, w.rows, 0);
  return wasmLinear(w, at);
}

/**
 * The Linear of a matrix placed at `at` (its regions as fillWasmRows writes them), without touching
 * its bytes: a streaming load binds first and fills the rows as they arrive. "js" for a type
 * without a wasm kernel.
 */
export function wasmLinear(w: WeightMatrix, at: number): Linear {
  const n = w.rows * w.cols;
  switch (w.type) {
    case "F32": return { kind: "wasm-f32", w, ptr: at };
    case "Q4_0": case "Q5_0": case "Q8_0": case "IQ4_NL": return { kind: "wasm-q8", w, qs: at, d: at + n };
    case "IQ4_XS": return { kind: "wasm-q8k", w, qs: at, d: at + n };
    case "Q4_K": return { kind: "wasm-q4k", w, qs: at, a: at + n / 2, c: at + n / 2 + (n / 32) * 4 };
    case "Q6_K": case "Q3_K": return { kind: "wasm-q8g16", w, qs: at, d: at + n, c: 0 };
    case "Q2_K": return { kind: "wasm-q8g16", w, qs: at, d: at + n, c: at + n + (n / 16) * 4 };
    default: return { kind: "js", w };
  }
}

/**
 * Converts `w` (rows row0 .. row0 + w.rows of a matrix of `fullRows` rows placed at `at`) into that
 * matrix's wasm layout. Blocks never straddle rows (cols is a multiple of the block), so a row range
 * is a range of blocks: each region is written at the range's offset inside it.
 */
export function fillWasmRows(w: WeightMatrix, arena: WasmArena, at: number, fullRows: number, row0: number): void {
  const N = fullRows * w.cols; // values of the whole matrix: region sizes
  const v0 = row0 * w.cols; // first value of this range
  if (w.type === "F32") {
    arena.f32(at + v0 * 4, w.rows * w.cols).set(w.f32!);
    return;
  }
  if (w.type === "Q4_0" || w.type === "Q5_0") {
    // Exact in the Q8_0 layout: value = d * (nibble - 8), or d * (5-bit - 16), as int8 times d.
    const nb = (w.rows * w.cols) / 32;
    const qs = arena.i8(at, N);
    const d = arena.u16(at + N, N / 32);
    const u8 = w.u8;
    const five = w.type === "Q5_0";
    const bytes = five ? 22 : 18;
    const place = q8Placer(w.cols, fullRows, row0);
    for (let b = 0, o = 0; b < nb; b++, o += bytes) {
      const i = place();
      d[i] = finiteScale(u8[o]! | (u8[o + 1]! << 8), w, row0, b);
      const q = i * 32;
      if (five) {
        // block_q5_0: f16 d, u32 qh (5th bits), u8 qs[16]
        const qh = u8[o + 2]! | (u8[o + 3]! << 8) | (u8[o + 4]! << 16) | (u8[o + 5]! << 24);
        for (let j = 0; j < 16; j++) {
          const v = u8[o + 6 + j]!;
          qs[q + j] = ((v & 15) | (((qh >>> j) & 1) << 4)) - 16;
          qs[q + j + 16] = ((v >> 4) | (((qh >>> (j + 16)) & 1) << 4)) - 16;
        }
      } else {
        // block_q4_0: f16 d, u8 qs[16]
        for (let j = 0; j < 16; j++) {
          const v = u8[o + 2 + j]!;
          qs[q + j] = (v & 15) - 8;
          qs[q + j + 16] = (v >> 4) - 8;
        }
      }
    }
    return;
  }
  if (w.type === "Q8_0") {
    const nb = (w.rows * w.cols) / 32;
    const qs = arena.i8(at, N);
    const d = arena.u16(at + N, N / 32);
    const u8 = w.u8, i8 = w.i8;
    const place = q8Placer(w.cols, fullRows, row0);
    // Blocks are 34 bytes (f16 d + 32 int8) back to back over the whole tensor.
    for (let b = 0, o = 0; b < nb; b++, o += 34) {
      const i = place();
      d[i] = finiteScale(u8[o]! | (u8[o + 1]! << 8), w, row0, b);
      // A loop, not set(subarray): a view per block is garbage that grows the JS heap at load.
      const q = i * 32, src = o + 2;
      for (let j = 0; j < 32; j++) qs[q + j] = i8[src + j]!;
    }
    return;
  }
  if (w.type === "Q4_K") {
    const n = w.rows * w.cols;
    const nBlocks = n / 256;
    const qs = arena.u8(at + v0 / 2, n / 2);
    const aAt = at + N / 2, cAt = aAt + (N / 32) * 4;
    const a = arena.f32(aAt + (v0 / 32) * 4, n / 32), c = arena.f32(cAt + (v0 / 32) * 4, n / 32);
    const u8 = w.u8;
    // block_q4_K: f16 d, f16 dmin, u8 scales[12] (ggml's get_scale_min_k4 packing), u8 qs[128].
    for (let b = 0, o = 0; b < nBlocks; b++, o += 144) {
      const d = F16_TO_F32[u8[o]! | (u8[o + 1]! << 8)]!;
      const dmin = F16_TO_F32[u8[o + 2]! | (u8[o + 3]! << 8)]!;
      const sc = o + 4;
      for (let j = 0; j < 8; j++) {
        let scale: number, min: number;
        if (j < 4) {
          scale = u8[sc + j]! & 63;
          min = u8[sc + j + 4]! & 63;
        } else {
          scale = (u8[sc + j + 4]! & 0xf) | ((u8[sc + j - 4]! >> 6) << 4);
          min = (u8[sc + j + 4]! >> 4) | ((u8[sc + j]! >> 6) << 4);
        }
        a[b * 8 + j] = d * scale;
        c[b * 8 + j] = -dmin * min;
      }
      qs.set(u8.subarray(o + 16, o + 144), b * 128);
    }
    return;
  }
  if (w.type === "Q6_K") {
    const n = w.rows * w.cols;
    const qs = arena.i8(at, N);
    const d16 = arena.f32(at + N, N / 16);
    const u8 = w.u8, i8 = w.i8;
    const place = q8Placer(w.cols, fullRows, row0), blk = new Int32Array(8);
    // block_q6_K: u8 ql[128], u8 qh[64], i8 scales[16], f16 d (210 bytes) per 256 values; in each
    // 128-value half, value l + 32k takes its low 4 bits from ql and 2 high bits from qh (ggml's
    // dequantize_row_q6_K), and scale (l + 32k) / 16 of the half's 8.
    // Each 32 values go to their block's place (q8BlockIndex), its two scales side by side.
    for (let b = 0, o = 0; b < n / 256; b++, o += 210) {
      for (let j = 0; j < 8; j++) blk[j] = place();
      const d = F16_TO_F32[u8[o + 208]! | (u8[o + 209]! << 8)]!;
      for (let g = 0; g < 16; g++) d16[blk[g >> 1]! * 2 + (g & 1)] = d * i8[o + 192 + g]!;
      for (let half = 0; half < 2; half++) {
        const ql = o + half * 64, qh = o + 128 + half * 32;
        const y0 = blk[half * 4]! * 32, y1 = blk[half * 4 + 1]! * 32, y2 = blk[half * 4 + 2]! * 32, y3 = blk[half * 4 + 3]! * 32;
        for (let l = 0; l < 32; l++) {
          const h = u8[qh + l]!;
          qs[y0 + l] = ((u8[ql + l]! & 15) | ((h & 3) << 4)) - 32;
          qs[y1 + l] = ((u8[ql + l + 32]! & 15) | (((h >> 2) & 3) << 4)) - 32;
          qs[y2 + l] = ((u8[ql + l]! >> 4) | (((h >> 4) & 3) << 4)) - 32;
          qs[y3 + l] = ((u8[ql + l + 32]! >> 4) | (((h >> 6) & 3) << 4)) - 32;
        }
      }
    }
    return;
  }
  if (w.type === "IQ4_NL" || w.type === "IQ4_XS") {
    // Exact in the q8 layout: the 4-bit index becomes its level kvalues_iq4nl[q] (-127..113), the
    // scale d (IQ4_NL: the file's f16) or d * (ls - 32) per 32 values (IQ4_XS; exact in f32: 11 x 6 bits).
    const n = w.rows * w.cols;
    const qs = arena.i8(at, N);
    const xs = w.type === "IQ4_XS";
    const d = xs ? arena.f32(at + N, N / 32) : arena.u16(at + N, N / 32);
    const u8 = w.u8, kv = KVALUES_IQ4NL;
    const place = q8Placer(w.cols, fullRows, row0);
    // block_iq4_nl: f16 d, u8 qs[16] (18 bytes per 32); block_iq4_xs: f16 d, u16 scales_h, u8 scales_l[4], u8 qs[128] (136 per 256).
    for (let b = 0, o = 0; b < n / 32; b++) {
      const i = place();
      let src: number;
      if (xs) {
        const ib = b & 7;
        d[i] = F16_TO_F32[u8[o]! | (u8[o + 1]! << 8)]! * iq4XsScale(u8, o, ib);
        src = o + 8 + ib * 16;
        if (ib === 7) o += 136;
      } else {
        d[i] = finiteScale(u8[o]! | (u8[o + 1]! << 8), w, row0, b);
        src = o + 2;
        o += 18;
      }
      const q = i * 32;
      for (let j = 0; j < 16; j++) {
        const v = u8[src + j]!;
        qs[q + j] = kv[v & 15]!;
        qs[q + j + 16] = kv[v >> 4]!;
      }
    }
    return;
  }
  if (w.type === "Q2_K" || w.type === "Q3_K") {
    // Exact in the q8g16 layout: per 16 values Q3_K is d * (sc - 32) * q with q in -4..3; Q2_K is
    // d * sc * q - dmin * m with q in 0..3, so it keeps the offset -dmin * m per 16 as well.
    const n = w.rows * w.cols;
    const two = w.type === "Q2_K";
    const qs = arena.i8(at, N);
    const dAt = at + N, cAt = dAt + (N / 16) * 4;
    const d16 = arena.f32(dAt, N / 16);
    const c16 = two ? arena.f32(cAt, N / 16) : null;
    const u8 = w.u8;
    const place = q8Placer(w.cols, fullRows, row0), blk = new Int32Array(8);
    const bytes = two ? 84 : 110;
    // block_q2_K: u8 scales[16], u8 qs[64], f16 d, f16 dmin; block_q3_K: u8 hmask[32], u8 qs[64],
    // u8 scales[12], f16 d. In both, value i of a block has 2 low bits at qs[32*(i/128) + i%32] bit
    // 2*((i/32)%4) (dequantize_row_q2_K / _q3_K); Q3_K's high bit is hmask[i%32] bit i/32.
    for (let b = 0, o = 0; b < n / 256; b++, o += bytes) {
      for (let j = 0; j < 8; j++) blk[j] = place();
      const qOff = two ? o + 16 : o + 32;
      if (two) {
        const d = F16_TO_F32[u8[o + 80]! | (u8[o + 81]! << 8)]!;
        const dmin = F16_TO_F32[u8[o + 82]! | (u8[o + 83]! << 8)]!;
        for (let g = 0; g < 16; g++) {
          const sc = u8[o + g]!, at16 = blk[g >> 1]! * 2 + (g & 1);
          d16[at16] = d * (sc & 15);
          c16![at16] = -dmin * (sc >> 4);
        }
      } else {
        const d = F16_TO_F32[u8[o + 108]! | (u8[o + 109]! << 8)]!;
        for (let g = 0; g < 16; g++) d16[blk[g >> 1]! * 2 + (g & 1)] = d * q3KScale(u8, o + 96, g);
      }
      for (let i = 0; i < 256; i++) {
        const q = (u8[qOff + ((i >> 7) << 5) + (i & 31)]! >> (2 * ((i >> 5) & 3))) & 3;
        qs[blk[i >> 5]! * 32 + (i & 31)] = two ? q : q - (((u8[o + (i & 31)]! >> (i >> 5)) & 1) ^ 1) * 4;
      }
    }
    return;
  }
}

/**
 * The f16 bits of block `b` (counted from row `row0`) of `w`'s scales, refused when they are inf or
 * NaN: matvecQ8 widens f16 scales by arithmetic that reads only finite ones, and such a scale is a
 * corrupt file (llama.cpp's --check-tensors refuses it too).
 */
function finiteScale(h: number, w: WeightMatrix, row0: number, b: number): number {
  if ((h & 0x7c00) !== 0x7c00) return h;
  const nb = w.cols / 32, row = row0 + Math.floor(b / nb);
  throw new TensorDataError(`tensor ${w.name} has a non-finite scale (f16 0x${h.toString(16)}) in block ${b % nb} of row ${row}: the file is corrupt`, {
    tensor: w.name,
    row,
    block: b % nb,
  });
}

/** The q8BlockIndex of each block of rows row0.. of a matrix of `rows` rows, in file order, one per call. */
function q8Placer(cols: number, rows: number, row0: number): () => number {
  const nb = cols / 32;
  let row = row0, b = 0;
  return () => {
    const i = q8BlockIndex(row, b, rows, nb);
    if (++b === nb) {
      b = 0;
      row++;
    }
    return i;
  };
}

/** Activation rows [rows][width] f32; `ptr` is the byte offset in wasm memory, -1 for a JS array. */
export class Acts {
  readonly a: Float32Array;
  /** Row views, made once (subarray allocates, so the hot path never calls it). */
  readonly row: Float32Array[] = [];

  constructor(readonly rows: number, readonly width: number, readonly ptr: number, arena: WasmArena | null) {
    this.a = arena !== null && ptr >= 0 ? arena.f32(ptr, rows * width) : new Float32Array(rows * width);
    for (let t = 0; t < rows; t++) this.row.push(this.a.subarray(t * width, (t + 1) * width));
  }
}

/**
 * out[t] = W x[t] for t < n. The wasm int8 kinds need `q8`: x quantized into it by `quantizeActs`
 * first, as `actQuant(L.kind)` says (Q8_0 or Q8_K): the quantization is shared by every matrix that
 * reads the same x with the same `actQuant`. A wasm kind is described as one RowCall (its kernel,
 * and the bytes each argument moves per output row and per token) that the arena runs whole or
 * splits by rows over its threads.
 */
export function linear(arena: WasmArena | null, out: Acts, L: Linear, x: Acts, n: number, q8: Q8Scratch | null): void {
  if (L.kind === "js") {
    for (let t = 0; t < n; t++) matvec(out.row[t]!, x.row[t]!, L.w);
    return;
  }
  const a = arena!;
  const c = a.nextCall();
  const rows = L.w.rows, cols = L.w.cols;
  const ob = out.width * 4; // bytes per token of out
  switch (L.kind) {
    case "wasm-f32":
      c.start(K.matmulF32, rows).arg(out.ptr, 4).arg(out.width).arg(L.ptr, cols * 4).rowsArg().arg(cols).arg(x.ptr).arg(x.width).arg(n);
      break;
    case "wasm-q8": {
      const q = q8!;
      if (n === 1) {
        // The file's f16 scales (f16 = 1), widened by the kernel.
        c.start(K.matvecQ8, rows).arg(out.ptr, 4).arg(L.qs, cols).arg(L.d, cols / 16).rowsArg().arg(cols).arg(q.x16).arg(q.d).arg(1);
        break;
      }
      packedBatch(c, K.packQ8, out, rows, cols, n, q, 0, 0).preArg(L.qs, cols).preArg(L.d, cols / 16).preArg(0).preCountArg(1).preArg(cols).preArg(0);
      break;
    }
    case "wasm-q8k": {
      const q = q8!;
      c.start(K.matvecQ8, rows, n).arg(out.ptr, 4, ob).arg(L.qs, cols).arg(L.d, cols / 8).rowsArg().arg(cols).arg(q.x16, 0, cols * 2).arg(q.d, 0, cols / 8).arg(0);
      break;
    }
    case "wasm-q8g16": {
      const q = q8!;
      // Q2_K's offsets need the activations' sums per 16 values (d * Q8_K's bsums), in their own
      // region (s16); the dots read the widened activations (x16) like the other Q8_K kernels.
      if (L.c !== 0) a.k.blockSumsQ8(q.qs, q.d, n * cols, q.s16, true);
      if (n === 1) {
        c.start(K.matvecQ8g16, rows).arg(out.ptr, 4).arg(L.qs, cols).arg(L.d, cols / 4).rowsArg().arg(cols)
          .arg(q.x16).arg(q.d).arg(L.c, L.c !== 0 ? cols / 4 : 0).arg(q.s16);
        break;
      }
      // Sub-blocks of 16 values (g16), Q2_K's offsets against the per-16 sums.
      packedBatch(c, K.packQ8, out, rows, cols, n, q, L.c !== 0 ? q.s16 : 0, 1)
        .preArg(L.qs, cols).preArg(L.d, cols / 4).preArg(L.c, L.c !== 0 ? cols / 4 : 0).preCountArg(1).preArg(cols).preArg(1);
      break;
    }
    case "wasm-q4k": {
      const q = q8!;
      if (n === 1) {
        c.start(K.matvecQ4K, rows).arg(out.ptr, 4).arg(L.qs, cols / 2).arg(L.a, cols / 8).arg(L.c, cols / 8).rowsArg().arg(cols)
          .arg(q.x16).arg(q.qs).arg(q.d).arg(q.sx);
        break;
      }
      // The nibbles unpacked once per chunk (packQ4K); offsets c against the per-32 sums.
      packedBatch(c, K.packQ4K, out, rows, cols, n, q, q.sx, 0).preArg(L.qs, cols / 2).preArg(L.a, cols / 8).preArg(L.c, cols / 8).preCountArg(1).preArg(cols);
      break;
    }
    default:
      L satisfies never;
  }
  a.run(c, rows * cols * n);
}

/**
 * A batch of n tokens through matmulPacked (sx: the activations' sums its offsets take, or 0; g16:
 * per-16 sub-blocks), its prelude `pack` started: a batch reads each row many times, so the
 * prelude repacks a chunk of rows at a time (int16 values, four rows' pairs side by side, f32
 * scales) into the scratch, each thread its slice of it. The caller adds the prelude's arguments
 * after its first (the thread's slice).
 */
function packedBatch(c: RowCall, pack: number, out: Acts, rows: number, cols: number, n: number, q: Q8Scratch, sx: number, g16: number): RowCall {
  return c.start(K.matmulPacked, rows).arg(out.ptr, 4).arg(out.width).arg(SCRATCH_ARG).rowsArg().arg(cols).arg(q.x16).arg(q.dT).arg(n).arg(sx).arg(g16)
    .pre(pack, q.pk, PACKED_ROWS, packedRowBytes(cols)).preArg(SCRATCH_ARG);
}

/**
 * g[t][r] = silu(g[t][r]) * u[t][r] for t < n, r < g.width (g, u: [n][width] in the arena), as a
 * RowCall split by rows like the gate and up matmuls (rows = width). Queued right after them in one
 * job (between arena.batch() and flush()), each thread gates the rows it has just computed of both:
 * MatmulPool.run gives calls of equal rows equal ranges on every thread, and a thread runs a job's
 * calls in order. Run on its own, it follows a finished gate and up, split or not.
 */
export function swigluRows(arena: WasmArena, g: Acts, u: Acts, n: number): void {
  const c = arena.nextCall();
  c.start(K.swiglu, g.width, n).arg(g.ptr, 4, g.width * 4).arg(u.ptr, 4, u.width * 4).rowsArg();
  arena.run(c, 0); // no multiply-adds: it never makes a job worth splitting on its own
}

/**
 * The activation quantization a kind's kernel takes, as llama.cpp's vec_dot_type picks it
 * (ggml/src/ggml-cpu/ggml-cpu.c type_traits_cpu): Q8_0 for Q8_0/Q4_0/Q5_0/IQ4_NL ("wasm-q8"), Q8_K
 * for the K-quants (Q4_K "wasm-q4k"; Q6_K, Q3_K, Q2_K "wasm-q8g16") and IQ4_XS ("wasm-q8k"); null
 * for the f32-activation kinds. Matrices whose kinds give the same answer can share one
 * quantization of their input.
 */
export function actQuant(kind: Linear["kind"]): "q8_0" | "q8_K" | null {
  return kind === "wasm-q8" ? "q8_0" : kind === "wasm-q4k" || kind === "wasm-q8g16" || kind === "wasm-q8k" ? "q8_K" : null;
}

/**
 * Quantizes rows 0..n of x (contiguous) into the q8 scratch as `to`: Q8_0 (width % 32 == 0) or
 * Q8_K (width % 256 == 0, true of every K-quant matrix's input; d per 256 values stored per 32),
 * then widens it to int16 (x16, widenQ8): the int8 kernels' pmaddwd-shaped dots read it, once per
 * token here, not once per weight row. Q8_K also fills sx (blockSumsQ8), which Q4_K's offsets read.
 * One RowCall (kernels.as quantizeRows) split by rows (tokens, 4 at a time: widenQ8's tiles) like a
 * matmul, and fenced (RowCall.fence): inside a batch (WasmArena.batch) it is queued first, in the
 * same job as the matmuls that read it, which start once every token is quantized.
 */
export function quantizeActs(arena: WasmArena, x: Acts, n: number, q8: Q8Scratch, to: "q8_0" | "q8_K"): void {
  const w = x.width, k = to === "q8_K";
  // A Q8_K block must not straddle two rows; K-quant rows are whole 256-value blocks, so this never throws.
  if (k && w % 256 !== 0) throw new Error(`Q8_K activations need rows of 256k values, not ${w}`);
  if (n === 1) {
    // One token (decode): a microsecond's work, less than a fence costs the threads.
    arena.k.quantizeRows(x.ptr, 1, w, q8.qs, q8.d, q8.x16, q8.dT, q8.sx, k ? 1 : 0);
    return;
  }
  const c = arena.nextCall().start(K.quantizeRows, n, 1, 4);
  c.arg(x.ptr, w * 4).rowsArg().arg(w).arg(q8.qs, w).arg(q8.d, w / 8).arg(q8.x16, w * 2).arg(q8.dT, w / 8).arg(q8.sx, w / 8).arg(k ? 1 : 0);
  c.fence = true;
  arena.run(c, 0); // no multiply-adds: the matmuls after it decide whether the job is split
}

/**
 * Views of a matrix held only in wasm memory, for reading single rows back as f32: the tied token
 * embedding, whose file bytes a streaming load does not keep. Made once (views allocate).
 */
export interface WasmRowReader {
  readonly L: Linear;
  readonly cols: number;
  /** wasm-f32 values; else null */
  readonly f32: Float32Array | null;
  /** int8 values (wasm-q8, wasm-q8k, wasm-q8g16: in the q8 group layout); else null */
  readonly qs: Int8Array | null;
  /** Q4_K nibbles (wasm-q4k); else null */
  readonly q4: Uint8Array | null;
  /** f32 scale per 32 (q8k), per 16 (q8g16), a = d*scale per 32 (q4k) */
  readonly d: Float32Array | null;
  /** f16 scale bits per 32 (q8); else null */
  readonly d16: Uint16Array | null;
  /** offset per 16 (Q2_K) or per 32 (q4k), else null */
  readonly c: Float32Array | null;
}

export function wasmRowReader(arena: WasmArena, L: Linear): WasmRowReader {
  const n = L.w.rows * L.w.cols;
  const none = { L, cols: L.w.cols, f32: null, qs: null, q4: null, d: null, d16: null, c: null };
  switch (L.kind) {
    case "js": throw new Error(`${L.w.name} is not in wasm memory`);
    case "wasm-f32": return { ...none, f32: arena.f32(L.ptr, n) };
    case "wasm-q8": return { ...none, qs: arena.i8(L.qs, n), d16: arena.u16(L.d, n / 32) };
    case "wasm-q8k": return { ...none, qs: arena.i8(L.qs, n), d: arena.f32(L.d, n / 32) };
    case "wasm-q8g16": return { ...none, qs: arena.i8(L.qs, n), d: arena.f32(L.d, n / 16), c: L.c !== 0 ? arena.f32(L.c, n / 16) : null };
    case "wasm-q4k": return { ...none, q4: arena.u8(L.qs, n / 2), d: arena.f32(L.a, n / 32), c: arena.f32(L.c, n / 32) };
    default: return L satisfies never;
  }
}

/** out = row `row` of the matrix, dequantized from its wasm layout (as exact as the layout: see bindWasm). */
export function readWasmRow(r: WasmRowReader, row: number, out: Float32Array): void {
  const cols = r.cols, o = row * cols;
  const f32 = r.f32, qs = r.qs, q4 = r.q4, d = r.d!, d16 = r.d16, c = r.c;
  if (f32 !== null) {
    for (let i = 0; i < cols; i++) out[i] = f32[o + i]!;
  } else if (r.L.kind === "wasm-q8" || r.L.kind === "wasm-q8k") {
    const nb = cols / 32, rows = r.L.w.rows;
    for (let b = 0; b < nb; b++) {
      const k = q8BlockIndex(row, b, rows, nb);
      const s = d16 !== null ? F16_TO_F32[d16[k]!]! : d[k]!;
      for (let j = 0; j < 32; j++) out[b * 32 + j] = s * qs![k * 32 + j]!;
    }
  } else if (qs !== null) {
    // wasm-q8g16: the q8 group layout, a scale (and Q2_K an offset) per 16 values, two per block.
    const nb = cols / 32, rows = r.L.w.rows;
    for (let b = 0; b < nb; b++) {
      const k = q8BlockIndex(row, b, rows, nb);
      for (let j = 0; j < 32; j++) {
        const s = k * 2 + (j >> 4);
        out[b * 32 + j] = c !== null ? d[s]! * qs[k * 32 + j]! + c[s]! : d[s]! * qs[k * 32 + j]!;
      }
    }
  } else if (q4 !== null) {
    // Q4_K's qs as in the file: per 64 values 32 bytes, low nibbles the first 32, high the next.
    for (let i = 0; i < cols; i++) {
      const v = o + i, j = v & 255;
      const byte = q4[(v >> 8) * 128 + (j >> 6) * 32 + (j & 31)]!;
      out[i] = d[v >> 5]! * ((j & 32) !== 0 ? byte >> 4 : byte & 15) + c![v >> 5]!;
    }
  }
}
