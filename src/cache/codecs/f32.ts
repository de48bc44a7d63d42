// The f32 codec: pages hold the values as written. The baseline every other codec is measured
// against, and the exact store the attention reference is checked with.

import type { KvRole, PageShape, PageStore, StoreKernelLayout } from "./types.js";
import { checkImportLength, checkPage, checkSlot, storeRegion, type StoreRegion } from "./shape.js";

/** Bytes: 4 per value, plus the dot kernel's scratch (8 per page slot). */
export function f32StoreBytes(shape: PageShape): number {
  return shape.nPages * shape.pageSize * shape.nHeadKv * shape.headDim * 4 + shape.pageSize * 8;
}

export class F32PageStore implements PageStore {
  readonly kind = "f32" as const;
  readonly role: KvRole;
  readonly shape: PageShape;
  readonly reservedBytes: number;
  private readonly data: Float32Array; // [nPages][pageSize][nHeadKv][headDim]
  private readonly tokenStride: number; // nHeadKv * headDim
  private readonly pageStride: number; // pageSize * tokenStride
  private readonly scratch: Float64Array; // [pageSize] per-token partial sums of dotRun

  constructor(role: KvRole, shape: PageShape, region?: StoreRegion) {
    this.role = role;
    this.shape = Object.freeze({ ...shape });
    this.tokenStride = shape.nHeadKv * shape.headDim;
    this.pageStride = shape.pageSize * this.tokenStride;
    this.reservedBytes = f32StoreBytes(shape);
    const { buffer, byteOffset } = storeRegion(region, this.reservedBytes);
    // The f64 scratch first, so that both views start aligned.
    this.scratch = new Float64Array(buffer, byteOffset, shape.pageSize);
    this.data = new Float32Array(buffer, byteOffset + shape.pageSize * 8, shape.nPages * this.pageStride);
  }

  kernelLayout(): StoreKernelLayout {
    return { data: this.data.byteOffset, scales: 0 };
  }

  writeToken(page: number, slot: number, src: Float32Array, srcOff: number): void {
    checkSlot(this.shape, page, slot);
    const data = this.data;
    const n = this.tokenStride;
    const base = page * this.pageStride + slot * n;
    for (let i = 0; i < n; i++) data[base + i] = src[srcOff + i]!;
  }

  // Stateless per slot: a truncated slot is simply overwritten by the next write.
  truncatePage(page: number, _nValid: number): void {
    checkPage(this.shape, page);
  }

  copyPage(dstPage: number, srcPage: number): void {
    checkPage(this.shape, dstPage);
    checkPage(this.shape, srcPage);
    const s = srcPage * this.pageStride;
    this.data.copyWithin(dstPage * this.pageStride, s, s + this.pageStride);
  }

  dotRun(page: number, slotStart: number, n: number, kvHead: number, q: Float32Array, qOff: number, out: Float32Array, outOff: number): void {
    const data = this.data;
    const d = this.shape.headDim;
    const stride = this.tokenStride;
    const base0 = page * this.pageStride + slotStart * stride + kvHead * d;
    // Channels outer, tokens inner: eight query values stay in registers across the run's tokens
    // and each token's partial sum lives in an f64 scratch (measured ~1.4x faster than one token
    // at a time, which loads q again for every token).
    const acc = this.scratch;
    for (let t = 0; t < n; t++) acc[t] = 0;
    let c = 0;
    for (; c + 7 < d; c += 8) {
      const q0 = q[qOff + c]!, q1 = q[qOff + c + 1]!, q2 = q[qOff + c + 2]!, q3 = q[qOff + c + 3]!;
      const q4 = q[qOff + c + 4]!, q5 = q[qOff + c + 5]!, q6 = q[qOff + c + 6]!, q7 = q[qOff + c + 7]!;
      let b = base0 + c;
      for (let t = 0; t < n; t++) {
        acc[t] = acc[t]! + (q0 * data[b]! + q1 * data[b + 1]! + (q2 * data[b + 2]! + q3 * data[b + 3]!) +
          (q4 * data[b + 4]! + q5 * data[b + 5]! + (q6 * data[b + 6]! + q7 * data[b + 7]!)));
        b += stride;
      }
    }
    for (; c < d; c++) {
      const qc = q[qOff + c]!;
      let b = base0 + c;
      for (let t = 0; t < n; t++) {
        acc[t] = acc[t]! + qc * data[b]!;
        b += stride;
      }
    }
    for (let t = 0; t < n; t++) out[outOff + t] = acc[t]!;
  }

