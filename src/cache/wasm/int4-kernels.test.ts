// The wasm int4 (KIVI) kernels (int4.as: scoresInt4, valuesInt4) against the store's own JS
// kernels (Int4PageStore.dotRun / axpyRun, the reference), with both stores living in the compiled
// module's memory: open and sealed pages, partial runs, nVis clipping, G = 1..8, headDim 8/64/128.
//
// Tolerance, per score / output element, from what the wasm kernels do differently (no figure here
// comes from the code under test):
// - int16 rounding: a sealed page's qs_c = q_c scale_c (keys) or a_t = w_t scale_t (values) is
//   rounded to the nearest multiple of step = max|qs| / 32767 (resp. max|a| / 32767 over the run),
//   so each term moves by <= step/2 times its code (<= 15);
// - f32 arithmetic where the reference sums in f64: recursive summation of n terms errs by at most
//   n * 2^-24 of the sum of their magnitudes (Higham, "Accuracy and Stability of Numerical
//   Algorithms", 2nd ed., eq. 3.5, gamma_n); we allow (n + 8) * 2^-23 for the few extra
//   multiplications and the final rounding.
// The group parameters (min, scale) are read back from exportPage, so the bound uses the real
// scales. A swapped nibble, a wrong stride or a dropped token moves results by about a code step
// (1/15 of a channel's range), hundreds of times the bound: the last test checks that the bound
// is that tight.

import { unshareMemoryImport } from "../../wasm/embedded.js";
import { describe, expect, it } from "vitest";
import { Int4PageStore, int4StoreBytes, int4WasmSupports } from "../codecs/int4.js";
import { F16_TO_F32 } from "../codecs/half.js";
import { gaussian, seededRandom } from "../codecs/synthetic-kv.js";
import type { PageShape } from "../codecs/types.js";

type KernelFn = (
  desc: number, rt: number, cap: number, r0: number, r1: number, nVis: number, nHeadKv: number,
  x: number, G: number, d: number, y: number, W: number,
) => void;
type ValuesFn = (
  desc: number, rt: number, cap: number, r0: number, r1: number, nVis: number, nHeadKv: number,
  w: number, G: number, W: number, out: number, dv: number,
) => void;
interface Exports {
  readonly memory: WebAssembly.Memory;
  readonly scoresInt4: KernelFn;
  readonly valuesInt4: ValuesFn;
}

let compiled: Promise<WebAssembly.Module> | undefined;
/** The attention module compiled fresh from the .as sources (once per file: asc takes ~1 s), so
 *  the test checks int4.as itself, not a stale attention-wasm.ts; each test takes a new instance. */
async function newInstance(): Promise<Exports> {
  compiled ??= (async () => {
    // @ts-expect-error build.mjs is plain JS without types
    const build = (await import("../../wasm/build.mjs")) as { compileKernels(name: string): Promise<Uint8Array<ArrayBuffer>> };
    return new WebAssembly.Module(unshareMemoryImport(await build.compileKernels("attention")));
  })();
  return new WebAssembly.Instance(await compiled, { env: { memory: new WebAssembly.Memory({ initial: 1 }) } }).exports as unknown as Exports;
}

const F32_U = 2 ** -23;
const Q_STEPS = 32767;
const DESC_WORDS = 16;

interface Run {
  readonly page: number;
  readonly slot: number;
  readonly length: number;
}

interface Case {
  readonly headDim: number;
  readonly pageSize: number;
  readonly G: number;
  readonly nHeadKv: number;
  readonly seed: number;
}

/** Bump layout of the module's memory (offset 0 unused), 64-byte aligned. */
class Layout {
  top = 64;
  take(bytes: number): number {
    const at = this.top;
    this.top += Math.ceil(bytes / 64) * 64;
    return at;
  }
}

/**
 * Fills pages with seeded keys/values (4 outlier channels per head at 10x, like synthetic-kv.ts),
 * seals some pages and leaves others open, and returns the run table and the raw data.
 */
