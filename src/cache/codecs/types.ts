// The contract between the paged cache, its codecs and the attention kernel. A codec stores one
// layer's K (or V) for every page of the pool in one preallocated buffer and exposes kernels that
// read its pages in place: attention never sees a dequantized copy of the cache.

export type CodecKind = "f32" | "f16" | "int8" | "int4" | "fp8";
export const CODEC_KINDS: readonly CodecKind[] = ["f32", "f16", "int8", "int4", "fp8"];

/** Which tensor a store holds: some codecs quantize keys and values differently (KIVI). */
export type KvRole = "k" | "v";

/** Shape of one store: every page holds `pageSize` tokens x `nHeadKv` heads x `headDim` values. */
export interface PageShape {
  readonly nPages: number;
  readonly pageSize: number;
  readonly nHeadKv: number;
  readonly headDim: number;
}

export interface PageStore {
  readonly kind: CodecKind;
  readonly role: KvRole;
  readonly shape: PageShape;
  /** Bytes this store reserved in total (pages plus any per-store side buffers). */
  readonly reservedBytes: number;

  /** Encodes one token, `src[srcOff .. srcOff + nHeadKv*headDim)` laid out [nHeadKv][headDim],
   *  into `slot` of `page`. Slots of a page are written in increasing order. */
  writeToken(page: number, slot: number, src: Float32Array, srcOff: number): void;
  /** The page now holds only its first `nValid` slots (undo / truncate); later writes refill it. */
  truncatePage(page: number, nValid: number): void;
  /** Copies a page's contents (copy-on-write of a shared page). */
  copyPage(dstPage: number, srcPage: number): void;

  /** Keys: `out[outOff + t] = dot(q[qOff .. qOff+headDim), key(page, slotStart + t, kvHead))`, t < n. */
  dotRun(page: number, slotStart: number, n: number, kvHead: number, q: Float32Array, qOff: number, out: Float32Array, outOff: number): void;
  /** Values: `out[outOff .. outOff+headDim) += sum_t w[wOff + t] * value(page, slotStart + t, kvHead)`, t < n. */
  axpyRun(page: number, slotStart: number, n: number, kvHead: number, w: Float32Array, wOff: number, out: Float32Array, outOff: number): void;
  /**
   * Where the wasm attention kernels (src/cache/wasm/) find this store's pages: byte offsets in the
   * store's buffer, written into the kernels' store descriptor (common.as). Present on codecs that
   * have wasm kernels; the cache uses them only when the store lives in the kernels' memory.
   */
  kernelLayout?(): StoreKernelLayout;
  /**
   * Optional, for stores whose pages the CPU does not read (the GPU's): slot i of `page` receives
   * the token now at (srcPages[i], srcSlots[i]), i < n, every source read before `page` is
   * written (a compaction, cache-group.ts compactStores). Without it the cache moves tokens
   * through readToken and writeToken.
   */
  packPage?(page: number, srcPages: Int32Array, srcSlots: Int32Array, n: number): void;
  /** Decodes one token's `[nHeadKv][headDim]` values (tests, references, snapshots). */
  readToken(page: number, slot: number, out: Float32Array, outOff: number): void;

  /** A page's encoded bytes (snapshots); `importPage` restores them exactly. */
  exportPage(page: number): Uint8Array;
  importPage(page: number, bytes: Uint8Array): void;
}

/** A store's part of the wasm kernels' descriptor (src/cache/wasm/common.as). */
export interface StoreKernelLayout {
  /** Byte offset of the values / codes. */
  readonly data: number;
  /** Byte offset of the per-(token, head) f32 scales (int8, fp8), else 0. */
  readonly scales: number;
  /** Codec-specific fields, descriptor words 8 onwards. */
  readonly extra?: readonly number[];
}
