// Score and value kernels for the codecs whose pages hold one code per value: f32, f16, int8 and
// fp8 (int8 and fp8 with an f32 scale per (token, head)). One body per kernel, specialized by a
// constant `kind`: the exported wrappers in attention.as pass a literal, so after inlining each
// export holds only its codec's decode (binaryen folds the other branches away).
//
// Both kernels read the pages in place: a key or value is decoded four channels at a time into
// registers inside the dot-product / accumulate loop, four query rows a pass. Where one key or
// value serves more than one pass (decodeOnce: f16 and fp8 over more than 4 rows) it is decoded
// once into a one-token scratch instead, which the passes read (bench/kernel-profile.ts, 512-token
// prefill: scores 20-45% and values 25-50% less time on the SmolLM2 shape).

import {
  DESC_DATA, DESC_SCALES, DESC_Q16, DESC_TOKEN_STRIDE, DESC_PAGE_STRIDE, DESC_PAGE_SIZE, DESC_N_HEAD_KV,
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

/**
 * Whether a kernel decodes a key (or a pair of values) to f32 once, into the store's kernel
 * scratch (descriptor word 7), for its passes over G rows to read as f32 pages are read: when
 * there is more than one pass of four rows and decoding is more than a load (f16, fp8). The passes
 * see the same values in the same order, so the results keep their bits.
 */
@inline function decodeOnce(kind: i32, G: i32): bool {
  return (kind == KIND_F16 || kind == KIND_FP8) && G > 4;
}

/** The (token, head) scale of int8 / fp8 pages; 1 for f32 / f16. `heads`: the store's KV heads
 *  (the descriptor's, which a per-head descriptor keeps while its scales start at its head). */
@inline function tokenScale(kind: i32, scales: usize, page: i32, slot: i32, pageSize: i32, heads: i32, kv: i32): f32 {
  if (kind == KIND_F32 || kind == KIND_F16) return 1;
  return load<f32>(scales + ((<usize>((page * pageSize + slot) * heads + kv)) << 2));
}

/**
 * scores[(kv*G + g)*W + idx + t] = <q[(kv*G + g)*dk ..], key(page, slot + t, kv)> for the runs
 * r0 .. r1 (retained tokens below nVis only), KV heads 0 .. nHeadKv of the descriptor (a per-head
 * descriptor starts at its head: store-memory.ts), its G query rows each. dk % 4 == 0.
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
  const heads = load<i32>(desc + DESC_N_HEAD_KV);
  const tile = <usize>load<i32>(desc + DESC_Q16);
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
    // Tokens outer, KV heads inner: a token's keys are read front to back, one sequential stream.
    for (let t = 0; t < len; t++) {
      for (let kv = 0; kv < nHeadKv; kv++) {
        const e = <usize>page * ps + <usize>(slot + t) * ts + <usize>kv * dkU;
        const qkv = q + <usize>(kv * G) * rowBytes;
        const skv = scores + <usize>(kv * G) * wBytes + (<usize>idx << 2);
        const sc = tokenScale(kind, scales, page, slot + t, pageSize, heads, kv);
        const st = skv + (<usize>t << 2);
        if (decodeOnce(kind, G)) {
          // The key decoded to f32 once, into the descriptor's scratch, for every pass.
          for (let c: usize = 0; c < dkU; c += 4) v128.store(tile + (c << 2), decode4(kind, data, e + c));
          scoreRows(KIND_F32, tile, 0, qkv, G, dkU, rowBytes, st, wBytes, sc);
        } else {
          scoreRows(kind, data, e, qkv, G, dkU, rowBytes, st, wBytes, sc);
        }
      }
    }
  }
}

/**
 * The G query rows at qkv (rows of rowBytes) dotted with one key (decode4(kind, data, e + c)),
 * times sc, into scores at st (rows wBytes apart): four rows a pass, then three, two or one; each
 * key chunk decoded once per pass.
 */
@inline function scoreRows(kind: i32, data: usize, e: usize, qkv: usize, G: i32, dkU: usize, rowBytes: usize, st: usize, wBytes: usize, sc: f32): void {
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
  if (g + 2 < G) {
    // Three rows (GQA groups of 3: SmolLM2's 9:3 heads in decode, and tails of 7): one
    // decode for the three; each row summed as the one- and two-row paths sum it.
    const q0 = qkv + <usize>g * rowBytes;
    const q1 = q0 + rowBytes;
    const q2 = q1 + rowBytes;
    let a0 = f32x4.splat(0);
    let a1 = f32x4.splat(0);
    let a2 = f32x4.splat(0);
    for (let c: usize = 0; c < dkU; c += 4) {
      const k = decode4(kind, data, e + c);
      const o = c << 2;
      a0 = f32x4.add(a0, f32x4.mul(v128.load(q0 + o), k));
      a1 = f32x4.add(a1, f32x4.mul(v128.load(q1 + o), k));
      a2 = f32x4.add(a2, f32x4.mul(v128.load(q2 + o), k));
    }
    const sg = st + <usize>g * wBytes;
    store<f32>(sg, hsum(a0) * sc);
    store<f32>(sg + wBytes, hsum(a1) * sc);
    store<f32>(sg + 2 * wBytes, hsum(a2) * sc);
    g += 3;
  } else if (g + 1 < G) {
    // Two rows (GQA groups of 2, and their tails): one decode for both.
    const q0 = qkv + <usize>g * rowBytes;
    const q1 = q0 + rowBytes;
    let a0 = f32x4.splat(0);
    let a1 = f32x4.splat(0);
    for (let c: usize = 0; c < dkU; c += 4) {
      const k = decode4(kind, data, e + c);
      a0 = f32x4.add(a0, f32x4.mul(v128.load(q0 + (c << 2)), k));
      a1 = f32x4.add(a1, f32x4.mul(v128.load(q1 + (c << 2)), k));
    }
    const sg = st + <usize>g * wBytes;
    store<f32>(sg, hsum(a0) * sc);
    store<f32>(sg + wBytes, hsum(a1) * sc);
    g += 2;
  }
  if (g < G) {
    const q0 = qkv + <usize>g * rowBytes;
    let a0 = f32x4.splat(0);
    for (let c: usize = 0; c < dkU; c += 4) a0 = f32x4.add(a0, f32x4.mul(v128.load(q0 + (c << 2)), decode4(kind, data, e + c)));
    store<f32>(st + <usize>g * wBytes, hsum(a0) * sc);
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
  const heads = load<i32>(desc + DESC_N_HEAD_KV);
  const tile = <usize>load<i32>(desc + DESC_Q16);
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
    // Tokens outer (in pairs), KV heads inner: a token's values are read front to back, one
    // sequential stream; the output rows (nHeadKv * G * dv floats) stay in L1 between tokens and
    // each load/store of them serves two tokens.
    let t = 0;
    for (; t + 1 < len; t += 2) {
      const tb = <usize>t << 2;
      for (let kv = 0; kv < nHeadKv; kv++) {
        const ea = <usize>page * ps + <usize>(slot + t) * ts + <usize>kv * dvU;
        const eb = ea + ts;
        const sa = tokenScale(kind, scales, page, slot + t, pageSize, heads, kv);
        const sb = tokenScale(kind, scales, page, slot + t + 1, pageSize, heads, kv);
        const wkv = w + <usize>(kv * G) * wBytes + (<usize>idx << 2) + tb;
        const okv = out + <usize>(kv * G) * rowBytes;
        if (decodeOnce(kind, G)) {
          // The two tokens' values decoded to f32 once, into the descriptor's scratch, for every pass.
          for (let c: usize = 0; c < dvU; c += 4) {
            v128.store(tile + (c << 2), decode4(kind, data, ea + c));
            v128.store(tile + ((dvU + c) << 2), decode4(kind, data, eb + c));
          }
          valueRows(KIND_F32, tile, 0, dvU, wkv, okv, G, dvU, rowBytes, wBytes, sa, sb);
        } else {
          valueRows(kind, data, ea, eb, wkv, okv, G, dvU, rowBytes, wBytes, sa, sb);
        }
      }
    }
    if (t < len) {
      // The run's last token when its length is odd.
      for (let kv = 0; kv < nHeadKv; kv++) {
        const ea = <usize>page * ps + <usize>(slot + t) * ts + <usize>kv * dvU;
        const sa = tokenScale(kind, scales, page, slot + t, pageSize, heads, kv);
        const wkv = w + <usize>(kv * G) * wBytes + (<usize>(idx + t) << 2);
        const okv = out + <usize>(kv * G) * rowBytes;
        for (let g = 0; g < G; g++) {
          const xa0 = f32x4.splat(load<f32>(wkv + <usize>g * wBytes) * sa);
          const o0 = okv + <usize>g * rowBytes;
          for (let c: usize = 0; c < dvU; c += 8) {
            const oc = c << 2;
            v128.store(o0 + oc, f32x4.add(v128.load(o0 + oc), f32x4.mul(xa0, decode4(kind, data, ea + c))));
            v128.store(o0 + oc + 16, f32x4.add(v128.load(o0 + oc + 16), f32x4.mul(xa0, decode4(kind, data, ea + c + 4))));
          }
        }
      }
    }
  }
}

/**
 * Two tokens' values (decode4(kind, data, ea + c) and (eb + c)) times their weights (the G rows at
 * wkv, wBytes apart; the token scales sa, sb) added into the G output rows at okv: four rows a
 * pass, then three, two or one; each value chunk decoded once per pass.
 */
@inline function valueRows(kind: i32, data: usize, ea: usize, eb: usize, wkv: usize, okv: usize, G: i32, dvU: usize, rowBytes: usize, wBytes: usize, sa: f32, sb: f32): void {
  let g = 0;
  for (; g + 3 < G; g += 4) {
    const w0 = wkv + <usize>g * wBytes;
    const w1 = w0 + wBytes;
    const w2 = w1 + wBytes;
    const w3 = w2 + wBytes;
    const xa0 = f32x4.splat(load<f32>(w0) * sa), xb0 = f32x4.splat(load<f32>(w0, 4) * sb);
    const xa1 = f32x4.splat(load<f32>(w1) * sa), xb1 = f32x4.splat(load<f32>(w1, 4) * sb);
    const xa2 = f32x4.splat(load<f32>(w2) * sa), xb2 = f32x4.splat(load<f32>(w2, 4) * sb);
    const xa3 = f32x4.splat(load<f32>(w3) * sa), xb3 = f32x4.splat(load<f32>(w3, 4) * sb);
    const o0 = okv + <usize>g * rowBytes;
    const o1 = o0 + rowBytes;
    const o2 = o1 + rowBytes;
    const o3 = o2 + rowBytes;
    for (let c: usize = 0; c < dvU; c += 8) {
      const la = decode4(kind, data, ea + c);
      const ha = decode4(kind, data, ea + c + 4);
      const lb = decode4(kind, data, eb + c);
      const hb = decode4(kind, data, eb + c + 4);
      const oc = c << 2;
      accumulate2(o0 + oc, xa0, xb0, la, ha, lb, hb);
      accumulate2(o1 + oc, xa1, xb1, la, ha, lb, hb);
      accumulate2(o2 + oc, xa2, xb2, la, ha, lb, hb);
      accumulate2(o3 + oc, xa3, xb3, la, ha, lb, hb);
    }
  }
  if (g + 2 < G) {
    // Three rows: one decode of the two tokens for the three.
    const w0 = wkv + <usize>g * wBytes;
    const w1 = w0 + wBytes;
    const w2 = w1 + wBytes;
    const xa0 = f32x4.splat(load<f32>(w0) * sa), xb0 = f32x4.splat(load<f32>(w0, 4) * sb);
    const xa1 = f32x4.splat(load<f32>(w1) * sa), xb1 = f32x4.splat(load<f32>(w1, 4) * sb);
    const xa2 = f32x4.splat(load<f32>(w2) * sa), xb2 = f32x4.splat(load<f32>(w2, 4) * sb);
    const o0 = okv + <usize>g * rowBytes;
    const o1 = o0 + rowBytes;
    const o2 = o1 + rowBytes;
    for (let c: usize = 0; c < dvU; c += 8) {
      const la = decode4(kind, data, ea + c);
      const ha = decode4(kind, data, ea + c + 4);
      const lb = decode4(kind, data, eb + c);
      const hb = decode4(kind, data, eb + c + 4);
      const oc = c << 2;
      accumulate2(o0 + oc, xa0, xb0, la, ha, lb, hb);
      accumulate2(o1 + oc, xa1, xb1, la, ha, lb, hb);
      accumulate2(o2 + oc, xa2, xb2, la, ha, lb, hb);
    }
    g += 3;
  } else if (g + 1 < G) {
    // Two rows: one decode of the two tokens for both.
    const w0 = wkv + <usize>g * wBytes;
    const w1 = w0 + wBytes;
    const xa0 = f32x4.splat(load<f32>(w0) * sa), xb0 = f32x4.splat(load<f32>(w0, 4) * sb);
    const xa1 = f32x4.splat(load<f32>(w1) * sa), xb1 = f32x4.splat(load<f32>(w1, 4) * sb);
    const o0 = okv + <usize>g * rowBytes;
    const o1 = o0 + rowBytes;
    for (let c: usize = 0; c < dvU; c += 8) {
      const la = decode4(kind, data, ea + c);
      const ha = decode4(kind, data, ea + c + 4);
      const lb = decode4(kind, data, eb + c);
      const hb = decode4(kind, data, eb + c + 4);
      const oc = c << 2;
      accumulate2(o0 + oc, xa0, xb0, la, ha, lb, hb);
      accumulate2(o1 + oc, xa1, xb1, la, ha, lb, hb);
    }
    g += 2;
  }
  if (g < G) {
    const w0 = wkv + <usize>g * wBytes;
    const xa0 = f32x4.splat(load<f32>(w0) * sa), xb0 = f32x4.splat(load<f32>(w0, 4) * sb);
    const o0 = okv + <usize>g * rowBytes;
    for (let c: usize = 0; c < dvU; c += 8) {
      accumulate2(o0 + (c << 2), xa0, xb0, decode4(kind, data, ea + c), decode4(kind, data, ea + c + 4), decode4(kind, data, eb + c), decode4(kind, data, eb + c + 4));
    }
  }
}

/** out[0..8) += xa * [la, ha] + xb * [lb, hb]: one output row's eight channels, two tokens. */
@inline function accumulate2(o: usize, xa: v128, xb: v128, la: v128, ha: v128, lb: v128, hb: v128): void {
  v128.store(o, f32x4.add(v128.load(o), f32x4.add(f32x4.mul(xa, la), f32x4.mul(xb, lb))));
  v128.store(o, f32x4.add(v128.load(o, 16), f32x4.add(f32x4.mul(xa, ha), f32x4.mul(xb, hb))), 16);
}

/**
 * scoresKind for int8 keys with integer dot products: each query row is rounded once to int16
 * with its own scale (relative error <= 2^-16 of the row's largest value, far below the int8
 * keys' own), then q16 . code runs as i32x4.dot_i16x8_s over eight channels at a time, four rows
 * per pass: about half the instructions of decoding every code to f32. No overflow: a lane sums
 * dk/8 * 2 products of |q16| <= 32767 and |code| <= 127, below 2^31 for dk < 2000.
 * Needs dk % 8 == 0 and DESC_Q16 pointing at (nHeadKv*G*dk) int16 + (nHeadKv*G) f32 of scratch.
 */
export function scoresInt8Dot(
  desc: usize, rt: usize, cap: i32, r0: i32, r1: i32, nVis: i32, nHeadKv: i32,
  q: usize, G: i32, dk: i32, scores: usize, W: i32,
): void {
  const data = <usize>load<i32>(desc + DESC_DATA);
  const scales = <usize>load<i32>(desc + DESC_SCALES);
  const ts = <usize>load<i32>(desc + DESC_TOKEN_STRIDE);
  const ps = <usize>load<i32>(desc + DESC_PAGE_STRIDE);
  const pageSize = load<i32>(desc + DESC_PAGE_SIZE);
  const q16 = <usize>load<i32>(desc + DESC_Q16);
  const dkU = <usize>dk;
  const nRows = nHeadKv * G;
  const rowScale = q16 + ((<usize>nRows * dkU) << 1);
  // Round the query rows to int16.
  for (let row = 0; row < nRows; row++) {
    const src = q + ((<usize>row * dkU) << 2);
    let m = f32x4.splat(0);
    for (let c: usize = 0; c < dkU; c += 4) m = f32x4.max(m, f32x4.abs(v128.load(src + (c << 2))));
    const amax = max(max(f32x4.extract_lane(m, 0), f32x4.extract_lane(m, 1)), max(f32x4.extract_lane(m, 2), f32x4.extract_lane(m, 3)));
    const d: f32 = amax / 32767.0;
    const inv = f32x4.splat(amax > 0 ? <f32>32767.0 / amax : 0);
    store<f32>(rowScale + (<usize>row << 2), d);
    const dst = q16 + ((<usize>row * dkU) << 1);
    for (let c: usize = 0; c < dkU; c += 8) {
      const a = i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(v128.load(src + (c << 2)), inv)));
      const b = i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(v128.load(src + (c << 2) + 16), inv)));
      v128.store(dst + (c << 1), i16x8.narrow_i32x4_s(a, b));
    }
  }
  const rowBytes = dkU << 1;
  const wBytes = <usize>W << 2;
  for (let r = r0; r < r1; r++) {
    const idx = runIndex(rt, cap, r);
    if (idx >= nVis) break;
    let len = runLength(rt, cap, r);
    if (len > nVis - idx) len = nVis - idx;
    const page = runPage(rt, cap, r);
    const slot = runSlot(rt, cap, r);
    for (let t = 0; t < len; t++) {
      for (let kv = 0; kv < nHeadKv; kv++) {
        const e = data + <usize>page * ps + <usize>(slot + t) * ts + <usize>kv * dkU;
        const sc = f32x4.splat(load<f32>(scales + ((<usize>(((page * pageSize + slot + t) * nHeadKv + kv))) << 2)));
        const qkv = q16 + <usize>(kv * G) * rowBytes;
        const st = scores + <usize>(kv * G) * wBytes + (<usize>(idx + t) << 2);
        let g = 0;
        for (; g + 3 < G; g += 4) {
          const q0 = qkv + <usize>g * rowBytes;
          const q1 = q0 + rowBytes;
          const q2 = q1 + rowBytes;
          const q3 = q2 + rowBytes;
          let a0 = i32x4.splat(0);
          let a1 = i32x4.splat(0);
          let a2 = i32x4.splat(0);
          let a3 = i32x4.splat(0);
          for (let c: usize = 0; c < dkU; c += 8) {
            const k = i16x8.extend_low_i8x16_s(v128.load64_zero(e + c));
            const o = c << 1;
            a0 = i32x4.add(a0, i32x4.dot_i16x8_s(v128.load(q0 + o), k));
            a1 = i32x4.add(a1, i32x4.dot_i16x8_s(v128.load(q1 + o), k));
            a2 = i32x4.add(a2, i32x4.dot_i16x8_s(v128.load(q2 + o), k));
            a3 = i32x4.add(a3, i32x4.dot_i16x8_s(v128.load(q3 + o), k));
          }
          const sum = hsum4(f32x4.convert_i32x4_s(a0), f32x4.convert_i32x4_s(a1), f32x4.convert_i32x4_s(a2), f32x4.convert_i32x4_s(a3));
          const s4 = f32x4.mul(f32x4.mul(sum, sc), v128.load(rowScale + (<usize>(kv * G + g) << 2)));
          const sg = st + <usize>g * wBytes;
          store<f32>(sg, f32x4.extract_lane(s4, 0));
          store<f32>(sg + wBytes, f32x4.extract_lane(s4, 1));
          store<f32>(sg + 2 * wBytes, f32x4.extract_lane(s4, 2));
          store<f32>(sg + 3 * wBytes, f32x4.extract_lane(s4, 3));
        }
        for (; g < G; g++) {
          const q0 = qkv + <usize>g * rowBytes;
          let a0 = i32x4.splat(0);
          for (let c: usize = 0; c < dkU; c += 8) {
            a0 = i32x4.add(a0, i32x4.dot_i16x8_s(v128.load(q0 + (c << 1)), i16x8.extend_low_i8x16_s(v128.load64_zero(e + c))));
          }
          store<f32>(st + <usize>g * wBytes, hsum(f32x4.convert_i32x4_s(a0)) * f32x4.extract_lane(sc, 0) * load<f32>(rowScale + (<usize>(kv * G + g) << 2)));
        }
      }
    }
  }
}