async function setup(c: Case) {
  const { headDim, pageSize, nHeadKv, G, seed } = c;
  const nPages = 8;
  const shape: PageShape = { nPages, pageSize, nHeadKv, headDim };
  const k = await newInstance();
  const L = new Layout();
  const openPages = 3;
  const kBytes = int4StoreBytes("k", shape, { openPages });
  const vBytes = int4StoreBytes("v", shape, { openPages });
  const kAt = L.take(kBytes);
  const vAt = L.take(vBytes);
  const kDesc = L.take(DESC_WORDS * 4);
  const vDesc = L.take(DESC_WORDS * 4);

  // Fill plan: pages 0, 2, 3, 5 full (sealed), page 6 partial (open), page 1 partial then open too;
  // pages 4 and 7 unused. Runs cover them out of page order, some starting mid-page.
  const fills = [pageSize, Math.max(1, pageSize - 3), pageSize, pageSize, 0, pageSize, Math.max(1, pageSize >> 1), 0];
  const runs: Run[] = [];
  runs.push({ page: 3, slot: 0, length: pageSize });
  runs.push({ page: 0, slot: Math.min(1, pageSize - 1), length: pageSize - Math.min(1, pageSize - 1) }); // partial: skips slot 0
  runs.push({ page: 6, slot: 0, length: fills[6]! });
  runs.push({ page: 5, slot: 0, length: pageSize });
  runs.push({ page: 2, slot: 0, length: Math.max(1, pageSize >> 1) }); // partial: first half
  runs.push({ page: 1, slot: 0, length: fills[1]! });
  runs.push({ page: 2, slot: Math.max(1, pageSize >> 1) % pageSize, length: pageSize - (Math.max(1, pageSize >> 1) % pageSize) });
  const total = runs.reduce((s, r) => s + r.length, 0);
  const cap = runs.length + 2;
  const rt = L.take(cap * 16);
  const W = total + 5;
  const nRows = nHeadKv * G;
  const qAt = L.take(nRows * headDim * 4);
  const sAt = L.take(nRows * W * 4);
  const wAt = L.take(nRows * W * 4);
  const oAt = L.take(nRows * headDim * 4);
  const need = L.top + 64;
  k.memory.grow(Math.ceil((need - k.memory.buffer.byteLength) / 65536));
  const buffer = k.memory.buffer;

  const kStore = new Int4PageStore("k", shape, { openPages, region: { buffer, byteOffset: kAt } });
  const vStore = new Int4PageStore("v", shape, { openPages, region: { buffer, byteOffset: vAt } });
  const rand = seededRandom(seed);
  const gauss = gaussian(rand);
  const tokenStride = nHeadKv * headDim;
  const src = new Float32Array(tokenStride);
  const outlier = (ch: number) => ch % Math.max(1, headDim >> 2) === 1; // 4 outlier channels per head
  for (let p = 0; p < nPages; p++) {
    for (let s = 0; s < fills[p]!; s++) {
      for (let i = 0; i < tokenStride; i++) src[i] = gauss() * (outlier(i % headDim) ? 10 : 1) + 0.3;
      kStore.writeToken(p, s, src, 0);
      for (let i = 0; i < tokenStride; i++) src[i] = gauss();
      vStore.writeToken(p, s, src, 0);
    }
  }
  expect(kStore.isOpen(6) && kStore.isOpen(1) && vStore.isOpen(6)).toBe(true);
  expect(kStore.isOpen(0) || kStore.isOpen(3) || vStore.isOpen(5)).toBe(false);

  for (const [desc, store] of [[kDesc, kStore], [vDesc, vStore]] as const) {
    const d = new Int32Array(buffer, desc, DESC_WORDS);
    const lay = store.kernelLayout();
    d[0] = lay.data;
    d[1] = lay.scales;
    d[2] = tokenStride;
    d[3] = pageSize * tokenStride;
    d[4] = headDim;
    d[5] = pageSize;
    d[6] = nHeadKv;
    lay.extra?.forEach((x, i) => (d[8 + i] = x));
  }
  const table = new Int32Array(buffer, rt, cap * 4);
  let idx = 0;
  runs.forEach((r, i) => {
    table[i] = r.page;
    table[cap + i] = r.slot;
    table[2 * cap + i] = r.length;
    table[3 * cap + i] = idx;
    idx += r.length;
  });

  const q = new Float32Array(buffer, qAt, nRows * headDim);
  for (let i = 0; i < q.length; i++) q[i] = gauss() * (outlier(i % headDim) ? 3 : 1);
  const w = new Float32Array(buffer, wAt, nRows * W);
  for (let i = 0; i < w.length; i++) w[i] = rand() < 0.1 ? 0 : rand();
  return {
    k, kStore, vStore, kDesc, vDesc, rt, cap, runs, total, W, nRows, shape,
    q, scores: new Float32Array(buffer, sAt, nRows * W), w, out: new Float32Array(buffer, oAt, nRows * headDim),
    qAt, sAt, wAt, oAt,
  };
}

