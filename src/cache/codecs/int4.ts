// The int4 codec, KIVI-style (Liu et al. 2024, "KIVI: A Tuning-Free Asymmetric 2bit Quantization
// for KV Cache", arXiv:2402.02750): keys are quantized per channel (each head-dim channel across the
// tokens of one page: a key channel's outliers stay inside their own scale), values per token (one
// group per token and head); both asymmetric (min + scale * code, code in 0..15), two codes per byte
// (low nibble = even channel). Group parameters are f16 pairs, like ggml's q4_1 block scales.
//
// A page is "open" while it fills: its tokens sit in full precision in a residual f32 buffer and
// are quantized together when the last slot is written ("sealed"). Residual buffers come from a
// small preallocated pool of `openPages` buffers, because only the last page of each sequence is
// normally open. The pool never refuses: when every buffer is taken, the least recently written
// open page is sealed early (its group is the tokens it has), and it is reopened if written again.
//
// Precision consequences, both bounded by one extra quantization step of the affected tokens:
// - a page sealed early (pool exhausted) and later written again is dequantized back into a
//   residual buffer and quantized a second time when it fills;
// - truncatePage on a sealed page keeps its codes (the surviving tokens keep the group parameters
//   of the full page) and reopens it lazily, the same way, when the next token is written.

import { CacheConfigError } from "../../errors.js";
import type { KvRole, PageShape, PageStore, StoreKernelLayout } from "./types.js";
import { F16_TO_F32, f32ToF16Bits } from "./half.js";
import { checkImportLength, checkPage, checkSlot, storeRegion, type StoreRegion } from "./shape.js";
import { SnapshotError } from "../../errors.js";

/**
 * Residual buffers when the caller gives no hint: one open page per sequence covers a few
 * sequences (or one sequence plus forks in flight); the cache should pass its maxSequences.
 * Exhausting the pool costs precision (early sealing), never correctness.
 */
export const DEFAULT_OPEN_PAGES = 4;

const F16_MAX = 65504;
const F16_MAX_FINITE_BITS = 0x7bff;
const EXPORT_HEADER_BYTES = 8; // int32 fill, int32 open (1) / sealed (0), little-endian

export interface Int4Options {
  /** How many pages may be open (filling, in full precision) at once; default DEFAULT_OPEN_PAGES. */
  readonly openPages?: number;
  /** Where the store keeps its bytes (shape.ts); default a buffer of its own. */
  readonly region?: StoreRegion;
}

/** Residual buffers actually reserved: at least 2 (copyPage of an open page needs two), at most nPages. */
export function resolveOpenPages(nPages: number, openPages: number | undefined): number {
  const want = openPages ?? DEFAULT_OPEN_PAGES;
  if (!Number.isSafeInteger(want) || want <= 0) {
    throw new CacheConfigError(`openPages ${want} is invalid: use a positive integer (typically maxSequences)`, {
      field: "openPages",
      value: want,
    });
  }
  return Math.min(nPages, Math.max(2, want));
}

function checkEvenHeadDim(shape: PageShape): void {
  if (shape.headDim % 2 !== 0) {
    throw new CacheConfigError(`the int4 codec packs two channels per byte and needs an even headDim, got ${shape.headDim}; use int8`, {
      field: "headDim",
      value: shape.headDim,
    });
  }
}

/** Bytes of each part of an int4 store, in buffer order (see Int4PageStore's layout). */
function int4Layout(role: KvRole, shape: PageShape, open: number) {
  const { nPages, pageSize, nHeadKv, headDim } = shape;
  const values = nPages * pageSize * nHeadKv * headDim;
  return {
    ticks: open * 8, // f64 last-write clock per residual buffer
    scratch: (headDim + pageSize) * 8, // f64 kernel scratch: [headDim] per channel, then [pageSize] per token
    residual: open * pageSize * nHeadKv * headDim * 4, // f32
    owner: open * 4, // int32 page using each residual buffer
    fill: nPages * 4, // int32 valid slots per page
    resOf: nPages * 4, // int32 residual buffer of each page, -1 = sealed/empty
    // Two f16 (min, scale) per group: keys one group per (page, head, channel), values per (page, slot, head).
    params: role === "k" ? nPages * nHeadKv * headDim * 2 * 2 : nPages * pageSize * nHeadKv * 2 * 2,
    nibbles: values / 2,
  };
}

