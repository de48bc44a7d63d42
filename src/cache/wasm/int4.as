// Score and value kernels for the int4 (KIVI) store, src/cache/codecs/int4.ts: same arguments and
// semantics as codecs.as's scoresKind / valuesKind, over a KEY store (scores) and a VALUE store
// (values). A page is either open (its tokens in f32 in a residual buffer: resOf[page] >= 0) or
// sealed (two codes per byte, low nibble = even channel, with f16 (min, scale) pairs: per
// (page, head, channel) for keys, per (page, slot, head) for values).
//
// Sealed pages are read in place, the nibbles unpacked in registers, and the sums run in int16 x
// int16 -> int32 dot products (i32x4.dot_i16x8_s: eight products per instruction):
//   keys:   score_t = sum_c q_c min_c + sum_c (q_c scale_c) code_tc. Per (run, KV head, row) the
//           bias and qs_c = q_c scale_c are computed once (a run shares them: one page), and qs is
//           rounded to int16 against its own largest |qs_c| (step max/32767).
//   values: out_c += sum_t w_t min_t + sum_t (w_t scale_t) code_tc. Per (run, row) a_t = w_t
//           scale_t is rounded to int16 against its largest |a_t|, and tokens are taken in pairs
//           so that one dot product adds two tokens' terms.
// Rounding to int16 moves each term by at most 1/65534 of the group's largest term times a code
// (<= 15): a relative 2.3e-4 of the largest term, against the codec's own rounding of half a
// code step (a relative 1/30 of a channel's range), so it does not show in the codec's error.
//
// Store descriptor (common.as words 0..6), as Int4PageStore.kernelLayout() fills it:
//   0 data = the nibbles [nPages][pageSize][nHeadKv][headDim/2] (byte offset)
//   1 scales = the f16 params: keys [nPages][nHeadKv][2][headDim] (row of mins, row of scales),
//     values [nPages][pageSize][nHeadKv][2] (min, scale)
//   2 tokenStride, 3 pageStride (elements, as in the residual buffers), 4 headDim, 5 pageSize, 6 nHeadKv
//   8 residual: f32 [openPages][pageSize][nHeadKv][headDim]
//   9 resOf: i32 [nPages], the residual buffer of an open page, else -1
//  10 scratch: the store's 8 * (headDim + pageSize) bytes of kernel scratch (the JS kernels' f64
//     scratch; nothing keeps data in it between calls). Keys keep the int16 query rows there
//     (4 rows x headDim x 2 bytes), values the int16 a_t ([token pair][4 rows][2]: 8 bytes per
//     token, pageSize rounded up to 4). Word 7 (the driver's own scratch) is not used.
//
// Limits (int4WasmSupports in int4.ts): headDim % 8 == 0 and headDim <= 1024 (a key's int32 sum
// holds 32767 * 15 * headDim); values split runs into blocks of at most VALUE_BLOCK tokens for the
// same reason.
//
// The helpers of common.as are restated here (that file is edited by others; these are tiny).

const DESC_DATA: usize = 0;
const DESC_SCALES: usize = 4;
const DESC_TOKEN_STRIDE: usize = 8;
const DESC_PAGE_STRIDE: usize = 12;
const DESC_PAGE_SIZE: usize = 20;
const DESC_RESIDUAL: usize = 32;
const DESC_RES_OF: usize = 36;
const DESC_SCRATCH: usize = 40;

/** Most tokens whose int16 terms one int32 lane sums: 2048 * 32767 * 15 < 2^31. */
const VALUE_BLOCK: i32 = 2048;
const Q_ONE: f32 = 32767;

@inline function runPage(rt: usize, cap: i32, r: i32): i32 {
  return load<i32>(rt + (<usize>r << 2));
}
@inline function runSlot(rt: usize, cap: i32, r: i32): i32 {
  return load<i32>(rt + (<usize>cap << 2) + (<usize>r << 2));
}
@inline function runLength(rt: usize, cap: i32, r: i32): i32 {
  return load<i32>(rt + (<usize>cap << 3) + (<usize>r << 2));
}
@inline function runIndex(rt: usize, cap: i32, r: i32): i32 {
  return load<i32>(rt + <usize>cap * 12 + (<usize>r << 2));
}

/** Sum of the four f32 lanes. */
@inline function hsum(v: v128): f32 {
  const s = f32x4.add(v, v128.shuffle<f32>(v, v, 2, 3, 0, 1));
  return f32x4.extract_lane(f32x4.add(s, v128.shuffle<f32>(s, s, 1, 0, 3, 2)), 0);
}

/** [sum(a), sum(b), sum(c), sum(d)] of f32 lanes. */
@inline function hsum4(a: v128, b: v128, c: v128, d: v128): v128 {
  const ab = f32x4.add(v128.shuffle<f32>(a, b, 0, 4, 2, 6), v128.shuffle<f32>(a, b, 1, 5, 3, 7));
  const cd = f32x4.add(v128.shuffle<f32>(c, d, 0, 4, 2, 6), v128.shuffle<f32>(c, d, 1, 5, 3, 7));
  return f32x4.add(v128.shuffle<f32>(ab, cd, 0, 1, 4, 5), v128.shuffle<f32>(ab, cd, 2, 3, 6, 7));
}

/** [max(a), max(b), max(c), max(d)] of non-negative f32 lanes (compared as int32). */
@inline function hmax4(a: v128, b: v128, c: v128, d: v128): v128 {
  const ab = i32x4.max_s(v128.shuffle<f32>(a, b, 0, 4, 2, 6), v128.shuffle<f32>(a, b, 1, 5, 3, 7));
  const cd = i32x4.max_s(v128.shuffle<f32>(c, d, 0, 4, 2, 6), v128.shuffle<f32>(c, d, 1, 5, 3, 7));
  return i32x4.max_s(v128.shuffle<f32>(ab, cd, 0, 1, 4, 5), v128.shuffle<f32>(ab, cd, 2, 3, 6, 7));
}

