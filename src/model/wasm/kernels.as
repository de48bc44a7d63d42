// AssemblyScript source of kvbound's WebAssembly SIMD matmul kernels (compiled by build.mjs into
// kernels-wasm.ts; the extension is .as so that tsc does not read it as TypeScript).
// Memory is managed by the JS side (wasm-kernels.ts): every argument is a byte offset into this
// module's linear memory; nothing here allocates. The JS kernels in ../kernels/ are the references
// these are held to (src/model/wasm/wasm-kernels.test.ts).
//
// Layouts:
//   f32 matrix      [rows][cols] f32
//   q8 matrix       qs i8 + d f16 per 32 values (GGUF block_q8_0 repacked: 34 B per 32 values like
//                   the file, the int8 values 16-byte aligned; Q4_0, Q5_0 and IQ4_NL decode exactly
//                   into it: d * (q - 8), d * (q - 16), d * kvalues_iq4nl[q]), or f32 scales instead
//                   (IQ4_XS's d * (ls - 32) * kvalues_iq4nl[q] needs them). Rows in groups of 4 (the
//                   matrix's last group: rows % 4), each group block-interleaved: block b of the
//                   group's row j is block 4*g*nb + b*k + j (k the group's rows) of qs (32 B each)
//                   and of d alike (linear.ts q8BlockIndex). A 4-row pass of matvecQ8 then reads
//                   one stream of weights and one of scales: four row streams and four scale streams
//                   read 30-35% slower from memory on the bench machine (the hardware prefetcher).
//   q8g16 matrix    qs i8 + d f32 per 16 values (Q6_K, Q3_K: d * scale per 16 values; Q2_K also an
//                   offset c f32 per 16, -dmin * min), in the q8 matrix's groups of 4 rows: a
//                   block's two scales (and offsets) side by side at its block index
//   q4k matrix      nibbles [rows][cols/2] as in the file + a, c [rows][cols/32] f32 (a*q + c)
//   q8 activations  the same as one q8 row: qs [cols] i8 + d [cols/32] f32; Q8_0 (quantizeQ8) for
//                   Q8_0/Q4_0/Q5_0/IQ4_NL, Q8_K (quantizeQ8K: its per-256 d repeated per 32) for the
//                   K-quants and IQ4_XS (llama.cpp's vec_dot_type of each); widened once per token
//                   to x16 [cols] i16 (widenQ8), which matvecQ8, matmulQ8x16, matvecQ4K and
//                   matvecQ8g16 read: their dots are i32x4.dot_i16x8_s (pmaddwd), the weights
//                   widened by their loads
//
// Integer dots follow llama.cpp's ggml_vec_dot_q8_0_q8_0 (ggml/src/ggml-cpu/arch/x86/quants.c):
// int8 x int8 products summed in int32 within a 32-value block, then scaled by d_w * d_x.

// SwiGLU runs on the matmul pool too, fused into the gate/up job (row-call.ts ROW_KERNELS): one
// source, elementwise.as's, compiled into this module as well.
export { swiglu } from "./elementwise";

/** f32 -> nearest f16 -> f32 (ties to even, subnormals and overflow included): the rounding of
 *  GGML_FP32_TO_FP16, which llama.cpp applies to every q8_0 block scale.
 *  Build: `npm run build:wasm` (node src/wasm/build.mjs); never edit kernels-wasm.ts. */
function roundToF16(f: f32): f32 {
  const bits = reinterpret<u32>(f);
  const sign = bits & 0x80000000;
  const a = bits & 0x7fffffff;
  if (a >= 0x7f800000) return f; // inf / nan
  if (a >= 0x477ff000) return reinterpret<f32>(sign | 0x7f800000); // rounds past 65504
  if (a < 0x38800000) {
    // f16 subnormal range: a multiple of 2^-24; adding and removing 2^-10 * 2^... rounds by the FPU.
    const m: f32 = reinterpret<f32>(a);
    const scaled: f32 = nearest<f32>(m * 16777216.0) / 16777216.0;
    return reinterpret<f32>(sign | reinterpret<u32>(scaled));
  }
  // Keep 10 mantissa bits, round to nearest even on the 13 dropped ones.
  const lsb = (a >> 13) & 1;
  const r = (a + 0x0fff + lsb) & 0xffffe000;
  return reinterpret<f32>(sign | r);
}

/** Quantizes n f32 values (n % 32 == 0) at x into q8 activations: qs[n] i8 at qx, d[n/32] f32 at dx.
 *  d = fp16(amax / 127), q = nearest(x * 127 / amax) (llama.cpp's AVX2 quantize_row_q8_0). */
export function quantizeQ8(x: usize, n: i32, qx: usize, dx: usize): void {
  quantizeBlocks(x, n, qx, dx, false);
}

/** Quantizes n f32 values (n % 256 == 0) at x into llama.cpp's Q8_K activations, the vec_dot_type of
 *  the K-quants (ggml/src/ggml-cpu/ggml-cpu.c type_traits_cpu): per 256 values, `max` is the first
 *  value of largest |x| (signed), iscale = -127/max, q = min(127, nearest_even(iscale * x)), d =
 *  1/iscale in f32 (no f16 rounding); amax 0 gives d = 0, q = 0. That is ggml-quants.c
 *  quantize_row_q8_K_ref, which x86's quantize_row_q8_K calls (ggml-cpu/arch/x86/quants.c); the
 *  AVX2 ggml_quantize_mat_q8_K_4x8 of repacked Q4_K batches (arch/x86/repack.cpp) gives the same
 *  d * q (on a +-amax tie it may flip both signs). d goes to dx once per 32 values (8 copies), so
 *  the result is a q8 activation row that the Q8_0-shaped kernels read unchanged. */
export function quantizeQ8K(x: usize, n: i32, qx: usize, dx: usize): void {
  quantizeBlocks(x, n, qx, dx, true);
}

/** Both quantizers in one body (one copy keeps the module small): blocks of 32 (Q8_0) or 256 (Q8_K)
 *  values; the scale differs, the rounding is the same. */
