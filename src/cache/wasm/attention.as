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
// counts rows from the range's first unit. attend<Codec> runs a whole job of blocks per range of
// units, the queries' loading and the rows out included (attendUnits, at the end).

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
  softmaxFrom(scores, W, nUnits * rowsPerUnit, unit0 * rowsPerUnit, group, nb, self0, nVisLast, invSum);
}

/** softmaxRows over nRows rows that are rows row0 .. of a block (scores and invSum at row0's). */
@inline function softmaxFrom(scores: usize, W: i32, nRows: i32, row0: i32, group: i32, nb: i32, self0: i32, nVisLast: i32, invSum: usize): void {
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

// A whole attention job over a range of units (attend-wasm.ts attendJobs): for each block of the
// job's queries, the range's rows load their queries (scaled, rotated by RoPE), run the scores, the
// softmax and the values over the runs, and go out scaled by 1/sum, ordered [query][head][dv]. Unit
// u is part u % parts of KV head u / parts: with parts 1 a range of whole heads runs as one call of
// the codec's kernels, as one thread does; with 2 each unit runs alone over its part of its head's
// rows (the first part takes the odd row), its descriptors the head's part-th (store-memory.ts
// writeHeadDescriptors). Every block of a job has the same rows (attendJobs gives a short last
// block a job of its own), so no row passes to another thread between blocks. The parameters are
// int32 words at p (attend-wasm.ts ATTEND_PARAM); the cos/sin table holds, per query, nRot/2 cos
// then as many sin as f64 (Rope's own), so a query rotates to the bits Rope.rotate gives in JS.
const A_NQUERY = 0, A_QB = 1, A_SELF0 = 2, A_NHEAD = 3, A_GROUP = 4, A_DK = 5, A_DV = 6, A_PARTS = 7;
const A_HALF = 8, A_NEOX = 9, A_W = 10, A_CAP = 11, A_NRUNS = 12, A_RT = 13, A_QIN = 14, A_COSSIN = 15;
const A_QBLOCK = 16, A_SCORES = 17, A_INVSUM = 18, A_OUTBLOCK = 19, A_OUT = 20, A_KDESC = 21, A_VDESC = 22;
const A_SCALE = 24; // f64, words 24-25

@inline function param(p: usize, word: i32): i32 {
  return load<i32>(p + (<usize>word << 2));
}

@inline function attendUnits(kind: i32, p: usize, unit0: i32, nUnits: i32): void {
  const nQuery = param(p, A_NQUERY), qb = param(p, A_QB), group = param(p, A_GROUP), parts = param(p, A_PARTS);
  for (let qi0 = 0; qi0 < nQuery; qi0 += qb) {
    const nb = min(qb, nQuery - qi0), G = nb * group;
    if (parts == 1) {
      attendRows(kind, p, qi0, nb, unit0 * 2, nUnits, unit0 * G, nUnits * G, G);
      continue;
    }
    const first = (G + 1) >> 1;
    for (let u = unit0; u < unit0 + nUnits; u++) {
      const part = u & 1, n = part == 0 ? first : G - first;
      if (n > 0) attendRows(kind, p, qi0, nb, u, 1, (u >> 1) * G + part * first, n, n);
    }
  }
}

/** Rows row0 .. row0 + n of block qi0 (nb queries) over `heads` KV heads from descriptor d on (two
 *  per head), rows G a head: queries in, scores, softmax, values, rows out. */
@inline function attendRows(kind: i32, p: usize, qi0: i32, nb: i32, d: i32, heads: i32, row0: i32, n: i32, G: i32): void {
  const nHead = param(p, A_NHEAD), group = param(p, A_GROUP), dk = param(p, A_DK), dv = param(p, A_DV);
  const W = param(p, A_W), cap = param(p, A_CAP), nRuns = param(p, A_NRUNS), rt = <usize>param(p, A_RT);
  const self0 = param(p, A_SELF0) + qi0, nVisLast = self0 + nb, Gb = nb * group;
  const q = <usize>param(p, A_QBLOCK) + <usize>(row0 * dk) * 4;
  const s = <usize>param(p, A_SCORES) + <usize>row0 * <usize>W * 4;
  const inv = <usize>param(p, A_INVSUM) + (<usize>row0 << 2);
  const o = <usize>param(p, A_OUTBLOCK) + <usize>(row0 * dv) * 4;
  const kd = <usize>param(p, A_KDESC) + (<usize>d << 6), vd = <usize>param(p, A_VDESC) + (<usize>d << 6);
  const half = param(p, A_HALF), cosSin = <usize>param(p, A_COSSIN), qIn = <usize>param(p, A_QIN);
  const scale = load<f64>(p + (A_SCALE << 2)), neox = param(p, A_NEOX) != 0;
  // The rows' queries: each value times scale, the first 2 half rotated by the query's cos/sin (pairs
  // (i, i + half) with neox, else (2i, 2i + 1)), in f64 and rounded to f32 as Rope.rotate does.
  for (let j = 0; j < n; j++) {
    const r = row0 + j, b = (r / group) % nb, h = (r / Gb) * group + (r % group);
    const src = qIn + <usize>(((qi0 + b) * nHead + h) * dk) * 4, dst = q + <usize>(j * dk) * 4;
    for (let i = 0; i < dk; i++) store<f32>(dst + (<usize>i << 2), <f32>(<f64>load<f32>(src + (<usize>i << 2)) * scale));
    if (half == 0) continue;
    const cs = cosSin + <usize>((qi0 + b) * half * 2) * 8;
    for (let i = 0; i < half; i++) {
      const c = load<f64>(cs + (<usize>i << 3)), sn = load<f64>(cs + (<usize>(half + i) << 3));
      const pa = dst + (<usize>(neox ? i : 2 * i) << 2), pb = dst + (<usize>(neox ? i + half : 2 * i + 1) << 2);
      const x0 = <f64>load<f32>(pa), x1 = <f64>load<f32>(pb);
      store<f32>(pa, <f32>(x0 * c - x1 * sn));
      store<f32>(pb, <f32>(x0 * sn + x1 * c));
    }
  }
  if (kind == KIND_F32) scoresF32(kd, rt, cap, 0, nRuns, nVisLast, heads, q, G, dk, s, W);
  else if (kind == KIND_F16) scoresF16(kd, rt, cap, 0, nRuns, nVisLast, heads, q, G, dk, s, W);
  else scoresFp8(kd, rt, cap, 0, nRuns, nVisLast, heads, q, G, dk, s, W);
  softmaxFrom(s, W, n, row0, group, nb, self0, nVisLast, inv);
  memory.fill(o, 0, <usize>(n * dv) << 2);
  if (kind == KIND_F32) valuesF32(vd, rt, cap, 0, nRuns, nVisLast, heads, s, G, W, o, dv);
  else if (kind == KIND_F16) valuesF16(vd, rt, cap, 0, nRuns, nVisLast, heads, s, G, W, o, dv);
  else valuesFp8(vd, rt, cap, 0, nRuns, nVisLast, heads, s, G, W, o, dv);
  const out = <usize>param(p, A_OUT);
  for (let j = 0; j < n; j++) {
    const r = row0 + j, b = (r / group) % nb, h = (r / Gb) * group + (r % group);
    const k = f32x4.splat(load<f32>(inv + (<usize>j << 2)));
    const src = o + <usize>(j * dv) * 4, dst = out + <usize>(((qi0 + b) * nHead + h) * dv) * 4;
    for (let c = 0; c < dv; c += 4) v128.store(dst + (<usize>c << 2), f32x4.mul(v128.load(src + (<usize>c << 2)), k));
  }
}

export function attendF32(p: usize, unit0: i32, nUnits: i32): void {
  attendUnits(KIND_F32, p, unit0, nUnits);
}
export function attendF16(p: usize, unit0: i32, nUnits: i32): void {
  attendUnits(KIND_F16, p, unit0, nUnits);
}
export function attendFp8(p: usize, unit0: i32, nUnits: i32): void {
  attendUnits(KIND_FP8, p, unit0, nUnits);
}

/** Stores nTok rows of rowLen f32 values at src (token-major, heads of headDim side by side) into
 *  consecutive page slots at dst as f32 (kind KIND_F32) or f16 bits (KIND_F16): the batch form of
 *  the f32 and f16 stores' writeToken. With half > 0 each head's first 2 * half values are rotated
 *  first, in place and in f64, by token t's cos/sin at cosSin + t * half * 16 (half cos, then half
 *  sin: Rope.cosSin64), pairs (i, i + half) with neox, else (2i, 2i + 1): the bits of Rope.rotate. */
export function storeRows(dst: usize, src: usize, nTok: i32, rowLen: i32, kind: i32, cosSin: usize, half: i32, neox: i32, headDim: i32): void {
  for (let t = 0; t < nTok; t++) {
    const row = src + <usize>(t * rowLen) * 4;
    if (half > 0) {
      const cs = cosSin + <usize>(t * half * 2) * 8;
      for (let h = 0; h < rowLen; h += headDim) {
        const x = row + (<usize>h << 2);
        for (let i = 0; i < half; i++) {
          const c = load<f64>(cs + (<usize>i << 3)), sn = load<f64>(cs + (<usize>(half + i) << 3));
          const pa = x + (<usize>(neox != 0 ? i : 2 * i) << 2), pb = x + (<usize>(neox != 0 ? i + half : 2 * i + 1) << 2);
          const x0 = <f64>load<f32>(pa), x1 = <f64>load<f32>(pb);
          store<f32>(pa, <f32>(x0 * c - x1 * sn));
          store<f32>(pb, <f32>(x0 * sn + x1 * c));
        }
      }
    }
    if (kind == KIND_F32) {
      memory.copy(dst + <usize>(t * rowLen) * 4, row, <usize>rowLen << 2);
      continue;
    }
    const out = dst + <usize>(t * rowLen) * 2;
    for (let i = 0; i < rowLen; i += 8) {
      const lo = f16Bits(v128.load(row + (<usize>i << 2))), hi = f16Bits(v128.load(row + (<usize>i << 2) + 16));
      v128.store(out + (<usize>i << 1), i16x8.narrow_i32x4_u(lo, hi));
    }
  }
}

/** Four f32 (as bits) to f16 bits in i32 lanes, as half.ts f32ToF16Bits: round to nearest even,
 *  overflow to +-inf, NaN to a quiet NaN of the same sign, subnormals exact. */
@inline function f16Bits(u: v128): v128 {
  const a = v128.and(u, i32x4.splat(0x7fffffff));
  const sign = v128.and(i32x4.shr_u(u, 16), i32x4.splat(0x8000));
  // Normal: re-bias the exponent and round the mantissa to 10 bits (a carry bumps the exponent), at most inf.
  const rounded = i32x4.add(i32x4.sub(a, i32x4.splat(0x38000000 - 0xfff)), v128.and(i32x4.shr_u(a, 13), i32x4.splat(1)));
  const normal = i32x4.min_s(i32x4.shr_u(rounded, 13), i32x4.splat(0x7c00));
  // Below 2^-14: a multiple of 2^-24, the value times 2^24 rounded to even (exact in f32).
  const sub = i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(a, f32x4.splat(16777216.0))));
  let r = v128.bitselect(sub, normal, i32x4.lt_s(a, i32x4.splat(0x38800000)));
  const special = v128.bitselect(i32x4.splat(0x7c00), i32x4.splat(0x7e00), i32x4.eq(a, i32x4.splat(0x7f800000)));
  r = v128.bitselect(special, r, i32x4.ge_s(a, i32x4.splat(0x7f800000)));
  return v128.or(r, sign);
}