  axpyRun(page: number, slotStart: number, n: number, kvHead: number, w: Float32Array, wOff: number, out: Float32Array, outOff: number): void {
    const data = this.data;
    const d = this.shape.headDim;
    const stride = this.tokenStride;
    const base0 = page * this.pageStride + slotStart * stride + kvHead * d;
    // Channels outer, tokens inner: four output channels stay in registers across the run instead
    // of a load and a store of `out` per token (measured 2.5x faster than token-outer in V8).
    let c = 0;
    for (; c + 3 < d; c += 4) {
      let a0 = out[outOff + c]!, a1 = out[outOff + c + 1]!, a2 = out[outOff + c + 2]!, a3 = out[outOff + c + 3]!;
      let b = base0 + c;
      for (let t = 0; t < n; t++) {
        const wt = w[wOff + t]!;
        a0 += wt * data[b]!;
        a1 += wt * data[b + 1]!;
        a2 += wt * data[b + 2]!;
        a3 += wt * data[b + 3]!;
        b += stride;
      }
      out[outOff + c] = a0;
      out[outOff + c + 1] = a1;
      out[outOff + c + 2] = a2;
      out[outOff + c + 3] = a3;
    }
    for (; c < d; c++) {
      let a = out[outOff + c]!;
      let b = base0 + c;
      for (let t = 0; t < n; t++) {
        a += w[wOff + t]! * data[b]!;
        b += stride;
      }
      out[outOff + c] = a;
    }
  }

  dotRun4(
    page: number, slotStart: number, n: number, kvHead: number,
    q: Float32Array, qOff: number, qStride: number, out: Float32Array, outOff: number, outStride: number, acc: Float64Array,
  ): void {
    const data = this.data;
    const d = this.shape.headDim;
    const stride = this.tokenStride;
    const P = this.shape.pageSize;
    const base0 = page * this.pageStride + slotStart * stride + kvHead * d;
    // As dotRun, channels outer, with two channels of four heads (8 query values) in registers and
    // each key value loaded once for the four heads; acc holds [4][pageSize] partial sums. Measured
    // 1.27x faster than four dotRun calls at headDim 128 (bench/cache.ts, docs/RESULTS.md).
    const q1 = qOff + qStride;
    const q2 = q1 + qStride;
    const q3 = q2 + qStride;
    for (let t = 0; t < 4 * P; t++) acc[t] = 0;
    let c = 0;
    for (; c + 1 < d; c += 2) {
      const a0 = q[qOff + c]!, a1 = q[qOff + c + 1]!, b0 = q[q1 + c]!, b1 = q[q1 + c + 1]!;
      const c0 = q[q2 + c]!, c1 = q[q2 + c + 1]!, d0 = q[q3 + c]!, d1 = q[q3 + c + 1]!;
      let b = base0 + c;
      for (let t = 0; t < n; t++) {
        const x0 = data[b]!;
        const x1 = data[b + 1]!;
        acc[t] = acc[t]! + (a0 * x0 + a1 * x1);
        acc[P + t] = acc[P + t]! + (b0 * x0 + b1 * x1);
        acc[2 * P + t] = acc[2 * P + t]! + (c0 * x0 + c1 * x1);
        acc[3 * P + t] = acc[3 * P + t]! + (d0 * x0 + d1 * x1);
        b += stride;
      }
    }
    for (; c < d; c++) {
      const a = q[qOff + c]!, bq = q[q1 + c]!, cq = q[q2 + c]!, dq = q[q3 + c]!;
      let b = base0 + c;
      for (let t = 0; t < n; t++) {
        const x = data[b]!;
        acc[t] = acc[t]! + a * x;
        acc[P + t] = acc[P + t]! + bq * x;
        acc[2 * P + t] = acc[2 * P + t]! + cq * x;
        acc[3 * P + t] = acc[3 * P + t]! + dq * x;
        b += stride;
      }
    }
    for (let t = 0; t < n; t++) {
      out[outOff + t] = acc[t]!;
      out[outOff + outStride + t] = acc[P + t]!;
      out[outOff + 2 * outStride + t] = acc[2 * P + t]!;
      out[outOff + 3 * outStride + t] = acc[3 * P + t]!;
    }
  }