function quantizeBlocks(x: usize, n: i32, qx: usize, dx: usize, k: bool): void {
  const shift = k ? 8 : 5;
  const len = 1 << shift;
  const nb = n >> shift;
  const magic = f32x4.splat(12582912.0); // 1.5 * 2^23: adding it rounds |v| < 2^22 to an integer, ties to even
  for (let b = 0; b < nb; b++) {
    const xb = x + (<usize>(b << shift) << 2);
    // |x| by pmax, NaNs aside: Q8_K's pmax skips a NaN as ggml's `fabsf(x) > amax` does (nearest_int
    // then makes it 0, as trunc_sat does below); Q8_0's amax becomes NaN, as f32x4.max and AVX2's
    // _mm256_max_ps(maxAbs, abs) keep it.
    let m = f32x4.splat(0);
    let nan = v128.splat<i32>(0);
    for (let j = 0; j < len; j += 4) {
      const v = v128.load(xb + (<usize>j << 2));
      m = f32x4.pmax(m, f32x4.abs(v));
      nan = v128.or(nan, f32x4.ne(v, v));
    }
    let amax = max(max(f32x4.extract_lane(m, 0), f32x4.extract_lane(m, 1)), max(f32x4.extract_lane(m, 2), f32x4.extract_lane(m, 3)));
    const hasNaN = v128.any_true(nan);
    if (!k && hasNaN) amax = NaN;
    let id: f32;
    if (k) {
      // The sign of the first value reaching amax: ggml's strict `>` scan keeps the first.
      let mx: f32 = 0;
      for (let j = 0; j < 256; j++) {
        const v = load<f32>(xb + (<usize>j << 2));
        if (abs(v) == amax) {
          mx = v;
          break;
        }
      }
      id = amax != 0 ? <f32>-127.0 / mx : 0;
      const vd = f32x4.splat(amax != 0 ? <f32>1.0 / id : 0);
      const db = dx + (<usize>b << 5);
      v128.store(db, vd);
      v128.store(db + 16, vd);
    } else {
      id = amax != 0 ? <f32>127.0 / amax : 0;
      store<f32>(dx + (<usize>b << 2), roundToF16(amax / <f32>127.0));
    }
    // The saturating narrows are ggml's MIN(127, v) for Q8_K; nothing reaches -129 (|id * x| <= ~127).
    const vid = f32x4.splat(id);
    const qb = qx + <usize>(b << shift);
    // Each product rounded by adding `magic` (nearest, ties to even, as f32x4.nearest) and read back
    // from the float's low bits; +-inf (a tiny amax's infinite id) saturate in the narrows as
    // trunc_sat's would, and NaN products (a NaN value, inf * 0) become 0, as in ggml.
    const mb = v128.splat<i32>(0x4b400000);
    for (let j = 0; j < len; j += 16) {
      const p = xb + (<usize>j << 2);
      const v0 = f32x4.mul(v128.load(p), vid), v1 = f32x4.mul(v128.load(p + 16), vid);
      const v2 = f32x4.mul(v128.load(p + 32), vid), v3 = f32x4.mul(v128.load(p + 48), vid);
      const i0 = v128.and(i32x4.sub(f32x4.add(v0, magic), mb), f32x4.eq(v0, v0));
      const i1 = v128.and(i32x4.sub(f32x4.add(v1, magic), mb), f32x4.eq(v1, v1));
      const i2 = v128.and(i32x4.sub(f32x4.add(v2, magic), mb), f32x4.eq(v2, v2));
      const i3 = v128.and(i32x4.sub(f32x4.add(v3, magic), mb), f32x4.eq(v3, v3));
      v128.store(qb + <usize>j, i8x16.narrow_i16x8_s(i16x8.narrow_i32x4_s(i0, i1), i16x8.narrow_i32x4_s(i2, i3)));
    }
  }
}

/** The 4 int32 lanes of the dot of 32 int8 weights at w with 32 int16 activations x0..x3 (widenQ8):
 *  each weight byte sign-extended by its load (i16x8.load8x8_s), products summed in pairs by
 *  i32x4.dot_i16x8_s (|w x| <= 128 * 127: no overflow anywhere). */
@inline function dot32(w: usize, x0: v128, x1: v128, x2: v128, x3: v128): v128 {
  return i32x4.add(
    i32x4.add(i32x4.dot_i16x8_s(v128.load8x8_s(w), x0), i32x4.dot_i16x8_s(v128.load8x8_s(w + 8), x1)),
    i32x4.add(i32x4.dot_i16x8_s(v128.load8x8_s(w + 16), x2), i32x4.dot_i16x8_s(v128.load8x8_s(w + 24), x3)),
  );
}

/** [sum of s0's lanes, s1's, s2's, s3's]: four int32 dot products' totals in one vector. */
@inline function laneSums(s0: v128, s1: v128, s2: v128, s3: v128): v128 {
  const a01 = i32x4.add(v128.shuffle<i32>(s0, s1, 0, 4, 1, 5), v128.shuffle<i32>(s0, s1, 2, 6, 3, 7));
  const a23 = i32x4.add(v128.shuffle<i32>(s2, s3, 0, 4, 1, 5), v128.shuffle<i32>(s2, s3, 2, 6, 3, 7));
  return i32x4.add(v128.shuffle<i32>(a01, a23, 0, 1, 4, 5), v128.shuffle<i32>(a01, a23, 2, 3, 6, 7));
}

/** Four finite f16 bit patterns (u16 in i32 lanes) as their exact f32: the exponent and mantissa
 *  moved into an f32's places (exponent bias 15, not 127: the value times 2^-112; a subnormal lands
 *  on an f32 subnormal), times 2^112, which is exact for both, then the sign back on top. Exponent
 *  31 (inf, NaN) is not read right: fillWasmRows refuses such scales (TensorDataError). */
@inline function f16x4(h: v128): v128 {
  const m = f32x4.mul(i32x4.shl(v128.and(h, i32x4.splat(0x7fff)), 13), f32x4.splat(5.192296858534828e33));
  return v128.or(m, i32x4.shl(v128.and(h, i32x4.splat(0x8000)), 16));
}

/** The 4 rows' scales of one block of a q8 group at d (f16: f16 bits, else f32): k < 4 rows (the
 *  matrix's last group) repeat the last one. */