/**
 * Bytes: values/2 (nibbles) + 4 per group (f16 min and scale; key groups are (page, head,
 * channel), value groups (page, slot, head)) + openPages full-precision pages (4 bytes per value)
 * + bookkeeping (8 per page, 12 per residual buffer, 8 * (headDim + pageSize) of kernel scratch).
 */
export function int4StoreBytes(role: KvRole, shape: PageShape, options: Int4Options = {}): number {
  checkEvenHeadDim(shape);
  const l = int4Layout(role, shape, resolveOpenPages(shape.nPages, options.openPages));
  return l.ticks + l.scratch + l.residual + l.owner + l.fill + l.resOf + l.params + l.nibbles;
}

/**
 * Largest head dim the wasm kernels (src/cache/wasm/int4.as) take: a key's int32 sum holds
 * 32767 * 15 * headDim, and the query rows they round to int16 fill the store's scratch.
 */
export const INT4_WASM_MAX_HEAD_DIM = 1024;

/** Whether the wasm int4 kernels handle this head dim (8 channels = 4 nibble bytes per step); the
 *  cache keeps the JS kernels otherwise. */
export function int4WasmSupports(headDim: number): boolean {
  return Number.isSafeInteger(headDim) && headDim > 0 && headDim % 8 === 0 && headDim <= INT4_WASM_MAX_HEAD_DIM;
}

export class Int4PageStore implements PageStore {
  readonly kind = "int4" as const;
  readonly role: KvRole;
  readonly shape: PageShape;
  readonly reservedBytes: number;
  readonly openPages: number;

  private readonly buffer: ArrayBuffer;
  private readonly ticks: Float64Array; // [openPages]
  private readonly scratch: Float64Array; // [headDim] per-channel terms, then [pageSize] per-token sums
  private readonly residual: Float32Array; // [openPages][pageSize][nHeadKv][headDim]
  private readonly owner: Int32Array; // [openPages], -1 = free
  private readonly fill: Int32Array; // [nPages]
  private readonly resOf: Int32Array; // [nPages], -1 = not open
  // keys: [nPages][nHeadKv][2][headDim] (row of mins, then row of scales); values: [nPages][pageSize][nHeadKv][2]
  private readonly params: Uint16Array;
  private readonly nibbles: Uint8Array; // [nPages][pageSize][nHeadKv][headDim / 2]
  private readonly isKey: boolean;
  private readonly tokenStride: number; // nHeadKv * headDim (values of one token)
  private readonly pageStride: number; // pageSize * tokenStride
  private readonly tokenBytes: number; // nHeadKv * headDim / 2 (nibble bytes of one token)
  private readonly pageParams: number; // f16 params per page
  private clock = 0;

