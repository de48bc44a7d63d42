import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { f32ToF16Bits } from "../../cache/codecs/half.js";
import { bindWasm, wasmBytes } from "../kernels/linear.js";
import { matvecReference, type WeightMatrix } from "../kernels/matvec.js";
import { matvecQ8_0Q8Reference, quantizeRowQ8_0Reference } from "../kernels/q8-activations.js";
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
  const atF = arena.reserve(wasmBytes(wf));
  const atK = arena.reserve(wasmBytes(wk4));
  const sx = arena.reserve((NTOK * COLS) / 8);
  const x = arena.reserve(NTOK * COLS * 4);
  const qx = arena.reserve(NTOK * COLS);
  const dx = arena.reserve((NTOK * COLS) / 8);
  const out = arena.reserve(NTOK * ROWS * 4);
  const x16 = arena.reserve(12 * COLS * 2); // NTOK rounded up to 4 rows
  const dT = arena.reserve((12 * COLS) / 8);
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

  it("matvecQ8 and matmulQ8x16 (q8 activations) equal the naive int8 dot within 1e-5", () => {
    if (Lq.kind !== "wasm-q8") throw new Error("Q8_0 matrix was not bound to wasm");
    k.quantizeQ8(x, NTOK * COLS, qx, dx);
    const qs = arena.i8(qx, NTOK * COLS);
    const d = arena.f32(dx, (NTOK * COLS) / 32);
    const ref = new Float32Array(ROWS);
    k.widenQ8(qx, dx, NTOK, COLS, x16, dT);
    k.matmulQ8x16(out, ROWS, Lq.qs, Lq.d, ROWS, COLS, x16, dT, NTOK);
    const o = arena.f32(out, NTOK * ROWS);
    for (let t = 0; t < NTOK; t++) {
      matvecQ8_0Q8Reference(ref, wq, qs.subarray(t * COLS, (t + 1) * COLS), d.subarray((t * COLS) / 32, ((t + 1) * COLS) / 32));
      expect(maxRelErr(o.subarray(t * ROWS, (t + 1) * ROWS), ref, ROWS)).toBeLessThan(1e-5);
    }
    k.matvecQ8(out, Lq.qs, Lq.d, ROWS, COLS, qx, dx);
    matvecQ8_0Q8Reference(ref, wq, qs, d);
    expect(maxRelErr(arena.f32(out, ROWS), ref, ROWS)).toBeLessThan(1e-5);
  });

  it("q8 activations stay within 2% (relative to the largest output) of f32 activations", () => {
    if (Lq.kind !== "wasm-q8") throw new Error("Q8_0 matrix was not bound to wasm");
    k.quantizeQ8(x, COLS, qx, dx);
    k.matvecQ8(out, Lq.qs, Lq.d, ROWS, COLS, qx, dx);
    const ref = new Float32Array(ROWS);
    matvecReference(ref, xs.subarray(0, COLS), wq);
    expect(maxRelErr(arena.f32(out, ROWS), ref, ROWS)).toBeLessThan(0.02);
  });

  it("matvecQ4K with q8 activations equals dequantize-then-multiply of the q8-rounded input within 1e-5", () => {
    if (Lk.kind !== "wasm-q4k") throw new Error("Q4_K matrix was not bound to wasm");
    k.quantizeQ8(x, NTOK * COLS, qx, dx);
    k.blockSumsQ8(qx, dx, NTOK * COLS, sx);
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
      k.matvecQ4K(out, Lk.qs, Lk.a, Lk.c, ROWS, COLS, qx + t * COLS, dx + (t * COLS) / 8, sx + (t * COLS) / 8);
      matvecReference(ref, xq, wk4);
      expect(maxRelErr(arena.f32(out, ROWS), ref, ROWS)).toBeLessThan(1e-5);
    }
  });

  it("Q4_0, Q5_0, Q6_K repacked as int8 + scales: the q8 kernels equal dequantize-then-multiply of the q8 input within 1e-5", () => {
    const a2 = new WasmArena();
    const m4 = smallQuantMatrix("Q4_0", ROWS, COLS, rand);
    const m5 = smallQuantMatrix("Q5_0", ROWS, COLS, rand);
    const m6 = q6kMatrix(ROWS, COLS, rand);
    const at4 = a2.reserve(wasmBytes(m4)), at5 = a2.reserve(wasmBytes(m5)), at6 = a2.reserve(wasmBytes(m6));
    const xw = a2.reserve(COLS * 4), q = a2.reserve(COLS), d = a2.reserve(COLS / 8), o = a2.reserve(ROWS * 4);
    expect(a2.commit()).toBe(true);
    a2.f32(xw, COLS).set(xs.subarray(COLS, 2 * COLS));
    a2.k.quantizeQ8(xw, COLS, q, d);
    const xq = new Float32Array(COLS);
    const qs = a2.i8(q, COLS), ds = a2.f32(d, COLS / 32);
    for (let i = 0; i < COLS; i++) xq[i] = qs[i]! * ds[i >> 5]!;
    const ref = new Float32Array(ROWS);
    for (const [m, at] of [[m4, at4], [m5, at5], [m6, at6]] as const) {
      const L = bindWasm(m, a2, at);
      if (L.kind === "wasm-q8") a2.k.matvecQ8(o, L.qs, L.d, ROWS, COLS, q, d);
      else if (L.kind === "wasm-q8g16") a2.k.matvecQ8g16(o, L.qs, L.d, ROWS, COLS, q, d);
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

describe("the embedded module", () => {
  it("stays under 4 KiB, the most Chrome compiles synchronously on the main thread", () => {
    // Chrome refuses `new WebAssembly.Module(bytes)` on the main thread for more than 4 KiB
    // ("WebAssembly.Compile is disallowed on the main thread, if the buffer size is larger than 4KB");
    // past it the page would silently fall back to the JS kernels.
    expect(Buffer.from(KERNELS_WASM_BASE64, "base64").length).toBeLessThanOrEqual(4096);
  });

  it("kernels-wasm.ts is what build.mjs makes from kernels.as (run npm run build:wasm after editing kernels.as)", async () => {
    // @ts-expect-error build.mjs is plain JS without types
    const build = (await import("../../wasm/build.mjs")) as { compileKernels(): Promise<Uint8Array>; generatedModule(w: Uint8Array): string };
    const want = build.generatedModule(await build.compileKernels());
    const have = readFileSync(new URL("./kernels-wasm.ts", import.meta.url), "utf8");
    expect(have === want).toBe(true);
  }, 30_000);
});
