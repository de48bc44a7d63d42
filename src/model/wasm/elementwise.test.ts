// The elementwise wasm kernels (elementwise.as: swiglu, rmsNorm, addRows) against the JS loops of
// llama.ts and against double-precision formulas; and the embedded module's shape (imports only
// env.memory, no data segment, under 4 KiB, up to date). LlamaModel on them, batched over the paged
// cache, is held to kernels: "js" in test/forward-batch.test.ts.

import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { compileEmbedded } from "../../wasm/embedded.js";
import { rmsNorm, swigluRows } from "../transformer.js";
import { ELEMENTWISE_WASM_BASE64 } from "./elementwise-wasm.js";
import { WasmArena } from "./wasm-kernels.js";
import { rng } from "../../../test/cache-helpers.js";

interface Elementwise {
  swiglu(g: number, u: number, n: number): void;
  rmsNorm(out: number, x: number, w: number, n: number, eps: number): void;
  addRows(a: number, b: number, n: number): void;
}


const bytes = Buffer.from(ELEMENTWISE_WASM_BASE64, "base64");
// The plain-memory variant (a SharedArrayBuffer-backed one is what a threaded model uses: same code).
const mod = compileEmbedded(ELEMENTWISE_WASM_BASE64, "unshared");

/** A fresh 2-page memory with the module instantiated over it. */
function instance(): { ew: Elementwise; f32: Float32Array } {
  const memory = new WebAssembly.Memory({ initial: 2 });
  const ew = new WebAssembly.Instance(mod!, { env: { memory } }).exports as unknown as Elementwise;
  return { ew, f32: new Float32Array(memory.buffer) };
}

// Buffers at float indices; A is one float past a 16-byte boundary so that v128 loads are unaligned.
const A = 1025, B = 9000, C = 17000, GUARD = 1234.5;