  constructor(role: KvRole, shape: PageShape, options: Int4Options = {}) {
    checkEvenHeadDim(shape);
    this.role = role;
    this.isKey = role === "k";
    this.shape = Object.freeze({ ...shape });
    this.openPages = resolveOpenPages(shape.nPages, options.openPages);
    const { nPages, pageSize, nHeadKv, headDim } = shape;
    this.tokenStride = nHeadKv * headDim;
    this.pageStride = pageSize * this.tokenStride;
    this.tokenBytes = this.tokenStride / 2;
    this.pageParams = this.isKey ? nHeadKv * headDim * 2 : pageSize * nHeadKv * 2;

    const l = int4Layout(role, shape, this.openPages);
    this.reservedBytes = int4StoreBytes(role, shape, options);
    const region = storeRegion(options.region, this.reservedBytes);
    this.buffer = region.buffer;
    // Widest elements first, so that every view starts aligned.
    let off = region.byteOffset;
    this.ticks = new Float64Array(this.buffer, off, this.openPages);
    off += l.ticks;
    this.scratch = new Float64Array(this.buffer, off, headDim + pageSize);
    off += l.scratch;
    this.residual = new Float32Array(this.buffer, off, this.openPages * this.pageStride);
    off += l.residual;
    this.owner = new Int32Array(this.buffer, off, this.openPages);
    off += l.owner;
    this.fill = new Int32Array(this.buffer, off, nPages);
    off += l.fill;
    this.resOf = new Int32Array(this.buffer, off, nPages);
    off += l.resOf;
    this.params = new Uint16Array(this.buffer, off, nPages * this.pageParams);
    off += l.params;
    this.nibbles = new Uint8Array(this.buffer, off, nPages * pageSize * this.tokenBytes);
    this.owner.fill(-1);
    this.resOf.fill(-1);
  }

  /** Valid slots of a page (tests and diagnostics). */
  pageFill(page: number): number {
    return this.fill[page]!;
  }

  /** Whether a page is open (its tokens in full precision) rather than sealed (quantized). */
  isOpen(page: number): boolean {
    return this.resOf[page]! >= 0;
  }

  /**
   * For the wasm kernels (int4.as): data = the nibbles, scales = the f16 params; extra = the
   * residual buffers (f32), resOf (int32) and the kernel scratch (8 * (headDim + pageSize) bytes,
   * which the kernels use for their int16 query rows / weights, as the JS kernels use it for f64
   * partial sums: nothing lives there between calls). Byte offsets in the store's buffer.
   */
  kernelLayout(): StoreKernelLayout {
    return {
      data: this.nibbles.byteOffset,
      scales: this.params.byteOffset,
      extra: [this.residual.byteOffset, this.resOf.byteOffset, this.scratch.byteOffset],
    };
  }

  // ---------------------------------------------------------------------------------------------
  // Residual pool and page state

  /** Takes a residual buffer for `page`, sealing the least recently written open page (never
   *  `protect`) when none is free. */
  private acquire(page: number, protect: number): number {
    const owner = this.owner;
    let r = -1;
    for (let i = 0; i < this.openPages; i++) {
      if (owner[i]! < 0) {
        r = i;
        break;
      }
    }
    if (r < 0) {
      let oldest = Infinity;
      for (let i = 0; i < this.openPages; i++) {
        if (owner[i]! !== protect && this.ticks[i]! < oldest) {
          oldest = this.ticks[i]!;
          r = i;
        }
      }
      this.seal(owner[r]!);
    }
    owner[r] = page;
    this.resOf[page] = r;
    this.ticks[r] = ++this.clock;
    return r;
  }

  private release(page: number): void {
    const r = this.resOf[page]!;
    if (r >= 0) {
      this.owner[r] = -1;
      this.resOf[page] = -1;
    }
  }

  /** Quantizes an open page's `fill` tokens (one group) and returns its residual buffer to the pool. */
  private seal(page: number): void {
    const r = this.resOf[page]!;
    const n = this.fill[page]!;
    if (n > 0) {
      if (this.isKey) this.quantizeKeys(page, r * this.pageStride, n);
      else this.quantizeValues(page, r * this.pageStride, n);
    }
    this.release(page);
  }

  /** Writes the f16 (min, scale) of a group spanning [lo, hi] to params[iMin], params[iScale]:
   *  min rounded down and scale rounded up, so that every value of the group lies in
   *  [min, min + 15 * scale] and only rounding to the nearest code loses precision. */
  private setParams(iMin: number, iScale: number, lo: number, hi: number): void {
    const loC = lo < -F16_MAX ? -F16_MAX : lo > F16_MAX ? F16_MAX : lo;
    let mb = f32ToF16Bits(loC);
    if (F16_TO_F32[mb]! > loC) mb = mb === 0 || mb === 0x8000 ? 0x8001 : mb & 0x8000 ? mb + 1 : mb - 1;
    const span = (hi - F16_TO_F32[mb]!) / 15;
    const spanC = span > F16_MAX ? F16_MAX : span;
    let sb = f32ToF16Bits(spanC);
    if (F16_TO_F32[sb]! < spanC && sb < F16_MAX_FINITE_BITS) sb += 1;
    this.params[iMin] = mb;
    this.params[iScale] = sb;
  }

