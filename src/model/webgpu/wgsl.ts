// WGSL sources of the WebGPU kernels. Weights are read as GGUF stores them (bytes in an
// array<u32>, ggml's block layouts as src/model/kernels/quant-rows.ts decodes them: that file is
// the reference the tests hold these to). Every kernel reads the per-step sizes (tokens in the
// batch, tokens held, runs) from one `Step` uniform written once per forward step, and its fixed
// sizes from a uniform of its own, so each dispatch's bind group is built once.

import type { GpuCodec } from "../../cache/gpu-page-bytes.js";
import type { WeightTypeName } from "../kernels/quant-rows.js";

/** Threads per workgroup of every kernel. */
export const WG = 64;
/** Tokens one matmul workgroup serves (their x rows share each dequantized weight). */
export const MATMUL_TILE = 4;

const STEP = `struct Step { nTok: u32, held: u32, nRuns: u32, pad: u32 }`;

/** Weight types with a WGSL matmul, and the values one thread decodes per unit of work. */
export const GPU_WEIGHT_TYPES: Readonly<Partial<Record<WeightTypeName, { readonly unitValues: number; readonly body: string }>>> = {
  F32: { unitValues: 1, body: `add(u, bitcast<f32>(w[(base >> 2u) + u]));` },
  F16: { unitValues: 1, body: `add(u, halfAt(base + 2u * u));` },
  Q8_0: {
    unitValues: 32,
    body: `let o = base + u * 34u; let d = halfAt(o);
      for (var i = 0u; i < 32u; i++) { add(u * 32u + i, d * i8At(o + 2u + i)); }`,
  },
  Q4_0: {
    unitValues: 32,
    body: `let o = base + u * 18u; let d = halfAt(o);
      for (var i = 0u; i < 16u; i++) {
        let b = byteAt(o + 2u + i);
        add(u * 32u + i, d * (f32(b & 15u) - 8.0));
        add(u * 32u + i + 16u, d * (f32(b >> 4u) - 8.0));
      }`,
  },
  // 64 values per unit: one pair of 32-value sub-blocks with their 6-bit scales and mins.
  Q4_K: {
    unitValues: 64,
    body: `let blk = u / 4u; let jj = u % 4u; let o = base + blk * 144u;
      let d = halfAt(o); let dmin = halfAt(o + 2u);
      let a = scaleMinK4(o + 4u, 2u * jj); let c = scaleMinK4(o + 4u, 2u * jj + 1u);
      let d1 = d * f32(a.x); let m1 = dmin * f32(a.y); let d2 = d * f32(c.x); let m2 = dmin * f32(c.y);
      let qs = o + 16u + 32u * jj; let c0 = blk * 256u + jj * 64u;
      for (var l = 0u; l < 32u; l++) {
        let b = byteAt(qs + l);
        add(c0 + l, d1 * f32(b & 15u) - m1);
        add(c0 + 32u + l, d2 * f32(b >> 4u) - m2);
      }`,
  },
  // 128 values per unit: one half of a block (ql 64 bytes, qh 32, scales 8).
  Q6_K: {
    unitValues: 128,
    body: `let blk = u / 2u; let hf = u % 2u; let o = base + blk * 210u;
      let d = halfAt(o + 208u);
      let ql = o + 64u * hf; let qh = o + 128u + 32u * hf; let sc = o + 192u + 8u * hf; let c0 = blk * 256u + 128u * hf;
      for (var l = 0u; l < 32u; l++) {
        let is = l / 16u;
        let h = byteAt(qh + l);
        let lo0 = byteAt(ql + l); let lo1 = byteAt(ql + l + 32u);
        add(c0 + l, d * i8At(sc + is) * f32(i32((lo0 & 15u) | ((h & 3u) << 4u)) - 32));
        add(c0 + l + 32u, d * i8At(sc + is + 2u) * f32(i32((lo1 & 15u) | (((h >> 2u) & 3u) << 4u)) - 32));
        add(c0 + l + 64u, d * i8At(sc + is + 4u) * f32(i32((lo0 >> 4u) | (((h >> 4u) & 3u) << 4u)) - 32));
        add(c0 + l + 96u, d * i8At(sc + is + 6u) * f32(i32((lo1 >> 4u) | (((h >> 6u) & 3u) << 4u)) - 32));
      }`,
  },
};