/** [sum(a), sum(b), sum(c), sum(d)] of i32 lanes. */
@inline function hsum4i(a: v128, b: v128, c: v128, d: v128): v128 {
  const ab = i32x4.add(v128.shuffle<i32>(a, b, 0, 4, 2, 6), v128.shuffle<i32>(a, b, 1, 5, 3, 7));
  const cd = i32x4.add(v128.shuffle<i32>(c, d, 0, 4, 2, 6), v128.shuffle<i32>(c, d, 1, 5, 3, 7));
  return i32x4.add(v128.shuffle<i32>(ab, cd, 0, 1, 4, 5), v128.shuffle<i32>(ab, cd, 2, 3, 6, 7));
}

@inline function hsumi(v: v128): i32 {
  const s = i32x4.add(v, v128.shuffle<i32>(v, v, 2, 3, 0, 1));
  return i32x4.extract_lane(i32x4.add(s, v128.shuffle<i32>(s, s, 1, 0, 3, 2)), 0);
}

/** Nearest integer of each lane, |x| < 2^22: adding 1.5 * 2^23 leaves it in the low mantissa
 *  bits (round to nearest even), read back as an int32 minus the constant's bits. Cheaper than
 *  nearest + trunc_sat, which V8 lowers to a long sequence on x64. */
@inline function roundI(x: v128): v128 {
  return i32x4.sub(f32x4.add(x, f32x4.splat(12582912)), i32x4.splat(0x4b400000));
}

/** The high nibble of each byte (a 16-bit shift and a mask: wasm's i8x16.shr_u has no x64 instruction). */
@inline function hiNibbles(v: v128): v128 {
  return v128.and(i16x8.shr_u(v, 4), i8x16.splat(15));
}

/** 32767 / mx per lane, 0 where mx is 0 (a row of zeros: its codes meet zeros). Lanes of the
 *  maxima are non-negative floats, compared as int32 (same order, and i32x4.max_s is one
 *  instruction where f32x4.max is several). */
@inline function invStep(mx: v128): v128 {
  return v128.and(f32x4.div(f32x4.splat(Q_ONE), mx), f32x4.gt(mx, f32x4.splat(0)));
}

/** f16 bits sign-extended into i32 lanes -> f32: the sign copied from bit 28 to 31 by the
 *  extension, exponent and mantissa shifted into f32 position and rescaled by 2^112 (which also
 *  decodes subnormals). The codec writes only finite params (int4.ts clamps them to 65504). */
@inline function f16sToF32(h: v128): v128 {
  return f32x4.mul(v128.and(i32x4.shl(h, 13), i32x4.splat(0x8fffe000)), f32x4.splat(5.192296858534828e33));
}

/** Non-negative f16 bits (the scales) zero-extended into i32 lanes -> f32. */
@inline function f16uToF32(h: v128): v128 {
  return f32x4.mul(i32x4.shl(h, 13), f32x4.splat(5.192296858534828e33));
}

// -------------------------------------------------------------------------------------------------
// Scores

/**
 * scores[(kv*G + g)*W + idx + t] = <q[(kv*G + g)*dk ..], key(page, slot + t, kv)> for the runs
 * r0 .. r1 (retained tokens below nVis only), every KV head, its G query rows.
 */
export function scoresInt4(
  desc: usize, rt: usize, cap: i32, r0: i32, r1: i32, nVis: i32, nHeadKv: i32,
  q: usize, G: i32, dk: i32, scores: usize, W: i32,
): void {
  const nib = <usize>load<i32>(desc + DESC_DATA);
  const params = <usize>load<i32>(desc + DESC_SCALES);
  const ts = <usize>load<i32>(desc + DESC_TOKEN_STRIDE);
  const ps = <usize>load<i32>(desc + DESC_PAGE_STRIDE);
  const pageSize = <usize>load<i32>(desc + DESC_PAGE_SIZE);
  const residual = <usize>load<i32>(desc + DESC_RESIDUAL);
  const resOf = <usize>load<i32>(desc + DESC_RES_OF);
  const scratch = <usize>load<i32>(desc + DESC_SCRATCH);
  const dkU = <usize>dk;
  const rowBytes = dkU << 2;
  const wBytes = <usize>W << 2;
  const tb = ts >> 1; // nibble bytes of one token
  for (let r = r0; r < r1; r++) {
    const idx = runIndex(rt, cap, r);
    if (idx >= nVis) break;
    let len = runLength(rt, cap, r);
    if (len > nVis - idx) len = nVis - idx;
    const page = <usize>runPage(rt, cap, r);
    const slot = <usize>runSlot(rt, cap, r);
    const res = load<i32>(resOf + (page << 2));
    for (let kv = 0; kv < nHeadKv; kv++) {
      const qkv = q + <usize>(kv * G) * rowBytes;
      const skv = scores + <usize>(kv * G) * wBytes + (<usize>idx << 2);
      if (res >= 0) {
        const k0 = residual + ((<usize>res * ps + slot * ts + <usize>kv * dkU) << 2);
        scoresOpen(k0, ts << 2, len, qkv, rowBytes, G, dkU, skv, wBytes);
      } else {
        const k0 = nib + (page * pageSize + slot) * tb + <usize>kv * (dkU >> 1);
        const pMin = params + ((page * <usize>nHeadKv + <usize>kv) * 2 * dkU << 1);
        let g = 0;
        // Rows in fours (a block of three repeats its last row: the repeat stores the same
        // scores), pairs and single rows one at a time.
        for (; g + 2 < G; g += 4) {
          const g1 = min(g + 1, G - 1);
          const g2 = min(g + 2, G - 1);
          const g3 = min(g + 3, G - 1);
          scoresSealed4(
            k0, tb, len, pMin, dkU,
            qkv + <usize>g * rowBytes, qkv + <usize>g1 * rowBytes, qkv + <usize>g2 * rowBytes, qkv + <usize>g3 * rowBytes,
            skv + <usize>g * wBytes, skv + <usize>g1 * wBytes, skv + <usize>g2 * wBytes, skv + <usize>g3 * wBytes, scratch,
          );
        }
        for (; g < G; g++) scoresSealed1(k0, tb, len, pMin, dkU, qkv + <usize>g * rowBytes, skv + <usize>g * wBytes, scratch);
      }
    }
  }
}