  private quantizeKeys(page: number, resBase: number, n: number): void {
    const { nHeadKv, headDim: d } = this.shape;
    const res = this.residual;
    const ts = this.tokenStride;
    const params = this.params;
    const nib = this.nibbles;
    const pageByte0 = page * this.shape.pageSize * this.tokenBytes;
    for (let h = 0; h < nHeadKv; h++) {
      const pb = (page * nHeadKv + h) * 2 * d;
      for (let c = 0; c < d; c++) {
        let lo = Infinity;
        let hi = -Infinity;
        for (let t = 0; t < n; t++) {
          const v = res[resBase + t * ts + h * d + c]!;
          if (v < lo) lo = v;
          if (v > hi) hi = v;
        }
        this.setParams(pb + c, pb + d + c, lo, hi);
      }
      for (let c = 0; c < d; c += 2) {
        const mn0 = F16_TO_F32[params[pb + c]!]!;
        const sc0 = F16_TO_F32[params[pb + d + c]!]!;
        const mn1 = F16_TO_F32[params[pb + c + 1]!]!;
        const sc1 = F16_TO_F32[params[pb + d + c + 1]!]!;
        const inv0 = sc0 > 0 ? 1 / sc0 : 0;
        const inv1 = sc1 > 0 ? 1 / sc1 : 0;
        for (let t = 0; t < n; t++) {
          const e = resBase + t * ts + h * d + c;
          const q0 = quant4((res[e]! - mn0) * inv0);
          const q1 = quant4((res[e + 1]! - mn1) * inv1);
          nib[pageByte0 + t * this.tokenBytes + ((h * d + c) >> 1)] = q0 | (q1 << 4);
        }
      }
    }
  }

  private quantizeValues(page: number, resBase: number, n: number): void {
    const { pageSize, nHeadKv, headDim: d } = this.shape;
    const res = this.residual;
    const params = this.params;
    const nib = this.nibbles;
    for (let t = 0; t < n; t++) {
      for (let h = 0; h < nHeadKv; h++) {
        const e0 = resBase + t * this.tokenStride + h * d;
        let lo = Infinity;
        let hi = -Infinity;
        for (let c = 0; c < d; c++) {
          const v = res[e0 + c]!;
          if (v < lo) lo = v;
          if (v > hi) hi = v;
        }
        const pIdx = ((page * pageSize + t) * nHeadKv + h) * 2;
        this.setParams(pIdx, pIdx + 1, lo, hi);
        const mn = F16_TO_F32[params[pIdx]!]!;
        const sc = F16_TO_F32[params[pIdx + 1]!]!;
        const inv = sc > 0 ? 1 / sc : 0;
        const b0 = ((page * pageSize + t) * nHeadKv + h) * (d >> 1);
        for (let c = 0; c < d; c += 2) {
          nib[b0 + (c >> 1)] = quant4((res[e0 + c]! - mn) * inv) | (quant4((res[e0 + c + 1]! - mn) * inv) << 4);
        }
      }
    }
  }

