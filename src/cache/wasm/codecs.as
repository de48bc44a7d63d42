// Score and value kernels for the codecs whose pages hold one code per value: f32, f16, int8 and
// fp8 (int8 and fp8 with an f32 scale per (token, head)). One body per kernel, specialized by a
// constant `kind`: the exported wrappers in attention.as pass a literal, so after inlining each
// export holds only its codec's decode (binaryen folds the other branches away).
//
// Both kernels read the pages in place: a key or value is decoded four channels at a time into
// registers inside the dot-product / accumulate loop, never into a buffer.

import {
  DESC_DATA, DESC_SCALES, DESC_TOKEN_STRIDE, DESC_PAGE_STRIDE, DESC_PAGE_SIZE,
  runPage, runSlot, runLength, runIndex, hsum, hsum4, f16x4, i8x4, e4m3x4,
} from "./common";

export const KIND_F32: i32 = 0;
export const KIND_F16: i32 = 1;
export const KIND_INT8: i32 = 2;
export const KIND_FP8: i32 = 3;

/** Channels e .. e+3 (element index into the store's data) as f32x4. */
@inline function decode4(kind: i32, data: usize, e: usize): v128 {
  if (kind == KIND_F32) return v128.load(data + (e << 2));
  if (kind == KIND_F16) return f16x4(data + (e << 1));
  if (kind == KIND_INT8) return i8x4(data + e);
  return e4m3x4(data + e);
}

/** The (token, head) scale of int8 / fp8 pages; 1 for f32 / f16. */
@inline function tokenScale(kind: i32, scales: usize, page: i32, slot: i32, pageSize: i32, nHeadKv: i32, kv: i32): f32 {
  if (kind == KIND_F32 || kind == KIND_F16) return 1;
  return load<f32>(scales + ((<usize>((page * pageSize + slot) * nHeadKv + kv)) << 2));
}

/**
 * scores[(kv*G + g)*W + idx + t] = <q[(kv*G + g)*dk ..], key(page, slot + t, kv)> for the runs
 * r0 .. r1 (retained tokens below nVis only), every KV head, its G query rows. dk % 4 == 0.
 */
@inline export function scoresKind(
  kind: i32, desc: usize, rt: usize, cap: i32, r0: i32, r1: i32, nVis: i32, nHeadKv: i32,
  q: usize, G: i32, dk: i32, scores: usize, W: i32,
): void {
  const data = <usize>load<i32>(desc + DESC_DATA);
  const scales = <usize>load<i32>(desc + DESC_SCALES);
  const ts = <usize>load<i32>(desc + DESC_TOKEN_STRIDE);
  const ps = <usize>load<i32>(desc + DESC_PAGE_STRIDE);
  const pageSize = load<i32>(desc + DESC_PAGE_SIZE);
  const dkU = <usize>dk;
  const rowBytes = dkU << 2;
  const wBytes = <usize>W << 2;
  for (let r = r0; r < r1; r++) {
    const idx = runIndex(rt, cap, r);
    if (idx >= nVis) break;
    let len = runLength(rt, cap, r);
    if (len > nVis - idx) len = nVis - idx;
    const page = runPage(rt, cap, r);
    const slot = runSlot(rt, cap, r);
    for (let kv = 0; kv < nHeadKv; kv++) {
      const e0 = <usize>page * ps + <usize>slot * ts + <usize>kv * dkU;
      const qkv = q + <usize>(kv * G) * rowBytes;
      const skv = scores + <usize>(kv * G) * wBytes + (<usize>idx << 2);
      for (let t = 0; t < len; t++) {
        const e = e0 + <usize>t * ts;
        const sc = tokenScale(kind, scales, page, slot + t, pageSize, nHeadKv, kv);
        const st = skv + (<usize>t << 2);
        let g = 0;
        // Four query rows per pass: each key chunk is decoded once for the four.
        for (; g + 3 < G; g += 4) {
          const q0 = qkv + <usize>g * rowBytes;
          const q1 = q0 + rowBytes;
          const q2 = q1 + rowBytes;
          const q3 = q2 + rowBytes;
          let a0 = f32x4.splat(0);
          let a1 = f32x4.splat(0);
          let a2 = f32x4.splat(0);
          let a3 = f32x4.splat(0);
          for (let c: usize = 0; c < dkU; c += 4) {
            const k = decode4(kind, data, e + c);
            const o = c << 2;
            a0 = f32x4.add(a0, f32x4.mul(v128.load(q0 + o), k));
            a1 = f32x4.add(a1, f32x4.mul(v128.load(q1 + o), k));
            a2 = f32x4.add(a2, f32x4.mul(v128.load(q2 + o), k));
            a3 = f32x4.add(a3, f32x4.mul(v128.load(q3 + o), k));
          }
          const s = f32x4.mul(hsum4(a0, a1, a2, a3), f32x4.splat(sc));
          const sg = st + <usize>g * wBytes;
          store<f32>(sg, f32x4.extract_lane(s, 0));
          store<f32>(sg + wBytes, f32x4.extract_lane(s, 1));
          store<f32>(sg + 2 * wBytes, f32x4.extract_lane(s, 2));
          store<f32>(sg + 3 * wBytes, f32x4.extract_lane(s, 3));
        }
        for (; g < G; g++) {
          const q0 = qkv + <usize>g * rowBytes;
          let a0 = f32x4.splat(0);
          for (let c: usize = 0; c < dkU; c += 4) a0 = f32x4.add(a0, f32x4.mul(v128.load(q0 + (c << 2)), decode4(kind, data, e + c)));
          store<f32>(st + <usize>g * wBytes, hsum(a0) * sc);
        }
      }
    }
  }
}

