// The int8 codec: symmetric quantization with one f32 scale per (token, head):
// scale = max|x| / 127, code = round(x / scale) in [-127, 127]. One scale per head vector (rather
// than q8_0's groups of 32) lets the dot kernel hoist it out of the channel loop: a dot product is
// scale * sum(q * code), one multiply per token. Costs 8 bits + 32/headDim bits per value.

import type { KvRole, PageShape, PageStore } from "./types.js";
import { checkSlot, type StoreRegion } from "./shape.js";
import { ScaledBytePages, scaledByteStoreBytes } from "./scaled-byte-pages.js";

export const int8StoreBytes = scaledByteStoreBytes;

export class Int8PageStore extends ScaledBytePages implements PageStore {
  readonly kind = "int8" as const;
  private readonly codes: Int8Array; // [nPages][pageSize][nHeadKv][headDim]

  constructor(role: KvRole, shape: PageShape, region?: StoreRegion) {
    super(role, shape, region);
    this.codes = new Int8Array(this.buffer, this.codesOffset, shape.nPages * this.pageStride);
  }

  writeToken(page: number, slot: number, src: Float32Array, srcOff: number): void {
    checkSlot(this.shape, page, slot);
    const d = this.shape.headDim;
    const codes = this.codes;
    for (let h = 0; h < this.shape.nHeadKv; h++) {
      const s0 = srcOff + h * d;
      let amax = 0;
      for (let c = 0; c < d; c++) {
        const v = Math.abs(src[s0 + c]!);
        if (v > amax) amax = v;
      }
      const scale = Math.fround(amax / 127);
      const inv = scale > 0 ? 1 / scale : 0;
      const sIdx = (page * this.shape.pageSize + slot) * this.shape.nHeadKv + h;
      this.scales[sIdx] = scale;
      const base = sIdx * d;
      for (let c = 0; c < d; c++) {
        const r = Math.round(src[s0 + c]! * inv);
        codes[base + c] = r > 127 ? 127 : r < -127 ? -127 : r;
      }
    }
  }

  dotRun(page: number, slotStart: number, n: number, kvHead: number, q: Float32Array, qOff: number, out: Float32Array, outOff: number): void {
    const codes = this.codes;
    const d = this.shape.headDim;
    const stride = this.tokenStride;
    const base0 = ((page * this.shape.pageSize + slotStart) * this.shape.nHeadKv + kvHead) * d;
    // Channels outer, tokens inner (see f32.ts); each token's scale multiplies its sum once.
    const acc = this.scratch;
    for (let t = 0; t < n; t++) acc[t] = 0;
    let c = 0;
    for (; c + 7 < d; c += 8) {
      const q0 = q[qOff + c]!, q1 = q[qOff + c + 1]!, q2 = q[qOff + c + 2]!, q3 = q[qOff + c + 3]!;
      const q4 = q[qOff + c + 4]!, q5 = q[qOff + c + 5]!, q6 = q[qOff + c + 6]!, q7 = q[qOff + c + 7]!;
      let b = base0 + c;
      for (let t = 0; t < n; t++) {
        acc[t] = acc[t]! + (q0 * codes[b]! + q1 * codes[b + 1]! + (q2 * codes[b + 2]! + q3 * codes[b + 3]!) +
          (q4 * codes[b + 4]! + q5 * codes[b + 5]! + (q6 * codes[b + 6]! + q7 * codes[b + 7]!)));
        b += stride;
      }
    }
    for (; c < d; c++) {
      const qc = q[qOff + c]!;
      let b = base0 + c;
      for (let t = 0; t < n; t++) {
        acc[t] = acc[t]! + qc * codes[b]!;
        b += stride;
      }
    }
    const nh = this.shape.nHeadKv;
    let sIdx = (page * this.shape.pageSize + slotStart) * nh + kvHead;
    for (let t = 0; t < n; t++) {
      out[outOff + t] = this.scales[sIdx]! * acc[t]!;
      sIdx += nh;
    }
  }