@inline function groupScales(d: usize, k: i32, f16: bool): v128 {
  if (f16) {
    if (k == 4) return f16x4(v128.load16x4_u(d));
    let h = i32x4.splat(<i32>load<u16>(d));
    if (k > 1) h = i32x4.replace_lane(h, 1, <i32>load<u16>(d + 2));
    if (k > 2) h = i32x4.replace_lane(h, 2, <i32>load<u16>(d + 4));
    return f16x4(h);
  }
  if (k == 4) return v128.load(d);
  let s = f32x4.splat(load<f32>(d));
  if (k > 1) s = f32x4.replace_lane(s, 1, load<f32>(d + 4));
  if (k > 2) s = f32x4.replace_lane(s, 2, load<f32>(d + 8));
  return s;
}

/** Lanes 0 .. k-1 of acc to out (a last group of k < 4 rows). */
@inline function storeRows(out: usize, acc: v128, k: i32): void {
  store<f32>(out, f32x4.extract_lane(acc, 0));
  if (k > 1) store<f32>(out + 4, f32x4.extract_lane(acc, 1));
  if (k > 2) store<f32>(out + 8, f32x4.extract_lane(acc, 2));
}

/** One q8 group of k rows (its blocks at w, its scales at d) times one token's activations: the k
 *  row totals in one vector, lanes past k repeating row k - 1. Inlined with k and f16 constant for
 *  the hot case, whole groups of f16 scales (the offsets fold into the loads; no branch in the loop);
 *  groupDotAny serves the rest. */
@inline function groupDot(w: usize, d: usize, nb: i32, x16: usize, dx: usize, k: i32, f16: bool): v128 {
  const o1 = <usize>min(1, k - 1) << 5, o2 = <usize>min(2, k - 1) << 5, o3 = <usize>min(3, k - 1) << 5;
  const wStep = <usize>k << 5, dStep = <usize>k << (f16 ? 1 : 2);
  let acc = f32x4.splat(0);
  for (let b = 0; b < nb; b++) {
    const xp = x16 + (<usize>b << 6);
    const x0 = v128.load(xp), x1 = v128.load(xp + 16), x2 = v128.load(xp + 32), x3 = v128.load(xp + 48);
    const t = laneSums(dot32(w, x0, x1, x2, x3), dot32(w + o1, x0, x1, x2, x3), dot32(w + o2, x0, x1, x2, x3), dot32(w + o3, x0, x1, x2, x3));
    acc = f32x4.add(acc, f32x4.mul(f32x4.convert_i32x4_s(t), f32x4.mul(groupScales(d, k, f16), v128.load32_splat(dx + (<usize>b << 2)))));
    w += wStep;
    d += dStep;
  }
  return acc;
}

/** groupDot with k and f16 at run time (one copy: the module stays small). */
function groupDotAny(w: usize, d: usize, nb: i32, x16: usize, dx: usize, k: i32, f16: bool): v128 {
  return groupDot(w, d, nb, x16, dx, k, f16);
}

/** out[r] = sum_b d_w[r][b] * d_x[b] * sum_j qs_w[r][32b+j] * x16[32b+j], for r < rows: a q8 matrix
 *  (its groups of 4 rows, f16 scales when f16 != 0, else f32) times one token's q8 activations
 *  widened to int16 (widenQ8: x16 [cols] i16, dx [cols/32] f32). A group's four rows share the
 *  activation loads; their four block sums become one vector, scaled by one multiply-add. */
export function matvecQ8(out: usize, wq: usize, wd: usize, rows: i32, cols: i32, x16: usize, dx: usize, f16: i32): void {
  const nb = cols >> 5;
  const dGroup = <usize>nb << (f16 != 0 ? 3 : 4); // a whole group's scale bytes
  let r = 0;
  for (; r + 4 <= rows; r += 4) {
    const w = wq + ((<usize>r * <usize>nb) << 5), d = wd + (<usize>r >> 2) * dGroup;
    v128.store(out + (<usize>r << 2), f16 != 0 ? groupDot(w, d, nb, x16, dx, 4, true) : groupDotAny(w, d, nb, x16, dx, 4, false));
  }
  if (r < rows) {
    const k = rows - r;
    const acc = groupDotAny(wq + ((<usize>r * <usize>nb) << 5), wd + (<usize>r >> 2) * dGroup, nb, x16, dx, k, f16 != 0);
    storeRows(out + (<usize>r << 2), acc, k);
  }
}

/** f32 matrix [rows][cols] times nTok f32 vectors (x [nTok][xStride]): out[t * outStride + r].
 *  cols need not be a multiple of 4 (a scalar tail). nTok = 1 is the plain matvec. */
export function matmulF32(out: usize, outStride: i32, w: usize, rows: i32, cols: i32, x: usize, xStride: i32, nTok: i32): void {
  const c4 = cols & ~3;
  const rowBytes = <usize>cols << 2;
  const xBytes = <usize>xStride << 2;
  const TILE = 8;
  for (let t0 = 0; t0 < nTok; t0 += TILE) {
    const tEnd = min(nTok, t0 + TILE);
    let r = 0;
    for (; r + 1 < rows; r += 2) {
      const wa = w + <usize>r * rowBytes;
      const wb = wa + rowBytes;
      for (let t = t0; t < tEnd; t++) {
        const xp = x + <usize>t * xBytes;
        let a0 = f32x4.splat(0);
        let a1 = f32x4.splat(0);
        let i = 0;
        for (; i < c4; i += 4) {
          const o = <usize>i << 2;
          const xv = v128.load(xp + o);
          a0 = f32x4.add(a0, f32x4.mul(v128.load(wa + o), xv));
          a1 = f32x4.add(a1, f32x4.mul(v128.load(wb + o), xv));
        }
        let s0 = f32x4.extract_lane(a0, 0) + f32x4.extract_lane(a0, 1) + f32x4.extract_lane(a0, 2) + f32x4.extract_lane(a0, 3);
        let s1 = f32x4.extract_lane(a1, 0) + f32x4.extract_lane(a1, 1) + f32x4.extract_lane(a1, 2) + f32x4.extract_lane(a1, 3);
        for (; i < cols; i++) {
          const xv = load<f32>(xp + (<usize>i << 2));
          s0 += load<f32>(wa + (<usize>i << 2)) * xv;
          s1 += load<f32>(wb + (<usize>i << 2)) * xv;
        }
        store<f32>(out + ((<usize>t * <usize>outStride + <usize>r) << 2), s0);
        store<f32>(out + ((<usize>t * <usize>outStride + <usize>r + 1) << 2), s1);
      }
    }
    for (; r < rows; r++) {
      const wa = w + <usize>r * rowBytes;
      for (let t = t0; t < tEnd; t++) {
        const xp = x + <usize>t * xBytes;
        let a0 = f32x4.splat(0);
        let i = 0;
        for (; i < c4; i += 4) {
          const o = <usize>i << 2;
          a0 = f32x4.add(a0, f32x4.mul(v128.load(wa + o), v128.load(xp + o)));
        }
        let s0 = f32x4.extract_lane(a0, 0) + f32x4.extract_lane(a0, 1) + f32x4.extract_lane(a0, 2) + f32x4.extract_lane(a0, 3);
        for (; i < cols; i++) s0 += load<f32>(wa + (<usize>i << 2)) * load<f32>(xp + (<usize>i << 2));
        store<f32>(out + ((<usize>t * <usize>outStride + <usize>r) << 2), s0);
      }
    }
  }
}