/**
 * out[(kv*G + g)*dv + c] += sum_t w[(kv*G + g)*W + idx + t] * value(page, slot + t, kv)[c] for the
 * runs r0 .. r1 (retained tokens below nVis only). dv % 8 == 0. Rows in fours, channels in eights:
 * eight accumulators stay in registers across a run's tokens.
 */
@inline export function valuesKind(
  kind: i32, desc: usize, rt: usize, cap: i32, r0: i32, r1: i32, nVis: i32, nHeadKv: i32,
  w: usize, G: i32, W: i32, out: usize, dv: i32,
): void {
  const data = <usize>load<i32>(desc + DESC_DATA);
  const scales = <usize>load<i32>(desc + DESC_SCALES);
  const ts = <usize>load<i32>(desc + DESC_TOKEN_STRIDE);
  const ps = <usize>load<i32>(desc + DESC_PAGE_STRIDE);
  const pageSize = load<i32>(desc + DESC_PAGE_SIZE);
  const dvU = <usize>dv;
  const rowBytes = dvU << 2;
  const wBytes = <usize>W << 2;
  for (let r = r0; r < r1; r++) {
    const idx = runIndex(rt, cap, r);
    if (idx >= nVis) break;
    let len = runLength(rt, cap, r);
    if (len > nVis - idx) len = nVis - idx;
    const page = runPage(rt, cap, r);
    const slot = runSlot(rt, cap, r);
    for (let kv = 0; kv < nHeadKv; kv++) {
      const e0 = <usize>page * ps + <usize>slot * ts + <usize>kv * dvU;
      const wkv = w + <usize>(kv * G) * wBytes + (<usize>idx << 2);
      const okv = out + <usize>(kv * G) * rowBytes;
      let g = 0;
      for (; g + 3 < G; g += 4) {
        const w0 = wkv + <usize>g * wBytes;
        const w1 = w0 + wBytes;
        const w2 = w1 + wBytes;
        const w3 = w2 + wBytes;
        for (let c: usize = 0; c < dvU; c += 8) {
          const o0 = okv + <usize>g * rowBytes + (c << 2);
          const o1 = o0 + rowBytes;
          const o2 = o1 + rowBytes;
          const o3 = o2 + rowBytes;
          let a0 = v128.load(o0), b0 = v128.load(o0 + 16);
          let a1 = v128.load(o1), b1 = v128.load(o1 + 16);
          let a2 = v128.load(o2), b2 = v128.load(o2 + 16);
          let a3 = v128.load(o3), b3 = v128.load(o3 + 16);
          for (let t = 0; t < len; t++) {
            const e = e0 + <usize>t * ts + c;
            const lo = decode4(kind, data, e);
            const hi = decode4(kind, data, e + 4);
            const sc = tokenScale(kind, scales, page, slot + t, pageSize, nHeadKv, kv);
            const tb = <usize>t << 2;
            const x0 = f32x4.splat(load<f32>(w0 + tb) * sc);
            const x1 = f32x4.splat(load<f32>(w1 + tb) * sc);
            const x2 = f32x4.splat(load<f32>(w2 + tb) * sc);
            const x3 = f32x4.splat(load<f32>(w3 + tb) * sc);
            a0 = f32x4.add(a0, f32x4.mul(x0, lo));
            b0 = f32x4.add(b0, f32x4.mul(x0, hi));
            a1 = f32x4.add(a1, f32x4.mul(x1, lo));
            b1 = f32x4.add(b1, f32x4.mul(x1, hi));
            a2 = f32x4.add(a2, f32x4.mul(x2, lo));
            b2 = f32x4.add(b2, f32x4.mul(x2, hi));
            a3 = f32x4.add(a3, f32x4.mul(x3, lo));
            b3 = f32x4.add(b3, f32x4.mul(x3, hi));
          }
          v128.store(o0, a0);
          v128.store(o0 + 16, b0);
          v128.store(o1, a1);
          v128.store(o1 + 16, b1);
          v128.store(o2, a2);
          v128.store(o2 + 16, b2);
          v128.store(o3, a3);
          v128.store(o3 + 16, b3);
        }
      }
      for (; g < G; g++) {
        const w0 = wkv + <usize>g * wBytes;
        for (let c: usize = 0; c < dvU; c += 8) {
          const o0 = okv + <usize>g * rowBytes + (c << 2);
          let a0 = v128.load(o0), b0 = v128.load(o0 + 16);
          for (let t = 0; t < len; t++) {
            const e = e0 + <usize>t * ts + c;
            const x0 = f32x4.splat(load<f32>(w0 + (<usize>t << 2)) * tokenScale(kind, scales, page, slot + t, pageSize, nHeadKv, kv));
            a0 = f32x4.add(a0, f32x4.mul(x0, decode4(kind, data, e)));
            b0 = f32x4.add(b0, f32x4.mul(x0, decode4(kind, data, e + 4)));
          }
          v128.store(o0, a0);
          v128.store(o0 + 16, b0);
        }
      }
    }
  }
}
