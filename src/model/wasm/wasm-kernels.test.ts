import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { F16_TO_F32, f32ToF16Bits } from "../../cache/codecs/half.js";
import { TensorDataError } from "../../errors.js";
import { Acts, actQuant, bindWasm, fillWasmRows, linear, q8ScratchBytes, quantizeActs, readWasmRow, wasmBytes, wasmRowReader, type Q8Scratch } from "../kernels/linear.js";
import { PACKED_ROWS, packedRowBytes } from "../../wasm/model-layout.js";
import { matvecReference, type WeightMatrix } from "../kernels/matvec.js";
import { matvecQ8_0Q8Reference, quantizeRowQ8_0Reference } from "../kernels/q8-activations.js";
import { dequantizeRow } from "../kernels/quant-rows.js";
import { KERNELS_WASM_BASE64 } from "./kernels-wasm.js";
import { WasmArena, wasmKernelsAvailable } from "./wasm-kernels.js";

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

/** A random GGUF Q8_0 matrix: f16 scales, int8 values over the full range (-128 included). */
function q8Matrix(rows: number, cols: number, rand: () => number): WeightMatrix {
  const rowBytes = (cols / 32) * 34;
  const u8 = new Uint8Array(rows * rowBytes);
  for (let i = 0; i < u8.length; i++) u8[i] = Math.floor(rand() * 256);
  for (let o = 0; o < u8.length; o += 34) {
    const h = f32ToF16Bits(rand() * 0.02);
    u8[o] = h & 0xff;
    u8[o + 1] = h >> 8;
  }
  return { name: "q8", type: "Q8_0", rows, cols, rowBytes, u8, i8: new Int8Array(u8.buffer), f32: null };
}

/** A random GGUF Q4_K matrix: random nibbles and 6-bit scales, sane f16 d and dmin. */
function q4kMatrix(rows: number, cols: number, rand: () => number): WeightMatrix {
  const rowBytes = (cols / 256) * 144;
  const u8 = new Uint8Array(rows * rowBytes);
  for (let i = 0; i < u8.length; i++) u8[i] = Math.floor(rand() * 256);
  for (let o = 0; o < u8.length; o += 144) {
    for (const [at, v] of [[o, rand() * 0.002], [o + 2, rand() * 0.002]] as const) {
      const h = f32ToF16Bits(v);
      u8[at] = h & 0xff;
      u8[at + 1] = h >> 8;
    }
  }
  return { name: "q4k", type: "Q4_K", rows, cols, rowBytes, u8, i8: new Int8Array(u8.buffer), f32: null };
}

/** Random Q4_0 / Q5_0 blocks with a sane f16 scale. */
function smallQuantMatrix(type: "Q4_0" | "Q5_0", rows: number, cols: number, rand: () => number): WeightMatrix {
  const bytes = type === "Q4_0" ? 18 : 22;
  const rowBytes = (cols / 32) * bytes;
  const u8 = new Uint8Array(rows * rowBytes);
  for (let i = 0; i < u8.length; i++) u8[i] = Math.floor(rand() * 256);
  for (let o = 0; o < u8.length; o += bytes) {
    const h = f32ToF16Bits(rand() * 0.02);
    u8[o] = h & 0xff;
    u8[o + 1] = h >> 8;
  }
  return { name: type, type, rows, cols, rowBytes, u8, i8: new Int8Array(u8.buffer), f32: null };
}

/** Random Q6_K blocks: random 6-bit values and int8 scales, a sane f16 d. */
function q6kMatrix(rows: number, cols: number, rand: () => number): WeightMatrix {
  const rowBytes = (cols / 256) * 210;
  const u8 = new Uint8Array(rows * rowBytes);
  for (let i = 0; i < u8.length; i++) u8[i] = Math.floor(rand() * 256);
  for (let o = 0; o < u8.length; o += 210) {
    const h = f32ToF16Bits(rand() * 0.001);
    u8[o + 208] = h & 0xff;
    u8[o + 209] = h >> 8;
  }
  return { name: "q6k", type: "Q6_K", rows, cols, rowBytes, u8, i8: new Int8Array(u8.buffer), f32: null };
}

/** Random Q2_K / Q3_K / IQ4_NL / IQ4_XS blocks: random bits everywhere (every scale, min, high bit
 *  and level index), then sane f16 super-block scales. */
function lowBitMatrix(type: "Q2_K" | "Q3_K" | "IQ4_NL" | "IQ4_XS", rows: number, cols: number, rand: () => number): WeightMatrix {
  const [bs, ts, halves] = { Q2_K: [256, 84, [80, 82]], Q3_K: [256, 110, [108]], IQ4_NL: [32, 18, [0]], IQ4_XS: [256, 136, [0]] }[type] as [number, number, number[]];
  const rowBytes = (cols / bs) * ts;
  const u8 = new Uint8Array(rows * rowBytes);
  for (let i = 0; i < u8.length; i++) u8[i] = Math.floor(rand() * 256);
  for (let o = 0; o < u8.length; o += ts) {
    for (const at of halves) {
      const h = f32ToF16Bits((rand() - 0.3) * 0.002); // some negative: IQ4 and Q3_K scales are signed
      u8[o + at] = h & 0xff;
      u8[o + at + 1] = h >> 8;
    }
  }
  return { name: type, type, rows, cols, rowBytes, u8, i8: new Int8Array(u8.buffer), f32: null };
}

function f32Matrix(rows: number, cols: number, rand: () => number): WeightMatrix {
  const f32 = new Float32Array(rows * cols);
  for (let i = 0; i < f32.length; i++) f32[i] = rand() * 2 - 1;
  const u8 = new Uint8Array(f32.buffer);
  return { name: "f32", type: "F32", rows, cols, rowBytes: cols * 4, u8, i8: new Int8Array(f32.buffer), f32 };
}