/** Prepares q8 activations of nTok rows (qx [nTok][cols] i8, dx [nTok][cols/32]) for the int16 dots
 *  (matvecQ8 and matvecQ4K read one token's x16 row, matmulQ8x16 4 tokens and dxT):
 *  x16 [nTok4][cols] i16 (widened once, not once per weight row) and dxT [nTok4/4][cols/32][4] f32
 *  (the scales of 4 tokens side by side), where nTok4 rounds nTok up to 4 and the padding tokens
 *  get zero values and scales. */
export function widenQ8(qx: usize, dx: usize, nTok: i32, cols: i32, x16: usize, dxT: usize): void {
  const nb = cols >> 5;
  const nTok4 = (nTok + 3) & ~3;
  for (let t = 0; t < nTok4; t++) {
    const dst = x16 + ((<usize>t * <usize>cols) << 1);
    const tile = dxT + (<usize>(t >> 2) * <usize>nb << 4) + (<usize>(t & 3) << 2);
    if (t < nTok) {
      const src = qx + <usize>t * <usize>cols;
      for (let i = 0; i < cols; i += 16) {
        const v = v128.load(src + <usize>i);
        v128.store(dst + (<usize>i << 1), i16x8.extend_low_i8x16_s(v));
        v128.store(dst + (<usize>i << 1) + 16, i16x8.extend_high_i8x16_s(v));
      }
      const ds = dx + ((<usize>t * <usize>nb) << 2);
      for (let b = 0; b < nb; b++) store<f32>(tile + (<usize>b << 4), load<f32>(ds + (<usize>b << 2)));
    } else {
      memory.fill(dst, 0, <usize>cols << 1);
      for (let b = 0; b < nb; b++) store<f32>(tile + (<usize>b << 4), 0);
    }
  }
}

/** A matmul's input prepared for the int8 kernels, rows (tokens) at a time: `rows` rows of `width`
 *  f32 at x quantized (Q8_0, or Q8_K with k: quantizeQ8, quantizeQ8K) into qx, dx, with k their
 *  per-32 sums (blockSumsQ8) into sx, then widened (widenQ8) into x16, dxT. A range of rows
 *  starting at a multiple of 4 (widenQ8's tiles of 4 tokens) writes what the whole would there, so
 *  the matmul pool splits it by rows (linear.ts quantizeActs). */
export function quantizeRows(x: usize, rows: i32, width: i32, qx: usize, dx: usize, x16: usize, dxT: usize, sx: usize, k: i32): void {
  const n = rows * width;
  quantizeBlocks(x, n, qx, dx, k != 0);
  if (k != 0) blockSumsQ8(qx, dx, n, sx, false);
  widenQ8(qx, dx, rows, width, x16, dxT);
}

/** Repacks a chunk of `rows` rows of a q8 matrix (whole groups of 4 from a group's first row; the
 *  matrix's last group may hold k < 4 rows) for matmulPacked, at dst: per group g and block b, 16
 *  vectors of int16 (256 B at (g * nb + b) * 256), vector p holding the group's 4 rows' values 2p
 *  and 2p+1 ([row 0's pair, row 1's, row 2's, row 3's]; a short group's missing rows 0); then the
 *  scales as f32, [g][sub-block][4] (a short group's lanes past k repeat its last row's): the f16
 *  scale per 32 values widened, or with g16 (a q8g16 matrix: Q6_K, Q3_K, Q2_K) the f32 pair per
 *  block as two sub-blocks of 16; then, with wc (Q2_K), its offsets the same way. A batch reads
 *  them once per chunk instead of sign-extending and widening them again for every 4 tokens. */
export function packQ8(dst: usize, wq: usize, wd: usize, wc: usize, rows: i32, cols: i32, g16: i32): void {
  const nb = cols >> 5;
  const ng = (rows + 3) >> 2;
  const nsub = g16 != 0 ? nb << 1 : nb;
  const sc = dst + ((<usize>ng * <usize>nb) << 8);
  const oc = sc + ((<usize>ng * <usize>nsub) << 4);
  const dStep = g16 != 0 ? 3 : 1; // log2 of a block's scale bytes per row
  const z = i16x8.splat(0);
  for (let g = 0; g < ng; g++) {
    const k = min(4, rows - 4 * g);
    let w = wq + ((<usize>g * <usize>nb) << 7);
    let d = wd + ((<usize>g * <usize>nb) << (dStep + 2)), c = wc + ((<usize>g * <usize>nb) << (dStep + 2));
    for (let b = 0; b < nb; b++) {
      const o = dst + ((<usize>g * <usize>nb + <usize>b) << 8);
      for (let h: usize = 0; h < 32; h += 8) {
        const r0 = v128.load8x8_s(w + h);
        const r1 = k > 1 ? v128.load8x8_s(w + 32 + h) : z, r2 = k > 2 ? v128.load8x8_s(w + 64 + h) : z, r3 = k > 3 ? v128.load8x8_s(w + 96 + h) : z;
        storePairs(o + (h << 3), r0, r1, r2, r3);
      }
      if (g16 != 0) {
        const i = (<usize>g * <usize>nsub + (<usize>b << 1)) << 4;
        storeHalves(sc + i, d, k);
        if (wc != 0) storeHalves(oc + i, c, k);
      } else {
        v128.store(sc + ((<usize>g * <usize>nb + <usize>b) << 4), groupScales(d, k, true));
      }
      w += <usize>k << 5;
      d += <usize>k << dStep;
      c += <usize>k << dStep;
    }
  }
}