/**
 * "workgroup": one workgroup per row, threads over the row's units, a tree reduction (long rows).
 * "thread": one thread per row, no barriers (short rows; SwiftShader runs barriers as coroutine
 * switches, so there it is the only fast one).
 */
export type MatmulVariant = "workgroup" | "thread";

/**
 * out[t][outRow0 + r] = dot(W row r, x[t]) for the rows of one chunk of a matrix and the batch's
 * tokens: workgroup (r, t / MATMUL_TILE), threads over the row's units, a tree reduction.
 */
export function matmulWgsl(type: WeightTypeName, variant: MatmulVariant = "workgroup"): string {
  const t = GPU_WEIGHT_TYPES[type];
  if (t === undefined) throw new Error(`no WGSL matmul for ${type}`);
  return `
${STEP}
struct Mat { rows: u32, units: u32, rowBytes: u32, xStride: u32, outStride: u32, outRow0: u32, foldX: u32, pad: u32 }
@group(0) @binding(0) var<storage, read_write> outv: array<f32>;
@group(0) @binding(1) var<storage, read> xv: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(3) var<uniform> m: Mat;
@group(0) @binding(4) var<uniform> st: Step;
const WG: u32 = ${WG}u;
const TILE: u32 = ${MATMUL_TILE}u;
var<workgroup> red: array<f32, ${WG * MATMUL_TILE}>;
var<private> acc: array<f32, ${MATMUL_TILE}>;
var<private> t0: u32;
var<private> nt: u32;
fn byteAt(o: u32) -> u32 { return (w[o >> 2u] >> ((o & 3u) * 8u)) & 0xffu; }
fn halfAt(o: u32) -> f32 { return unpack2x16float((w[o >> 2u] >> ((o & 2u) * 8u)) & 0xffffu).x; }
fn i8At(o: u32) -> f32 { return f32((i32(byteAt(o)) << 24u) >> 24u); }
fn scaleMinK4(s: u32, j: u32) -> vec2u {
  if (j < 4u) { return vec2u(byteAt(s + j) & 63u, byteAt(s + j + 4u) & 63u); }
  return vec2u((byteAt(s + j + 4u) & 15u) | ((byteAt(s + j - 4u) >> 6u) << 4u), (byteAt(s + j + 4u) >> 4u) | ((byteAt(s + j) >> 6u) << 4u));
}
fn add(c: u32, wv: f32) { for (var j = 0u; j < nt; j++) { acc[j] += wv * xv[(t0 + j) * m.xStride + c]; } }
${variant === "thread" ? `@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let r = gid.x + gid.y * m.foldX * WG;
  let tile0 = gid.z * TILE;
  if (r >= m.rows || tile0 >= st.nTok) { return; }
  t0 = tile0;
  nt = min(TILE, st.nTok - tile0);
  let base = r * m.rowBytes;
  for (var u = 0u; u < m.units; u++) {
    ${t.body}
  }
  for (var j = 0u; j < nt; j++) { outv[(tile0 + j) * m.outStride + m.outRow0 + r] = acc[j]; }
}` : `@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let r = wg.x + wg.y * m.foldX;
  let tile0 = wg.z * TILE;
  if (r >= m.rows || tile0 >= st.nTok) { return; }
  t0 = tile0;
  nt = min(TILE, st.nTok - tile0);
  let base = r * m.rowBytes;
  for (var u = lid; u < m.units; u += WG) {
    ${t.body}
  }
  for (var j = 0u; j < TILE; j++) { red[j * WG + lid] = acc[j]; }
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) { for (var j = 0u; j < TILE; j++) { red[j * WG + lid] += red[j * WG + lid + s]; } }
    workgroupBarrier();
  }
  if (lid == 0u) {
    for (var j = 0u; j < min(TILE, st.nTok - tile0); j++) { outv[(tile0 + j) * m.outStride + m.outRow0 + r] = red[j * WG]; }
  }
}`}`;
}