type Env = Awaited<ReturnType<typeof setup>>;

/** A sealed page's f16 params, decoded: keys [nHeadKv][2][headDim], values [pageSize][nHeadKv][2]. */
function pageParams(store: Int4PageStore, page: number): Float32Array | null {
  const bytes = store.exportPage(page);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.getInt32(4, true) === 1) return null;
  const { nHeadKv, headDim, pageSize } = store.shape;
  const n = store.role === "k" ? nHeadKv * 2 * headDim : pageSize * nHeadKv * 2;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = F16_TO_F32[view.getUint16(8 + 2 * i, true)]!;
  return out;
}

/** Retained-order runs clipped to nVis, as the kernels see them. */
function visibleRuns(e: Env, nVis: number, r0: number, r1: number) {
  const out: { run: Run; idx: number; len: number }[] = [];
  let idx = 0;
  for (let r = 0; r < e.runs.length; r++) {
    const run = e.runs[r]!;
    if (r >= r0 && r < r1 && idx < nVis) out.push({ run, idx, len: Math.min(run.length, nVis - idx) });
    idx += run.length;
  }
  return out;
}

/** Runs the scores kernel and checks it against dotRun; returns max(error / bound) and the largest
 *  bound over the largest |score| (how tight the check is). */
function checkScores(e: Env, G: number, nVis: number, r0: number, r1: number): { worst: number; loosest: number } {
  const { nHeadKv, headDim: dk } = e.shape;
  const SENTINEL = 777.25;
  e.scores.fill(SENTINEL);
  e.k.scoresInt4(e.kDesc, e.rt, e.cap, r0, r1, nVis, nHeadKv, e.qAt, G, dk, e.sAt, e.W);
  const got = Float32Array.from(e.scores);
  const ref = new Float32Array(e.W);
  const tok = new Float32Array(nHeadKv * dk);
  const written = new Uint8Array(e.nRows * e.W);
  let worst = 0;
  let maxBound = 0;
  let maxRef = 0;
  for (const { run, idx, len } of visibleRuns(e, nVis, r0, r1)) {
    const params = pageParams(e.kStore, run.page);
    for (let kv = 0; kv < nHeadKv; kv++) {
      for (let g = 0; g < G; g++) {
        const row = kv * G + g;
        const qOff = row * dk;
        e.kStore.dotRun(run.page, run.slot, len, kv, e.q, qOff, ref, 0);
        // Bound: int16 step of this (page, head, row), f32 terms' magnitude.
        let maxQs = 0;
        let mag = 0;
        if (params !== null) {
          for (let c = 0; c < dk; c++) {
            const mn = params[kv * 2 * dk + c]!;
            const sc = params[kv * 2 * dk + dk + c]!;
            maxQs = Math.max(maxQs, Math.abs(e.q[qOff + c]! * sc));
            mag += Math.abs(e.q[qOff + c]!) * (Math.abs(mn) + 15 * sc);
          }
        }
        for (let t = 0; t < len; t++) {
          let bound: number;
          if (params !== null) {
            bound = 0.5 * (maxQs / Q_STEPS) * 15 * dk * (1 + 1e-6) + (dk + 8) * F32_U * mag;
          } else {
            e.kStore.readToken(run.page, run.slot + t, tok, 0);
            let m = 0;
            for (let c = 0; c < dk; c++) m += Math.abs(e.q[qOff + c]! * tok[kv * dk + c]!);
            bound = (dk + 8) * F32_U * m;
          }
          const at = row * e.W + idx + t;
          written[at] = 1;
          const err = Math.abs(got[at]! - ref[t]!);
          worst = Math.max(worst, err / bound);
          if (!(err <= bound)) {
            throw new Error(`score row ${row} token ${idx + t} (page ${run.page} slot ${run.slot + t}): wasm ${got[at]} js ${ref[t]} bound ${bound}`);
          }
          maxBound = Math.max(maxBound, bound);
          maxRef = Math.max(maxRef, Math.abs(ref[t]!));
        }
      }
    }
  }
  // Nothing outside the visible runs was touched.
  for (let i = 0; i < got.length; i++) if (!written[i]) expect(got[i]).toBe(SENTINEL);
  return { worst, loosest: maxBound / maxRef };
}