/** A q8g16 block's per-16 pairs of a group's k rows at d (scales or offsets): the first halves'
 *  [row 0..3] at o, the second halves' at o + 16. */
@inline function storeHalves(o: usize, d: usize, k: i32): void {
  const p01 = groupPairs(d, 0, k), p23 = groupPairs(d, 2, k);
  v128.store(o, v128.shuffle<i32>(p01, p23, 0, 2, 4, 6));
  v128.store(o + 16, v128.shuffle<i32>(p01, p23, 1, 3, 5, 7));
}

/** packQ8 for Q4_K rows (qs [rows][cols/2] nibbles as in the file: sub-block j is the low nibbles
 *  of the 32 bytes at (j >> 1) * 32 when j is even, their high nibbles when odd; a, c
 *  [rows][cols/32] f32, the value a * q + c): the nibbles as int16 in packQ8's order, then a as
 *  its scales, then c beside them ([g][b][4] f32 each). A short group's missing rows are 0 (a, c
 *  too). matmulPacked adds the offsets c * sx. */
export function packQ4K(dst: usize, wq: usize, wa: usize, wc: usize, rows: i32, cols: i32): void {
  const nb = cols >> 5;
  const ng = (rows + 3) >> 2;
  const sc = dst + ((<usize>ng * <usize>nb) << 8);
  const oc = sc + ((<usize>ng * <usize>nb) << 4);
  const rowBytes = <usize>cols >> 1;
  const m = i16x8.splat(15), z = i16x8.splat(0);
  for (let g = 0; g < ng; g++) {
    const k = min(4, rows - 4 * g);
    const q = wq + <usize>(4 * g) * rowBytes;
    const a = wa + (<usize>(4 * g) * <usize>nb << 2), c = wc + (<usize>(4 * g) * <usize>nb << 2);
    for (let b = 0; b < nb; b++) {
      const o = dst + ((<usize>g * <usize>nb + <usize>b) << 8);
      const hi = (b & 1) != 0;
      const p = q + (<usize>(b >> 1) << 5);
      for (let h: usize = 0; h < 32; h += 8) {
        let r0 = v128.load8x8_u(p + h), r1 = k > 1 ? v128.load8x8_u(p + rowBytes + h) : z;
        let r2 = k > 2 ? v128.load8x8_u(p + 2 * rowBytes + h) : z, r3 = k > 3 ? v128.load8x8_u(p + 3 * rowBytes + h) : z;
        if (hi) {
          r0 = i16x8.shr_u(r0, 4); r1 = i16x8.shr_u(r1, 4); r2 = i16x8.shr_u(r2, 4); r3 = i16x8.shr_u(r3, 4);
        } else {
          r0 = v128.and(r0, m); r1 = v128.and(r1, m); r2 = v128.and(r2, m); r3 = v128.and(r3, m);
        }
        storePairs(o + (h << 3), r0, r1, r2, r3);
      }
      const bo = <usize>b << 2, rs = <usize>nb << 2;
      const i = (<usize>g * <usize>nb + <usize>b) << 4;
      v128.store(sc + i, rowLanes(a + bo, rs, k));
      v128.store(oc + i, rowLanes(c + bo, rs, k));
    }
  }
}

/** [f32 at p, p + s, p + 2s, p + 3s] for a group of k rows s bytes apart; lanes past k are 0. */
@inline function rowLanes(p: usize, s: usize, k: i32): v128 {
  let v = f32x4.splat(load<f32>(p));
  v = f32x4.replace_lane(v, 1, k > 1 ? load<f32>(p + s) : 0);
  v = f32x4.replace_lane(v, 2, k > 2 ? load<f32>(p + 2 * s) : 0);
  return f32x4.replace_lane(v, 3, k > 3 ? load<f32>(p + 3 * s) : 0);
}

/** Four rows' values h..h+7 (r0..r3: 4 pairs each, one per i32 lane) transposed to 4 vectors of
 *  one pair each ([row 0's, row 1's, row 2's, row 3's]), stored at o. */
@inline function storePairs(o: usize, r0: v128, r1: v128, r2: v128, r3: v128): void {
  const a = v128.shuffle<i32>(r0, r1, 0, 4, 1, 5), c = v128.shuffle<i32>(r2, r3, 0, 4, 1, 5);
  const e = v128.shuffle<i32>(r0, r1, 2, 6, 3, 7), f = v128.shuffle<i32>(r2, r3, 2, 6, 3, 7);
  v128.store(o, v128.shuffle<i64>(a, c, 0, 2));
  v128.store(o + 16, v128.shuffle<i64>(a, c, 1, 3));
  v128.store(o + 32, v128.shuffle<i64>(e, f, 0, 2));
  v128.store(o + 48, v128.shuffle<i64>(e, f, 1, 3));
}

/** A group's 4-row vector to out: all 4 lanes, a short group's k, or none (k <= 0). */
@inline function storeGroup(out: usize, acc: v128, k: i32): void {
  if (k >= 4) v128.store(out, acc);
  else if (k > 0) storeRows(out, acc, k);
}

/** A packed chunk (packQ8, packQ4K) of `rows` rows times nTok tokens of widened q8 activations
 *  (widenQ8: x16 [nTok4][cols] i16, dxT [nTok4/4][nb][4]): out[t * outStride + r]. Two groups (8
 *  rows) and 4 tokens a pass: each pair of a token's activations is splat once and dotted
 *  (i32x4.dot_i16x8_s) with both groups' packed vectors, so the lanes are rows and a sub-block's
 *  int32 sums need no transposing; its scaling is one multiply-add per group and token. Sub-blocks
 *  of 32 values, or of 16 with g16 (q8g16 rows). With sx (blockSumsQ8's sums per sub-block,
 *  [nTok][nsub]: Q4_K's, Q2_K's) each sub-block also adds its offsets c * sx. On Q8_0-shaped rows
 *  the sums and their order are matvecQ8's: the same bits as one token at a time. */