describe.skipIf(mod === null)("elementwise.as kernels", () => {
  it("swiglu: within 4e-7 relative of silu(g) * u in doubles and of the JS loop, for every n 1..40 (the tail included)", () => {
    // Error budget in f32: e^-|g| to ~1e-7 (Cephes' polynomial), then the product, the division
    // and the product by u each round by <= 2^-24 (6e-8): about 3e-7. The JS loop rounds once.
    const { ew, f32 } = instance();
    const rand = rng(7);
    let worst = 0;
    for (let n = 1; n <= 40; n++) {
      const g = new Float32Array(n), u = new Float32Array(n);
      for (let i = 0; i < n; i++) {
        g[i] = (rand() * 2 - 1) * 20;
        u[i] = (rand() * 2 - 1) * 3;
      }
      f32.set(g, A);
      f32.set(u, B);
      f32[A + n] = GUARD;
      ew.swiglu(A * 4, B * 4, n);
      const ref = Float32Array.from(g);
      swigluRows(ref, u, n);
      for (let i = 0; i < n; i++) {
        const gi = g[i]!, ui = u[i]!;
        const exact = (gi / (1 + Math.exp(-gi))) * ui;
        const got = f32[A + i]!;
        const err = Math.abs(got - exact) / Math.max(Math.abs(exact), 1e-30);
        worst = Math.max(worst, err);
        expect(err).toBeLessThan(4e-7);
        expect(Math.abs(got - ref[i]!)).toBeLessThanOrEqual(4e-7 * Math.abs(ref[i]!) + 1e-36);
      }
      expect(f32[A + n]).toBe(GUARD); // nothing written past n
      expect(f32.subarray(B, B + n)).toEqual(u); // u is read only
    }
    expect(worst).toBeGreaterThan(0); // the comparison saw real rounding, not a copy of the reference
  });

  it("swiglu of the matmul kernels module (the one the pool's threads run) gives this module's bits", () => {
    const arena = new WasmArena();
    const n = 203; // a tail
    const g = arena.reserve(n * 4 + 4), u = arena.reserve(n * 4);
    expect(arena.commit()).toBe(true);
    const { ew, f32 } = instance();
    const rand = rng(9);
    const gs = arena.f32(g + 4, n), us = arena.f32(u, n); // g one float past alignment
    for (let i = 0; i < n; i++) {
      gs[i] = (rand() * 2 - 1) * 30;
      us[i] = (rand() * 2 - 1) * 3;
    }
    gs[0] = 0;
    gs[1] = -Infinity;
    gs[2] = Number.NaN;
    f32.set(gs, A);
    f32.set(us, B);
    arena.k.swiglu(g + 4, u, n);
    ew.swiglu(A * 4, B * 4, n);
    expect(new Uint32Array(Float32Array.from(gs).buffer)).toEqual(new Uint32Array(f32.slice(A, A + n).buffer));
  });

  it("swiglu: exact 0 at g = 0, no NaN for huge or infinite g, NaN stays NaN", () => {
    const { ew, f32 } = instance();
    // By hand: silu(0) = 0; silu(g) -> g as g -> +inf and -> 0 as g -> -inf (g e^g underflows
    // below about -88 in f32); silu(1) = 1 / (1 + 1/e) = 0.7310585786.
    const g = [0, -0, 1e30, -1e30, Infinity, -Infinity, -100, 100, NaN, 1, 3.4e38, -3.4e38];
    const u = [5, 5, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1];
    f32.set(g, A);
    f32.set(u, B);
    ew.swiglu(A * 4, B * 4, g.length);
    const out = Array.from(f32.subarray(A, A + g.length));
    expect(out[0]).toBe(0);
    expect(Math.abs(out[1]!)).toBe(0); // -0 in, -0 out (the JS loop gives -0 too)
    expect(out[2]).toBe(Math.fround(2e30));
    expect(Math.abs(out[3]!)).toBe(0);
    expect(out[4]).toBe(Infinity);
    expect(Math.abs(out[5]!)).toBe(0);
    expect(Math.abs(out[6]!)).toBeLessThan(1e-36); // -100 e^-100 = -3.7e-42: flushed or subnormal
    expect(out[7]).toBe(100);
    expect(Number.isNaN(out[8])).toBe(true);
    expect(Math.abs(out[9]! - 0.7310585786) / 0.7310585786).toBeLessThan(3e-7);
    expect(out[10]).toBe(Math.fround(3.4e38));
    expect(Math.abs(out[11]!)).toBe(0);
  });

  it("rmsNorm: one row within 3e-7 relative of the JS reference and of double math, for widths with and without a tail; in place too", () => {
    // The kernel sums f32 squares in f64 (as the JS reference and llama.cpp do), then rounds the
    // scale to f32 and rounds x*scale and *w separately: <= 3 roundings of 2^-24 (1.8e-7) away from
    // the double formula.
    const rand = rng(11);
    const { ew, f32 } = instance();
    for (const n of [1, 3, 4, 7, 64, 172, 577, 4096]) {
      const x = new Float32Array(n), w = new Float32Array(n);
      for (let i = 0; i < n; i++) {
        x[i] = (rand() * 2 - 1) * 4;
        w[i] = (rand() * 2 - 1) * 2;
      }
      const eps = 1e-5;
      let ss = 0;
      for (let i = 0; i < n; i++) ss += x[i]! * x[i]!;
      const scale = 1 / Math.sqrt(ss / n + Math.fround(eps));
      const ref = new Float32Array(n);
      rmsNorm(ref, x, w, eps, 0, n);
      f32.set(x, A);
      f32.set(w, B);
      f32[C + n] = GUARD;
      ew.rmsNorm(C * 4, A * 4, B * 4, n, eps);
      for (let i = 0; i < n; i++) {
        const exact = x[i]! * scale * w[i]!;
        const got = f32[C + i]!;
        expect(Math.abs(got - exact)).toBeLessThanOrEqual(3e-7 * Math.abs(exact));
        expect(Math.abs(got - ref[i]!)).toBeLessThanOrEqual(3e-7 * Math.abs(ref[i]!));
      }
      expect(f32[C + n]).toBe(GUARD);
      // In place (qwen3's QK norm): the same numbers.
      ew.rmsNorm(A * 4, A * 4, B * 4, n, eps);
      expect(f32.subarray(A, A + n)).toEqual(f32.subarray(C, C + n));
    }
  });

  it("rmsNorm: a hand-computed row", () => {
    const { ew, f32 } = instance();
    // x = [3, 4, 0, 0, 0], w = [1, 2, 1, 1, 1], eps 0: mean(x^2) = 25 / 5 = 5, scale = 1/sqrt(5);
    // out = [3/sqrt(5), 8/sqrt(5), 0, 0, 0] = [1.3416407865, 3.5777087640, 0, 0, 0].
    f32.set([3, 4, 0, 0, 0], A);
    f32.set([1, 2, 1, 1, 1], B);
    ew.rmsNorm(C * 4, A * 4, B * 4, 5, 0);
    expect(Math.abs(f32[C]! - 1.3416407865)).toBeLessThan(3e-7);
    expect(Math.abs(f32[C + 1]! - 3.577708764)).toBeLessThan(6e-7);
    expect(Array.from(f32.subarray(C + 2, C + 5))).toEqual([0, 0, 0]);
  });

  it("addRows: exactly the f32 sums, tail included, b unchanged", () => {
    // f32 + f32 rounded once is what Math.fround(a + b) gives (a double sum of two f32 is exact
    // enough that rounding it to f32 is the correctly rounded f32 sum).
    const rand = rng(3);
    const { ew, f32 } = instance();
    for (const n of [1, 2, 3, 4, 5, 63, 64, 65, 11008 + 3]) {
      const a = new Float32Array(n), b = new Float32Array(n);
      for (let i = 0; i < n; i++) {
        a[i] = (rand() * 2 - 1) * 100;
        b[i] = (rand() * 2 - 1) * 1e-3;
      }
      f32.set(a, A);
      f32.set(b, A + n + 5);
      f32[A + n] = GUARD;
      ew.addRows(A * 4, (A + n + 5) * 4, n);
      for (let i = 0; i < n; i++) expect(f32[A + i]).toBe(Math.fround(a[i]! + b[i]!));
      expect(f32[A + n]).toBe(GUARD);
      expect(f32.subarray(A + n + 5, A + 2 * n + 5)).toEqual(b);
    }
  });
});