  axpyRun(page: number, slotStart: number, n: number, kvHead: number, w: Float32Array, wOff: number, out: Float32Array, outOff: number): void {
    const codes = this.codes;
    const scales = this.scales;
    const d = this.shape.headDim;
    const nh = this.shape.nHeadKv;
    const s0 = (page * this.shape.pageSize + slotStart) * nh + kvHead;
    const stride = nh * d;
    // Channels outer, tokens inner (see f32.ts), each token's weight * scale computed once.
    const aT = this.scratch;
    for (let t = 0, sIdx = s0; t < n; t++, sIdx += nh) aT[t] = w[wOff + t]! * scales[sIdx]!;
    let c = 0;
    for (; c + 3 < d; c += 4) {
      let a0 = out[outOff + c]!, a1 = out[outOff + c + 1]!, a2 = out[outOff + c + 2]!, a3 = out[outOff + c + 3]!;
      let b = s0 * d + c;
      for (let t = 0; t < n; t++) {
        const a = aT[t]!;
        a0 += a * codes[b]!;
        a1 += a * codes[b + 1]!;
        a2 += a * codes[b + 2]!;
        a3 += a * codes[b + 3]!;
        b += stride;
      }
      out[outOff + c] = a0;
      out[outOff + c + 1] = a1;
      out[outOff + c + 2] = a2;
      out[outOff + c + 3] = a3;
    }
    for (; c < d; c++) {
      let acc = out[outOff + c]!;
      let b = s0 * d + c;
      for (let t = 0; t < n; t++) {
        acc += aT[t]! * codes[b]!;
        b += stride;
      }
      out[outOff + c] = acc;
    }
  }