export function matmulPacked(out: usize, outStride: i32, pk: usize, rows: i32, cols: i32, x16: usize, dxT: usize, nTok: i32, sx: usize, g16: i32): void {
  const nb = cols >> 5;
  const ng = (rows + 3) >> 2;
  const half = g16 != 0 ? 1 : 0;
  const nsub = nb << half, pairs = 16 >> half; // sub-blocks a row, activation pairs a sub-block
  const gBytes = <usize>nb << 8; // one group's packed values
  const sc = pk + <usize>ng * gBytes;
  const oc = (<usize>ng * <usize>nsub) << 4; // the offsets: this far past the scales
  const xRow = <usize>cols << 1;
  const st = <usize>outStride << 2;
  const ts = <usize>nsub << 2; // a token's row of sx
  for (let t0 = 0; t0 < nTok; t0 += 4) {
    const xt = x16 + <usize>t0 * xRow;
    const dt = dxT + (<usize>(t0 >> 2) * <usize>nb << 4);
    const nHere = min(4, nTok - t0);
    // sx has nTok rows (no padding): tokens past the last read its row, into lanes never stored.
    const sx0 = sx + <usize>t0 * ts, sx1 = <usize>min(1, nHere - 1) * ts, sx2 = <usize>min(2, nHere - 1) * ts, sx3 = <usize>min(3, nHere - 1) * ts;
    for (let g = 0; g < ng; g += 2) {
      // A lone last group pairs with itself (computed twice, stored once).
      const g1 = min(g + 1, ng - 1);
      let a0 = f32x4.splat(0), a1 = a0, a2 = a0, a3 = a0, c0 = a0, c1 = a0, c2 = a0, c3 = a0;
      let w = pk + <usize>g * gBytes;
      const wu = <usize>(g1 - g) * gBytes;
      let dw = sc + ((<usize>g * <usize>nsub) << 4);
      const du = <usize>(g1 - g) * (<usize>nsub << 4);
      let x = xt;
      for (let j = 0; j < nsub; j++) {
        let s0 = i32x4.splat(0), s1 = s0, s2 = s0, s3 = s0, u0 = s0, u1 = s0, u2 = s0, u3 = s0;
        for (let p = 0; p < pairs; p++) {
          const v = v128.load(w), u = v128.load(w + wu);
          let xs = v128.load32_splat(x);
          s0 = i32x4.add(s0, i32x4.dot_i16x8_s(v, xs));
          u0 = i32x4.add(u0, i32x4.dot_i16x8_s(u, xs));
          xs = v128.load32_splat(x + xRow);
          s1 = i32x4.add(s1, i32x4.dot_i16x8_s(v, xs));
          u1 = i32x4.add(u1, i32x4.dot_i16x8_s(u, xs));
          xs = v128.load32_splat(x + 2 * xRow);
          s2 = i32x4.add(s2, i32x4.dot_i16x8_s(v, xs));
          u2 = i32x4.add(u2, i32x4.dot_i16x8_s(u, xs));
          xs = v128.load32_splat(x + 3 * xRow);
          s3 = i32x4.add(s3, i32x4.dot_i16x8_s(v, xs));
          u3 = i32x4.add(u3, i32x4.dot_i16x8_s(u, xs));
          w += 16;
          x += 4;
        }
        // acc += f32(sum) * (d_w * d_x), as matvecQ8 adds it.
        const d = v128.load(dw), e = v128.load(dw + du), db = dt + (<usize>(j >> half) << 4);
        let xd = v128.load32_splat(db);
        a0 = f32x4.add(a0, f32x4.mul(f32x4.convert_i32x4_s(s0), f32x4.mul(d, xd)));
        c0 = f32x4.add(c0, f32x4.mul(f32x4.convert_i32x4_s(u0), f32x4.mul(e, xd)));
        xd = v128.load32_splat(db + 4);
        a1 = f32x4.add(a1, f32x4.mul(f32x4.convert_i32x4_s(s1), f32x4.mul(d, xd)));
        c1 = f32x4.add(c1, f32x4.mul(f32x4.convert_i32x4_s(u1), f32x4.mul(e, xd)));
        xd = v128.load32_splat(db + 8);
        a2 = f32x4.add(a2, f32x4.mul(f32x4.convert_i32x4_s(s2), f32x4.mul(d, xd)));
        c2 = f32x4.add(c2, f32x4.mul(f32x4.convert_i32x4_s(u2), f32x4.mul(e, xd)));
        xd = v128.load32_splat(db + 12);
        a3 = f32x4.add(a3, f32x4.mul(f32x4.convert_i32x4_s(s3), f32x4.mul(d, xd)));
        c3 = f32x4.add(c3, f32x4.mul(f32x4.convert_i32x4_s(u3), f32x4.mul(e, xd)));
        if (sx != 0) {
          const f = v128.load(dw + oc), h = v128.load(dw + du + oc);
          const xs = sx0 + (<usize>j << 2);
          let v = v128.load32_splat(xs);
          a0 = f32x4.add(a0, f32x4.mul(f, v));
          c0 = f32x4.add(c0, f32x4.mul(h, v));
          v = v128.load32_splat(xs + sx1);
          a1 = f32x4.add(a1, f32x4.mul(f, v));
          c1 = f32x4.add(c1, f32x4.mul(h, v));
          v = v128.load32_splat(xs + sx2);
          a2 = f32x4.add(a2, f32x4.mul(f, v));
          c2 = f32x4.add(c2, f32x4.mul(h, v));
          v = v128.load32_splat(xs + sx3);
          a3 = f32x4.add(a3, f32x4.mul(f, v));
          c3 = f32x4.add(c3, f32x4.mul(h, v));
        }
        dw += 16;
      }
      const k = rows - 4 * g, k1 = g1 > g ? rows - 4 * g1 : 0;
      const o = out + (<usize>g << 4) + <usize>t0 * st;
      storeGroup(o, a0, k);
      storeGroup(o + 16, c0, k1);
      if (nHere > 1) { storeGroup(o + st, a1, k); storeGroup(o + st + 16, c1, k1); }
      if (nHere > 2) { storeGroup(o + 2 * st, a2, k); storeGroup(o + 2 * st + 16, c2, k1); }
      if (nHere > 3) { storeGroup(o + 3 * st, a3, k); storeGroup(o + 3 * st + 16, c3, k1); }
    }
  }
}

