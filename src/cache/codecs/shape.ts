// Validation of a page store's shape and the named limit on one store's size, shared by every codec.

import { CacheConfigError, SnapshotError } from "../../errors.js";
import type { PageShape } from "./types.js";

/**
 * Largest buffer one store may reserve. Browsers cap a single ArrayBuffer near 2 GiB (and some at
 * 1 GiB on 32-bit hosts); the pool holds one store per layer and tensor, so a model that needs more
 * than this per layer needs a smaller budget or a smaller codec, not one giant buffer.
 */
export const MAX_STORE_BYTES = 2 ** 31 - 1;

/**
 * Where a store keeps its bytes: `reservedBytes` from `byteOffset` in `buffer`. The cache passes
 * regions of one WebAssembly memory so that the attention kernels (src/cache/wasm/) read the pages
 * in place; without one a store allocates its own ArrayBuffer.
 */
export interface StoreRegion {
  readonly buffer: ArrayBuffer;
  readonly byteOffset: number;
}

/** `region`, checked to hold `bytes` at an 8-byte aligned offset; or a fresh buffer of `bytes`. */
export function storeRegion(region: StoreRegion | undefined, bytes: number): StoreRegion {
  if (region === undefined) return { buffer: new ArrayBuffer(bytes), byteOffset: 0 };
  if (region.byteOffset % 8 !== 0 || region.byteOffset < 0 || region.byteOffset + bytes > region.buffer.byteLength) {
    throw new RangeError(`a store region of ${bytes} bytes at ${region.byteOffset} does not fit an aligned slot of a ${region.buffer.byteLength}-byte buffer`);
  }
  return region;
}

/** Throws CacheConfigError unless every dimension is a positive safe integer. */
export function validatePageShape(shape: PageShape): void {
  for (const field of ["nPages", "pageSize", "nHeadKv", "headDim"] as const) {
    const v = shape[field];
    if (!Number.isSafeInteger(v) || v <= 0) {
      throw new CacheConfigError(`page store ${field} ${v} is invalid: use a positive integer`, { field, value: v });
    }
  }
}

/** Throws CacheConfigError when a store of `bytes` would exceed MAX_STORE_BYTES. */
export function checkStoreBytes(bytes: number, kind: string, shape: PageShape): void {
  if (bytes > MAX_STORE_BYTES) {
    throw new CacheConfigError(
      `a ${kind} page store of ${shape.nPages} pages x ${shape.pageSize} tokens x ${shape.nHeadKv} heads x ` +
        `${shape.headDim} dims needs ${bytes} bytes, over the ${MAX_STORE_BYTES}-byte limit of one buffer; ` +
        `lower budgetBytes or use a smaller codec`,
      { field: "budgetBytes", value: bytes },
    );
  }
}

/** Throws RangeError for a page/slot outside the store: a bug in the caller, not bad user input. */
export function checkSlot(shape: PageShape, page: number, slot: number): void {
  if (!(page >= 0 && page < shape.nPages && slot >= 0 && slot < shape.pageSize)) {
    throw new RangeError(`page ${page} slot ${slot} is outside the store (${shape.nPages} pages x ${shape.pageSize} slots)`);
  }
}

export function checkPage(shape: PageShape, page: number): void {
  if (!(page >= 0 && page < shape.nPages && Number.isInteger(page))) {
    throw new RangeError(`page ${page} is outside the store (${shape.nPages} pages)`);
  }
}

/** Throws SnapshotError when imported page bytes do not have the length this store exports. */
export function checkImportLength(kind: string, got: number, want: number): void {
  if (got !== want) {
    throw new SnapshotError(
      `a ${kind} page snapshot has ${got} bytes but this store's pages take ${want}; ` +
        `restore into a cache with the same codec, page size, KV heads and head dim`,
      { field: "page", got, want },
    );
  }
}