/** RMSNorm of rows of n values: nTok * perTok rows (perTok heads for QK norm), or the last token's only. */
export const RMSNORM_WGSL = `
${STEP}
struct P { n: u32, xStride: u32, outStride: u32, perTok: u32, lastOnly: u32, eps: f32, pad0: u32, pad1: u32 }
@group(0) @binding(0) var<storage, read_write> outv: array<f32>;
@group(0) @binding(1) var<storage, read> xv: array<f32>;
@group(0) @binding(2) var<storage, read> wv: array<f32>;
@group(0) @binding(3) var<uniform> p: P;
@group(0) @binding(4) var<uniform> st: Step;
const WG: u32 = ${WG}u;
var<workgroup> red: array<f32, ${WG}>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let row = wg.x;
  var t = row / p.perTok;
  let g = row % p.perTok;
  if (p.lastOnly != 0u) { t = st.nTok - 1u; }
  let xo = t * p.xStride + g * p.n;
  let oo = select(t, 0u, p.lastOnly != 0u) * p.outStride + g * p.n;
  var ss = 0.0;
  for (var i = lid; i < p.n; i += WG) { let v = xv[xo + i]; ss += v * v; }
  red[lid] = ss;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) { if (lid < s) { red[lid] += red[lid + s]; } workgroupBarrier(); }
  let inv = 1.0 / sqrt(red[0] / f32(p.n) + p.eps);
  for (var i = lid; i < p.n; i += WG) { outv[oo + i] = xv[xo + i] * inv * wv[i]; }
}`;

/** Elementwise over count values (n per token, times nTok unless perStep): GLU, add, soft-cap. */
export const ELEMENTWISE_WGSL = `
${STEP}
struct P { n: u32, op: u32, perStep: u32, foldX: u32, cap: f32, pad0: u32, pad1: u32, pad2: u32 }
@group(0) @binding(0) var<storage, read_write> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<uniform> p: P;
@group(0) @binding(3) var<uniform> st: Step;
fn tanhSafe(x: f32) -> f32 { return tanh(clamp(x, -15.0, 15.0)); }
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x + gid.y * p.foldX * ${WG}u;
  let count = select(p.n * st.nTok, p.n, p.perStep != 0u);
  if (i >= count) { return; }
  let x = a[i];
  switch p.op {
    case 0u: { a[i] = x / (1.0 + exp(-x)) * b[i]; }                                             // SwiGLU
    case 1u: { a[i] = 0.5 * x * (1.0 + tanhSafe(0.7978845608028654 * x * (1.0 + 0.044715 * x * x))) * b[i]; } // GeGLU (tanh)
    case 2u: { a[i] = x + b[i]; }                                                              // residual add
    case 4u: { a[i] = x + b[i % p.n]; }                                                        // bias (one row for every token)
    default: { a[i] = p.cap * tanhSafe(x / p.cap); }                                           // soft-cap
  }
}`;

export { GPU_CODECS, type GpuCodec } from "../../cache/gpu-page-bytes.js";

/**
 * Where one store's parts sit in its buffer (array<u32>), in words: f32 values / f16 pairs start
 * at dataWord; int8 keeps the CPU codec's order, f32 scales [nPages][pageSize][nHeadKv] at
 * scalesWord, then the byte codes [nPages][pageSize][nHeadKv][headDim] at dataWord. int4
 * (int4.ts, KIVI): f16 (min, scale) params at scalesWord (keys [nPages][nHeadKv][2][headDim],
 * values [nPages][pageSize][nHeadKv][2]), nibbles at dataWord, then the open pages' f32 residual
 * buffers [openPages][pageSize][nHeadKv][headDim] at residualWord and resOf [nPages] (the
 * residual buffer of each open page, 0xffffffff when sealed or empty) at resOfWord.
 */
export interface GpuStoreLayout {
  readonly codec: GpuCodec;
  readonly scalesWord: number;
  readonly dataWord: number;
  /** int4 only: keys are quantized per channel, values per token. */
  readonly role?: "k" | "v";
  readonly residualWord?: number;
  readonly resOfWord?: number;
}

