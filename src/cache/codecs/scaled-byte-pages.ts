// Storage shared by the int8 and fp8 codecs: one byte code per value and one f32 scale per
// (token, head), in one buffer. The codecs differ only in how a byte encodes and decodes, so each
// keeps its own kernels (hot loops stay monomorphic) and inherits the layout and page bookkeeping.

import type { KvRole, PageShape, StoreKernelLayout } from "./types.js";
import { checkImportLength, checkPage, storeRegion, type StoreRegion } from "./shape.js";

/** Bytes: 1 per value plus a 4-byte scale per (token, head), plus the dot kernel's scratch (8 per page slot). */
export function scaledByteStoreBytes(shape: PageShape): number {
  const tokenHeads = shape.nPages * shape.pageSize * shape.nHeadKv;
  return tokenHeads * shape.headDim + tokenHeads * 4 + shape.pageSize * 8;
}

export abstract class ScaledBytePages {
  abstract readonly kind: "int8" | "fp8";
  readonly role: KvRole;
  readonly shape: PageShape;
  readonly reservedBytes: number;
  protected readonly buffer: ArrayBuffer;
  protected readonly scales: Float32Array; // [nPages][pageSize][nHeadKv]
  /** Byte offsets in `buffer` of the scales and of the codes ([nPages][pageSize][nHeadKv][headDim]). */
  protected readonly scalesOffset: number;
  protected readonly codesOffset: number;
  protected readonly tokenStride: number; // nHeadKv * headDim
  protected readonly pageStride: number; // pageSize * tokenStride
  protected readonly pageHeads: number; // pageSize * nHeadKv
  protected readonly scratch: Float64Array; // [pageSize] per-token sums (dotRun) / weights (axpyRun)

  constructor(role: KvRole, shape: PageShape, region?: StoreRegion) {
    this.role = role;
    this.shape = Object.freeze({ ...shape });
    this.tokenStride = shape.nHeadKv * shape.headDim;
    this.pageStride = shape.pageSize * this.tokenStride;
    this.pageHeads = shape.pageSize * shape.nHeadKv;
    const nScales = shape.nPages * this.pageHeads;
    this.reservedBytes = scaledByteStoreBytes(shape);
    const { buffer, byteOffset } = storeRegion(region, this.reservedBytes);
    this.buffer = buffer;
    // Widest elements first so that every view starts aligned: f64 scratch, f32 scales, byte codes.
    this.scratch = new Float64Array(buffer, byteOffset, shape.pageSize);
    this.scalesOffset = byteOffset + shape.pageSize * 8;
    this.scales = new Float32Array(buffer, this.scalesOffset, nScales);
    this.codesOffset = this.scalesOffset + nScales * 4;
  }

  kernelLayout(): StoreKernelLayout {
    return { data: this.codesOffset, scales: this.scalesOffset };
  }

  truncatePage(page: number, _nValid: number): void {
    checkPage(this.shape, page);
  }

  copyPage(dstPage: number, srcPage: number): void {
    checkPage(this.shape, dstPage);
    checkPage(this.shape, srcPage);
    const codes = new Uint8Array(this.buffer, this.codesOffset);
    const s = srcPage * this.pageStride;
    codes.copyWithin(dstPage * this.pageStride, s, s + this.pageStride);
    const sh = srcPage * this.pageHeads;
    this.scales.copyWithin(dstPage * this.pageHeads, sh, sh + this.pageHeads);
  }

  /** Layout: the page's scales (pageSize*nHeadKv f32) then its codes (pageSize*nHeadKv*headDim bytes). */
  exportPage(page: number): Uint8Array {
    checkPage(this.shape, page);
    const sBytes = this.pageHeads * 4;
    const out = new Uint8Array(sBytes + this.pageStride);
    out.set(new Uint8Array(this.buffer, this.scalesOffset + page * sBytes, sBytes), 0);
    out.set(new Uint8Array(this.buffer, this.codesOffset + page * this.pageStride, this.pageStride), sBytes);
    return out;
  }

  importPage(page: number, bytes: Uint8Array): void {
    checkPage(this.shape, page);
    const sBytes = this.pageHeads * 4;
    checkImportLength(this.kind, bytes.byteLength, sBytes + this.pageStride);
    new Uint8Array(this.buffer, this.scalesOffset + page * sBytes, sBytes).set(bytes.subarray(0, sBytes));
    new Uint8Array(this.buffer, this.codesOffset + page * this.pageStride, this.pageStride).set(bytes.subarray(sBytes));
  }
}