  /** Decodes a sealed page's token into `out[outOff .. + nHeadKv*headDim)`. */
  private decodeSealed(page: number, slot: number, out: Float32Array, outOff: number): void {
    const { pageSize, nHeadKv, headDim: d } = this.shape;
    const params = this.params;
    const nib = this.nibbles;
    const b0 = (page * pageSize + slot) * this.tokenBytes;
    for (let h = 0; h < nHeadKv; h++) {
      for (let c = 0; c < d; c += 2) {
        const b = nib[b0 + ((h * d + c) >> 1)]!;
        let mn0: number, sc0: number, mn1: number, sc1: number;
        if (this.isKey) {
          const pb = (page * nHeadKv + h) * 2 * d;
          mn0 = F16_TO_F32[params[pb + c]!]!;
          sc0 = F16_TO_F32[params[pb + d + c]!]!;
          mn1 = F16_TO_F32[params[pb + c + 1]!]!;
          sc1 = F16_TO_F32[params[pb + d + c + 1]!]!;
        } else {
          const pIdx = ((page * pageSize + slot) * nHeadKv + h) * 2;
          mn0 = mn1 = F16_TO_F32[params[pIdx]!]!;
          sc0 = sc1 = F16_TO_F32[params[pIdx + 1]!]!;
        }
        out[outOff + h * d + c] = mn0 + sc0 * (b & 15);
        out[outOff + h * d + c + 1] = mn1 + sc1 * (b >> 4);
      }
    }
  }

  // ---------------------------------------------------------------------------------------------
  // PageStore

  writeToken(page: number, slot: number, src: Float32Array, srcOff: number): void {
    checkSlot(this.shape, page, slot);
    let f = this.fill[page]!;
    if (slot < f) f = slot; // rewriting a slot drops it and everything after it
    let r = this.resOf[page]!;
    if (r < 0) {
      r = this.acquire(page, page);
      // Reopening a sealed page: its surviving tokens go back to full precision (re-quantized on seal).
      for (let t = 0; t < f; t++) this.decodeSealed(page, t, this.residual, r * this.pageStride + t * this.tokenStride);
    }
    const res = this.residual;
    const ts = this.tokenStride;
    const base = r * this.pageStride;
    if (slot > f) res.fill(0, base + f * ts, base + slot * ts); // skipped slots read as zeros
    const dst = base + slot * ts;
    for (let i = 0; i < ts; i++) res[dst + i] = src[srcOff + i]!;
    this.fill[page] = slot + 1;
    this.ticks[r] = ++this.clock;
    if (slot + 1 === this.shape.pageSize) this.seal(page);
  }

  truncatePage(page: number, nValid: number): void {
    checkPage(this.shape, page);
    if (nValid <= 0) {
      this.release(page);
      this.fill[page] = 0;
    } else if (nValid < this.fill[page]!) {
      this.fill[page] = nValid;
    }
  }

  copyPage(dstPage: number, srcPage: number): void {
    checkPage(this.shape, dstPage);
    checkPage(this.shape, srcPage);
    if (dstPage === srcPage) return;
    const rs = this.resOf[srcPage]!;
    const n = this.fill[srcPage]!;
    if (rs >= 0) {
      let rd = this.resOf[dstPage]!;
      if (rd < 0) rd = this.acquire(dstPage, srcPage);
      const s = rs * this.pageStride;
      this.residual.copyWithin(rd * this.pageStride, s, s + n * this.tokenStride);
      this.ticks[rd] = ++this.clock;
    } else {
      this.release(dstPage);
      const pp = this.pageParams;
      this.params.copyWithin(dstPage * pp, srcPage * pp, (srcPage + 1) * pp);
      const pb = this.shape.pageSize * this.tokenBytes;
      this.nibbles.copyWithin(dstPage * pb, srcPage * pb, (srcPage + 1) * pb);
    }
    this.fill[dstPage] = n;
  }