/** WGSL helpers of the int4 codec: f16 bits, int4.ts setParams and quant4. */
const INT4_HELPERS = `
fn f16Bits(x: f32) -> u32 { return pack2x16float(vec2f(x, 0.0)) & 0xffffu; }
fn f16Val(b: u32) -> f32 { return unpack2x16float(b).x; }
fn i4Params(lo: f32, hi: f32) -> vec2u {
  let loC = clamp(lo, -65504.0, 65504.0);
  var mb = f16Bits(loC);
  if (f16Val(mb) > loC) {
    if (mb == 0u || mb == 0x8000u) { mb = 0x8001u; } else if ((mb & 0x8000u) != 0u) { mb += 1u; } else { mb -= 1u; }
  }
  let spanC = min((hi - f16Val(mb)) / 15.0, 65504.0);
  var sb = f16Bits(spanC);
  if (f16Val(sb) < spanC && sb < 0x7bffu) { sb += 1u; }
  return vec2u(mb, sb);
}
fn quant4(x: f32) -> u32 { return u32(clamp(floor(x + 0.5), 0.0, 15.0)); }`;

/** The int4 store's decode of a sealed value e (NAMESealed) and of any value (NAMEAt, open pages from the residuals). */
function int4ReadWgsl(name: string, buf: string, l: GpuStoreLayout): string {
  const params = l.role === "k"
    ? `let h = (e / p.headDim) % p.nHeadKv; let c = e % p.headDim;
  let pb = ${2 * l.scalesWord}u + (page * p.nHeadKv + h) * 2u * p.headDim + c;
  let mn = unpack2x16float(${buf}[pb >> 1u] >> ((pb & 1u) * 16u)).x;
  let sc = unpack2x16float(${buf}[(pb + p.headDim) >> 1u] >> (((pb + p.headDim) & 1u) * 16u)).x;`
    : `let w = unpack2x16float(${buf}[${l.scalesWord}u + e / p.headDim]); let mn = w.x; let sc = w.y;`;
  return `fn ${name}Sealed(e: u32) -> f32 {
  let page = e / (p.pageSize * p.nHeadKv * p.headDim);
  ${params}
  return mn + sc * f32((${buf}[${l.dataWord}u + (e >> 3u)] >> ((e & 7u) * 4u)) & 15u);
}
fn ${name}At(e: u32) -> f32 {
  let ps = p.pageSize * p.nHeadKv * p.headDim;
  let r = ${buf}[${l.resOfWord}u + e / ps];
  if (r != 0xffffffffu) { return bitcast<f32>(${buf}[${l.residualWord}u + r * ps + e % ps]); }
  return ${name}Sealed(e);
}`;
}

/** `fn NAMEAt(e: u32) -> f32`: value e (index in [nPages][pageSize][nHeadKv][headDim]) of buffer BUF. */
export function codecReadWgsl(name: string, buf: string, l: GpuStoreLayout): string {
  switch (l.codec) {
    case "f32":
      return `fn ${name}At(e: u32) -> f32 { return bitcast<f32>(${buf}[${l.dataWord}u + e]); }`;
    case "f16":
      return `fn ${name}At(e: u32) -> f32 { return unpack2x16float(${buf}[${l.dataWord}u + (e >> 1u)])[e & 1u]; }`;
    case "int8":
      return `fn ${name}At(e: u32) -> f32 {
  let s = bitcast<f32>(${buf}[${l.scalesWord}u + e / p.headDim]);
  let b = (${buf}[${l.dataWord}u + (e >> 2u)] >> ((e & 3u) * 8u)) & 0xffu;
  return s * f32((i32(b) << 24u) >> 24u);
}`;
    case "int4":
      return int4ReadWgsl(name, buf, l);
  }
}

/**
 * fn NAMEPut(th, t, e0): encodes one (token, head) vector of p.headDim values, value d given by
 * SRC(t, e0, d), into token-head th of buffer BUF as the CPU codec does.
 */