  axpyRun4(
    page: number, slotStart: number, n: number, kvHead: number,
    w: Float32Array, wOff: number, wStride: number, out: Float32Array, outOff: number, outStride: number, _acc: Float64Array,
  ): void {
    const data = this.data;
    const d = this.shape.headDim;
    const stride = this.tokenStride;
    const base0 = page * this.pageStride + slotStart * stride + kvHead * d;
    // Channels outer in pairs, tokens inner: 2 channels x 4 heads = 8 sums in registers, each value
    // loaded once for the four heads. Measured 1.47x faster than four axpyRun calls at headDim 128.
    const w1 = wOff + wStride;
    const w2 = w1 + wStride;
    const w3 = w2 + wStride;
    const o1 = outOff + outStride;
    const o2 = o1 + outStride;
    const o3 = o2 + outStride;
    let c = 0;
    for (; c + 1 < d; c += 2) {
      let a0 = 0, a1 = 0, b0 = 0, b1 = 0, c0 = 0, c1 = 0, d0 = 0, d1 = 0;
      let b = base0 + c;
      for (let t = 0; t < n; t++) {
        const x0 = data[b]!;
        const x1 = data[b + 1]!;
        const wa = w[wOff + t]!, wb = w[w1 + t]!, wc = w[w2 + t]!, wd = w[w3 + t]!;
        a0 += wa * x0;
        a1 += wa * x1;
        b0 += wb * x0;
        b1 += wb * x1;
        c0 += wc * x0;
        c1 += wc * x1;
        d0 += wd * x0;
        d1 += wd * x1;
        b += stride;
      }
      out[outOff + c] = out[outOff + c]! + a0;
      out[outOff + c + 1] = out[outOff + c + 1]! + a1;
      out[o1 + c] = out[o1 + c]! + b0;
      out[o1 + c + 1] = out[o1 + c + 1]! + b1;
      out[o2 + c] = out[o2 + c]! + c0;
      out[o2 + c + 1] = out[o2 + c + 1]! + c1;
      out[o3 + c] = out[o3 + c]! + d0;
      out[o3 + c + 1] = out[o3 + c + 1]! + d1;
    }
    for (; c < d; c++) {
      let a = 0, bb = 0, cc = 0, dd = 0;
      let b = base0 + c;
      for (let t = 0; t < n; t++) {
        const x = data[b]!;
        a += w[wOff + t]! * x;
        bb += w[w1 + t]! * x;
        cc += w[w2 + t]! * x;
        dd += w[w3 + t]! * x;
        b += stride;
      }
      out[outOff + c] = out[outOff + c]! + a;
      out[o1 + c] = out[o1 + c]! + bb;
      out[o2 + c] = out[o2 + c]! + cc;
      out[o3 + c] = out[o3 + c]! + dd;
    }
  }

  dotRun2(
    page: number, slotStart: number, n: number, kvHead: number,
    q: Float32Array, qOff: number, qStride: number, out: Float32Array, outOff: number, outStride: number, acc: Float64Array,
  ): void {
    const data = this.data;
    const d = this.shape.headDim;
    const stride = this.tokenStride;
    const P = this.shape.pageSize;
    const base0 = page * this.pageStride + slotStart * stride + kvHead * d;
    // As dotRun4 with 2 query heads: each value loaded once for the 2.
    const q1 = qOff + qStride;
    for (let t = 0; t < 2 * P; t++) acc[t] = 0;
    // Four channels per pass for two heads: 8 query values + 4 key values fit the registers.
    let c = 0;
    for (; c + 3 < d; c += 4) {
      const a0 = q[qOff + c]!, a1 = q[qOff + c + 1]!, a2 = q[qOff + c + 2]!, a3 = q[qOff + c + 3]!;
      const b0 = q[q1 + c]!, b1 = q[q1 + c + 1]!, b2 = q[q1 + c + 2]!, b3 = q[q1 + c + 3]!;
      let b = base0 + c;
      for (let t = 0; t < n; t++) {
        const x0 = data[b]!;
        const x1 = data[b + 1]!;
        const x2 = data[b + 2]!;
        const x3 = data[b + 3]!;
        acc[t] = acc[t]! + ((a0 * x0 + a1 * x1) + (a2 * x2 + a3 * x3));
        acc[P + t] = acc[P + t]! + ((b0 * x0 + b1 * x1) + (b2 * x2 + b3 * x3));
        b += stride;
      }
    }
    for (; c < d; c++) {
      const aq = q[qOff + c]!, bq = q[q1 + c]!;
      let b = base0 + c;
      for (let t = 0; t < n; t++) {
        const x = data[b]!;
        acc[t] = acc[t]! + aq * x;
        acc[P + t] = acc[P + t]! + bq * x;
        b += stride;
      }
    }
    for (let t = 0; t < n; t++) {
      out[outOff + t] = acc[t]!;
      out[outOff + outStride + t] = acc[P + t]!;
    }
  }