  dotRun(page: number, slotStart: number, n: number, kvHead: number, q: Float32Array, qOff: number, out: Float32Array, outOff: number): void {
    const d = this.shape.headDim;
    const sc = this.scratch;
    const acc0 = d; // per-token sums live in scratch[d .. d + n)
    for (let t = 0; t < n; t++) sc[acc0 + t] = 0;
    const r = this.resOf[page]!;
    if (r >= 0) {
      // Open page: the f32 kernel (channels outer, see f32.ts) over the residual buffer.
      const res = this.residual;
      const ts = this.tokenStride;
      const base0 = r * this.pageStride + slotStart * ts + kvHead * d;
      for (let c = 0; c < d; c += 2) {
        const q0 = q[qOff + c]!, q1 = q[qOff + c + 1]!;
        let b = base0 + c;
        for (let t = 0; t < n; t++) {
          sc[acc0 + t] = sc[acc0 + t]! + (q0 * res[b]! + q1 * res[b + 1]!);
          b += ts;
        }
      }
      for (let t = 0; t < n; t++) out[outOff + t] = sc[acc0 + t]!;
      return;
    }
    const nib = this.nibbles;
    const params = this.params;
    const tb = this.tokenBytes;
    const hd2 = d >> 1;
    const nb0 = (page * this.shape.pageSize + slotStart) * tb + kvHead * hd2;
    // The query's channel weights: keys fold their per-channel scale in (qs_c = q_c * scale_c);
    // values have one scale per token, applied after the sum.
    let bias = 0;
    if (this.isKey) {
      // key = min_c + scale_c * code: dot = sum(q_c min_c) + sum((q_c scale_c) code).
      const pb = (page * this.shape.nHeadKv + kvHead) * 2 * d;
      for (let c = 0; c < d; c++) {
        const qc = q[qOff + c]!;
        bias += qc * F16_TO_F32[params[pb + c]!]!;
        sc[c] = qc * F16_TO_F32[params[pb + d + c]!]!;
      }
    } else {
      for (let c = 0; c < d; c++) {
        sc[c] = q[qOff + c]!;
        bias += q[qOff + c]!; // value = min_t + scale_t * code: dot = min_t sum(q) + scale_t sum(q code)
      }
    }
    // Channels outer (eight per step = four bytes), tokens inner, as in f32.ts.
    let j = 0;
    for (; j + 3 < hd2; j += 4) {
      const c = 2 * j;
      const w0 = sc[c]!, w1 = sc[c + 1]!, w2 = sc[c + 2]!, w3 = sc[c + 3]!;
      const w4 = sc[c + 4]!, w5 = sc[c + 5]!, w6 = sc[c + 6]!, w7 = sc[c + 7]!;
      let b = nb0 + j;
      for (let t = 0; t < n; t++) {
        const x0 = nib[b]!, x1 = nib[b + 1]!, x2 = nib[b + 2]!, x3 = nib[b + 3]!;
        sc[acc0 + t] = sc[acc0 + t]! + (w0 * (x0 & 15) + w1 * (x0 >> 4) + (w2 * (x1 & 15) + w3 * (x1 >> 4)) +
          (w4 * (x2 & 15) + w5 * (x2 >> 4) + (w6 * (x3 & 15) + w7 * (x3 >> 4))));
        b += tb;
      }
    }
    for (; j < hd2; j++) {
      const w0 = sc[2 * j]!, w1 = sc[2 * j + 1]!;
      let b = nb0 + j;
      for (let t = 0; t < n; t++) {
        const x = nib[b]!;
        sc[acc0 + t] = sc[acc0 + t]! + (w0 * (x & 15) + w1 * (x >> 4));
        b += tb;
      }
    }
    if (this.isKey) {
      for (let t = 0; t < n; t++) out[outOff + t] = bias + sc[acc0 + t]!;
    } else {
      let pIdx = ((page * this.shape.pageSize + slotStart) * this.shape.nHeadKv + kvHead) * 2;
      const pStride = this.shape.nHeadKv * 2;
      for (let t = 0; t < n; t++) {
        out[outOff + t] = F16_TO_F32[params[pIdx]!]! * bias + F16_TO_F32[params[pIdx + 1]!]! * sc[acc0 + t]!;
        pIdx += pStride;
      }
    }
  }