function codecPutWgsl(name: string, buf: string, src: string, l: GpuStoreLayout): string {
  switch (l.codec) {
    case "f32":
      return `fn ${name}Put(th: u32, t: u32, e0: u32) {
  let dst = ${l.dataWord}u + th * p.headDim;
  for (var d = 0u; d < p.headDim; d++) { ${buf}[dst + d] = bitcast<u32>(${src}(t, e0, d)); }
}`;
    case "f16":
      return `fn ${name}Put(th: u32, t: u32, e0: u32) {
  let dst = ${l.dataWord}u + (th * p.headDim) / 2u;
  for (var d = 0u; d < p.headDim; d += 2u) { ${buf}[dst + d / 2u] = pack2x16float(vec2f(${src}(t, e0, d), ${src}(t, e0, d + 1u))); }
}`;
    case "int8":
      // int8.ts: scale = fround(amax / 127), code = round(x / scale) (ties up) in [-127, 127].
      return `fn ${name}Put(th: u32, t: u32, e0: u32) {
  var amax = 0.0;
  for (var d = 0u; d < p.headDim; d++) { amax = max(amax, abs(${src}(t, e0, d))); }
  let scale = amax / 127.0;
  let inv = select(0.0, 1.0 / scale, scale > 0.0);
  ${buf}[${l.scalesWord}u + th] = bitcast<u32>(scale);
  let dst = ${l.dataWord}u + (th * p.headDim) / 4u;
  for (var d = 0u; d < p.headDim; d += 4u) {
    var word = 0u;
    for (var j = 0u; j < 4u; j++) {
      let c = i32(clamp(floor(${src}(t, e0, d + j) * inv + 0.5), -127.0, 127.0));
      word |= (u32(c) & 0xffu) << (8u * j);
    }
    ${buf}[dst + d / 4u] = word;
  }
}`;
    case "int4":
      // Into the page's residual buffer (open: the forward keeps every written page open until its
      // last slot is written; the int4 jobs kernel seals it after the write).
      return `fn ${name}Put(th: u32, t: u32, e0: u32) {
  let pageHeads = p.pageSize * p.nHeadKv;
  let r = ${buf}[${l.resOfWord}u + th / pageHeads];
  let dst = ${l.residualWord}u + r * pageHeads * p.headDim + (th % pageHeads) * p.headDim;
  for (var d = 0u; d < p.headDim; d++) { ${buf}[dst + d] = bitcast<u32>(${src}(t, e0, d)); }
}`;
  }
}

/**
 * The int4 store's page jobs (int4.ts seal / reopen): jobs [n][4] (kind, page, residual, fill)
 * from jobBase; kind 0 quantizes the residual's first fill tokens into the page (keys: a group
 * per (head, channel) over those tokens, values a group per (token, head)) and marks the page
 * sealed; kind 1 decodes them back into the residual (a sealed page written again). Workgroup y:
 * the job; x: its units (a thread per (head, 8 channels) for key seals, else per (token, head)).
 */