function maxRelErr(fast: Float32Array, ref: Float32Array, n: number): number {
  let scale = 0, err = 0;
  for (let i = 0; i < n; i++) {
    scale = Math.max(scale, Math.abs(ref[i]!));
    err = Math.max(err, Math.abs(fast[i]! - ref[i]!));
  }
  expect(scale).toBeGreaterThan(0);
  return err / scale;
}

describe.skipIf(!wasmKernelsAvailable())("WebAssembly SIMD kernels against the JS references", () => {
  const rand = rng(11);
  const ROWS = 37, COLS = 256, NTOK = 11; // odd rows and tokens: the 2-row / 2-token tails run too
  const arena = new WasmArena();
  const wq = q8Matrix(ROWS, COLS, rand);
  const wf = f32Matrix(ROWS, 172, rand); // 172 = stories260K's ffn: a scalar tail after 4-wide lanes
  const wk4 = q4kMatrix(ROWS, COLS, rand);
  const atQ = arena.reserve(wasmBytes(wq));
  const atQ2 = arena.reserve(wasmBytes(wq)); // wq's first rows, bound alone (a last row group of 1, 2, 3 or 4 rows)
  const atF = arena.reserve(wasmBytes(wf));
  const atK = arena.reserve(wasmBytes(wk4));
  const atK2 = arena.reserve(wasmBytes(wk4)); // wk4's first rows, bound alone
  const sx = arena.reserve((NTOK * COLS) / 8);
  const x = arena.reserve(NTOK * COLS * 4);
  const qx = arena.reserve(NTOK * COLS);
  const dx = arena.reserve((NTOK * COLS) / 8);
  const out = arena.reserve(NTOK * ROWS * 4 + 4); // + one word past the last output, checked untouched
  const x16 = arena.reserve(12 * COLS * 2); // NTOK rounded up to 4 rows
  const dT = arena.reserve((12 * COLS) / 8);
  const dF32 = arena.reserve((ROWS * COLS) / 8); // wq's scales widened to f32 (matvecQ8's f16 = 0 mode)
  const pk = arena.reserve(40 * packedRowBytes(COLS)); // wq's rows packed (packQ8), in groups of 4
  const xe = arena.reserve(4 * 32 * 4), qe = arena.reserve(4 * 32), de = arena.reserve(4 * 4); // quantizeQ8's edge blocks
  expect(arena.commit()).toBe(true);
  const Lq = bindWasm(wq, arena, atQ);
  const Lf = bindWasm(wf, arena, atF);
  const Lk = bindWasm(wk4, arena, atK);
  const xs = arena.f32(x, NTOK * COLS);
  for (let i = 0; i < xs.length; i++) xs[i] = (rand() * 2 - 1) * (i < 32 ? 1e-6 : 1); // block 0: f16-subnormal scale
  for (let i = 64; i < 96; i++) xs[i] = 0; // an all-zero block: d = 0
  const k = arena.k;

  it("quantizeQ8 equals quantizeRowQ8_0Reference exactly (values and f16-rounded scales)", () => {
    k.quantizeQ8(x, NTOK * COLS, qx, dx);
    const qsRef = new Int8Array(NTOK * COLS);
    const dRef = new Float32Array((NTOK * COLS) / 32);
    quantizeRowQ8_0Reference(xs, 0, NTOK * COLS, qsRef, dRef);
    expect(Array.from(arena.i8(qx, NTOK * COLS))).toEqual(Array.from(qsRef));
    expect(Array.from(arena.f32(dx, (NTOK * COLS) / 32))).toEqual(Array.from(dRef));
    expect(dRef[2]).toBe(0);
  });

  it("quantizeQ8's edge blocks: exact ties round to even; a NaN, or an inf, makes the block's products 0 as the reference does", () => {
    const e = arena.f32(xe, 128);
    for (let j = 0; j < 32; j++) e[j] = j - 16.5; // amax 127 below: id = 1, every value a tie
    e[31] = 127;
    for (let j = 32; j < 128; j++) e[j] = Math.sin(j);
    e[40] = Number.NaN;
    e[70] = Number.POSITIVE_INFINITY;
    e[100] = Number.NEGATIVE_INFINITY;
    k.quantizeQ8(xe, 128, qe, de);
    const qsRef = new Int8Array(128), dRef = new Float32Array(4);
    quantizeRowQ8_0Reference(e, 0, 128, qsRef, dRef);
    expect(Array.from(arena.i8(qe, 128))).toEqual(Array.from(qsRef));
    expect(Array.from(arena.f32(de, 4))).toEqual(Array.from(dRef));
    expect(Array.from(qsRef.subarray(0, 4))).toEqual([-16, -16, -14, -14]);
    expect(qsRef.subarray(32, 128).every((v) => v === 0)).toBe(true);
  });

  it("matvecQ8 and packQ8 read every finite f16 scale as F16_TO_F32 does (their SIMD conversion: zeros, subnormals, normals)", () => {
    // 65536 rows of one 32-value block: row r has scale bits r and a single weight 1, the activation
    // 1 (dx 1) at that place, so out[r] is the scale itself.
    const rows = 65536, a2 = new WasmArena();
    const wq2 = a2.reserve(rows * 32), wd2 = a2.reserve(rows * 2), xq = a2.reserve(32), xd = a2.reserve(4);
    const xw = a2.reserve(4 * 32 * 2), xt = a2.reserve(16), o = a2.reserve(rows * 4), p = a2.reserve(rows * packedRowBytes(32));
    expect(a2.commit()).toBe(true);
    const w = a2.i8(wq2, rows * 32);
    for (let r = 0; r < rows; r++) w[r * 32 + (r % 32)] = 1;
    a2.u16(wd2, rows).forEach((_, i, a) => (a[i] = i));
    a2.i8(xq, 32).fill(1);
    a2.f32(xd, 1)[0] = 1;
    a2.k.widenQ8(xq, xd, 1, 32, xw, xt);
    a2.k.matvecQ8(o, wq2, wd2, rows, 32, xw, xd, 1); // one block a row: the group layout is row-major
    const got = a2.f32(o, rows);
    let differ = 0;
    let finite = 0;
    for (let r = 0; r < rows; r++) {
      if ((r & 0x7c00) === 0x7c00) continue; // inf, NaN: fillWasmRows refuses them (below)
      finite++;
      if (!Object.is(got[r], F16_TO_F32[r]! + 0)) differ++; // acc starts at +0: -0 reads +0
    }
    expect(finite).toBe(65536 - 2048);
    expect(differ).toBe(0);
    // packQ8: one block a row, so its scales [group][block][4] are the rows' in order; -0 stays -0
    // here. Then the first 3 rows alone (a short group: its scales one at a time).
    a2.k.packQ8(p, wq2, wd2, 0, rows, 32, 0);
    const scales = (n: number) => a2.f32(p + Math.ceil(n / 4) * 256, n);
    let packed = scales(rows);
    for (let r = 0; r < rows; r++) if ((r & 0x7c00) !== 0x7c00 && !Object.is(packed[r], F16_TO_F32[r]!)) differ++;
    a2.k.packQ8(p, wq2, wd2, 0, 3, 32, 0);
    packed = scales(3);
    for (let r = 0; r < 3; r++) if (!Object.is(packed[r], F16_TO_F32[r]!)) differ++;
    expect(differ).toBe(0);
  });

  it("matvecQ8 and matmulPacked (q8 activations) equal the naive int8 dot within 1e-5, and each other bit for bit", () => {
    if (Lq.kind !== "wasm-q8") throw new Error("Q8_0 matrix was not bound to wasm");
    k.quantizeQ8(x, NTOK * COLS, qx, dx);
    const qs = arena.i8(qx, NTOK * COLS);
    const d = arena.f32(dx, (NTOK * COLS) / 32);
    const ref = new Float32Array(ROWS);
    k.widenQ8(qx, dx, NTOK, COLS, x16, dT);
    k.packQ8(pk, Lq.qs, Lq.d, 0, ROWS, COLS, 0);
    k.matmulPacked(out, ROWS, pk, ROWS, COLS, x16, dT, NTOK, 0, 0);
    const o = arena.f32(out, NTOK * ROWS);
    for (let t = 0; t < NTOK; t++) {
      matvecQ8_0Q8Reference(ref, wq, qs.subarray(t * COLS, (t + 1) * COLS), d.subarray((t * COLS) / 32, ((t + 1) * COLS) / 32));
      expect(maxRelErr(o.subarray(t * ROWS, (t + 1) * ROWS), ref, ROWS)).toBeLessThan(1e-5);
    }
    // matvecQ8 reads one token of x16 (widenQ8's) and matmulPacked them all (2 groups and 4 tokens a
    // pass: a lone last group, a last group of 1, 2, 3 rows or 4, the last 3 tokens), both in row
    // groups, so matrices of every row count mod 8; no store past the last row or token.
    const batch = arena.f32(out, NTOK * ROWS + 1);
    for (const rows of [ROWS, ROWS - 1, ROWS - 2, ROWS - 3, ROWS - 5]) {
      const L = bindWasm({ ...wq, rows, u8: wq.u8.subarray(0, rows * wq.rowBytes), i8: wq.i8.subarray(0, rows * wq.rowBytes) }, arena, atQ2);
      if (L.kind !== "wasm-q8") throw new Error("Q8_0 matrix was not bound to wasm");
      batch.fill(Number.NaN);
      k.packQ8(pk, L.qs, L.d, 0, rows, COLS, 0);
      k.matmulPacked(out, rows, pk, rows, COLS, x16, dT, NTOK, 0, 0);
      const got = batch.slice(0, NTOK * rows);
      expect(batch[NTOK * rows], "past the last token untouched").toBeNaN();
      const one = arena.f32(out, rows + 1);
      for (let t = 0; t < NTOK; t++) {
        matvecQ8_0Q8Reference(ref, wq, qs.subarray(t * COLS, (t + 1) * COLS), d.subarray((t * COLS) / 32, ((t + 1) * COLS) / 32));
        one.fill(Number.NaN);
        k.matvecQ8(out, L.qs, L.d, rows, COLS, x16 + t * COLS * 2, dx + (t * COLS) / 8, 1);
        expect(maxRelErr(one, ref, rows), `token ${t}, ${rows} rows`).toBeLessThan(1e-5);
        expect(one[rows], `row ${rows} untouched`).toBeNaN();
        expect(Array.from(got.subarray(t * rows, (t + 1) * rows)), `token ${t}, ${rows} rows: batch = one at a time`).toEqual(Array.from(one.subarray(0, rows)));
      }
    }
  });

  it("matvecQ8 gives the same on the f16 scales as on their f32 (f16 = 0)", () => {
    if (Lq.kind !== "wasm-q8") throw new Error("Q8_0 matrix was not bound to wasm");
    const h = arena.u16(Lq.d, (ROWS * COLS) / 32), f = arena.f32(dF32, (ROWS * COLS) / 32);
    for (let i = 0; i < h.length; i++) f[i] = F16_TO_F32[h[i]!]!;
    k.quantizeQ8(x, NTOK * COLS, qx, dx);
    k.widenQ8(qx, dx, NTOK, COLS, x16, dT);
    const run = (d: number, t: number) => {
      k.matvecQ8(out, Lq.qs, d, ROWS, COLS, x16 + COLS * 2, dx + COLS / 8, t);
      return Array.from(arena.f32(out, ROWS));
    };
    expect(run(dF32, 0)).toEqual(run(Lq.d, 1));
  });

  it("q8 activations stay within 2% (relative to the largest output) of f32 activations", () => {
    if (Lq.kind !== "wasm-q8") throw new Error("Q8_0 matrix was not bound to wasm");
    k.quantizeQ8(x, COLS, qx, dx);
    k.widenQ8(qx, dx, 1, COLS, x16, dT);
    k.matvecQ8(out, Lq.qs, Lq.d, ROWS, COLS, x16, dx, 1);
    const ref = new Float32Array(ROWS);
    matvecReference(ref, xs.subarray(0, COLS), wq);
    expect(maxRelErr(arena.f32(out, ROWS), ref, ROWS)).toBeLessThan(0.02);
  });

  it("matvecQ4K with q8 activations equals dequantize-then-multiply of the q8-rounded input within 1e-5", () => {
    if (Lk.kind !== "wasm-q4k") throw new Error("Q4_K matrix was not bound to wasm");
    k.quantizeQ8(x, NTOK * COLS, qx, dx);
    k.blockSumsQ8(qx, dx, NTOK * COLS, sx, false);
    k.widenQ8(qx, dx, NTOK, COLS, x16, dT);
    const qs = arena.i8(qx, NTOK * COLS);
    const d = arena.f32(dx, (NTOK * COLS) / 32);
    const sums = arena.f32(sx, (NTOK * COLS) / 32);
    for (let b = 0; b < (NTOK * COLS) / 32; b++) {
      let s = 0;
      for (let j = 0; j < 32; j++) s += qs[b * 32 + j]!;
      expect(sums[b]).toBeCloseTo(s * d[b]!, 5);
    }
    const ref = new Float32Array(ROWS);
    const xq = new Float32Array(COLS);
    for (const t of [1, 6]) {
      for (let i = 0; i < COLS; i++) xq[i] = qs[t * COLS + i]! * d[(t * COLS + i) >> 5]!;
      k.matvecQ4K(out, Lk.qs, Lk.a, Lk.c, ROWS, COLS, x16 + t * COLS * 2, qx + t * COLS, dx + (t * COLS) / 8, sx + (t * COLS) / 8);
      matvecReference(ref, xq, wk4);
      expect(maxRelErr(arena.f32(out, ROWS), ref, ROWS)).toBeLessThan(1e-5);
    }
    // A batch: packQ4K + matmulPacked with the offsets (sx), every token, matrices of every row
    // count mod 8 (a lone last group, a short one); no store past the last row or token.
    const batch = arena.f32(out, NTOK * ROWS + 1);
    for (const rows of [ROWS, ROWS - 1, ROWS - 2, ROWS - 3, ROWS - 5]) {
      const m = { ...wk4, rows, u8: wk4.u8.subarray(0, rows * wk4.rowBytes), i8: wk4.i8.subarray(0, rows * wk4.rowBytes) };
      const L = bindWasm(m, arena, atK2);
      if (L.kind !== "wasm-q4k") throw new Error("Q4_K matrix was not bound to wasm");
      batch.fill(Number.NaN);
      k.packQ4K(pk, L.qs, L.a, L.c, rows, COLS);
      k.matmulPacked(out, rows, pk, rows, COLS, x16, dT, NTOK, sx, 0);
      expect(batch[NTOK * rows], "past the last token untouched").toBeNaN();
      const got = batch.slice(0, NTOK * rows);
      for (let t = 0; t < NTOK; t++) {
        for (let i = 0; i < COLS; i++) xq[i] = qs[t * COLS + i]! * d[(t * COLS + i) >> 5]!;
        matvecReference(ref, xq, m);
        expect(maxRelErr(got.subarray(t * rows, (t + 1) * rows), ref, rows), `token ${t}, ${rows} rows`).toBeLessThan(1e-5);
      }
    }
  });

  it("Q4_0, Q5_0, Q6_K repacked as int8 + scales: the q8 kernels equal dequantize-then-multiply of the q8 input within 1e-5", () => {
    const a2 = new WasmArena();
    const m4 = smallQuantMatrix("Q4_0", ROWS, COLS, rand);
    const m5 = smallQuantMatrix("Q5_0", ROWS, COLS, rand);
    const m6 = q6kMatrix(ROWS, COLS, rand);
    const at4 = a2.reserve(wasmBytes(m4)), at5 = a2.reserve(wasmBytes(m5)), at6 = a2.reserve(wasmBytes(m6));
    const xw = a2.reserve(COLS * 4), q = a2.reserve(COLS), d = a2.reserve(COLS / 8), o = a2.reserve(ROWS * 4);
    const w16 = a2.reserve(4 * COLS * 2), wT = a2.reserve((4 * COLS) / 8);
    expect(a2.commit()).toBe(true);
    a2.f32(xw, COLS).set(xs.subarray(COLS, 2 * COLS));
    a2.k.quantizeQ8(xw, COLS, q, d);
    a2.k.widenQ8(q, d, 1, COLS, w16, wT);
    const xq = new Float32Array(COLS);
    const qs = a2.i8(q, COLS), ds = a2.f32(d, COLS / 32);
    for (let i = 0; i < COLS; i++) xq[i] = qs[i]! * ds[i >> 5]!;
    const ref = new Float32Array(ROWS);
    for (const [m, at] of [[m4, at4], [m5, at5], [m6, at6]] as const) {
      const L = bindWasm(m, a2, at);
      if (L.kind === "wasm-q8") a2.k.matvecQ8(o, L.qs, L.d, ROWS, COLS, w16, d, 1);
      else if (L.kind === "wasm-q8g16") a2.k.matvecQ8g16(o, L.qs, L.d, ROWS, COLS, w16, d, 0, 0);
      else throw new Error(`${m.type} was not bound to wasm`);
      matvecReference(ref, xq, m);
      expect(maxRelErr(a2.f32(o, ROWS), ref, ROWS)).toBeLessThan(1e-5);
    }
  });

  it("matmulF32 equals the reference for 1 and several tokens, cols not a multiple of 4", () => {
    if (Lf.kind !== "wasm-f32") throw new Error("F32 matrix was not bound to wasm");
    const C = wf.cols;
    const ref = new Float32Array(ROWS);
    for (const n of [1, 5]) {
      k.matmulF32(out, ROWS, Lf.ptr, ROWS, C, x, COLS, n); // x rows strided by COLS (>= C)
      const o = arena.f32(out, n * ROWS);
      for (let t = 0; t < n; t++) {
        matvecReference(ref, xs.subarray(t * COLS, t * COLS + C), wf);
        expect(maxRelErr(o.subarray(t * ROWS, (t + 1) * ROWS), ref, ROWS)).toBeLessThan(1e-5);
      }
    }
  });
});