function checkValues(e: Env, G: number, nVis: number, r0: number, r1: number): { worst: number; loosest: number } {
  const { nHeadKv, headDim: dv, pageSize } = e.shape;
  const rand = seededRandom(99);
  for (let i = 0; i < e.out.length; i++) e.out[i] = rand() - 0.5; // accumulates onto what is there
  const ref = Float64Array.from(e.out);
  e.k.valuesInt4(e.vDesc, e.rt, e.cap, r0, r1, nVis, nHeadKv, e.wAt, G, e.W, e.oAt, dv);
  const got = Float32Array.from(e.out);
  const bound = new Float64Array(e.nRows * dv);
  for (let i = 0; i < bound.length; i++) bound[i] = 4 * F32_U * Math.abs(ref[i]!);
  const tmp = new Float32Array(dv);
  const tok = new Float32Array(nHeadKv * dv);
  for (const { run, idx, len } of visibleRuns(e, nVis, r0, r1)) {
    const params = pageParams(e.vStore, run.page);
    for (let kv = 0; kv < nHeadKv; kv++) {
      for (let g = 0; g < G; g++) {
        const row = kv * G + g;
        const wOff = row * e.W + idx;
        tmp.fill(0);
        e.vStore.axpyRun(run.page, run.slot, len, kv, e.w, wOff, tmp, 0);
        let maxA = 0;
        let mag = 0;
        for (let t = 0; t < len; t++) {
          const wt = e.w[wOff + t]!;
          if (params !== null) {
            const pi = ((run.slot + t) * nHeadKv + kv) * 2;
            maxA = Math.max(maxA, Math.abs(wt * params[pi + 1]!));
            mag += Math.abs(wt) * (Math.abs(params[pi]!) + 15 * params[pi + 1]!);
          } else {
            e.vStore.readToken(run.page, run.slot + t, tok, 0);
            let m = 0;
            for (let c = 0; c < dv; c++) m = Math.max(m, Math.abs(tok[kv * dv + c]!));
            mag += Math.abs(wt) * m;
          }
        }
        const q16 = params !== null ? 0.5 * (maxA / Q_STEPS) * 15 * len * (1 + 1e-6) : 0;
        for (let c = 0; c < dv; c++) {
          ref[row * dv + c] = ref[row * dv + c]! + tmp[c]!;
          bound[row * dv + c] = bound[row * dv + c]! + q16 + (len + 8) * F32_U * mag + 4 * F32_U * Math.abs(ref[row * dv + c]!);
        }
      }
    }
  }
  void pageSize;
  let worst = 0;
  let maxBound = 0;
  let maxRef = 0;
  for (let i = 0; i < got.length; i++) {
    const err = Math.abs(got[i]! - ref[i]!);
    worst = Math.max(worst, err / bound[i]!);
    if (!(err <= bound[i]!)) throw new Error(`value ${i}: wasm ${got[i]} reference ${ref[i]} bound ${bound[i]}`);
    maxBound = Math.max(maxBound, bound[i]!);
    maxRef = Math.max(maxRef, Math.abs(ref[i]!));
  }
  return { worst, loosest: maxBound / maxRef };
}