export function int4JobsWgsl(l: GpuStoreLayout): string {
  const key = l.role === "k";
  return `
struct P { pageSize: u32, nHeadKv: u32, headDim: u32, jobBase: u32 }
@group(0) @binding(0) var<storage, read_write> buf: array<u32>;
@group(0) @binding(1) var<storage, read> jobs: array<u32>;
@group(0) @binding(2) var<uniform> p: P;
${INT4_HELPERS}
${int4ReadWgsl("x", "buf", l)}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let j = (p.jobBase + gid.y) * 4u;
  let kind = jobs[j]; let page = jobs[j + 1u]; let r = jobs[j + 2u]; let n = jobs[j + 3u];
  let u = gid.x;
  let hd = p.headDim;
  let width = p.nHeadKv * hd;
  let ps = p.pageSize * width;
  let res = ${l.residualWord}u + r * ps;
  if (kind == 1u) {
    let t = u / p.nHeadKv; let h = u % p.nHeadKv;
    if (t >= n) { return; }
    for (var d = 0u; d < hd; d++) { buf[res + t * width + h * hd + d] = bitcast<u32>(xSealed(page * ps + t * width + h * hd + d)); }
    return;
  }
  if (u == 0u) { buf[${l.resOfWord}u + page] = 0xffffffffu; }
${key ? `  let groups = hd / 8u;
  if (u >= p.nHeadKv * groups) { return; }
  let h = u / groups; let c0 = (u % groups) * 8u;
  let pw = ${l.scalesWord}u + ((page * p.nHeadKv + h) * 2u * hd + c0) / 2u;
  var mn: array<f32, 8>; var inv: array<f32, 8>;
  for (var i = 0u; i < 8u; i += 2u) {
    var pr: array<vec2u, 2>;
    for (var k = 0u; k < 2u; k++) {
      var lo = 3.4e38; var hi = -3.4e38;
      for (var t = 0u; t < n; t++) { let v = bitcast<f32>(buf[res + t * width + h * hd + c0 + i + k]); lo = min(lo, v); hi = max(hi, v); }
      pr[k] = i4Params(lo, hi);
      mn[i + k] = f16Val(pr[k].x);
      let sc = f16Val(pr[k].y);
      inv[i + k] = select(0.0, 1.0 / sc, sc > 0.0);
    }
    buf[pw + i / 2u] = pr[0].x | (pr[1].x << 16u);
    buf[pw + hd / 2u + i / 2u] = pr[0].y | (pr[1].y << 16u);
  }
  for (var t = 0u; t < n; t++) {
    var word = 0u;
    for (var i = 0u; i < 8u; i++) { word |= quant4((bitcast<f32>(buf[res + t * width + h * hd + c0 + i]) - mn[i]) * inv[i]) << (4u * i); }
    buf[${l.dataWord}u + (page * ps + t * width + h * hd + c0) / 8u] = word;
  }` : `  let t = u / p.nHeadKv; let h = u % p.nHeadKv;
  if (t >= n) { return; }
  let src = res + t * width + h * hd;
  var lo = 3.4e38; var hi = -3.4e38;
  for (var d = 0u; d < hd; d++) { let v = bitcast<f32>(buf[src + d]); lo = min(lo, v); hi = max(hi, v); }
  let pr = i4Params(lo, hi);
  buf[${l.scalesWord}u + (page * p.pageSize + t) * p.nHeadKv + h] = pr.x | (pr.y << 16u);
  let mn = f16Val(pr.x); let sc = f16Val(pr.y);
  let inv = select(0.0, 1.0 / sc, sc > 0.0);
  let dst = ${l.dataWord}u + (page * ps + t * width + h * hd) / 8u;
  for (var d = 0u; d < hd; d += 8u) {
    var word = 0u;
    for (var i = 0u; i < 8u; i++) { word |= quant4((bitcast<f32>(buf[src + d + i]) - mn) * inv) << (4u * i); }
    buf[dst + d / 8u] = word;
  }`}
}`;
}

/**
 * Writes the batch's K (rotated by RoPE at each token's rotation position) and V into their page
 * slots, encoded by the stores' codecs: slots [nTok][2] (page, slot); cs [nTok][nRot/2][2] (cos,
 * sin, mscale applied); a thread per (token, kv head).
 */
export function kvWriteWgsl(k: GpuStoreLayout, v: GpuStoreLayout): string {
  return `
${STEP}
struct P { nHeadKv: u32, headDim: u32, nRot: u32, neox: u32, pageSize: u32, kStride: u32, hasRope: u32, foldX: u32 }
@group(0) @binding(0) var<storage, read_write> kPages: array<u32>;
@group(0) @binding(1) var<storage, read_write> vPages: array<u32>;
@group(0) @binding(2) var<storage, read> kv: array<f32>;
@group(0) @binding(3) var<storage, read> vv: array<f32>;
@group(0) @binding(4) var<storage, read> slots: array<u32>;
@group(0) @binding(5) var<storage, read> cs: array<f32>;
@group(0) @binding(6) var<uniform> p: P;
@group(0) @binding(7) var<uniform> st: Step;
// K value d of the head starting at e0 of token t's row, RoPE'd.
fn kRot(t: u32, e0: u32, d: u32) -> f32 {
  let src = t * p.kStride;
  if (p.hasRope == 0u || d >= p.nRot) { return kv[src + e0 + d]; }
  let half = p.nRot / 2u;
  var ia: u32; var ib: u32; var fi: u32;
  if (p.neox != 0u) { fi = d % half; ia = fi; ib = fi + half; } else { fi = d / 2u; ia = 2u * fi; ib = ia + 1u; }
  let x0 = kv[src + e0 + ia];
  let x1 = kv[src + e0 + ib];
  let c = cs[(t * half + fi) * 2u];
  let s = cs[(t * half + fi) * 2u + 1u];
  return select(x0 * s + x1 * c, x0 * c - x1 * s, d == ia);
}
fn vRaw(t: u32, e0: u32, d: u32) -> f32 { return vv[t * p.kStride + e0 + d]; }
${codecPutWgsl("k", "kPages", "kRot", k)}
${codecPutWgsl("v", "vPages", "vRaw", v)}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x + gid.y * p.foldX * ${WG}u;
  if (i >= p.nHeadKv * st.nTok) { return; }
  let t = i / p.nHeadKv;
  let h = i % p.nHeadKv;
  let th = (slots[2u * t] * p.pageSize + slots[2u * t + 1u]) * p.nHeadKv + h;
  kPut(th, t, h * p.headDim);
  vPut(th, t, h * p.headDim);
}`;
}