  dotRun4(
    page: number, slotStart: number, n: number, kvHead: number,
    q: Float32Array, qOff: number, qStride: number, out: Float32Array, outOff: number, outStride: number, acc: Float64Array,
  ): void {
    const codes = this.codes;
    const d = this.shape.headDim;
    const stride = this.tokenStride;
    const P = this.shape.pageSize;
    const base0 = ((page * P + slotStart) * this.shape.nHeadKv + kvHead) * d;
    // Four query heads of one KV head in one pass (see f32.ts dotRun4): each code loaded once.
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
        const x0 = codes[b]!;
        const x1 = codes[b + 1]!;
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
        const x = codes[b]!;
        acc[t] = acc[t]! + a * x;
        acc[P + t] = acc[P + t]! + bq * x;
        acc[2 * P + t] = acc[2 * P + t]! + cq * x;
        acc[3 * P + t] = acc[3 * P + t]! + dq * x;
        b += stride;
      }
    }
    const nh = this.shape.nHeadKv;
    let sIdx = (page * P + slotStart) * nh + kvHead;
    for (let t = 0; t < n; t++) {
      const sc = this.scales[sIdx]!;
      out[outOff + t] = sc * acc[t]!;
      out[outOff + outStride + t] = sc * acc[P + t]!;
      out[outOff + 2 * outStride + t] = sc * acc[2 * P + t]!;
      out[outOff + 3 * outStride + t] = sc * acc[3 * P + t]!;
      sIdx += nh;
    }
  }

  axpyRun4(
    page: number, slotStart: number, n: number, kvHead: number,
    w: Float32Array, wOff: number, wStride: number, out: Float32Array, outOff: number, outStride: number, acc: Float64Array,
  ): void {
    const codes = this.codes;
    const scales = this.scales;
    const d = this.shape.headDim;
    const nh = this.shape.nHeadKv;
    const P = this.shape.pageSize;
    const s0 = (page * P + slotStart) * nh + kvHead;
    const stride = nh * d;
    // Each (head, token) weight times its token's scale once, into acc [4][pageSize]; then two
    // channels x four heads in registers (see f32.ts axpyRun4).
    for (let t = 0, sIdx = s0; t < n; t++, sIdx += nh) {
      const sc = scales[sIdx]!;
      acc[t] = w[wOff + t]! * sc;
      acc[P + t] = w[wOff + wStride + t]! * sc;
      acc[2 * P + t] = w[wOff + 2 * wStride + t]! * sc;
      acc[3 * P + t] = w[wOff + 3 * wStride + t]! * sc;
    }
    const o1 = outOff + outStride;
    const o2 = o1 + outStride;
    const o3 = o2 + outStride;
    let c = 0;
    for (; c + 1 < d; c += 2) {
      let a0 = 0, a1 = 0, b0 = 0, b1 = 0, c0 = 0, c1 = 0, d0 = 0, d1 = 0;
      let b = s0 * d + c;
      for (let t = 0; t < n; t++) {
        const x0 = codes[b]!;
        const x1 = codes[b + 1]!;
        const wa = acc[t]!, wb = acc[P + t]!, wc = acc[2 * P + t]!, wd = acc[3 * P + t]!;
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
      let b = s0 * d + c;
      for (let t = 0; t < n; t++) {
        const x = codes[b]!;
        a += acc[t]! * x;
        bb += acc[P + t]! * x;
        cc += acc[2 * P + t]! * x;
        dd += acc[3 * P + t]! * x;
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
    const codes = this.codes;
    const d = this.shape.headDim;
    const stride = this.tokenStride;
    const P = this.shape.pageSize;
    const base0 = ((page * P + slotStart) * this.shape.nHeadKv + kvHead) * d;
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
        const x0 = codes[b]!;
        const x1 = codes[b + 1]!;
        const x2 = codes[b + 2]!;
        const x3 = codes[b + 3]!;
        acc[t] = acc[t]! + ((a0 * x0 + a1 * x1) + (a2 * x2 + a3 * x3));
        acc[P + t] = acc[P + t]! + ((b0 * x0 + b1 * x1) + (b2 * x2 + b3 * x3));
        b += stride;
      }
    }
    for (; c < d; c++) {
      const aq = q[qOff + c]!, bq = q[q1 + c]!;
      let b = base0 + c;
      for (let t = 0; t < n; t++) {
        const x = codes[b]!;
        acc[t] = acc[t]! + aq * x;
        acc[P + t] = acc[P + t]! + bq * x;
        b += stride;
      }
    }
    const nh = this.shape.nHeadKv;
    let sIdx = (page * P + slotStart) * nh + kvHead;
    for (let t = 0; t < n; t++) {
      const sc = this.scales[sIdx]!;
      out[outOff + t] = sc * acc[t]!;
      out[outOff + outStride + t] = sc * acc[P + t]!;
      sIdx += nh;
    }
  }

  axpyRun2(
    page: number, slotStart: number, n: number, kvHead: number,
    w: Float32Array, wOff: number, wStride: number, out: Float32Array, outOff: number, outStride: number, acc: Float64Array,
  ): void {
    const codes = this.codes;
    const scales = this.scales;
    const d = this.shape.headDim;
    const nh = this.shape.nHeadKv;
    const P = this.shape.pageSize;
    const s0 = (page * P + slotStart) * nh + kvHead;
    const stride = nh * d;
    // As axpyRun4 with 2 query heads: each value loaded once for the 2.
    for (let t = 0, sIdx = s0; t < n; t++, sIdx += nh) {
      const sc = scales[sIdx]!;
      acc[t] = w[wOff + t]! * sc;
      acc[P + t] = w[wOff + wStride + t]! * sc;
    }
    const o1 = outOff + outStride;
    // Four channels per pass for two heads: 8 sums + 4 values + 2 weights fit the registers.
    let c = 0;
    for (; c + 3 < d; c += 4) {
      let a0 = 0, a1 = 0, a2 = 0, a3 = 0, b0 = 0, b1 = 0, b2 = 0, b3 = 0;
      let b = s0 * d + c;
      for (let t = 0; t < n; t++) {
        const x0 = codes[b]!;
        const x1 = codes[b + 1]!;
        const x2 = codes[b + 2]!;
        const x3 = codes[b + 3]!;
        const wa = acc[t]!, wb = acc[P + t]!;
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
      let b = s0 * d + c;
      for (let t = 0; t < n; t++) {
        const x = codes[b]!;
        sa += acc[t]! * x;
        sb += acc[P + t]! * x;
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
    const codes = this.codes;
    const d = this.shape.headDim;
    const stride = this.tokenStride;
    const P = this.shape.pageSize;
    const base0 = ((page * P + slotStart) * this.shape.nHeadKv + kvHead) * d;
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
        const x0 = codes[b]!;
        const x1 = codes[b + 1]!;
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
        const x = codes[b]!;
        acc[t] = acc[t]! + aq * x;
        acc[P + t] = acc[P + t]! + bq * x;
        acc[2 * P + t] = acc[2 * P + t]! + cq * x;
        b += stride;
      }
    }
    const nh = this.shape.nHeadKv;
    let sIdx = (page * P + slotStart) * nh + kvHead;
    for (let t = 0; t < n; t++) {
      const sc = this.scales[sIdx]!;
      out[outOff + t] = sc * acc[t]!;
      out[outOff + outStride + t] = sc * acc[P + t]!;
      out[outOff + 2 * outStride + t] = sc * acc[2 * P + t]!;
      sIdx += nh;
    }
  }

  axpyRun3(
    page: number, slotStart: number, n: number, kvHead: number,
    w: Float32Array, wOff: number, wStride: number, out: Float32Array, outOff: number, outStride: number, acc: Float64Array,
  ): void {
    const codes = this.codes;
    const scales = this.scales;
    const d = this.shape.headDim;
    const nh = this.shape.nHeadKv;
    const P = this.shape.pageSize;
    const s0 = (page * P + slotStart) * nh + kvHead;
    const stride = nh * d;
    // As axpyRun4 with 3 query heads: each value loaded once for the 3.
    for (let t = 0, sIdx = s0; t < n; t++, sIdx += nh) {
      const sc = scales[sIdx]!;
      acc[t] = w[wOff + t]! * sc;
      acc[P + t] = w[wOff + wStride + t]! * sc;
      acc[2 * P + t] = w[wOff + 2 * wStride + t]! * sc;
    }
    const o1 = outOff + outStride;
    const o2 = o1 + outStride;
    let c = 0;
    for (; c + 1 < d; c += 2) {
      let a0 = 0, a1 = 0, b0 = 0, b1 = 0, c0 = 0, c1 = 0;
      let b = s0 * d + c;
      for (let t = 0; t < n; t++) {
        const x0 = codes[b]!;
        const x1 = codes[b + 1]!;
        const wa = acc[t]!, wb = acc[P + t]!, wc = acc[2 * P + t]!;
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
      let b = s0 * d + c;
      for (let t = 0; t < n; t++) {
        const x = codes[b]!;
        sa += acc[t]! * x;
        sb += acc[P + t]! * x;
        sc += acc[2 * P + t]! * x;
        b += stride;
      }
      out[outOff + c] = out[outOff + c]! + sa;
      out[o1 + c] = out[o1 + c]! + sb;
      out[o2 + c] = out[o2 + c]! + sc;
    }
  }

  readToken(page: number, slot: number, out: Float32Array, outOff: number): void {
    checkSlot(this.shape, page, slot);
    const d = this.shape.headDim;
    for (let h = 0; h < this.shape.nHeadKv; h++) {
      const sIdx = (page * this.shape.pageSize + slot) * this.shape.nHeadKv + h;
      const scale = this.scales[sIdx]!;
      for (let c = 0; c < d; c++) out[outOff + h * d + c] = scale * this.codes[sIdx * d + c]!;
    }
  }
}