/** sx[b] = dx[b] * sum of the 32 int8 values of block b, for n/32 blocks of q8 activations: the
 *  term that a weight format with a per-block offset (Q4_K's -dmin*m) multiplies. With `g16`, per
 *  16 values instead (n/16 sums, each under its 32-block's dx): Q2_K's offsets are per 16, and
 *  these are Q8_K's bsums times d. */
export function blockSumsQ8(qx: usize, dx: usize, n: i32, sx: usize, g16: bool): void {
  const sh = g16 ? 4 : 5;
  const nb = n >> sh;
  for (let b = 0; b < nb; b++) {
    const p = qx + (<usize>b << sh);
    let h = i16x8.extadd_pairwise_i8x16_s(v128.load(p));
    if (!g16) h = i16x8.add(h, i16x8.extadd_pairwise_i8x16_s(v128.load(p + 16)));
    const s = i32x4.extadd_pairwise_i16x8_s(h);
    const t = i32x4.extract_lane(s, 0) + i32x4.extract_lane(s, 1) + i32x4.extract_lane(s, 2) + i32x4.extract_lane(s, 3);
    // dx of the 32-value block this one lies in: byte offset (first value / 32) * 4.
    store<f32>(sx + (<usize>b << 2), <f32>t * load<f32>(dx + (((<usize>b << sh) >> 3) & ~3)));
  }
}

/** The 4 int32 lanes of the dot of one Q4_K sub-block (32 nibbles: the low ones of the 32 bytes at
 *  q, or with `hi` their high ones) with 32 int16 activations at x (widenQ8). Each byte is
 *  zero-extended by its load (i16x8.load8x8_u) and its nibble masked or shifted out; |15 x 127|
 *  products summed in pairs: no overflow. */
@inline function nibbleDot(q: usize, x: usize, hi: bool): v128 {
  const m = i16x8.splat(15);
  const v0 = v128.load8x8_u(q), v1 = v128.load8x8_u(q + 8), v2 = v128.load8x8_u(q + 16), v3 = v128.load8x8_u(q + 24);
  return i32x4.add(
    i32x4.add(i32x4.dot_i16x8_s(hi ? i16x8.shr_u(v0, 4) : v128.and(v0, m), v128.load(x)), i32x4.dot_i16x8_s(hi ? i16x8.shr_u(v1, 4) : v128.and(v1, m), v128.load(x + 16))),
    i32x4.add(i32x4.dot_i16x8_s(hi ? i16x8.shr_u(v2, 4) : v128.and(v2, m), v128.load(x + 32)), i32x4.dot_i16x8_s(hi ? i16x8.shr_u(v3, 4) : v128.and(v3, m), v128.load(x + 48))),
  );
}

/** The 4 int32 lanes of the dot of one Q4_K sub-block's 32 nibbles (n0: the first 16, n1: the
 *  next 16, one per byte, 0..15) with 32 int8 activations at x: relaxed SIMD's
 *  i32x4.relaxed_dot_i8x16_i7x16_add_s (pmaddubsw + pmaddwd, or vpdpbusd, on x86; sdot on Arm).
 *  Its result is implementation-defined only where the second operand passes 127; nibbles never
 *  do, so it equals nibbleDot's exactly. */
@inline function nibbleDotRelaxed(n0: v128, n1: v128, x: usize): v128 {
  return i32x4.relaxed_dot_i8x16_i7x16_add_s(v128.load(x), n0, i32x4.relaxed_dot_i8x16_i7x16_add_s(v128.load(x + 16), n1, i32x4.splat(0)));
}

/** Q4_K weights (nibbles as in the file: qs [rows][cols/2], 128 bytes per 256 values; per 32-value
 *  sub-block j the value is a[j] * q + c[j], a = d*scale, c = -dmin*min, decoded to f32 at load)
 *  times one token's q8 activations (Q8_K: qx [cols] i8, its widening x16 [cols] i16 (widenQ8), dx
 *  [cols/32] f32, sx from blockSumsQ8): out[r]. Four sub-blocks a step: their int32 sums become one
 *  vector, scaled by a[4] * dx[4] (both contiguous) in one multiply-add, with the offsets c[4] *
 *  sx[4] beside. Built with relaxed SIMD, the dots read the int8 activations (nibbleDotRelaxed, the
 *  nibbles unpacked once per 16 bytes); without, the int16 ones (nibbleDot). Either gives the same
 *  int32 sums, so the same bits. */
export function matvecQ4K(out: usize, wq: usize, wa: usize, wc: usize, rows: i32, cols: i32, x16: usize, qx: usize, dx: usize, sx: usize): void {
  const nsb = cols >> 5;
  for (let r = 0; r < rows; r++) {
    const q = wq + <usize>r * (<usize>cols >> 1);
    const a = wa + <usize>r * (<usize>nsb << 2);
    const c = wc + <usize>r * (<usize>nsb << 2);
    let acc = f32x4.splat(0);
    for (let j = 0; j < nsb; j += 4) {
      // Sub-blocks j .. j+3: two 32-byte pairs (low nibbles the pair's first 32 values), 128 activations.
      const p = q + (<usize>j << 4);
      let s: v128;
      if (ASC_FEATURE_RELAXED_SIMD) {
        const m = i8x16.splat(15);
        const b0 = v128.load(p), b1 = v128.load(p + 16), b2 = v128.load(p + 32), b3 = v128.load(p + 48);
        const xp = qx + (<usize>j << 5);
        s = laneSums(
          nibbleDotRelaxed(v128.and(b0, m), v128.and(b1, m), xp),
          nibbleDotRelaxed(i8x16.shr_u(b0, 4), i8x16.shr_u(b1, 4), xp + 32),
          nibbleDotRelaxed(v128.and(b2, m), v128.and(b3, m), xp + 64),
          nibbleDotRelaxed(i8x16.shr_u(b2, 4), i8x16.shr_u(b3, 4), xp + 96),
        );
      } else {
        const xp = x16 + (<usize>j << 6);
        s = laneSums(nibbleDot(p, xp, false), nibbleDot(p, xp + 64, true), nibbleDot(p + 32, xp + 128, false), nibbleDot(p + 32, xp + 192, true));
      }
      const o = <usize>j << 2;
      acc = f32x4.add(acc, f32x4.mul(f32x4.convert_i32x4_s(s), f32x4.mul(v128.load(a + o), v128.load(dx + o))));
      acc = f32x4.add(acc, f32x4.mul(v128.load(c + o), v128.load(sx + o)));
    }
    store<f32>(out + (<usize>r << 2), f32x4.extract_lane(acc, 0) + f32x4.extract_lane(acc, 1) + f32x4.extract_lane(acc, 2) + f32x4.extract_lane(acc, 3));
  }
}

