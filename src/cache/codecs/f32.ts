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