// ggml's nearest_int (ggml/src/ggml-quants.c): add 1.5 * 2^23 in f32, read the low mantissa bits.
const nearestF32 = new Float32Array(1);
const nearestI32 = new Int32Array(nearestF32.buffer);
function nearestInt(fval: number): number {
  nearestF32[0] = Math.fround(fval + 12582912);
  return (nearestI32[0]! & 0x007fffff) - 0x00400000;
}

/**
 * ggml-quants.c quantize_row_q8_K_ref, transcribed line for line (f32 arithmetic via Math.fround:
 * one f64 operation on f32 operands rounded once is the f32 operation). x86's quantize_row_q8_K
 * calls it (ggml-cpu/arch/x86/quants.c). d [k/256], qs [k], bsums [k/16].
 */
function quantizeRowQ8KRef(x: Float32Array, k: number, d: Float32Array, qs: Int8Array, bsums: Int16Array): void {
  const QK_K = 256;
  for (let i = 0; i < k / QK_K; i++) {
    const o = i * QK_K;
    let max = 0;
    let amax = 0;
    for (let j = 0; j < QK_K; ++j) {
      const ax = Math.abs(x[o + j]!);
      if (ax > amax) {
        amax = ax;
        max = x[o + j]!;
      }
    }
    if (!amax) {
      d[i] = 0;
      qs.fill(0, o, o + QK_K);
      continue;
    }
    const iscale = Math.fround(-127 / max);
    for (let j = 0; j < QK_K; ++j) {
      const v = nearestInt(Math.fround(iscale * x[o + j]!));
      qs[o + j] = Math.min(127, v);
    }
    for (let j = 0; j < QK_K / 16; ++j) {
      let sum = 0;
      for (let ii = 0; ii < 16; ++ii) sum += qs[o + j * 16 + ii]!;
      bsums[i * 16 + j] = sum;
    }
    d[i] = Math.fround(1 / iscale);
  }
}