const CASES: Case[] = [];
for (const headDim of [8, 64, 128]) {
  for (const G of [1, 2, 3, 4, 5, 8]) CASES.push({ headDim, pageSize: 16, G, nHeadKv: 2, seed: headDim * 31 + G });
}
// Other page sizes (pages of 4 and 2: params4's and the token pairs' tails), head dims of 24 and
// 40 (the 8- and 16-channel tails of the key loop).
CASES.push({ headDim: 24, pageSize: 4, G: 4, nHeadKv: 3, seed: 5 });
CASES.push({ headDim: 40, pageSize: 2, G: 3, nHeadKv: 1, seed: 6 });
CASES.push({ headDim: 128, pageSize: 32, G: 4, nHeadKv: 2, seed: 7 });

describe("int4 wasm kernels", () => {
  it("say which head dims they take", () => {
    expect([8, 16, 24, 64, 128, 256].every(int4WasmSupports)).toBe(true);
    expect([0, 2, 4, 6, 12, 66, 130, 2048, 8.5].some(int4WasmSupports)).toBe(false);
  });

  for (const c of CASES) {
    it(`headDim ${c.headDim}, pageSize ${c.pageSize}, G ${c.G}, ${c.nHeadKv} KV heads: match dotRun / axpyRun`, async () => {
      const e = await setup(c);
      const plans: [number, number, number][] = [
        [e.total, 0, e.runs.length], // everything
        [e.total - 3, 0, e.runs.length], // nVis clips the last run
        [e.total, 2, 5], // a run range
        [Math.max(1, e.runs[0]!.length + 1), 0, e.runs.length], // clipped right after the first run
      ];
      for (const [nVis, r0, r1] of plans) {
        checkScores(e, c.G, nVis, r0, r1);
        checkValues(e, c.G, nVis, r0, r1);
      }
    });
  }

  it("hold a bound far below a code step (the comparison can fail)", async () => {
    const e = await setup({ headDim: 128, pageSize: 16, G: 4, nHeadKv: 2, seed: 11 });
    const s = checkScores(e, 4, e.total, 0, e.runs.length);
    const v = checkValues(e, 4, e.total, 0, e.runs.length);
    // A code step is 1/15 of a channel's range (~6 sigma): ~0.4 of a unit-scale value, so a
    // misread nibble moves a result by a good fraction of its size; the bounds stay under 1% of
    // the largest result.
    expect(s.loosest).toBeLessThan(1e-2);
    expect(v.loosest).toBeLessThan(1e-2);
    // And a misread is caught: the same kernels pointed one byte further into the nibbles (codes
    // of the neighbouring channel pair) fail the comparison.
    const kd = new Int32Array(e.k.memory.buffer, e.kDesc, DESC_WORDS);
    const vd = new Int32Array(e.k.memory.buffer, e.vDesc, DESC_WORDS);
    kd[0] = kd[0]! + 1;
    vd[0] = vd[0]! + 1;
    expect(() => checkScores(e, 4, e.total, 0, e.runs.length)).toThrow(/score row/);
    expect(() => checkValues(e, 4, e.total, 0, e.runs.length)).toThrow(/value/);
  });
});
