// The GQA kernels (dotRun4 / axpyRun4) of the stores that have them, against four single-head
// dotRun / axpyRun calls and against a plain double-precision loop over the decoded values
// (readToken) written here: the same values up to summation order.
import { describe, expect, it } from "vitest";
import { createPageStore } from "./index.js";
import type { CodecKind, KvRole } from "./types.js";
import { gaussian, seededRandom } from "./synthetic-kv.js";

describe("grouped (four query heads per pass) kernels", () => {
  const cases: [CodecKind, KvRole, number, number][] = [];
  for (const kind of ["f32", "f16", "int8", "fp8"] as CodecKind[]) for (const headDim of [128, 7]) cases.push([kind, "k", headDim, 16]);
  // int4: keys and values are encoded differently; a full page is sealed (quantized), a partial one open (f32).
  for (const role of ["k", "v"] as KvRole[]) for (const filled of [16, 14]) cases.push(["int4", role, 128, filled]);
  for (const [kind, role, headDim, filled] of cases) {
    it(`${kind} ${role}: dotRun4 and axpyRun4 equal per-head kernels and a naive loop (headDim ${headDim}, ${filled} slots written)`, () => {
      const P = 16;
      const nHeadKv = 3;
      const store = createPageStore(kind, role, { nPages: 3, pageSize: P, nHeadKv, headDim });
      expect(store.dotRun4).toBeDefined();
      expect(store.axpyRun4).toBeDefined();
      const g = gaussian(seededRandom(7));
      const tok = new Float32Array(nHeadKv * headDim);
      const dec: Float32Array[] = []; // [slot] decoded values of page 1
      for (let s = 0; s < filled; s++) {
        for (let i = 0; i < tok.length; i++) tok[i] = g();
        store.writeToken(1, s, tok, 0);
      }
      for (let s = 0; s < filled; s++) {
        const d = new Float32Array(nHeadKv * headDim);
        store.readToken(1, s, d, 0);
        dec.push(d);
      }
      const kvHead = 2;
      const slotStart = 3;
      const n = 11;
      const qStride = headDim + 5;
      const q = Float32Array.from({ length: 4 * qStride }, () => g());
      const W = 40;
      const got = new Float32Array(4 * W);
      const want = new Float32Array(4 * W);
      const acc = new Float64Array(4 * P);
      store.dotRun4!(1, slotStart, n, kvHead, q, 0, qStride, got, 2, W, acc);
      for (let j = 0; j < 4; j++) store.dotRun(1, slotStart, n, kvHead, q, j * qStride, want, 2 + j * W);
      for (let j = 0; j < 4; j++) {
        for (let t = 0; t < n; t++) {
          let naive = 0;
          for (let c = 0; c < headDim; c++) naive += q[j * qStride + c]! * dec[slotStart + t]![kvHead * headDim + c]!;
          expect(got[2 + j * W + t]).toBeCloseTo(naive, 4);
          expect(got[2 + j * W + t]).toBeCloseTo(want[2 + j * W + t]!, 4);
        }
      }
      const w = Float32Array.from({ length: 4 * W }, () => g());
      const outStride = headDim + 1;
      const o4 = Float32Array.from({ length: 4 * outStride }, (_, i) => i * 0.01); // accumulates onto existing values
      const o1 = Float32Array.from(o4);
      store.axpyRun4!(1, slotStart, n, kvHead, w, 1, W, o4, 0, outStride, acc);
      for (let j = 0; j < 4; j++) store.axpyRun(1, slotStart, n, kvHead, w, 1 + j * W, o1, j * outStride);
      for (let j = 0; j < 4; j++) {
        for (let c = 0; c < headDim; c++) {
          let naive = Math.fround((j * outStride + c) * 0.01);
          for (let t = 0; t < n; t++) naive += w[1 + j * W + t]! * dec[slotStart + t]![kvHead * headDim + c]!;
          expect(o4[j * outStride + c]).toBeCloseTo(naive, 4);
          expect(o4[j * outStride + c]).toBeCloseTo(o1[j * outStride + c]!, 4);
        }
        expect(o4[j * outStride + headDim]).toBe(Math.fround((j * outStride + headDim) * 0.01)); // untouched
      }
    });
  }
});