/** Open page: f32 keys at k0 (token stride kStride bytes), as codecs.as's f32 kernel. */
function scoresOpen(k0: usize, kStride: usize, len: i32, qkv: usize, rowBytes: usize, G: i32, dkU: usize, skv: usize, wBytes: usize): void {
  for (let t = 0; t < len; t++) {
    const k = k0 + <usize>t * kStride;
    const st = skv + (<usize>t << 2);
    let g = 0;
    for (; g + 3 < G; g += 4) {
      const q0 = qkv + <usize>g * rowBytes;
      const q1 = q0 + rowBytes;
      const q2 = q1 + rowBytes;
      const q3 = q2 + rowBytes;
      let a0 = f32x4.splat(0);
      let a1 = f32x4.splat(0);
      let a2 = f32x4.splat(0);
      let a3 = f32x4.splat(0);
      for (let o: usize = 0; o < rowBytes; o += 16) {
        const kk = v128.load(k + o);
        a0 = f32x4.add(a0, f32x4.mul(v128.load(q0 + o), kk));
        a1 = f32x4.add(a1, f32x4.mul(v128.load(q1 + o), kk));
        a2 = f32x4.add(a2, f32x4.mul(v128.load(q2 + o), kk));
        a3 = f32x4.add(a3, f32x4.mul(v128.load(q3 + o), kk));
      }
      const s = hsum4(a0, a1, a2, a3);
      const sg = st + <usize>g * wBytes;
      store<f32>(sg, f32x4.extract_lane(s, 0));
      store<f32>(sg + wBytes, f32x4.extract_lane(s, 1));
      store<f32>(sg + 2 * wBytes, f32x4.extract_lane(s, 2));
      store<f32>(sg + 3 * wBytes, f32x4.extract_lane(s, 3));
    }
    for (; g < G; g++) {
      const q0 = qkv + <usize>g * rowBytes;
      let a0 = f32x4.splat(0);
      for (let o: usize = 0; o < rowBytes; o += 16) a0 = f32x4.add(a0, f32x4.mul(v128.load(q0 + o), v128.load(k + o)));
      store<f32>(st + <usize>g * wBytes, hsum(a0));
    }
  }
}

/**
 * Rounds one row's qs_c = q_c * scale_c (channels c0 .. c0+15, or c0 .. c0+7 when `eight`) to
 * int16 and stores them in the order the nibble unpacking yields codes: per 16 channels the 8 even
 * channels then the 8 odd ones; a last group of 8 as 4 even then 4 odd.
 */
@inline function storeQs16(qRow: usize, s0: v128, s1: v128, s2: v128, s3: v128, inv: v128, dst: usize, c: usize): void {
  const o = c << 2;
  const i0 = roundI(f32x4.mul(f32x4.mul(v128.load(qRow + o), s0), inv));
  const i1 = roundI(f32x4.mul(f32x4.mul(v128.load(qRow + o + 16), s1), inv));
  const i2 = roundI(f32x4.mul(f32x4.mul(v128.load(qRow + o + 32), s2), inv));
  const i3 = roundI(f32x4.mul(f32x4.mul(v128.load(qRow + o + 48), s3), inv));
  const n0 = i16x8.narrow_i32x4_s(i0, i1); // channels c .. c+7
  const n1 = i16x8.narrow_i32x4_s(i2, i3); // c+8 .. c+15
  v128.store(dst + (c << 1), v128.shuffle<i16>(n0, n1, 0, 2, 4, 6, 8, 10, 12, 14));
  v128.store(dst + (c << 1) + 16, v128.shuffle<i16>(n0, n1, 1, 3, 5, 7, 9, 11, 13, 15));
}
@inline function storeQs8(qRow: usize, s0: v128, s1: v128, inv: v128, dst: usize, c: usize): void {
  const o = c << 2;
  const i0 = roundI(f32x4.mul(f32x4.mul(v128.load(qRow + o), s0), inv));
  const i1 = roundI(f32x4.mul(f32x4.mul(v128.load(qRow + o + 16), s1), inv));
  const n0 = i16x8.narrow_i32x4_s(i0, i1);
  v128.store(dst + (c << 1), v128.shuffle<i16>(n0, n0, 0, 2, 4, 6, 1, 3, 5, 7));
}

/**
 * One key's int32 sum of qI_c * code_c: `x` is the row's int16 qs in storeQs16's order, `k` the
 * key's nibbles. 32 channels per 16 bytes: low nibbles (even channels) and high nibbles (odd
 * channels), each widened to int16 in two halves, meet the four matching vectors of x.
 */
@inline function dotCodes32(x: usize, v: v128): v128 {
  const lo = v128.and(v, i8x16.splat(15));
  const hi = hiNibbles(v);
  const a = i32x4.add(
    i32x4.dot_i16x8_s(v128.load(x), i16x8.extend_low_i8x16_u(lo)),
    i32x4.dot_i16x8_s(v128.load(x + 16), i16x8.extend_low_i8x16_u(hi)),
  );
  const b = i32x4.add(
    i32x4.dot_i16x8_s(v128.load(x + 32), i16x8.extend_high_i8x16_u(lo)),
    i32x4.dot_i16x8_s(v128.load(x + 48), i16x8.extend_high_i8x16_u(hi)),
  );
  return i32x4.add(a, b);
}

/** The same for the last 16 channels (8 bytes, zero-extended: the upper lanes hold code 0). */
@inline function dotCodes16(x: usize, v: v128): v128 {
  return i32x4.add(
    i32x4.dot_i16x8_s(v128.load(x), i16x8.extend_low_i8x16_u(v128.and(v, i8x16.splat(15)))),
    i32x4.dot_i16x8_s(v128.load(x + 16), i16x8.extend_low_i8x16_u(hiNibbles(v))),
  );
}

/** The last 8 channels (4 bytes): x holds 4 even then 4 odd; the lanes past them meet code 0
 *  (the load at x + 8 reads 8 bytes past the row: still inside the scratch, see the header). */
