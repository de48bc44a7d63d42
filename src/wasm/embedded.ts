// What the two embedded WebAssembly modules share (the matmul kernels, src/model/wasm/, and the
// attention kernels, src/cache/wasm/): decoding the base64 bytes build.mjs embeds, a synchronous
// compile that reports "unavailable" instead of throwing, and the bump layout their owners use to
// place buffers in an instance's memory before growing it once.

/** Largest linear memory kvbound lays out in one instance: wasm32 addresses 4 GiB; engines cap it
 *  lower in places (Chrome on 32-bit hosts: 1 GiB), so past 2 GiB the callers keep JS buffers. */
export const MAX_WASM_MEMORY_BYTES = 2 ** 31;
export const WASM_PAGE_BYTES = 65536;
/**
 * The most a wasm32 memory can hold short of its last page: a cache's kernel memory may go this far
 * (its kernels compute every address in unsigned 32-bit arithmetic; tested past 2 GiB). Engines that
 * cannot grow that much refuse the grow, and the cache keeps plain buffers.
 */
export const MAX_WASM32_MEMORY_BYTES = 2 ** 32 - WASM_PAGE_BYTES;

function decodeBase64(b64: string): Uint8Array<ArrayBuffer> {
  const s = atob(b64);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

/**
 * Compiles embedded module bytes synchronously; null when this runtime cannot (no WebAssembly, no
 * SIMD: Safari < 16.4, Node < 16.4; or a browser main thread refusing synchronous compiles of more
 * than 4 KiB, where the callers fall back to their JS kernels).
 */
export function compileEmbedded(base64: string): WebAssembly.Module | null {
  try {
    return typeof WebAssembly === "object" && typeof atob === "function" ? new WebAssembly.Module(decodeBase64(base64)) : null;
  } catch {
    return null;
  }
}

/** Grows `memory` to at least `bytes`; false past `limit` or when the engine refuses. */
export function growMemoryTo(memory: WebAssembly.Memory, bytes: number, limit = MAX_WASM_MEMORY_BYTES): boolean {
  if (bytes > limit) return false;
  const need = Math.ceil(bytes / WASM_PAGE_BYTES) - memory.buffer.byteLength / WASM_PAGE_BYTES;
  try {
    if (need > 0) memory.grow(need);
  } catch {
    return false; // RangeError: the engine could not reserve that much
  }
  return true;
}

/**
 * A bump layout of an instance's memory: `reserve` hands out 64-byte aligned byte offsets (offset
 * 0 stays unused: a null pointer would be a bug). Used before the memory exists, to size it, and by
 * the planner to predict it.
 */
export class ArenaLayout {
  protected top = 64;

  /** Bytes laid out so far. */
  get bytes(): number {
    return this.top;
  }

  reserve(bytes: number): number {
    const at = this.top;
    this.top = at + Math.ceil(bytes / 64) * 64;
    return at;
  }
}
