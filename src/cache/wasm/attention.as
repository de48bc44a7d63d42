// AssemblyScript source of kvbound's WebAssembly SIMD attention over the paged cache (compiled by
// src/wasm/build.mjs into attention-wasm.ts; .as so that tsc does not read it). The cache's
// page stores live in this module's memory (store-memory.ts lays them out), so these kernels read
// the pages where the codecs wrote them. ../attention.ts drives them (attendRunsWasm) and holds
// the JS kernels they are tested against (src/cache/wasm/attend-wasm.test.ts).
//
// One attention step, for a block of query rows ordered (KV head, query, head in group):
//   scores<Codec>   q . k for every retained token (in run-table order), per run range of equal RoPE offset
//   softmaxRows     unnormalized e^(s - max) per row over the tokens its query sees, 1/sum aside
//   values<Codec>   sum_t e_t v_t per row
// Split over threads (attend-wasm.ts), each thread runs these over a range of units: KV heads, or
// parts of one (the *Units kernels); per-unit descriptors start at their head, and softmaxUnits
// counts rows from the range's first unit.

import { expNonPositive4 } from "./common";
import { scoresKind, valuesKind, KIND_F32, KIND_F16, KIND_INT8, KIND_FP8 } from "./codecs";
export { scoresInt4, valuesInt4 } from "./int4";

export function scoresF32(desc: usize, rt: usize, cap: i32, r0: i32, r1: i32, nVis: i32, nHeadKv: i32, q: usize, G: i32, dk: i32, scores: usize, W: i32): void {
  scoresKind(KIND_F32, desc, rt, cap, r0, r1, nVis, nHeadKv, q, G, dk, scores, W);
}
export function scoresF16(desc: usize, rt: usize, cap: i32, r0: i32, r1: i32, nVis: i32, nHeadKv: i32, q: usize, G: i32, dk: i32, scores: usize, W: i32): void {
  scoresKind(KIND_F16, desc, rt, cap, r0, r1, nVis, nHeadKv, q, G, dk, scores, W);
}
export { scoresInt8Dot as scoresInt8 } from "./codecs";
export function scoresFp8(desc: usize, rt: usize, cap: i32, r0: i32, r1: i32, nVis: i32, nHeadKv: i32, q: usize, G: i32, dk: i32, scores: usize, W: i32): void {
  scoresKind(KIND_FP8, desc, rt, cap, r0, r1, nVis, nHeadKv, q, G, dk, scores, W);
}

export function valuesF32(desc: usize, rt: usize, cap: i32, r0: i32, r1: i32, nVis: i32, nHeadKv: i32, w: usize, G: i32, W: i32, out: usize, dv: i32): void {
  valuesKind(KIND_F32, desc, rt, cap, r0, r1, nVis, nHeadKv, w, G, W, out, dv);
}
export function valuesF16(desc: usize, rt: usize, cap: i32, r0: i32, r1: i32, nVis: i32, nHeadKv: i32, w: usize, G: i32, W: i32, out: usize, dv: i32): void {
  valuesKind(KIND_F16, desc, rt, cap, r0, r1, nVis, nHeadKv, w, G, W, out, dv);
}
export { valuesInt8Dot as valuesInt8 } from "./codecs";
export function valuesFp8(desc: usize, rt: usize, cap: i32, r0: i32, r1: i32, nVis: i32, nHeadKv: i32, w: usize, G: i32, W: i32, out: usize, dv: i32): void {
  valuesKind(KIND_FP8, desc, rt, cap, r0, r1, nVis, nHeadKv, w, G, W, out, dv);
}

/**
 * For each of nRows rows of scores (row stride W floats): row's query b = (row / group) % nb sees
 * the first nVis = self0 + b + 1 tokens; those become e^(s - max), the rest up to nVisLast become
 * 0 (they add nothing in the value pass), and invSum[row] = 1 / sum.
 */
export function softmaxRows(scores: usize, W: i32, nRows: i32, group: i32, nb: i32, self0: i32, nVisLast: i32, invSum: usize): void {
  softmaxUnits(scores, W, nRows, 1, group, nb, self0, nVisLast, invSum, 0);
}

/**
 * softmaxRows over nUnits x rowsPerUnit rows that are rows unit0 x rowsPerUnit .. of a block (a
 * thread's range of units: attend-wasm.ts), which decides each row's query.
 */