describe("the embedded elementwise module", () => {
  it("stays under 4 KiB (Chrome's limit for synchronous compiles on the main thread)", () => {
    expect(bytes.length).toBeLessThanOrEqual(4096);
  });

  it.skipIf(mod === null)("imports only env.memory and has no data segment (instantiating it writes nothing into the arena)", () => {
    expect(WebAssembly.Module.imports(mod!)).toEqual([{ module: "env", name: "memory", kind: "memory" }]);
    // Walk the sections: id 11 is the data section (wasm core spec, 5.5.2 / 5.5.14).
    const ids: number[] = [];
    let i = 8;
    while (i < bytes.length) {
      const id = bytes[i++]!;
      let size = 0, shift = 0, c = 0;
      do {
        c = bytes[i++]!;
        size += (c & 127) * 2 ** shift;
        shift += 7;
      } while (c & 128);
      ids.push(id);
      i += size;
    }
    expect(i).toBe(bytes.length);
    expect(ids).not.toContain(11);
  });

  it("elementwise-wasm.ts is what build.mjs makes from elementwise.as (run npm run build:wasm after editing it)", async () => {
    // @ts-expect-error build.mjs is plain JS without types
    const build = (await import("../../wasm/build.mjs")) as { compileKernels(name: string): Promise<Uint8Array>; generatedModule(w: Uint8Array, name: string): string };
    const want = build.generatedModule(await build.compileKernels("elementwise"), "elementwise");
    const have = readFileSync(new URL("./elementwise-wasm.ts", import.meta.url), "utf8");
    expect(have === want).toBe(true);
  }, 30_000);
});