  axpyRun(page: number, slotStart: number, n: number, kvHead: number, w: Float32Array, wOff: number, out: Float32Array, outOff: number): void {
    const d = this.shape.headDim;
    const r = this.resOf[page]!;
    if (r >= 0) {
      // Open page: the f32 kernel (channels outer, see f32.ts) over the residual buffer.
      const res = this.residual;
      const ts = this.tokenStride;
      const base0 = r * this.pageStride + slotStart * ts + kvHead * d;
      for (let c = 0; c < d; c += 2) {
        let a0 = out[outOff + c]!, a1 = out[outOff + c + 1]!;
        let b = base0 + c;
        for (let t = 0; t < n; t++) {
          const wt = w[wOff + t]!;
          a0 += wt * res[b]!;
          a1 += wt * res[b + 1]!;
          b += ts;
        }
        out[outOff + c] = a0;
        out[outOff + c + 1] = a1;
      }
      return;
    }
    const nib = this.nibbles;
    const params = this.params;
    const tb = this.tokenBytes;
    const hd2 = d >> 1;
    let nb = (page * this.shape.pageSize + slotStart) * tb + kvHead * hd2;
    if (this.isKey) {
      // sum_t w_t (min_c + scale_c code_tc) = min_c sum(w) + scale_c sum_t(w_t code_tc).
      const acc = this.scratch;
      for (let c = 0; c < d; c++) acc[c] = 0;
      let sumW = 0;
      for (let t = 0; t < n; t++) {
        const wt = w[wOff + t]!;
        sumW += wt;
        for (let j = 0; j < hd2; j++) {
          const b = nib[nb + j]!;
          acc[2 * j] = acc[2 * j]! + wt * (b & 15);
          acc[2 * j + 1] = acc[2 * j + 1]! + wt * (b >> 4);
        }
        nb += tb;
      }
      const pb = (page * this.shape.nHeadKv + kvHead) * 2 * d;
      for (let c = 0; c < d; c++) {
        out[outOff + c] = out[outOff + c]! + sumW * F16_TO_F32[params[pb + c]!]! + F16_TO_F32[params[pb + d + c]!]! * acc[c]!;
      }
    } else {
      // sum_t w_t (min_t + scale_t code_tc): the min terms add the same sum to every channel, and
      // w_t * scale_t is computed once per token; then channels outer, tokens inner (see f32.ts).
      const aT = this.scratch;
      let pIdx = ((page * this.shape.pageSize + slotStart) * this.shape.nHeadKv + kvHead) * 2;
      const pStride = this.shape.nHeadKv * 2;
      let bias = 0;
      for (let t = 0; t < n; t++) {
        const wt = w[wOff + t]!;
        bias += wt * F16_TO_F32[params[pIdx]!]!;
        aT[t] = wt * F16_TO_F32[params[pIdx + 1]!]!;
        pIdx += pStride;
      }
      let j = 0;
      for (; j + 1 < hd2; j += 2) {
        const o = outOff + 2 * j;
        let a0 = out[o]! + bias, a1 = out[o + 1]! + bias, a2 = out[o + 2]! + bias, a3 = out[o + 3]! + bias;
        let b = nb + j;
        for (let t = 0; t < n; t++) {
          const at = aT[t]!;
          const x = nib[b]!;
          const y = nib[b + 1]!;
          a0 += at * (x & 15);
          a1 += at * (x >> 4);
          a2 += at * (y & 15);
          a3 += at * (y >> 4);
          b += tb;
        }
        out[o] = a0;
        out[o + 1] = a1;
        out[o + 2] = a2;
        out[o + 3] = a3;
      }
      if (j < hd2) {
        const o = outOff + 2 * j;
        let a0 = out[o]! + bias, a1 = out[o + 1]! + bias;
        let b = nb + j;
        for (let t = 0; t < n; t++) {
          const x = nib[b]!;
          a0 += aT[t]! * (x & 15);
          a1 += aT[t]! * (x >> 4);
          b += tb;
        }
        out[o] = a0;
        out[o + 1] = a1;
      }
    }
  }