/** Tokens per chunk of valuesInt8Dot: the int32 sums of a chunk cannot overflow (128 pairs x 2 x 32767 x 127 < 2^31). */
const INT8_CHUNK: i32 = 256;

/**
 * valuesKind for int8 values with integer dot products. Per run chunk (<= 256 tokens), KV head and
 * query row, the weights times the token scales are rounded to int16 against max(w) * max(scale)
 * over the chunk (a token's contribution is off by at most 2^-16 of that bound), two tokens'
 * weights packed in one int32; codes of two tokens are interleaved
 * per channel so that i32x4.dot_i16x8_s adds both tokens' products in one instruction. Sums are
 * int32 in registers over the chunk, then scaled back into `out`. Needs dv % 8 == 0 and DESC_Q16
 * (of the V descriptor) pointing at (G rows x 128 pairs) int32 + G f32 + 256 f32 of scratch.
 */
export function valuesInt8Dot(
  desc: usize, rt: usize, cap: i32, r0: i32, r1: i32, nVis: i32, nHeadKv: i32,
  w: usize, G: i32, W: i32, out: usize, dv: i32,
): void {
  const data = <usize>load<i32>(desc + DESC_DATA);
  const scales = <usize>load<i32>(desc + DESC_SCALES);
  const ts = <usize>load<i32>(desc + DESC_TOKEN_STRIDE);
  const ps = <usize>load<i32>(desc + DESC_PAGE_STRIDE);
  const pageSize = load<i32>(desc + DESC_PAGE_SIZE);
  const wq = <usize>load<i32>(desc + DESC_Q16);
  const pairBytes: usize = <usize>(INT8_CHUNK >> 1) << 2; // one row's packed pairs
  const rowScale = wq + <usize>G * pairBytes;
  const sbuf = rowScale + (<usize>G << 2); // [INT8_CHUNK] f32 token scales of the current chunk
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
    for (let c0 = 0; c0 < len; c0 += INT8_CHUNK) {
      const n = min(INT8_CHUNK, len - c0);
      const nPairs = (n + 1) >> 1;
      for (let kv = 0; kv < nHeadKv; kv++) {
        // The chunk's token scales, contiguous (zero past n), and their largest.
        const sBase = scales + ((<usize>(((page * pageSize + slot + c0) * nHeadKv + kv))) << 2);
        const sStride = <usize>nHeadKv << 2;
        let smax: f32 = 0;
        for (let t = 0; t < n; t++) {
          const sv = load<f32>(sBase + <usize>t * sStride);
          store<f32>(sbuf + (<usize>t << 2), sv);
          smax = max(smax, sv);
        }
        const nPad = (n + 7) & ~7;
        for (let t = n; t < nPad; t++) store<f32>(sbuf + (<usize>t << 2), 0);
        // Weight pairs of this KV head's rows: w * s rounded to int16 against max(w) * max(s) (>= every
        // w * s), eight tokens at a time; narrowing two i32x4 packs (a, b) pairs as int32 lanes.
        for (let g = 0; g < G; g++) {
          const wr = w + <usize>(kv * G + g) * wBytes + (<usize>(idx + c0) << 2);
          let mv = f32x4.splat(0);
          let t = 0;
          for (; t + 3 < n; t += 4) mv = f32x4.max(mv, v128.load(wr + (<usize>t << 2)));
          let wmax = max(max(f32x4.extract_lane(mv, 0), f32x4.extract_lane(mv, 1)), max(f32x4.extract_lane(mv, 2), f32x4.extract_lane(mv, 3)));
          for (; t < n; t++) wmax = max(wmax, load<f32>(wr + (<usize>t << 2)));
          const m = wmax * smax;
          const inv = f32x4.splat(m > 0 ? <f32>32767.0 / m : 0);
          store<f32>(rowScale + (<usize>g << 2), m / 32767.0);
          const dst = wq + <usize>g * pairBytes;
          for (let t8 = 0; t8 < n; t8 += 8) {
            const p = wr + (<usize>t8 << 2);
            const q = sbuf + (<usize>t8 << 2);
            // Weights past n (the next run's, or stale) are masked out: their scale is 0, and the
            // select keeps an Infinity there from turning into NaN.
            const a = i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(f32x4.mul(v128.load(p), v128.load(q)), inv)));
            const b = i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(f32x4.mul(v128.load(p, 16), v128.load(q, 16)), inv)));
            const lim = i32x4.splat(n - t8);
            const am = v128.and(a, i32x4.gt_s(lim, i32x4(0, 1, 2, 3)));
            const bm = v128.and(b, i32x4.gt_s(lim, i32x4(4, 5, 6, 7)));
            v128.store(dst + (<usize>t8 << 1), i16x8.narrow_i32x4_s(am, bm));
          }
        }
        const e0 = data + <usize>page * ps + <usize>(slot + c0) * ts + <usize>kv * dvU;
        const okv = out + <usize>(kv * G) * rowBytes;
        const last = e0 + <usize>(n - 1) * ts; // an odd chunk's last pair reads its one token twice (weight 0)
        for (let c: usize = 0; c < dvU; c += 8) {
          let g = 0;
          for (; g + 3 < G; g += 4) {
            const w0 = wq + <usize>g * pairBytes;
            const w1 = w0 + pairBytes;
            const w2 = w1 + pairBytes;
            const w3 = w2 + pairBytes;
            let a0 = i32x4.splat(0), b0 = i32x4.splat(0);
            let a1 = i32x4.splat(0), b1 = i32x4.splat(0);
            let a2 = i32x4.splat(0), b2 = i32x4.splat(0);
            let a3 = i32x4.splat(0), b3 = i32x4.splat(0);
            for (let p = 0; p < nPairs; p++) {
              const ea = e0 + <usize>(p << 1) * ts + c;
              const eb = min(ea + ts, last + c);
              const x = i8x16.shuffle(v128.load64_zero(ea), v128.load64_zero(eb), 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
              const lo = i16x8.extend_low_i8x16_s(x);
              const hi = i16x8.extend_high_i8x16_s(x);
              const pb = <usize>p << 2;
              const p0 = v128.load32_splat(w0 + pb);
              const p1 = v128.load32_splat(w1 + pb);
              const p2 = v128.load32_splat(w2 + pb);
              const p3 = v128.load32_splat(w3 + pb);
              a0 = i32x4.add(a0, i32x4.dot_i16x8_s(lo, p0));
              b0 = i32x4.add(b0, i32x4.dot_i16x8_s(hi, p0));
              a1 = i32x4.add(a1, i32x4.dot_i16x8_s(lo, p1));
              b1 = i32x4.add(b1, i32x4.dot_i16x8_s(hi, p1));
              a2 = i32x4.add(a2, i32x4.dot_i16x8_s(lo, p2));
              b2 = i32x4.add(b2, i32x4.dot_i16x8_s(hi, p2));
              a3 = i32x4.add(a3, i32x4.dot_i16x8_s(lo, p3));
              b3 = i32x4.add(b3, i32x4.dot_i16x8_s(hi, p3));
            }
            const oc = c << 2;
            flushInt(okv + <usize>g * rowBytes + oc, a0, b0, load<f32>(rowScale + (<usize>g << 2)));
            flushInt(okv + <usize>(g + 1) * rowBytes + oc, a1, b1, load<f32>(rowScale + (<usize>(g + 1) << 2)));
            flushInt(okv + <usize>(g + 2) * rowBytes + oc, a2, b2, load<f32>(rowScale + (<usize>(g + 2) << 2)));
            flushInt(okv + <usize>(g + 3) * rowBytes + oc, a3, b3, load<f32>(rowScale + (<usize>(g + 3) << 2)));
          }
          for (; g < G; g++) {
            const w0 = wq + <usize>g * pairBytes;
            let a0 = i32x4.splat(0), b0 = i32x4.splat(0);
            for (let p = 0; p < nPairs; p++) {
              const ea = e0 + <usize>(p << 1) * ts + c;
              const eb = min(ea + ts, last + c);
              const x = i8x16.shuffle(v128.load64_zero(ea), v128.load64_zero(eb), 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
              const p0 = v128.load32_splat(w0 + (<usize>p << 2));
              a0 = i32x4.add(a0, i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_s(x), p0));
              b0 = i32x4.add(b0, i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_s(x), p0));
            }
            flushInt(okv + <usize>g * rowBytes + (c << 2), a0, b0, load<f32>(rowScale + (<usize>g << 2)));
          }
        }
      }
    }
  }
}

/** out[0..8) += [a, b] * scale: a chunk's int32 sums back into the f32 output row. */
@inline function flushInt(o: usize, a: v128, b: v128, scale: f32): void {
  const s = f32x4.splat(scale);
  v128.store(o, f32x4.add(v128.load(o), f32x4.mul(f32x4.convert_i32x4_s(a), s)));
  v128.store(o, f32x4.add(v128.load(o, 16), f32x4.mul(f32x4.convert_i32x4_s(b), s)), 16);
}
