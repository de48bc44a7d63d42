// Resolves a codec kind to its page store, and predicts a store's bytes without allocating it (the
// planner's `kvbound` engine rule calls pageStoreBytes; a test holds it equal to reservedBytes).
//
//   kind | stored per value                         | bits/value at headDim 128, page 16
//   f32  | f32                                      | 32
//   f16  | IEEE binary16, nearest-even              | 16
//   int8 | symmetric int8, f32 scale per token-head | 8.25
//   fp8  | OCP e4m3 (FN), f32 scale per token-head  | 8.25
//   int4 | KIVI: keys per channel over a page, values per token-head; asymmetric, f16 min+scale;
//        | the filling page in f32 (a pool of `openPages` residual pages)
//        | keys 4 + 2 (params) = 6, values 4 + 0.25 = 4.25, + the residual pool
//
// Measured attention error vs f32 per codec: accuracy.test.ts. Speed: bench/cache-codecs.ts.

import type { CodecKind, KvRole, PageShape, PageStore } from "./types.js";
import { checkStoreBytes, validatePageShape, type StoreRegion } from "./shape.js";
import { F32PageStore, f32StoreBytes } from "./f32.js";
import { F16PageStore, f16StoreBytes } from "./f16.js";
import { Int8PageStore, int8StoreBytes } from "./int8.js";
import { Int4PageStore, int4StoreBytes } from "./int4.js";
import { Fp8PageStore, fp8StoreBytes } from "./fp8.js";

export type { CodecKind, KvRole, PageShape, PageStore, StoreKernelLayout } from "./types.js";
export type { StoreRegion } from "./shape.js";
export { CODEC_KINDS } from "./types.js";
export { DEFAULT_OPEN_PAGES, resolveOpenPages } from "./int4.js";
export { MAX_STORE_BYTES } from "./shape.js";

export interface PageStoreOptions {
  /** int4 only: residual (full-precision) page buffers, i.e. pages that may be filling at once.
   *  Pass the cache's maxSequences; default DEFAULT_OPEN_PAGES; clamped to [2, nPages]. */
  readonly openPages?: number;
  /** Where the store keeps its bytes (a region of the cache's wasm memory); default its own buffer. */
  readonly region?: StoreRegion;
}

/** Bytes `createPageStore(kind, role, shape, options)` reserves, computed without allocating. */
export function pageStoreBytes(kind: CodecKind, role: KvRole, shape: PageShape, options: PageStoreOptions = {}): number {
  validatePageShape(shape);
  switch (kind) {
    case "f32":
      return f32StoreBytes(shape);
    case "f16":
      return f16StoreBytes(shape);
    case "int8":
      return int8StoreBytes(shape);
    case "int4":
      return int4StoreBytes(role, shape, options);
    case "fp8":
      return fp8StoreBytes(shape);
    default:
      return kind satisfies never;
  }
}

/** One layer's K or V store for every page of the pool, allocated once. */
export function createPageStore(kind: CodecKind, role: KvRole, shape: PageShape, options: PageStoreOptions = {}): PageStore {
  checkStoreBytes(pageStoreBytes(kind, role, shape, options), kind, shape);
  switch (kind) {
    case "f32":
      return new F32PageStore(role, shape, options.region);
    case "f16":
      return new F16PageStore(role, shape, options.region);
    case "int8":
      return new Int8PageStore(role, shape, options.region);
    case "int4":
      return new Int4PageStore(role, shape, options);
    case "fp8":
      return new Fp8PageStore(role, shape, options.region);
    default:
      return kind satisfies never;
  }
}
