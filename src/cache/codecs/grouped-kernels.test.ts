// The GQA kernels (dotRun2/3/4, axpyRun2/3/4 and grouped.ts's any-G split) of every store against
// single-head dotRun / axpyRun calls and against a plain double-precision loop over the decoded
// values (readToken) written here: the same values up to summation order.
import { describe, expect, it } from "vitest";
import { axpyRunGroup, dotRunGroup, GROUPED_ACC_PER_SLOT } from "./grouped.js";
import { createPageStore } from "./index.js";
import type { CodecKind, KvRole, PageStore } from "./types.js";
import { gaussian, seededRandom } from "./synthetic-kv.js";

type DotG = (G: number, s: PageStore, q: Float32Array, qStride: number, out: Float32Array, W: number, acc: Float64Array) => void;
type AxpyG = (G: number, s: PageStore, w: Float32Array, W: number, out: Float32Array, outStride: number, acc: Float64Array) => void;

const kvHead = 2;
const slotStart = 3;
const n = 11;

// A fixed-width kernel called directly (width 2, 3, 4) or the grouped.ts split for any G.
function direct(width: 2 | 3 | 4): { dot: DotG; axpy: AxpyG } {
  return {
    dot: (_G, s, q, qStride, out, W, acc) => {
      const f = width === 2 ? s.dotRun2 : width === 3 ? s.dotRun3 : s.dotRun4;
      expect(f).toBeDefined();
      f!.call(s, 1, slotStart, n, kvHead, q, 0, qStride, out, 2, W, acc);
    },
    axpy: (_G, s, w, W, out, outStride, acc) => {
      const f = width === 2 ? s.axpyRun2 : width === 3 ? s.axpyRun3 : s.axpyRun4;
      expect(f).toBeDefined();
      f!.call(s, 1, slotStart, n, kvHead, w, 1, W, out, 0, outStride, acc);
    },
  };
}
const split = {
  dot: ((G, s, q, qStride, out, W, acc) => dotRunGroup(s, 1, slotStart, n, kvHead, G, q, 0, qStride, out, 2, W, acc)) as DotG,
  axpy: ((G, s, w, W, out, outStride, acc) => axpyRunGroup(s, 1, slotStart, n, kvHead, G, w, 1, W, out, 0, outStride, acc)) as AxpyG,
};

describe("grouped (several query heads per pass) kernels", () => {
  const cases: [CodecKind, KvRole, number, number][] = [];
  for (const kind of ["f32", "f16", "int8", "fp8"] as CodecKind[]) for (const headDim of [128, 7, 8]) cases.push([kind, "k", headDim, 16]);
  // int4: keys and values are encoded differently; a full page is sealed (quantized), a partial one open (f32).
  for (const role of ["k", "v"] as KvRole[]) for (const filled of [16, 14]) for (const headDim of [128, 8]) cases.push(["int4", role, headDim, filled]);
  const kernels: [string, number, { dot: DotG; axpy: AxpyG }][] = [
    ["dotRun2/axpyRun2", 2, direct(2)],
    ["dotRun3/axpyRun3", 3, direct(3)],
    ["dotRun4/axpyRun4", 4, direct(4)],
  ];
  for (let G = 1; G <= 8; G++) kernels.push([`grouped.ts G=${G}`, G, split]);
  for (const [kind, role, headDim, filled] of cases) {
    for (const [label, G, k] of kernels) {
      it(`${kind} ${role}: ${label} equals per-head kernels and a naive loop (headDim ${headDim}, ${filled} slots written)`, () => {
        const P = 16;
        const nHeadKv = 3;
        const store = createPageStore(kind, role, { nPages: 3, pageSize: P, nHeadKv, headDim });
        const g = gaussian(seededRandom(7 + G));
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
        const qStride = headDim + 5;
        const q = Float32Array.from({ length: G * qStride }, () => g());
        const W = 40;
        const got = new Float32Array((G + 1) * W).fill(-7); // one spare row: must stay untouched
        const want = new Float32Array(G * W);
        const acc = new Float64Array(GROUPED_ACC_PER_SLOT * P);
        k.dot(G, store, q, qStride, got, W, acc);
        for (let j = 0; j < G; j++) store.dotRun(1, slotStart, n, kvHead, q, j * qStride, want, 2 + j * W);
        for (let j = 0; j < G; j++) {
          for (let t = 0; t < n; t++) {
            let naive = 0;
            for (let c = 0; c < headDim; c++) naive += q[j * qStride + c]! * dec[slotStart + t]![kvHead * headDim + c]!;
            expect(got[2 + j * W + t]).toBeCloseTo(naive, 4);
            expect(got[2 + j * W + t]).toBeCloseTo(want[2 + j * W + t]!, 4);
          }
          expect(got[2 + j * W + n]).toBe(-7); // past the run: untouched
        }
        for (let t = 0; t < W; t++) expect(got[G * W + t]).toBe(-7);
        const w = Float32Array.from({ length: G * W + 1 }, () => g());
        const outStride = headDim + 1;
        const oG = Float32Array.from({ length: (G + 1) * outStride }, (_, i) => i * 0.01); // accumulates onto existing values
        const o1 = Float32Array.from(oG);
        k.axpy(G, store, w, W, oG, outStride, acc);
        for (let j = 0; j < G; j++) store.axpyRun(1, slotStart, n, kvHead, w, 1 + j * W, o1, j * outStride);
        for (let j = 0; j < G; j++) {
          for (let c = 0; c < headDim; c++) {
            let naive = Math.fround((j * outStride + c) * 0.01);
            for (let t = 0; t < n; t++) naive += w[1 + j * W + t]! * dec[slotStart + t]![kvHead * headDim + c]!;
            expect(oG[j * outStride + c]).toBeCloseTo(naive, 4);
            expect(oG[j * outStride + c]).toBeCloseTo(o1[j * outStride + c]!, 4);
          }
          expect(oG[j * outStride + headDim]).toBe(Math.fround((j * outStride + headDim) * 0.01)); // untouched
        }
        for (let c = 0; c < outStride; c++) expect(oG[G * outStride + c]).toBe(Math.fround((G * outStride + c) * 0.01));
      });
    }
  }
});