describe.skipIf(!wasmKernelsAvailable())("Q8_K activations (the K-quants' vec_dot_type) against ggml's quantize_row_q8_K_ref", () => {
  const rand = rng(23);
  const BLOCKS = 16;
  const N = BLOCKS * 256;
  const arena = new WasmArena();
  const x = arena.reserve(N * 4), qx = arena.reserve(N), dx = arena.reserve(N / 8), sx = arena.reserve(N / 8), s16 = arena.reserve(N / 4);
  expect(arena.commit()).toBe(true);
  const xs = arena.f32(x, N);
  // Block by block: random magnitudes across 20 orders, then the edge cases ggml's code branches on.
  for (let b = 0; b < BLOCKS; b++) {
    const scale = 10 ** (rand() * 20 - 12);
    for (let j = 0; j < 256; j++) xs[b * 256 + j] = (rand() * 2 - 1) * scale;
  }
  xs.fill(0, 256, 512); // block 1: all zero -> d = 0, qs = 0
  for (let j = 0; j < 256; j++) xs[512 + j] = j % 2 === 0 ? 0 : -0; // block 2: signed zeros only
  // Block 3: max = -127 (negative) -> iscale = 1 exactly, so k + 0.5 values are exact ties (to even).
  for (let j = 0; j < 256; j++) xs[768 + j] = (j % 254) - 126.5;
  xs[768 + 7] = -127;
  // Block 4: max = +127 -> iscale = -1: ties again, with the signs flipped; -127 gives +127.
  for (let j = 0; j < 256; j++) xs[1024 + j] = 126.5 - (j % 254);
  xs[1024 + 3] = 127;
  xs[1024 + 200] = -127;
  // Block 5: +amax and -amax both present: the first one sets the sign (ggml's strict `>`).
  xs[1280 + 10] = -3.25;
  xs[1280 + 20] = 3.25;
  // Block 6: the largest magnitude last, negative.
  for (let j = 0; j < 256; j++) xs[1536 + j] = Math.sin(j);
  xs[1536 + 255] = -1.5;
  // Block 7: a NaN (ggml skips it in amax and nearest_int makes it 0) beside ordinary values.
  xs[1792 + 5] = NaN;
  // Block 8: one nonzero value (d = 1/(-127/v)), the rest zero.
  xs.fill(0, 2048, 2304);
  xs[2048 + 100] = 1e-3;

  const dRef = new Float32Array(BLOCKS), qsRef = new Int8Array(N), bsRef = new Int16Array(N / 16);
  quantizeRowQ8KRef(xs, N, dRef, qsRef, bsRef);
  arena.k.quantizeQ8K(x, N, qx, dx);
  arena.k.blockSumsQ8(qx, dx, N, sx, false);
  arena.k.blockSumsQ8(qx, dx, N, s16, true);
  const qs = arena.i8(qx, N), d = arena.f32(dx, N / 32), sums = arena.f32(sx, N / 32), sums16 = arena.f32(s16, N / 16);

  it("qs bit-exact, and d bit-exact (f32, unrounded) in each of its 8 per-32 copies", () => {
    expect(Array.from(qs)).toEqual(Array.from(qsRef));
    for (let b = 0; b < N / 32; b++) expect(Object.is(d[b], dRef[b >> 3])).toBe(true);
  });

  it("covers the edge cases it names", () => {
    expect(dRef[1]).toBe(0);
    expect(dRef[2]).toBe(0);
    expect(dRef[3]).toBe(1); // iscale = -127/-127 = 1
    expect(Array.from(qsRef.subarray(768, 772))).toEqual([-126, -126, -124, -124]); // -126.5, -125.5, ... to even
    expect(qsRef[768 + 7]).toBe(-127);
    expect(dRef[4]).toBe(-1);
    expect(qsRef[1024 + 3]).toBe(-127);
    expect(qsRef[1024 + 200]).toBe(127);
    expect(dRef[5]).toBe(Math.fround(1 / Math.fround(-127 / -3.25))); // -3.25 comes first
    expect(qsRef[1280 + 10]).toBe(-127);
    expect(qsRef[1280 + 20]).toBe(127);
    expect(qsRef[1536 + 255]).toBe(-127);
    expect(qsRef[1792 + 5]).toBe(0);
    expect(qsRef[2048 + 100]).toBe(-127);
  });

  it("sx is d times each 32-value sum of qs (what Q4_K's offsets multiply); the 16-value sums are ggml's bsums", () => {
    for (let b = 0; b < N / 32; b++) {
      let s = 0;
      for (let j = 0; j < 32; j++) s += qs[b * 32 + j]!;
      expect(sums[b]).toBe(Math.fround(s * d[b]!));
      expect(s).toBe(bsRef[2 * b]! + bsRef[2 * b + 1]!);
    }
    // g16 (Q2_K's offsets): d times each bsum, the product llama.cpp's q2_K dot scales by dmin.
    for (let g = 0; g < N / 16; g++) expect(sums16[g]).toBe(Math.fround(bsRef[g]! * dRef[g >> 4]!));
  });

  it("q8- and q8g16-layout matrices filled in row chunks that cut their 4-row groups (a streamed load) equal one fill, and readWasmRow gives back every row", () => {
    const ROWS = 23, COLS = 256; // a last group of 3 rows
    const a2 = new WasmArena();
    const ms = [
      q8Matrix(ROWS, COLS, rand), smallQuantMatrix("Q5_0", ROWS, COLS, rand), lowBitMatrix("IQ4_NL", ROWS, COLS, rand), lowBitMatrix("IQ4_XS", ROWS, COLS, rand),
      q6kMatrix(ROWS, COLS, rand), lowBitMatrix("Q2_K", ROWS, COLS, rand), lowBitMatrix("Q3_K", ROWS, COLS, rand),
    ];
    const whole = ms.map((m) => a2.reserve(wasmBytes(m))), chunked = ms.map((m) => a2.reserve(wasmBytes(m)));
    expect(a2.commit()).toBe(true);
    const row = new Float32Array(COLS), ref = new Float32Array(COLS);
    ms.forEach((m, i) => {
      const L = bindWasm(m, a2, whole[i]!);
      for (const [r0, r1] of [[0, 5], [5, 6], [6, 13], [13, 23]] as const) {
        const part = { ...m, rows: r1 - r0, u8: m.u8.subarray(r0 * m.rowBytes, r1 * m.rowBytes), i8: m.i8.subarray(r0 * m.rowBytes, r1 * m.rowBytes) };
        fillWasmRows(part, a2, chunked[i]!, ROWS, r0);
      }
      expect(Array.from(a2.u8(chunked[i]!, wasmBytes(m))), m.type).toEqual(Array.from(a2.u8(whole[i]!, wasmBytes(m))));
      const reader = wasmRowReader(a2, L);
      for (let r = 0; r < ROWS; r++) {
        readWasmRow(reader, r, row);
        dequantizeRow(m.type, m.u8, r * m.rowBytes, ref, 0, COLS);
        for (let j = 0; j < COLS; j++) expect(Math.abs(row[j]! - ref[j]!), `${m.type} row ${r} value ${j}`).toBeLessThanOrEqual(Math.abs(ref[j]!) * 1e-6);
      }
    });
  });

  it("a Q8_0, Q5_0 or IQ4_NL block with an inf or NaN scale is a TensorDataError naming the tensor, row and block", () => {
    const a2 = new WasmArena();
    const ms = [q8Matrix(6, 64, rand), smallQuantMatrix("Q5_0", 6, 64, rand), lowBitMatrix("IQ4_NL", 6, 64, rand)];
    const ats = ms.map((m) => a2.reserve(wasmBytes(m)));
    expect(a2.commit()).toBe(true);
    ms.forEach((m, i) => {
      const o = 5 * m.rowBytes + m.rowBytes / 2; // row 5, block 1
      for (const bits of [0x7c00, 0xfe01]) {
        m.u8[o] = bits & 0xff;
        m.u8[o + 1] = bits >> 8;
        let err: unknown;
        try {
          bindWasm(m, a2, ats[i]!);
        } catch (e) {
          err = e;
        }
        expect(err, m.type).toBeInstanceOf(TensorDataError);
        expect((err as TensorDataError).details).toEqual({ tensor: m.name, row: 5, block: 1 });
      }
    });
  });

  it("quantizeActs picks Q8_K for the K kinds and Q8_0 for wasm-q8", () => {
    expect(actQuant("wasm-q4k")).toBe("q8_K");
    expect(actQuant("wasm-q8g16")).toBe("q8_K");
    expect(actQuant("wasm-q8k")).toBe("q8_K");
    expect(actQuant("wasm-q8")).toBe("q8_0");
    expect(actQuant("wasm-f32")).toBe(null);
    expect(actQuant("js")).toBe(null);
  });

  it("Q4_K and Q6_K matmuls through linear() on Q8_K activations equal a float64 dot of the dequantized weights and the dequantized Q8_K input", () => {
    const ROWS = 24, COLS = 512, NTOK = 3; // several tokens: linear()'s per-token loop over the scratch
    const a2 = new WasmArena();
    const m4 = q4kMatrix(ROWS, COLS, rand), m6 = q6kMatrix(ROWS, COLS, rand);
    const at4 = a2.reserve(wasmBytes(m4)), at6 = a2.reserve(wasmBytes(m6));
    const xAt = a2.reserve(NTOK * COLS * 4), oAt = a2.reserve(NTOK * ROWS * 4);
    const [qsB, dB, x16B, dTB, sxB, s16B] = q8ScratchBytes(NTOK, COLS);
    // pk: a Q4_K batch is repacked (packQ4K) a chunk of rows at a time.
    const q8: Q8Scratch = { qs: a2.reserve(qsB), d: a2.reserve(dB), x16: a2.reserve(x16B), dT: a2.reserve(dTB), sx: a2.reserve(sxB), s16: a2.reserve(s16B), pk: a2.reserve(PACKED_ROWS * packedRowBytes(COLS)) };
    expect(a2.commit()).toBe(true);
    const xa = new Acts(NTOK, COLS, xAt, a2), out = new Acts(NTOK, ROWS, oAt, a2);
    for (let i = 0; i < NTOK * COLS; i++) xa.a[i] = (rand() * 2 - 1) * (i < COLS ? 1 : 0.01);
    const dK = new Float32Array((NTOK * COLS) / 256), qK = new Int8Array(NTOK * COLS), bK = new Int16Array((NTOK * COLS) / 16);
    quantizeRowQ8KRef(xa.a, NTOK * COLS, dK, qK, bK);
    const row = new Float32Array(COLS);
    for (const m of [m4, m6]) {
      const L = bindWasm(m, a2, m === m4 ? at4 : at6);
      expect(L.kind).toBe(m === m4 ? "wasm-q4k" : "wasm-q8g16");
      quantizeActs(a2, xa, NTOK, q8, actQuant(L.kind)!);
      linear(a2, out, L, xa, NTOK, q8);
      for (let t = 0; t < NTOK; t++) {
        const ref = new Float32Array(ROWS);
        for (let r = 0; r < ROWS; r++) {
          dequantizeRow(m.type, m.u8, r * m.rowBytes, row, 0, COLS);
          let s = 0;
          for (let i = 0; i < COLS; i++) s += row[i]! * qK[t * COLS + i]! * dK[(t * COLS + i) >> 8]!;
          ref[r] = s;
        }
        expect(maxRelErr(out.row[t]!, ref, ROWS)).toBeLessThan(2e-6);
      }
    }
  });

  it("Q2_K, Q3_K, IQ4_XS (Q8_K activations) and IQ4_NL (Q8_0) through linear() equal a float64 dot of the dequantized weights and the dequantized q8 input", () => {
    const ROWS = 23, COLS = 512, NTOK = 5; // odd rows (matvecQ8's last row alone); several tokens (per-16 sums per token)
    const a2 = new WasmArena();
    const ms = (["Q2_K", "Q3_K", "IQ4_XS", "IQ4_NL"] as const).map((t) => lowBitMatrix(t, ROWS, COLS, rand));
    const ats = ms.map((m) => a2.reserve(wasmBytes(m)));
    const xAt = a2.reserve(NTOK * COLS * 4), oAt = a2.reserve(NTOK * ROWS * 4);
    const [qsB, dB, x16B, dTB, sxB, s16B] = q8ScratchBytes(NTOK, COLS);
    // pk: IQ4_NL is f16-scaled; its batch goes through packQ8 a chunk of rows at a time.
    const q8: Q8Scratch = { qs: a2.reserve(qsB), d: a2.reserve(dB), x16: a2.reserve(x16B), dT: a2.reserve(dTB), sx: a2.reserve(sxB), s16: a2.reserve(s16B), pk: a2.reserve(PACKED_ROWS * packedRowBytes(COLS)) };
    expect(a2.commit()).toBe(true);
    const xa = new Acts(NTOK, COLS, xAt, a2), out = new Acts(NTOK, ROWS, oAt, a2);
    for (let i = 0; i < NTOK * COLS; i++) xa.a[i] = (rand() * 2 - 1) * (i < COLS ? 1 : 0.01) + (i % 16 === 3 ? 0.5 : 0); // nonzero group sums
    const dK = new Float32Array((NTOK * COLS) / 256), qK = new Int8Array(NTOK * COLS), bK = new Int16Array((NTOK * COLS) / 16);
    quantizeRowQ8KRef(xa.a, NTOK * COLS, dK, qK, bK);
    const d0 = new Float32Array((NTOK * COLS) / 32), q0 = new Int8Array(NTOK * COLS);
    quantizeRowQ8_0Reference(xa.a, 0, NTOK * COLS, q0, d0);
    const row = new Float32Array(COLS);
    const kinds: string[] = [];
    for (let i = 0; i < ms.length; i++) {
      const m = ms[i]!;
      const L = bindWasm(m, a2, ats[i]!);
      kinds.push(L.kind);
      const to = actQuant(L.kind)!;
      expect(to, m.type).toBe(m.type === "IQ4_NL" ? "q8_0" : "q8_K");
      quantizeActs(a2, xa, NTOK, q8, to);
      linear(a2, out, L, xa, NTOK, q8);
      for (let t = 0; t < NTOK; t++) {
        const ref = new Float32Array(ROWS);
        for (let r = 0; r < ROWS; r++) {
          dequantizeRow(m.type, m.u8, r * m.rowBytes, row, 0, COLS);
          let s = 0;
          for (let j = 0; j < COLS; j++) {
            const v = t * COLS + j;
            s += row[j]! * (to === "q8_K" ? qK[v]! * dK[v >> 8]! : q0[v]! * d0[v >> 5]!);
          }
          ref[r] = s;
        }
        expect(maxRelErr(out.row[t]!, ref, ROWS), `${m.type} token ${t}`).toBeLessThan(2e-6);
      }
    }
    expect(kinds).toEqual(["wasm-q8g16", "wasm-q8g16", "wasm-q8k", "wasm-q8"]);
  });

  it("a batch through linear() on an f16-scale matrix of more rows than PACKED_ROWS (chunks and a tail) equals the naive int8 dot", () => {
    const ROWS = 2 * PACKED_ROWS + 37, COLS = 128, NTOK = 6;
    const a2 = new WasmArena();
    const m = q8Matrix(ROWS, COLS, rand);
    const at = a2.reserve(wasmBytes(m));
    const xAt = a2.reserve(NTOK * COLS * 4), oAt = a2.reserve(NTOK * ROWS * 4);
    const [qsB, dB, x16B, dTB, sxB, s16B] = q8ScratchBytes(NTOK, COLS);
    const q8: Q8Scratch = { qs: a2.reserve(qsB), d: a2.reserve(dB), x16: a2.reserve(x16B), dT: a2.reserve(dTB), sx: a2.reserve(sxB), s16: a2.reserve(s16B), pk: a2.reserve(PACKED_ROWS * packedRowBytes(COLS)) };
    expect(a2.commit()).toBe(true);
    const L = bindWasm(m, a2, at);
    expect(L.kind).toBe("wasm-q8");
    const xa = new Acts(NTOK, COLS, xAt, a2), out = new Acts(NTOK, ROWS, oAt, a2);
    for (let i = 0; i < NTOK * COLS; i++) xa.a[i] = rand() * 2 - 1;
    quantizeActs(a2, xa, NTOK, q8, "q8_0");
    linear(a2, out, L, xa, NTOK, q8);
    const qs = a2.i8(q8.qs, NTOK * COLS), d = a2.f32(q8.d, (NTOK * COLS) / 32);
    const ref = new Float32Array(ROWS);
    for (let t = 0; t < NTOK; t++) {
      matvecQ8_0Q8Reference(ref, m, qs.subarray(t * COLS, (t + 1) * COLS), d.subarray((t * COLS) / 32, ((t + 1) * COLS) / 32));
      expect(maxRelErr(out.row[t]!, ref, ROWS), `token ${t}`).toBeLessThan(1e-5);
    }
  });

  it("wasmBytes of the low-bit types: Q2_K 48, Q3_K 40, IQ4_NL 34, IQ4_XS 36 bytes per 32 values; none on f32 activations", () => {
    for (const [type, per32] of [["Q2_K", 48], ["Q3_K", 40], ["IQ4_NL", 34], ["IQ4_XS", 36]] as const) {
      expect(wasmBytes({ type, rows: 4, cols: 256 })).toBe((4 * 256 * per32) / 32);
      expect(wasmBytes({ type, rows: 4, cols: 256 }, false)).toBe(0);
    }
  });

  it("throws rather than let a Q8_K block straddle two rows", () => {
    const a3 = new WasmArena();
    const at = a3.reserve(2 * 96 * 4);
    const [qsB, dB, x16B, dTB, sxB, s16B] = q8ScratchBytes(2, 96);
    const q8: Q8Scratch = { qs: a3.reserve(qsB), d: a3.reserve(dB), x16: a3.reserve(x16B), dT: a3.reserve(dTB), sx: a3.reserve(sxB), s16: a3.reserve(s16B), pk: 0 };
    expect(a3.commit()).toBe(true);
    expect(() => quantizeActs(a3, new Acts(2, 96, at, a3), 2, q8, "q8_K")).toThrow(/256/);
  });
});