export function softmaxUnits(scores: usize, W: i32, nUnits: i32, rowsPerUnit: i32, group: i32, nb: i32, self0: i32, nVisLast: i32, invSum: usize, unit0: i32): void {
  const nRows = nUnits * rowsPerUnit, row0 = unit0 * rowsPerUnit;
  for (let row = 0; row < nRows; row++) {
    const b = ((row0 + row) / group) % nb;
    const nVis = self0 + b + 1;
    const base = scores + ((<usize>row * <usize>W) << 2);
    const n4 = nVis & ~3;
    let mv = f32x4.splat(-Infinity);
    for (let t = 0; t < n4; t += 4) mv = f32x4.max(mv, v128.load(base + (<usize>t << 2)));
    let m = max(max(f32x4.extract_lane(mv, 0), f32x4.extract_lane(mv, 1)), max(f32x4.extract_lane(mv, 2), f32x4.extract_lane(mv, 3)));
    for (let t = n4; t < nVis; t++) m = max(m, load<f32>(base + (<usize>t << 2)));
    const mm = f32x4.splat(m);
    let sv = f32x4.splat(0);
    for (let t = 0; t < n4; t += 4) {
      const p = base + (<usize>t << 2);
      const e = expNonPositive4(f32x4.sub(v128.load(p), mm));
      v128.store(p, e);
      sv = f32x4.add(sv, e);
    }
    let sum = f32x4.extract_lane(sv, 0) + f32x4.extract_lane(sv, 1) + (f32x4.extract_lane(sv, 2) + f32x4.extract_lane(sv, 3));
    for (let t = n4; t < nVis; t++) {
      const p = base + (<usize>t << 2);
      const e = f32x4.extract_lane(expNonPositive4(f32x4.splat(load<f32>(p) - m)), 0);
      store<f32>(p, e);
      sum += e;
    }
    for (let t = nVis; t < nVisLast; t++) store<f32>(base + (<usize>t << 2), 0);
    store<f32>(invSum + (<usize>row << 2), 1 / sum);
  }
}

// A thread's range of units when a KV head's rows are split in parts (attend-wasm.ts): unit i
// has descriptor desc + 64 i (its head's, with a tile of its own) and G rows; each unit runs the
// codec's kernel over one head, so the bits are those of one call over every head.
@inline function scoresUnits(kind: i32, desc: usize, rt: usize, cap: i32, r0: i32, r1: i32, nVis: i32, n: i32, q: usize, G: i32, dk: i32, scores: usize, W: i32): void {
  for (let i = 0; i < n; i++) {
    const d = desc + (<usize>i << 6), qi = q + <usize>(i * G * dk) * 4, si = scores + <usize>(i * G) * <usize>W * 4;
    if (kind == KIND_F32) scoresF32(d, rt, cap, r0, r1, nVis, 1, qi, G, dk, si, W);
    else if (kind == KIND_F16) scoresF16(d, rt, cap, r0, r1, nVis, 1, qi, G, dk, si, W);
    else scoresFp8(d, rt, cap, r0, r1, nVis, 1, qi, G, dk, si, W);
  }
}
@inline function valuesUnits(kind: i32, desc: usize, rt: usize, cap: i32, r0: i32, r1: i32, nVis: i32, n: i32, w: usize, G: i32, W: i32, out: usize, dv: i32): void {
  for (let i = 0; i < n; i++) {
    const d = desc + (<usize>i << 6), wi = w + <usize>(i * G) * <usize>W * 4, oi = out + <usize>(i * G * dv) * 4;
    if (kind == KIND_F32) valuesF32(d, rt, cap, r0, r1, nVis, 1, wi, G, W, oi, dv);
    else if (kind == KIND_F16) valuesF16(d, rt, cap, r0, r1, nVis, 1, wi, G, W, oi, dv);
    else valuesFp8(d, rt, cap, r0, r1, nVis, 1, wi, G, W, oi, dv);
  }
}
export function scoresF32Units(desc: usize, rt: usize, cap: i32, r0: i32, r1: i32, nVis: i32, n: i32, q: usize, G: i32, dk: i32, scores: usize, W: i32): void {
  scoresUnits(KIND_F32, desc, rt, cap, r0, r1, nVis, n, q, G, dk, scores, W);
}
export function scoresF16Units(desc: usize, rt: usize, cap: i32, r0: i32, r1: i32, nVis: i32, n: i32, q: usize, G: i32, dk: i32, scores: usize, W: i32): void {
  scoresUnits(KIND_F16, desc, rt, cap, r0, r1, nVis, n, q, G, dk, scores, W);
}
export function scoresFp8Units(desc: usize, rt: usize, cap: i32, r0: i32, r1: i32, nVis: i32, n: i32, q: usize, G: i32, dk: i32, scores: usize, W: i32): void {
  scoresUnits(KIND_FP8, desc, rt, cap, r0, r1, nVis, n, q, G, dk, scores, W);
}
export function valuesF32Units(desc: usize, rt: usize, cap: i32, r0: i32, r1: i32, nVis: i32, n: i32, w: usize, G: i32, W: i32, out: usize, dv: i32): void {
  valuesUnits(KIND_F32, desc, rt, cap, r0, r1, nVis, n, w, G, W, out, dv);
}
export function valuesF16Units(desc: usize, rt: usize, cap: i32, r0: i32, r1: i32, nVis: i32, n: i32, w: usize, G: i32, W: i32, out: usize, dv: i32): void {
  valuesUnits(KIND_F16, desc, rt, cap, r0, r1, nVis, n, w, G, W, out, dv);
}
export function valuesFp8Units(desc: usize, rt: usize, cap: i32, r0: i32, r1: i32, nVis: i32, n: i32, w: usize, G: i32, W: i32, out: usize, dv: i32): void {
  valuesUnits(KIND_FP8, desc, rt, cap, r0, r1, nVis, n, w, G, W, out, dv);
}