@inline function dotCodes8(x: usize, v: v128): v128 {
  return i32x4.add(
    i32x4.dot_i16x8_s(v128.load(x), i16x8.extend_low_i8x16_u(v128.and(v, i8x16.splat(15)))),
    i32x4.dot_i16x8_s(v128.load(x + 8), i16x8.extend_low_i8x16_u(hiNibbles(v))),
  );
}

/** int32 sum of one row's x against the key at kp (all dk channels). */
@inline function dotKey(x: usize, kp: usize, dkU: usize): v128 {
  let acc = i32x4.splat(0);
  let c: usize = 0;
  for (; c + 32 <= dkU; c += 32) acc = i32x4.add(acc, dotCodes32(x + (c << 1), v128.load(kp + (c >> 1))));
  if (c + 16 <= dkU) {
    acc = i32x4.add(acc, dotCodes16(x + (c << 1), v128.load64_zero(kp + (c >> 1))));
    c += 16;
  }
  if (c < dkU) acc = i32x4.add(acc, dotCodes8(x + (c << 1), v128.load32_zero(kp + (c >> 1))));
  return acc;
}

/** Sealed keys, four query rows (q0..q3, scores rows s0..s3; repeats allowed). */
function scoresSealed4(
  k0: usize, tb: usize, len: i32, pMin: usize, dkU: usize,
  q0: usize, q1: usize, q2: usize, q3: usize, s0: usize, s1: usize, s2: usize, s3: usize, scratch: usize,
): void {
  const pScale = pMin + (dkU << 1);
  // Pass 1: bias_g = sum q min and the largest |q scale| of each row.
  let b0 = f32x4.splat(0), b1 = f32x4.splat(0), b2 = f32x4.splat(0), b3 = f32x4.splat(0);
  let m0 = f32x4.splat(0), m1 = f32x4.splat(0), m2 = f32x4.splat(0), m3 = f32x4.splat(0);
  for (let c: usize = 0; c < dkU; c += 8) {
    const mh = v128.load(pMin + (c << 1));
    const sh = v128.load(pScale + (c << 1));
    const mnL = f16sToF32(i32x4.extend_low_i16x8_s(mh));
    const mnH = f16sToF32(i32x4.extend_high_i16x8_s(mh));
    const scL = f16uToF32(i32x4.extend_low_i16x8_u(sh));
    const scH = f16uToF32(i32x4.extend_high_i16x8_u(sh));
    const o = c << 2;
    let x = v128.load(q0 + o), y = v128.load(q0 + o + 16);
    b0 = f32x4.add(b0, f32x4.add(f32x4.mul(x, mnL), f32x4.mul(y, mnH)));
    m0 = i32x4.max_s(m0, i32x4.max_s(f32x4.abs(f32x4.mul(x, scL)), f32x4.abs(f32x4.mul(y, scH))));
    x = v128.load(q1 + o); y = v128.load(q1 + o + 16);
    b1 = f32x4.add(b1, f32x4.add(f32x4.mul(x, mnL), f32x4.mul(y, mnH)));
    m1 = i32x4.max_s(m1, i32x4.max_s(f32x4.abs(f32x4.mul(x, scL)), f32x4.abs(f32x4.mul(y, scH))));
    x = v128.load(q2 + o); y = v128.load(q2 + o + 16);
    b2 = f32x4.add(b2, f32x4.add(f32x4.mul(x, mnL), f32x4.mul(y, mnH)));
    m2 = i32x4.max_s(m2, i32x4.max_s(f32x4.abs(f32x4.mul(x, scL)), f32x4.abs(f32x4.mul(y, scH))));
    x = v128.load(q3 + o); y = v128.load(q3 + o + 16);
    b3 = f32x4.add(b3, f32x4.add(f32x4.mul(x, mnL), f32x4.mul(y, mnH)));
    m3 = i32x4.max_s(m3, i32x4.max_s(f32x4.abs(f32x4.mul(x, scL)), f32x4.abs(f32x4.mul(y, scH))));
  }
  const bias = hsum4(b0, b1, b2, b3);
  const mx = hmax4(m0, m1, m2, m3);
  const inv = invStep(mx);
  const step = f32x4.div(mx, f32x4.splat(Q_ONE));
  const inv0 = v128.shuffle<f32>(inv, inv, 0, 0, 0, 0);
  const inv1 = v128.shuffle<f32>(inv, inv, 1, 1, 1, 1);
  const inv2 = v128.shuffle<f32>(inv, inv, 2, 2, 2, 2);
  const inv3 = v128.shuffle<f32>(inv, inv, 3, 3, 3, 3);
  // Pass 2: the int16 rows, in the scratch.
  const x0 = scratch;
  const x1 = x0 + (dkU << 1);
  const x2 = x1 + (dkU << 1);
  const x3 = x2 + (dkU << 1);
  let c: usize = 0;
  for (; c + 16 <= dkU; c += 16) {
    const sh0 = v128.load(pScale + (c << 1));
    const sh1 = v128.load(pScale + (c << 1) + 16);
    const sa = f16uToF32(i32x4.extend_low_i16x8_u(sh0));
    const sb = f16uToF32(i32x4.extend_high_i16x8_u(sh0));
    const sc = f16uToF32(i32x4.extend_low_i16x8_u(sh1));
    const sd = f16uToF32(i32x4.extend_high_i16x8_u(sh1));
    storeQs16(q0, sa, sb, sc, sd, inv0, x0, c);
    storeQs16(q1, sa, sb, sc, sd, inv1, x1, c);
    storeQs16(q2, sa, sb, sc, sd, inv2, x2, c);
    storeQs16(q3, sa, sb, sc, sd, inv3, x3, c);
  }
  if (c < dkU) {
    const sh0 = v128.load(pScale + (c << 1));
    const sa = f16uToF32(i32x4.extend_low_i16x8_u(sh0));
    const sb = f16uToF32(i32x4.extend_high_i16x8_u(sh0));
    storeQs8(q0, sa, sb, inv0, x0, c);
    storeQs8(q1, sa, sb, inv1, x1, c);
    storeQs8(q2, sa, sb, inv2, x2, c);
    storeQs8(q3, sa, sb, inv3, x3, c);
  }
  // Tokens: each key's nibbles are loaded and unpacked once for the four rows.
  for (let t = 0; t < len; t++) {
    const kp = k0 + <usize>t * tb;
    let a0 = i32x4.splat(0), a1 = i32x4.splat(0), a2 = i32x4.splat(0), a3 = i32x4.splat(0);
    let c: usize = 0;
    for (; c + 32 <= dkU; c += 32) {
      const v = v128.load(kp + (c >> 1));
      const lo = v128.and(v, i8x16.splat(15));
      const hi = hiNibbles(v);
      const lo0 = i16x8.extend_low_i8x16_u(lo);
      const hi0 = i16x8.extend_low_i8x16_u(hi);
      const lo1 = i16x8.extend_high_i8x16_u(lo);
      const hi1 = i16x8.extend_high_i8x16_u(hi);
      const o = c << 1;
      a0 = i32x4.add(a0, i32x4.add(
        i32x4.add(i32x4.dot_i16x8_s(v128.load(x0 + o), lo0), i32x4.dot_i16x8_s(v128.load(x0 + o + 16), hi0)),
        i32x4.add(i32x4.dot_i16x8_s(v128.load(x0 + o + 32), lo1), i32x4.dot_i16x8_s(v128.load(x0 + o + 48), hi1))));
      a1 = i32x4.add(a1, i32x4.add(
        i32x4.add(i32x4.dot_i16x8_s(v128.load(x1 + o), lo0), i32x4.dot_i16x8_s(v128.load(x1 + o + 16), hi0)),
        i32x4.add(i32x4.dot_i16x8_s(v128.load(x1 + o + 32), lo1), i32x4.dot_i16x8_s(v128.load(x1 + o + 48), hi1))));
      a2 = i32x4.add(a2, i32x4.add(
        i32x4.add(i32x4.dot_i16x8_s(v128.load(x2 + o), lo0), i32x4.dot_i16x8_s(v128.load(x2 + o + 16), hi0)),
        i32x4.add(i32x4.dot_i16x8_s(v128.load(x2 + o + 32), lo1), i32x4.dot_i16x8_s(v128.load(x2 + o + 48), hi1))));
      a3 = i32x4.add(a3, i32x4.add(
        i32x4.add(i32x4.dot_i16x8_s(v128.load(x3 + o), lo0), i32x4.dot_i16x8_s(v128.load(x3 + o + 16), hi0)),
        i32x4.add(i32x4.dot_i16x8_s(v128.load(x3 + o + 32), lo1), i32x4.dot_i16x8_s(v128.load(x3 + o + 48), hi1))));
    }
    if (c + 16 <= dkU) {
      const v = v128.load64_zero(kp + (c >> 1));
      const o = c << 1;
      a0 = i32x4.add(a0, dotCodes16(x0 + o, v));
      a1 = i32x4.add(a1, dotCodes16(x1 + o, v));
      a2 = i32x4.add(a2, dotCodes16(x2 + o, v));
      a3 = i32x4.add(a3, dotCodes16(x3 + o, v));
      c += 16;
    }
    if (c < dkU) {
      const v = v128.load32_zero(kp + (c >> 1));
      const o = c << 1;
      a0 = i32x4.add(a0, dotCodes8(x0 + o, v));
      a1 = i32x4.add(a1, dotCodes8(x1 + o, v));
      a2 = i32x4.add(a2, dotCodes8(x2 + o, v));
      a3 = i32x4.add(a3, dotCodes8(x3 + o, v));
    }
    const s = f32x4.add(bias, f32x4.mul(step, f32x4.convert_i32x4_s(hsum4i(a0, a1, a2, a3))));
    const tb4 = <usize>t << 2;
    store<f32>(s0 + tb4, f32x4.extract_lane(s, 0));
    store<f32>(s1 + tb4, f32x4.extract_lane(s, 1));
    store<f32>(s2 + tb4, f32x4.extract_lane(s, 2));
    store<f32>(s3 + tb4, f32x4.extract_lane(s, 3));
  }
}