/**
 * Attention of the batch's queries over a sequence's paged K/V, as src/cache/attention.ts's
 * attendRuns computes it: workgroup (head, query); per run the pre-RoPE query is scaled and turned
 * by its cos/sin row (the query position plus the run's rotation offset: runs.ts), scores of the
 * visible tokens go to a scratch row, then a softmax and the weighted sum of V.
 * meta: runs [maxRuns][4] (page, slotStart, length, index), then [nTok][maxRuns] cos/sin rows of
 * cs ([rows][nRot/2][2]); a row of 0xffffffff means no rotation.
 */
export function attentionWgsl(k: GpuStoreLayout, v: GpuStoreLayout): string {
  return `
${STEP}
struct P { nHead: u32, nHeadKv: u32, headDim: u32, nRot: u32, neox: u32, pageSize: u32, window: u32, maxRuns: u32,
           slidingWindow: u32, qStride: u32, outStride: u32, normalize: u32, scale: f32, softcap: f32, pad1: f32, pad2: f32 }
@group(0) @binding(0) var<storage, read_write> outv: array<f32>;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> kPages: array<u32>;
@group(0) @binding(3) var<storage, read> vPages: array<u32>;
@group(0) @binding(4) var<storage, read> runMeta: array<u32>;
@group(0) @binding(5) var<storage, read> cs: array<f32>;
@group(0) @binding(6) var<storage, read_write> scores: array<f32>;
@group(0) @binding(7) var<uniform> p: P;
@group(0) @binding(8) var<uniform> st: Step;
const WG: u32 = ${WG}u;
const NONE: u32 = 0xffffffffu;
${codecReadWgsl("k", "kPages", k)}
${codecReadWgsl("v", "vPages", v)}
var<workgroup> qs: array<f32, 512>;
var<workgroup> red: array<f32, ${WG}>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let h = wg.x;
  let qi = wg.y;
  let hd = p.headDim;
  let kvh = h / (p.nHead / p.nHeadKv);
  let width = p.nHeadKv * hd;
  let own = st.held - st.nTok + qi;
  let nVis = own + 1u;
  var lo = 0u;
  if (p.slidingWindow > 0u && nVis > p.slidingWindow) { lo = nVis - p.slidingWindow; }
  let sBase = (qi * p.nHead + h) * p.window;
  let qBase = qi * p.qStride + h * hd;
  let half = p.nRot / 2u;
  for (var r = 0u; r < st.nRuns; r++) {
    let idx = runMeta[4u * r + 3u];
    if (idx > own) { break; }
    let page = runMeta[4u * r];
    let slot0 = runMeta[4u * r + 1u];
    let len = min(runMeta[4u * r + 2u], nVis - idx);
    let row = runMeta[4u * p.maxRuns + qi * p.maxRuns + r];
    workgroupBarrier();
    for (var d = lid; d < hd; d += WG) {
      var val = q[qBase + d] * p.scale;
      if (row != NONE && d < p.nRot) {
        var ia: u32; var ib: u32; var fi: u32;
        if (p.neox != 0u) { fi = d % half; ia = fi; ib = fi + half; } else { fi = d / 2u; ia = 2u * fi; ib = ia + 1u; }
        let x0 = q[qBase + ia] * p.scale;
        let x1 = q[qBase + ib] * p.scale;
        let c = cs[(row * half + fi) * 2u];
        let s = cs[(row * half + fi) * 2u + 1u];
        val = select(x0 * s + x1 * c, x0 * c - x1 * s, d == ia);
      }
      qs[d] = val;
    }
    workgroupBarrier();
    for (var t = lid; t < len; t += WG) {
      let g = idx + t;
      let kb = ((page * p.pageSize + slot0 + t) * width) + kvh * hd;
      var sc = 0.0;
      for (var d = 0u; d < hd; d++) { sc += qs[d] * kAt(kb + d); }
      if (p.softcap > 0.0) { sc = p.softcap * tanh(clamp(sc / p.softcap, -15.0, 15.0)); }
      if (g < lo) { sc = -3.0e38; }
      scores[sBase + g] = sc;
    }
  }
  storageBarrier();
  workgroupBarrier();
  var mx = -3.4e38;
  for (var t = lid; t < nVis; t += WG) { mx = max(mx, scores[sBase + t]); }
  red[lid] = mx;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) { if (lid < s) { red[lid] = max(red[lid], red[lid + s]); } workgroupBarrier(); }
  let m = red[0];
  workgroupBarrier();
  var sum = 0.0;
  for (var t = lid; t < nVis; t += WG) {
    let raw = scores[sBase + t];
    let e = select(exp(raw - m), 0.0, t < lo);
    scores[sBase + t] = e;
    sum += e;
  }
  red[lid] = sum;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) { if (lid < s) { red[lid] += red[lid + s]; } workgroupBarrier(); }
  let inv = 1.0 / red[0];
  // A score-based policy reads the weights (attentionStatsWgsl): they are normalized in place, as
  // attendRuns does when its hook is set, and the value pass then needs no 1/sum.
  if (p.normalize != 0u) {
    storageBarrier();
    for (var t = lid; t < nVis; t += WG) { scores[sBase + t] = scores[sBase + t] * inv; }
  }
  let outScale = select(inv, 1.0, p.normalize != 0u);
  storageBarrier();
  workgroupBarrier();
  for (var d = lid; d < hd; d += WG) {
    var acc = 0.0;
    for (var r = 0u; r < st.nRuns; r++) {
      let idx = runMeta[4u * r + 3u];
      if (idx > own) { break; }
      let page = runMeta[4u * r];
      let slot0 = runMeta[4u * r + 1u];
      let len = min(runMeta[4u * r + 2u], nVis - idx);
      for (var t = 0u; t < len; t++) {
        acc += scores[sBase + idx + t] * vAt(((page * p.pageSize + slot0 + t) * width) + kvh * hd + d);
      }
    }
    outv[qi * p.outStride + h * hd + d] = acc * outScale;
  }
}`;
}

