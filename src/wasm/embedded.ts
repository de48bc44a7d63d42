// What the embedded WebAssembly modules share (the matmul and elementwise kernels, src/model/wasm/,
// and the attention kernels, src/cache/wasm/): decoding the base64 bytes build.mjs embeds, a
// synchronous compile that reports "unavailable" instead of throwing (for a shared or a plain
// imported memory), and the bump layout their owners use to place buffers in an instance's memory
// before sizing it once.

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
 * Which memory a module that imports `env.memory` is compiled for. build.mjs declares the model's
 * modules' memory shared (a SharedArrayBuffer that worker threads see too); "unshared" flips that
 * declaration so that a plain WebAssembly.Memory backs the same code where SharedArrayBuffer is
 * missing (a page without COOP/COEP) or not wanted (one thread).
 */
export type MemoryKind = "shared" | "unshared";

/**
 * Compiles embedded module bytes synchronously; null when this runtime cannot (no WebAssembly, no
 * SIMD: Safari < 16.4, Node < 16.4; or a browser main thread refusing synchronous compiles of more
 * than 4 KiB, where the callers fall back to their JS kernels). `memory` picks the declaration of
 * an imported memory (default as built); a module without one is compiled as it is.
 */
export function compileEmbedded(base64: string, memory?: MemoryKind): WebAssembly.Module | null {
  try {
    if (typeof WebAssembly !== "object" || typeof atob !== "function") return null;
    const bytes = decodeBase64(base64);
    return new WebAssembly.Module(memory === "unshared" ? unshareMemoryImport(bytes) : bytes);
  } catch {
    return null;
  }
}

/** An unsigned LEB128 at bytes[at]: its value and the offset after it. */
function leb(bytes: Uint8Array, at: number): [value: number, next: number] {
  let value = 0, shift = 0, c = 0;
  do {
    c = bytes[at++]!;
    value += (c & 127) * 2 ** shift;
    shift += 7;
  } while (c & 128);
  return [value, at];
}

/** `value` as an unsigned LEB128. */
function lebBytes(value: number): number[] {
  const out: number[] = [];
  do {
    let c = value % 128;
    value = Math.floor(value / 128);
    if (value > 0) c |= 128;
    out.push(c);
  } while (value > 0);
  return out;
}

/**
 * The module with its shared memory import (limits flags 0x03: shared, with a maximum) declared as a
 * plain one without a maximum (0x00), as a module built with only --importMemory declares it; any
 * plain WebAssembly.Memory then fits. The maximum's bytes go and the import section's length with
 * them (wasm threads proposal, "limits" in the binary format). Other modules come back unchanged.
 */
export function unshareMemoryImport(bytes: Uint8Array<ArrayBuffer>): Uint8Array<ArrayBuffer> {
  let i = 8; // magic + version
  while (i < bytes.length) {
    const id = bytes[i]!;
    const [size, body] = leb(bytes, i + 1);
    const end = body + size;
    if (id === 2) {
      // import section: vec(import); import = module name, field name, importdesc
      let [count, p] = leb(bytes, body);
      for (let e = 0; e < count; e++) {
        for (let s = 0; s < 2; s++) {
          const [len, after] = leb(bytes, p);
          p = after + len;
        }
        const kind = bytes[p++]!;
        if (kind === 0x02) {
          if (bytes[p] !== 0x03) return bytes;
          const maxAt = leb(bytes, p + 1)[1];
          const maxEnd = leb(bytes, maxAt)[1];
          const out = [...bytes.subarray(0, i + 1), ...lebBytes(size - (maxEnd - maxAt)), ...bytes.subarray(body, p), 0x00, ...bytes.subarray(p + 1, maxAt), ...bytes.subarray(maxEnd)];
          return Uint8Array.from(out);
        }
        if (kind === 0x00) p = leb(bytes, p)[1]; // function: type index
        else if (kind === 0x01) {
          // table: reftype, limits
          const flags = bytes[p + 1]!;
          p = leb(bytes, p + 2)[1];
          if (flags & 1) p = leb(bytes, p)[1];
        } else if (kind === 0x03) p += 2; // global: valtype, mutability
        else return bytes; // a kind this walk does not know: leave the module as it is
      }
      return bytes;
    }
    i = end;
  }
  return bytes;
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