/** Sealed keys, one query row. */
function scoresSealed1(k0: usize, tb: usize, len: i32, pMin: usize, dkU: usize, q0: usize, s0: usize, scratch: usize): void {
  const pScale = pMin + (dkU << 1);
  let b0 = f32x4.splat(0);
  let m0 = f32x4.splat(0);
  for (let c: usize = 0; c < dkU; c += 8) {
    const mh = v128.load(pMin + (c << 1));
    const sh = v128.load(pScale + (c << 1));
    const o = c << 2;
    const x = v128.load(q0 + o), y = v128.load(q0 + o + 16);
    b0 = f32x4.add(b0, f32x4.add(f32x4.mul(x, f16sToF32(i32x4.extend_low_i16x8_s(mh))), f32x4.mul(y, f16sToF32(i32x4.extend_high_i16x8_s(mh)))));
    m0 = i32x4.max_s(m0, i32x4.max_s(
      f32x4.abs(f32x4.mul(x, f16uToF32(i32x4.extend_low_i16x8_u(sh)))),
      f32x4.abs(f32x4.mul(y, f16uToF32(i32x4.extend_high_i16x8_u(sh))))));
  }
  const bias = hsum(b0);
  const mx = max(max(f32x4.extract_lane(m0, 0), f32x4.extract_lane(m0, 1)), max(f32x4.extract_lane(m0, 2), f32x4.extract_lane(m0, 3)));
  const inv = f32x4.splat(mx > 0 ? Q_ONE / mx : 0);
  const step = mx / Q_ONE;
  let c: usize = 0;
  for (; c + 16 <= dkU; c += 16) {
    const sh0 = v128.load(pScale + (c << 1));
    const sh1 = v128.load(pScale + (c << 1) + 16);
    storeQs16(
      q0, f16uToF32(i32x4.extend_low_i16x8_u(sh0)), f16uToF32(i32x4.extend_high_i16x8_u(sh0)),
      f16uToF32(i32x4.extend_low_i16x8_u(sh1)), f16uToF32(i32x4.extend_high_i16x8_u(sh1)), inv, scratch, c,
    );
  }
  if (c < dkU) {
    const sh0 = v128.load(pScale + (c << 1));
    storeQs8(q0, f16uToF32(i32x4.extend_low_i16x8_u(sh0)), f16uToF32(i32x4.extend_high_i16x8_u(sh0)), inv, scratch, c);
  }
  for (let t = 0; t < len; t++) {
    const acc = dotKey(scratch, k0 + <usize>t * tb, dkU);
    store<f32>(s0 + (<usize>t << 2), bias + step * <f32>hsumi(acc));
  }
}