  readToken(page: number, slot: number, out: Float32Array, outOff: number): void {
    checkSlot(this.shape, page, slot);
    const r = this.resOf[page]!;
    if (r < 0) {
      this.decodeSealed(page, slot, out, outOff);
      return;
    }
    const base = r * this.pageStride + slot * this.tokenStride;
    for (let i = 0; i < this.tokenStride; i++) out[outOff + i] = this.residual[base + i]!;
  }

  /** Layout: int32 fill, int32 open flag (little-endian), then an open page's `fill` residual
   *  tokens (f32) or a sealed page's params (f16) followed by its nibbles. */
  exportPage(page: number): Uint8Array {
    checkPage(this.shape, page);
    const n = this.fill[page]!;
    const r = this.resOf[page]!;
    const payload = r >= 0 ? n * this.tokenStride * 4 : this.sealedPageBytes();
    const out = new Uint8Array(EXPORT_HEADER_BYTES + payload);
    const view = new DataView(out.buffer);
    view.setInt32(0, n, true);
    view.setInt32(4, r >= 0 ? 1 : 0, true);
    if (r >= 0) {
      const s = this.residual.byteOffset + r * this.pageStride * 4;
      out.set(new Uint8Array(this.buffer, s, payload), EXPORT_HEADER_BYTES);
    } else {
      const pBytes = this.pageParams * 2;
      out.set(new Uint8Array(this.buffer, this.params.byteOffset + page * pBytes, pBytes), EXPORT_HEADER_BYTES);
      const nBytes = this.shape.pageSize * this.tokenBytes;
      out.set(new Uint8Array(this.buffer, this.nibbles.byteOffset + page * nBytes, nBytes), EXPORT_HEADER_BYTES + pBytes);
    }
    return out;
  }

  importPage(page: number, bytes: Uint8Array): void {
    checkPage(this.shape, page);
    if (bytes.byteLength < EXPORT_HEADER_BYTES) checkImportLength("int4", bytes.byteLength, EXPORT_HEADER_BYTES);
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const n = view.getInt32(0, true);
    const open = view.getInt32(4, true);
    // An open page holds 1 .. pageSize-1 tokens: it is sealed when its last slot is written and
    // gives its buffer back when truncated to 0.
    const minFill = open === 1 ? 1 : 0;
    const maxFill = open === 1 ? this.shape.pageSize - 1 : this.shape.pageSize;
    if ((open !== 0 && open !== 1) || !(n >= minFill && n <= maxFill)) {
      throw new SnapshotError(`an int4 page snapshot has fill ${n} and open flag ${open}; it is corrupt or from another page size`, {
        field: "page",
        fill: n,
        open,
      });
    }
    const payload = open === 1 ? n * this.tokenStride * 4 : this.sealedPageBytes();
    checkImportLength("int4", bytes.byteLength, EXPORT_HEADER_BYTES + payload);
    const body = bytes.subarray(EXPORT_HEADER_BYTES);
    if (open === 1) {
      let r = this.resOf[page]!;
      if (r < 0) r = this.acquire(page, page);
      new Uint8Array(this.buffer, this.residual.byteOffset + r * this.pageStride * 4, payload).set(body);
      this.ticks[r] = ++this.clock;
    } else {
      this.release(page);
      const pBytes = this.pageParams * 2;
      new Uint8Array(this.buffer, this.params.byteOffset + page * pBytes, pBytes).set(body.subarray(0, pBytes));
      const nBytes = this.shape.pageSize * this.tokenBytes;
      new Uint8Array(this.buffer, this.nibbles.byteOffset + page * nBytes, nBytes).set(body.subarray(pBytes));
    }
    this.fill[page] = n;
  }

  private sealedPageBytes(): number {
    return this.pageParams * 2 + this.shape.pageSize * this.tokenBytes;
  }
}

/** Nearest code in 0..15 (ties up; NaN -> 0). */
function quant4(x: number): number {
  const r = Math.round(x);
  return r > 15 ? 15 : r >= 0 ? r : 0;
}