  axpyRun2(
    page: number, slotStart: number, n: number, kvHead: number,
    w: Float32Array, wOff: number, wStride: number, out: Float32Array, outOff: number, outStride: number, _acc: Float64Array,
  ): void {
    const data = this.data;
    const d = this.shape.headDim;
    const stride = this.tokenStride;
    const base0 = page * this.pageStride + slotStart * stride + kvHead * d;
    // As axpyRun4 with 2 query heads: each value loaded once for the 2.
    const w1 = wOff + wStride;
    const o1 = outOff + outStride;
    // Four channels per pass for two heads: 8 sums + 4 values + 2 weights fit the registers.
    let c = 0;
    for (; c + 3 < d; c += 4) {
      let a0 = 0, a1 = 0, a2 = 0, a3 = 0, b0 = 0, b1 = 0, b2 = 0, b3 = 0;
      let b = base0 + c;
      for (let t = 0; t < n; t++) {
        const x0 = data[b]!;
        const x1 = data[b + 1]!;
        const x2 = data[b + 2]!;
        const x3 = data[b + 3]!;
        const wa = w[wOff + t]!, wb = w[w1 + t]!;
        a0 += wa * x0;
        a1 += wa * x1;
        a2 += wa * x2;
        a3 += wa * x3;
        b0 += wb * x0;
        b1 += wb * x1;
        b2 += wb * x2;
        b3 += wb * x3;
        b += stride;
      }
      out[outOff + c] = out[outOff + c]! + a0;
      out[outOff + c + 1] = out[outOff + c + 1]! + a1;
      out[outOff + c + 2] = out[outOff + c + 2]! + a2;
      out[outOff + c + 3] = out[outOff + c + 3]! + a3;
      out[o1 + c] = out[o1 + c]! + b0;
      out[o1 + c + 1] = out[o1 + c + 1]! + b1;
      out[o1 + c + 2] = out[o1 + c + 2]! + b2;
      out[o1 + c + 3] = out[o1 + c + 3]! + b3;
    }
    for (; c < d; c++) {
      let sa = 0, sb = 0;
      let b = base0 + c;
      for (let t = 0; t < n; t++) {
        const x = data[b]!;
        sa += w[wOff + t]! * x;
        sb += w[w1 + t]! * x;
        b += stride;
      }
      out[outOff + c] = out[outOff + c]! + sa;
      out[o1 + c] = out[o1 + c]! + sb;
    }
  }