// -------------------------------------------------------------------------------------------------
// Values

/**
 * out[(kv*G + g)*dv + c] += sum_t w[(kv*G + g)*W + idx + t] * value(page, slot + t, kv)[c] for the
 * runs r0 .. r1 (retained tokens below nVis only).
 */
export function valuesInt4(
  desc: usize, rt: usize, cap: i32, r0: i32, r1: i32, nVis: i32, nHeadKv: i32,
  w: usize, G: i32, W: i32, out: usize, dv: i32,
): void {
  const nib = <usize>load<i32>(desc + DESC_DATA);
  const params = <usize>load<i32>(desc + DESC_SCALES);
  const ts = <usize>load<i32>(desc + DESC_TOKEN_STRIDE);
  const ps = <usize>load<i32>(desc + DESC_PAGE_STRIDE);
  const pageSize = load<i32>(desc + DESC_PAGE_SIZE);
  const residual = <usize>load<i32>(desc + DESC_RESIDUAL);
  const resOf = <usize>load<i32>(desc + DESC_RES_OF);
  const scratch = <usize>load<i32>(desc + DESC_SCRATCH);
  const dvU = <usize>dv;
  const rowBytes = dvU << 2;
  const wBytes = <usize>W << 2;
  const tb = ts >> 1;
  const pStride = <usize>nHeadKv << 2; // bytes between one head's (min, scale) of consecutive slots
  // Tokens per int16 block: the scratch holds 4 rows x pageSize (rounded up to 4) int16 weights.
  const block = min(pageSize, VALUE_BLOCK);
  for (let r = r0; r < r1; r++) {
    const idx = runIndex(rt, cap, r);
    if (idx >= nVis) break;
    let len = runLength(rt, cap, r);
    if (len > nVis - idx) len = nVis - idx;
    const page = <usize>runPage(rt, cap, r);
    const slot = <usize>runSlot(rt, cap, r);
    const res = load<i32>(resOf + (page << 2));
    for (let kv = 0; kv < nHeadKv; kv++) {
      const wkv = w + <usize>(kv * G) * wBytes + (<usize>idx << 2);
      const okv = out + <usize>(kv * G) * rowBytes;
      if (res >= 0) {
        const v0 = residual + ((<usize>res * ps + slot * ts + <usize>kv * dvU) << 2);
        valuesOpen(v0, ts << 2, len, wkv, wBytes, G, okv, rowBytes, dvU);
        continue;
      }
      for (let t0 = 0; t0 < len; t0 += block) {
        const nb = min(block, len - t0);
        const v0 = nib + (page * <usize>pageSize + slot + <usize>t0) * tb + <usize>kv * (dvU >> 1);
        const p0 = params + ((page * <usize>pageSize + slot + <usize>t0) * <usize>nHeadKv + <usize>kv << 2);
        const wb = wkv + (<usize>t0 << 2);
        let g = 0;
        // Rows in fours (a block of three repeats its last row: every output is loaded before
        // any is stored, so the repeat stores the same sum), pairs and single rows one at a time.
        for (; g + 2 < G; g += 4) {
          const g1 = min(g + 1, G - 1);
          const g2 = min(g + 2, G - 1);
          const g3 = min(g + 3, G - 1);
          valuesSealed4(
            v0, tb, p0, pStride, nb,
            wb + <usize>g * wBytes, wb + <usize>g1 * wBytes, wb + <usize>g2 * wBytes, wb + <usize>g3 * wBytes,
            okv + <usize>g * rowBytes, okv + <usize>g1 * rowBytes, okv + <usize>g2 * rowBytes, okv + <usize>g3 * rowBytes,
            dvU, scratch,
          );
        }
        for (; g < G; g++) valuesSealed1(v0, tb, p0, pStride, nb, wb + <usize>g * wBytes, okv + <usize>g * rowBytes, dvU, scratch);
      }
    }
  }
}

/** Open page: f32 values at v0 (token stride vStride bytes), as codecs.as's f32 kernel. */
function valuesOpen(v0: usize, vStride: usize, len: i32, wkv: usize, wBytes: usize, G: i32, okv: usize, rowBytes: usize, dvU: usize): void {
  for (let g = 0; g < G; g++) {
    const w0 = wkv + <usize>g * wBytes;
    for (let o: usize = 0; o < rowBytes; o += 32) {
      const o0 = okv + <usize>g * rowBytes + o;
      let a0 = v128.load(o0), b0 = v128.load(o0 + 16);
      for (let t = 0; t < len; t++) {
        const e = v0 + <usize>t * vStride + o;
        const x0 = v128.load32_splat(w0 + (<usize>t << 2));
        a0 = f32x4.add(a0, f32x4.mul(x0, v128.load(e)));
        b0 = f32x4.add(b0, f32x4.mul(x0, v128.load(e + 16)));
      }
      v128.store(o0, a0);
      v128.store(o0 + 16, b0);
    }
  }
}

/** Params (min, scale: f16 bits) of tokens t .. t+3 of a run as i32 lanes (0 past nb). */
@inline function params4(p0: usize, pStride: usize, t: i32, nb: i32): v128 {
  const p = p0 + <usize>t * pStride;
  if (t + 3 < nb) {
    let v = v128.load32_zero(p);
    v = v128.load32_lane(p + pStride, v, 1);
    v = v128.load32_lane(p + 2 * pStride, v, 2);
    return v128.load32_lane(p + 3 * pStride, v, 3);
  }
  let v = i32x4.splat(0);
  if (t < nb) v = v128.load32_lane(p, v, 0);
  if (t + 1 < nb) v = v128.load32_lane(p + pStride, v, 1);
  if (t + 2 < nb) v = v128.load32_lane(p + 2 * pStride, v, 2);
  return v;
}