/** The 4 int32 lanes of the dot of 16 int8 weights at w with 16 int16 activations at x: half of dot32. */
@inline function dot16(w: usize, x: usize): v128 {
  return i32x4.add(i32x4.dot_i16x8_s(v128.load8x8_s(w), v128.load(x)), i32x4.dot_i16x8_s(v128.load8x8_s(w + 8), v128.load(x + 16)));
}

/** Rows 0 and 1 (a = 0) or 2 and 3 (a = 2) of the per-16 f32 pairs (scales or offsets) of one block
 *  of a q8g16 group at d: [row a first, row a second, row a+1 first, row a+1 second]. In a group of
 *  k < 4 rows, the rows past k - 1 read row k - 1. */
@inline function groupPairs(d: usize, a: i32, k: i32): v128 {
  return v128.load64_lane(d + (<usize>min(a + 1, k - 1) << 3), v128.load64_zero(d + (<usize>min(a, k - 1) << 3)), 1);
}

/** One q8g16 group of k rows (blocks at w, scale pairs at d, Q2_K's offset pairs at c or 0) times one
 *  token: the k row totals in one vector (groupDot's shape, each 16-value half scaled on its own). */
@inline function groupDotG16(w: usize, d: usize, c: usize, nb: i32, x16: usize, dx: usize, s16: usize, k: i32): v128 {
  const o1 = <usize>min(1, k - 1) << 5, o2 = <usize>min(2, k - 1) << 5, o3 = <usize>min(3, k - 1) << 5;
  const wStep = <usize>k << 5, dStep = <usize>k << 3;
  let acc = f32x4.splat(0);
  for (let b = 0; b < nb; b++) {
    const xp = x16 + (<usize>b << 6);
    const ta = laneSums(dot16(w, xp), dot16(w + o1, xp), dot16(w + o2, xp), dot16(w + o3, xp));
    const tb = laneSums(dot16(w + 16, xp + 32), dot16(w + o1 + 16, xp + 32), dot16(w + o2 + 16, xp + 32), dot16(w + o3 + 16, xp + 32));
    // The four rows' scales of both halves: [d0a, d0b] .. [d3a, d3b] -> [d0a..d3a], [d0b..d3b].
    const dp = d + <usize>b * dStep;
    const p01 = groupPairs(dp, 0, k), p23 = groupPairs(dp, 2, k);
    const sa = v128.shuffle<i32>(p01, p23, 0, 2, 4, 6), sb = v128.shuffle<i32>(p01, p23, 1, 3, 5, 7);
    const vdx = v128.load32_splat(dx + (<usize>b << 2));
    acc = f32x4.add(acc, f32x4.mul(f32x4.add(f32x4.mul(f32x4.convert_i32x4_s(ta), sa), f32x4.mul(f32x4.convert_i32x4_s(tb), sb)), vdx));
    w += wStep;
  }
  if (c != 0) {
    // Q2_K: its offsets times the activation sums, one per 16 values (llama.cpp's dmin * bsums term).
    for (let b = 0; b < nb; b++) {
      const cp = c + <usize>b * dStep;
      const p01 = groupPairs(cp, 0, k), p23 = groupPairs(cp, 2, k);
      const sp = s16 + (<usize>b << 3);
      acc = f32x4.add(acc, f32x4.add(
        f32x4.mul(v128.shuffle<i32>(p01, p23, 0, 2, 4, 6), v128.load32_splat(sp)),
        f32x4.mul(v128.shuffle<i32>(p01, p23, 1, 3, 5, 7), v128.load32_splat(sp + 4)),
      ));
    }
  }
  return acc;
}

/** groupDotG16 with k at run time (the last group of a matrix; one copy: the module stays small). */
function groupDotG16Any(w: usize, d: usize, c: usize, nb: i32, x16: usize, dx: usize, s16: usize, k: i32): v128 {
  return groupDotG16(w, d, c, nb, x16, dx, s16, k);
}

/** int8 weights with one f32 scale per 16 values (Q6_K, Q3_K, Q2_K decoded at load: the q8 group
 *  layout of matvecQ8, each block's scale a pair of f32 for its two 16-value halves, 8 bytes at the
 *  block's index; Q2_K also an offset pair per block at wc, the same way) times one token's q8
 *  activations widened to int16 (widenQ8: x16 [cols] i16, dx [cols/32] f32): out[r]. matvecQ8's
 *  shape: a group's four rows share the activation loads; per block, each half's four row sums
 *  become one vector, scaled by its four rows' scales in one multiply-add. With wc != 0, each
 *  16-value group g's offset times s16[g] (blockSumsQ8 g16) is added. */
export function matvecQ8g16(out: usize, wq: usize, wd: usize, rows: i32, cols: i32, x16: usize, dx: usize, wc: usize, s16: usize): void {
  const nb = cols >> 5;
  let r = 0;
  for (; r + 4 <= rows; r += 4) {
    const g = <usize>r * <usize>nb;
    v128.store(out + (<usize>r << 2), groupDotG16(wq + (g << 5), wd + (g << 3), wc != 0 ? wc + (g << 3) : 0, nb, x16, dx, s16, 4));
  }
  if (r < rows) {
    const k = rows - r, g = <usize>r * <usize>nb;
    const acc = groupDotG16Any(wq + (g << 5), wd + (g << 3), wc != 0 ? wc + (g << 3) : 0, nb, x16, dx, s16, k);
    storeRows(out + (<usize>r << 2), acc, k);
  }
}