  dotRun3(
    page: number, slotStart: number, n: number, kvHead: number,
    q: Float32Array, qOff: number, qStride: number, out: Float32Array, outOff: number, outStride: number, acc: Float64Array,
  ): void {
    const data = this.data;
    const d = this.shape.headDim;
    const stride = this.tokenStride;
    const P = this.shape.pageSize;
    const base0 = page * this.pageStride + slotStart * stride + kvHead * d;
    // As dotRun4 with 3 query heads: each value loaded once for the 3.
    const q1 = qOff + qStride;
    const q2 = q1 + qStride;
    for (let t = 0; t < 3 * P; t++) acc[t] = 0;
    let c = 0;
    for (; c + 1 < d; c += 2) {
      const a0 = q[qOff + c]!, a1 = q[qOff + c + 1]!;
      const b0 = q[q1 + c]!, b1 = q[q1 + c + 1]!;
      const c0 = q[q2 + c]!, c1 = q[q2 + c + 1]!;
      let b = base0 + c;
      for (let t = 0; t < n; t++) {
        const x0 = data[b]!;
        const x1 = data[b + 1]!;
        acc[t] = acc[t]! + (a0 * x0 + a1 * x1);
        acc[P + t] = acc[P + t]! + (b0 * x0 + b1 * x1);
        acc[2 * P + t] = acc[2 * P + t]! + (c0 * x0 + c1 * x1);
        b += stride;
      }
    }
    for (; c < d; c++) {
      const aq = q[qOff + c]!, bq = q[q1 + c]!, cq = q[q2 + c]!;
      let b = base0 + c;
      for (let t = 0; t < n; t++) {
        const x = data[b]!;
        acc[t] = acc[t]! + aq * x;
        acc[P + t] = acc[P + t]! + bq * x;
        acc[2 * P + t] = acc[2 * P + t]! + cq * x;
        b += stride;
      }
    }
    for (let t = 0; t < n; t++) {
      out[outOff + t] = acc[t]!;
      out[outOff + outStride + t] = acc[P + t]!;
      out[outOff + 2 * outStride + t] = acc[2 * P + t]!;
    }
  }

  axpyRun3(
    page: number, slotStart: number, n: number, kvHead: number,
    w: Float32Array, wOff: number, wStride: number, out: Float32Array, outOff: number, outStride: number, _acc: Float64Array,
  ): void {
    const data = this.data;
    const d = this.shape.headDim;
    const stride = this.tokenStride;
    const base0 = page * this.pageStride + slotStart * stride + kvHead * d;
    // As axpyRun4 with 3 query heads: each value loaded once for the 3.
    const w1 = wOff + wStride;
    const w2 = w1 + wStride;
    const o1 = outOff + outStride;
    const o2 = o1 + outStride;
    let c = 0;
    for (; c + 1 < d; c += 2) {
      let a0 = 0, a1 = 0, b0 = 0, b1 = 0, c0 = 0, c1 = 0;
      let b = base0 + c;
      for (let t = 0; t < n; t++) {
        const x0 = data[b]!;
        const x1 = data[b + 1]!;
        const wa = w[wOff + t]!, wb = w[w1 + t]!, wc = w[w2 + t]!;
        a0 += wa * x0;
        a1 += wa * x1;
        b0 += wb * x0;
        b1 += wb * x1;
        c0 += wc * x0;
        c1 += wc * x1;
        b += stride;
      }
      out[outOff + c] = out[outOff + c]! + a0;
      out[outOff + c + 1] = out[outOff + c + 1]! + a1;
      out[o1 + c] = out[o1 + c]! + b0;
      out[o1 + c + 1] = out[o1 + c + 1]! + b1;
      out[o2 + c] = out[o2 + c]! + c0;
      out[o2 + c + 1] = out[o2 + c + 1]! + c1;
    }
    for (; c < d; c++) {
      let sa = 0, sb = 0, sc = 0;
      let b = base0 + c;
      for (let t = 0; t < n; t++) {
        const x = data[b]!;
        sa += w[wOff + t]! * x;
        sb += w[w1 + t]! * x;
        sc += w[w2 + t]! * x;
        b += stride;
      }
      out[outOff + c] = out[outOff + c]! + sa;
      out[o1 + c] = out[o1 + c]! + sb;
      out[o2 + c] = out[o2 + c]! + sc;
    }
  }

  readToken(page: number, slot: number, out: Float32Array, outOff: number): void {
    checkSlot(this.shape, page, slot);
    const n = this.tokenStride;
    const base = page * this.pageStride + slot * n;
    for (let i = 0; i < n; i++) out[outOff + i] = this.data[base + i]!;
  }

  exportPage(page: number): Uint8Array {
    checkPage(this.shape, page);
    const s = page * this.pageStride;
    return new Uint8Array(this.data.slice(s, s + this.pageStride).buffer);
  }

  importPage(page: number, bytes: Uint8Array): void {
    checkPage(this.shape, page);
    checkImportLength("f32", bytes.byteLength, this.pageStride * 4);
    new Uint8Array(this.data.buffer, this.data.byteOffset + page * this.pageStride * 4, this.pageStride * 4).set(bytes);
  }
}