/**
 * The attention statistic a score-based policy reads, reduced on the GPU (src/cache/policies:
 * observedQueries): after a layer's attention, adds to stats[row][t] the weight query qi gave
 * retained token t, averaged over heads, from the normalized scores [nTok][nHead][window]. sumAll:
 * every query of the step into row 0 (unbounded H2O); else query qi of the step into row
 * qi - st.pad (st.pad: the pass's row offset, an i32; rows below 0 are not wanted). A thread per
 * retained token; tokens a query does not see (t > its own index) get nothing from it.
 */
export const ATTENTION_STATS_WGSL = `
${STEP}
struct P { nHead: u32, window: u32, sumAll: u32, foldX: u32 }
@group(0) @binding(0) var<storage, read_write> stats: array<f32>;
@group(0) @binding(1) var<storage, read> scores: array<f32>;
@group(0) @binding(2) var<uniform> p: P;
@group(0) @binding(3) var<uniform> st: Step;
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let t = gid.x + gid.y * p.foldX * ${WG}u;
  if (t >= st.held) { return; }
  let first = st.held - st.nTok;
  let invH = 1.0 / f32(p.nHead);
  var sum = 0.0;
  for (var qi = 0u; qi < st.nTok; qi++) {
    if (t > first + qi) { continue; }
    var w = 0.0;
    for (var h = 0u; h < p.nHead; h++) { w += scores[(qi * p.nHead + h) * p.window + t]; }
    w = w * invH;
    if (p.sumAll != 0u) { sum += w; continue; }
    let row = i32(qi) - bitcast<i32>(st.pad);
    if (row < 0) { continue; }
    let at = u32(row) * p.window + t;
    stats[at] = stats[at] + w;
  }
  if (p.sumAll != 0u) { stats[t] = stats[t] + sum; }
}`;

/** Most head dims the attention kernel's workgroup copy of the query holds. */
export const MAX_GPU_HEAD_DIM = 512;