/** Weights of tokens t .. t+3 of a row (0 past nb: nothing is read there). */
@inline function weights4(wRow: usize, t: i32, nb: i32): v128 {
  const p = wRow + (<usize>t << 2);
  if (t + 3 < nb) return v128.load(p);
  let v = f32x4.splat(0);
  if (t < nb) v = v128.load32_lane(p, v, 0);
  if (t + 1 < nb) v = v128.load32_lane(p + 4, v, 1);
  if (t + 2 < nb) v = v128.load32_lane(p + 8, v, 2);
  return v;
}

/** Two tokens' nibbles for 8 channels (4 bytes each; `b` = the second token's, zeros when there is
 *  none) as int16 lanes, even channels in `lo`, odd in `hi`, the two tokens of a channel side by
 *  side: a dot_i16x8_s with the pair (a_t, a_t+1) gives the four channels' two-token sums. The byte
 *  interleave is punpcklbw (V8 matches the shuffle pattern), so no shuffle mask is loaded. */
@inline function interleave(a: v128, b: v128): v128 {
  return i8x16.shuffle(a, b, 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
}
@inline function pairCodes(p: usize, tb: usize, one: bool): v128 {
  return interleave(v128.load32_zero(p), one ? i32x4.splat(0) : v128.load32_zero(p + tb));
}

/** out[o .. o+8) += step * (acc lanes interleaved: even channels in lo, odd in hi) + bias. */
@inline function finishOut(o: usize, lo: v128, hi: v128, step: v128, bias: v128, prev0: v128, prev1: v128): void {
  const x = f32x4.convert_i32x4_s(v128.shuffle<i32>(lo, hi, 0, 4, 1, 5));
  const y = f32x4.convert_i32x4_s(v128.shuffle<i32>(lo, hi, 2, 6, 3, 7));
  v128.store(o, f32x4.add(prev0, f32x4.add(bias, f32x4.mul(step, x))));
  v128.store(o + 16, f32x4.add(prev1, f32x4.add(bias, f32x4.mul(step, y))));
}

/** Sealed values, four rows (weights w0..w3, outputs o0..o3; repeats allowed), nb tokens. */
function valuesSealed4(
  v0: usize, tb: usize, p0: usize, pStride: usize, nb: i32,
  w0: usize, w1: usize, w2: usize, w3: usize, o0: usize, o1: usize, o2: usize, o3: usize,
  dvU: usize, scratch: usize,
): void {
  // Pass 1: bias_g = sum_t w_t min_t and the largest |w_t scale_t| of each row.
  let b0 = f32x4.splat(0), b1 = f32x4.splat(0), b2 = f32x4.splat(0), b3 = f32x4.splat(0);
  let m0 = f32x4.splat(0), m1 = f32x4.splat(0), m2 = f32x4.splat(0), m3 = f32x4.splat(0);
  for (let t = 0; t < nb; t += 4) {
    const h = params4(p0, pStride, t, nb);
    const mn = f16sToF32(i32x4.shr_s(i32x4.shl(h, 16), 16));
    const sc = f16uToF32(i32x4.shr_u(h, 16));
    let x = weights4(w0, t, nb);
    b0 = f32x4.add(b0, f32x4.mul(x, mn));
    m0 = i32x4.max_s(m0, f32x4.abs(f32x4.mul(x, sc)));
    x = weights4(w1, t, nb);
    b1 = f32x4.add(b1, f32x4.mul(x, mn));
    m1 = i32x4.max_s(m1, f32x4.abs(f32x4.mul(x, sc)));
    x = weights4(w2, t, nb);
    b2 = f32x4.add(b2, f32x4.mul(x, mn));
    m2 = i32x4.max_s(m2, f32x4.abs(f32x4.mul(x, sc)));
    x = weights4(w3, t, nb);
    b3 = f32x4.add(b3, f32x4.mul(x, mn));
    m3 = i32x4.max_s(m3, f32x4.abs(f32x4.mul(x, sc)));
  }
  const bias = hsum4(b0, b1, b2, b3);
  const mx = hmax4(m0, m1, m2, m3);
  const inv = invStep(mx);
  const step = f32x4.div(mx, f32x4.splat(Q_ONE));
  const inv0 = v128.shuffle<f32>(inv, inv, 0, 0, 0, 0);
  const inv1 = v128.shuffle<f32>(inv, inv, 1, 1, 1, 1);
  const inv2 = v128.shuffle<f32>(inv, inv, 2, 2, 2, 2);
  const inv3 = v128.shuffle<f32>(inv, inv, 3, 3, 3, 3);
  // Pass 2: a_t = w_t scale_t as int16, laid out per token pair: [pair][row][a_t, a_t+1], so that
  // the main loop reads one pair's four rows at fixed offsets (lanes past nb are 0).
  for (let t = 0; t < nb; t += 4) {
    const sc = f16uToF32(i32x4.shr_u(params4(p0, pStride, t, nb), 16));
    const at = scratch + (<usize>t << 3); // pair t/2 at 16 bytes each
    let i = roundI(f32x4.mul(f32x4.mul(weights4(w0, t, nb), sc), inv0));
    let n = i16x8.narrow_i32x4_s(i, i);
    v128.store32_lane(at, n, 0);
    v128.store32_lane(at + 16, n, 1);
    i = roundI(f32x4.mul(f32x4.mul(weights4(w1, t, nb), sc), inv1));
    n = i16x8.narrow_i32x4_s(i, i);
    v128.store32_lane(at + 4, n, 0);
    v128.store32_lane(at + 20, n, 1);
    i = roundI(f32x4.mul(f32x4.mul(weights4(w2, t, nb), sc), inv2));
    n = i16x8.narrow_i32x4_s(i, i);
    v128.store32_lane(at + 8, n, 0);
    v128.store32_lane(at + 24, n, 1);
    i = roundI(f32x4.mul(f32x4.mul(weights4(w3, t, nb), sc), inv3));
    n = i16x8.narrow_i32x4_s(i, i);
    v128.store32_lane(at + 12, n, 0);
    v128.store32_lane(at + 28, n, 1);
  }
  const bias0 = v128.shuffle<f32>(bias, bias, 0, 0, 0, 0);
  const bias1 = v128.shuffle<f32>(bias, bias, 1, 1, 1, 1);
  const bias2 = v128.shuffle<f32>(bias, bias, 2, 2, 2, 2);
  const bias3 = v128.shuffle<f32>(bias, bias, 3, 3, 3, 3);
  const step0 = v128.shuffle<f32>(step, step, 0, 0, 0, 0);
  const step1 = v128.shuffle<f32>(step, step, 1, 1, 1, 1);
  const step2 = v128.shuffle<f32>(step, step, 2, 2, 2, 2);
  const step3 = v128.shuffle<f32>(step, step, 3, 3, 3, 3);
  // Channels in eights (4 bytes per token), tokens in pairs: eight int32 accumulators.
  for (let c: usize = 0; c < dvU; c += 8) {
    const vc = v0 + (c >> 1);
    let l0 = i32x4.splat(0), h0 = i32x4.splat(0), l1 = i32x4.splat(0), h1 = i32x4.splat(0);
    let l2 = i32x4.splat(0), h2 = i32x4.splat(0), l3 = i32x4.splat(0), h3 = i32x4.splat(0);
    let ap = scratch;
    let p = vc;
    const tb2 = tb << 1;
    // (nb + 1) / 2 pairs; the last of an odd nb has no second token and reads zeros for it.
    for (let t = 0; t < nb; t += 2) {
      const v = pairCodes(p, tb, t + 1 >= nb);
      const lo = i16x8.extend_low_i8x16_u(v128.and(v, i8x16.splat(15)));
      const hi = i16x8.extend_low_i8x16_u(hiNibbles(v));
      let x = v128.load32_splat(ap);
      l0 = i32x4.add(l0, i32x4.dot_i16x8_s(lo, x));
      h0 = i32x4.add(h0, i32x4.dot_i16x8_s(hi, x));
      x = v128.load32_splat(ap, 4);
      l1 = i32x4.add(l1, i32x4.dot_i16x8_s(lo, x));
      h1 = i32x4.add(h1, i32x4.dot_i16x8_s(hi, x));
      x = v128.load32_splat(ap, 8);
      l2 = i32x4.add(l2, i32x4.dot_i16x8_s(lo, x));
      h2 = i32x4.add(h2, i32x4.dot_i16x8_s(hi, x));
      x = v128.load32_splat(ap, 12);
      l3 = i32x4.add(l3, i32x4.dot_i16x8_s(lo, x));
      h3 = i32x4.add(h3, i32x4.dot_i16x8_s(hi, x));
      ap += 16;
      p += tb2;
    }
    const oc = c << 2;
    // Every output loaded before any is stored (repeated rows).
    const p00 = v128.load(o0 + oc), p01 = v128.load(o0 + oc + 16);
    const p10 = v128.load(o1 + oc), p11 = v128.load(o1 + oc + 16);
    const p20 = v128.load(o2 + oc), p21 = v128.load(o2 + oc + 16);
    const p30 = v128.load(o3 + oc), p31 = v128.load(o3 + oc + 16);
    finishOut(o0 + oc, l0, h0, step0, bias0, p00, p01);
    finishOut(o1 + oc, l1, h1, step1, bias1, p10, p11);
    finishOut(o2 + oc, l2, h2, step2, bias2, p20, p21);
    finishOut(o3 + oc, l3, h3, step3, bias3, p30, p31);
  }
}

/** Sealed values, one row. */
function valuesSealed1(v0: usize, tb: usize, p0: usize, pStride: usize, nb: i32, w0: usize, o0: usize, dvU: usize, scratch: usize): void {
  let b0 = f32x4.splat(0);
  let m0 = f32x4.splat(0);
  for (let t = 0; t < nb; t += 4) {
    const h = params4(p0, pStride, t, nb);
    const x = weights4(w0, t, nb);
    b0 = f32x4.add(b0, f32x4.mul(x, f16sToF32(i32x4.shr_s(i32x4.shl(h, 16), 16))));
    m0 = i32x4.max_s(m0, f32x4.abs(f32x4.mul(x, f16uToF32(i32x4.shr_u(h, 16)))));
  }
  const bias = f32x4.splat(hsum(b0));
  const mx = max(max(f32x4.extract_lane(m0, 0), f32x4.extract_lane(m0, 1)), max(f32x4.extract_lane(m0, 2), f32x4.extract_lane(m0, 3)));
  const inv = f32x4.splat(mx > 0 ? Q_ONE / mx : 0);
  const step = f32x4.splat(mx / Q_ONE);
  for (let t = 0; t < nb; t += 4) {
    const sc = f16uToF32(i32x4.shr_u(params4(p0, pStride, t, nb), 16));
    const i = roundI(f32x4.mul(f32x4.mul(weights4(w0, t, nb), sc), inv));
    v128.store64_lane(scratch + (<usize>t << 1), i16x8.narrow_i32x4_s(i, i), 0);
  }
  for (let c: usize = 0; c < dvU; c += 8) {
    const vc = v0 + (c >> 1);
    let l0 = i32x4.splat(0), h0 = i32x4.splat(0);
    for (let t = 0; t < nb; t += 2) {
      const v = pairCodes(vc + <usize>t * tb, tb, t + 1 >= nb);
      const x = v128.load32_splat(scratch + (<usize>t << 1));
      l0 = i32x4.add(l0, i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_u(v128.and(v, i8x16.splat(15))), x));
      h0 = i32x4.add(h0, i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_u(hiNibbles(v)), x));
    }
    const oc = o0 + (c << 2);
    finishOut(oc, l0, h0, step, bias, v128.load(oc), v128.load(oc + 16));
  }
}