describe("the embedded module", () => {
  it("stays within its 12 KiB budget (synchronous compile: the limit that matters is Chrome's main thread)", () => {
    // The module is compiled synchronously (compileEmbedded). Node and workers (the web page runs the
    // engine in one) have no size limit; Chrome's main thread refused more than 4 KiB until 2025 and
    // now refuses more than 8 MB ("WebAssembly.Compile is disallowed on the main thread, if the buffer
    // size is larger than 8MB", Chrome 133). On an older Chrome's main thread the model falls back to
    // the JS kernels, as the 29 KiB attention module already does there. The budget only keeps the
    // kernels from growing unnoticed (8 KiB until the row-group kernels inlined a copy of their loop
    // for whole groups: 8.8 KiB).
    expect(Buffer.from(KERNELS_WASM_BASE64, "base64").length).toBeLessThanOrEqual(12288);
  });

  it("kernels-wasm.ts is what build.mjs makes from kernels.as (run npm run build:wasm after editing kernels.as)", async () => {
    // @ts-expect-error build.mjs is plain JS without types
    const build = (await import("../../wasm/build.mjs")) as { compileKernels(): Promise<Uint8Array>; generatedModule(w: Uint8Array): string };
    const want = build.generatedModule(await build.compileKernels());
    const have = readFileSync(new URL("./kernels-wasm.ts", import.meta.url), "utf8");
    expect(have === want).toBe(true);
  }, 30_000);
});
