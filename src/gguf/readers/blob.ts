// ByteSources over data already in hand: a Blob/File (browser uploads, fetched blobs) and bytes
// in memory (ArrayBuffer, Uint8Array). Browser-safe.

import type { ByteSource } from "./byte-source.js";

function clampRange(size: number, offset: number, length: number): [number, number] {
  const start = Math.min(Math.max(0, offset), size);
  const end = Math.min(size, start + Math.max(0, length));
  return [start, end];
}

/** Reads slices of a Blob; only the requested slice is materialised. */
export function blobSource(blob: Blob, name = "blob"): ByteSource {
  return {
    size: blob.size,
    name,
    async read(offset: number, length: number): Promise<Uint8Array> {
      const [start, end] = clampRange(blob.size, offset, length);
      if (end <= start) return new Uint8Array(0);
      return new Uint8Array(await blob.slice(start, end).arrayBuffer());
    },
    async close(): Promise<void> {},
  };
}

/** Reads from bytes in memory without copying (the returned arrays are views into `data`). */
export function bytesSource(data: ArrayBuffer | Uint8Array, name = "memory"): ByteSource {
  const bytes = data instanceof Uint8Array ? data : new Uint8Array(data);
  return {
    size: bytes.byteLength,
    name,
    async read(offset: number, length: number): Promise<Uint8Array> {
      const [start, end] = clampRange(bytes.byteLength, offset, length);
      return bytes.subarray(start, end);
    },
    async close(): Promise<void> {},
  };
}
