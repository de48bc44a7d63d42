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
