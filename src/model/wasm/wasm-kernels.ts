// Loads the WebAssembly SIMD kernels (kernels.as, embedded by build.mjs as kernels-wasm.ts) and
// gives each model one instance with its own linear memory, laid out once: weights copied in at
// load, activations after them, never grown afterwards (growing would detach the JS views).
// Callers fall back to the JS kernels when `wasmKernelsAvailable()` is false (no WebAssembly, or
// no SIMD: Safari < 16.4, Node < 16.4).
//
// Memory cost: the copied matrices exist twice while the caller keeps the file bytes (LoadedModel
// does): F32 4 B/value, Q8_0 36 B per 32 values (int8 + f32 scale) on top of the file's 34. For
// SmolLM2-135M Q8_0 that is ~153 MB more. `LlamaModel.wasmBytes` reports the exact figure;
// `kernels: "js"` avoids the copy (and the speed).

import { KERNELS_WASM_BASE64 } from "./kernels-wasm.js";

export interface KernelExports {
  readonly memory: WebAssembly.Memory;
  quantizeQ8(x: number, n: number, qx: number, dx: number): void;
  matvecQ8(out: number, wq: number, wd: number, rows: number, cols: number, qx: number, dx: number): void;
  widenQ8(qx: number, dx: number, nTok: number, cols: number, x16: number, dxT: number): void;
  matmulQ8x16(out: number, outStride: number, wq: number, wd: number, rows: number, cols: number, x16: number, dxT: number, nTok: number): void;
  blockSumsQ8(qx: number, dx: number, n: number, sx: number): void;
  matvecQ4K(out: number, wq: number, wa: number, wc: number, rows: number, cols: number, qx: number, dx: number, sx: number): void;
  matvecQ8g16(out: number, wq: number, wd: number, rows: number, cols: number, qx: number, dx: number): void;
  matmulF32(out: number, outStride: number, w: number, rows: number, cols: number, x: number, xStride: number, nTok: number): void;
}

/** Largest linear memory a model may lay out: wasm32 addresses 4 GiB; engines cap it lower in
 *  places (Chrome on 32-bit hosts: 1 GiB), so models past 2 GiB of wasm-side bytes use the JS kernels. */
export const MAX_WASM_MEMORY_BYTES = 2 ** 31;
const PAGE_BYTES = 65536;

let compiled: WebAssembly.Module | null | undefined;

function decodeBase64(b64: string): Uint8Array<ArrayBuffer> {
  if (typeof atob === "function") {
    const s = atob(b64);
    const out = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
    return out;
  }
  throw new Error("no base64 decoder");
}

/** The compiled module, or null when this runtime cannot compile it (no wasm or no SIMD). */
function kernelModule(): WebAssembly.Module | null {
  if (compiled !== undefined) return compiled;
  try {
    // Synchronous compile: the module is ~3 KiB, under the 4 KiB that browsers allow on the main thread.
    compiled = typeof WebAssembly === "object" ? new WebAssembly.Module(decodeBase64(KERNELS_WASM_BASE64)) : null;
  } catch {
    compiled = null;
  }
  return compiled;
}

export function wasmKernelsAvailable(): boolean {
  return kernelModule() !== null;
}

/**
 * The bump layout alone, without a kernel instance: WasmArena lays its memory out with it, and the
 * planner (src/plan/kvbound.ts) replays a model's layout with it to predict `LlamaModel.wasmBytes`.
 */
export class ArenaLayout {
  protected top = 64; // offset 0 stays unused (a null pointer would be a bug)

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

/**
 * One kernel instance and a bump layout of its memory: `reserve` hands out 64-byte aligned byte
 * offsets; `commit` grows the memory once to hold them all; views are valid from then on.
 */
export class WasmArena extends ArenaLayout {
  readonly k: KernelExports;
  private committed = false;

  constructor() {
    super();
    const mod = kernelModule();
    if (mod === null) throw new Error("WebAssembly SIMD is unavailable; use the JS kernels");
    this.k = new WebAssembly.Instance(mod, {}).exports as unknown as KernelExports;
  }

  override reserve(bytes: number): number {
    if (this.committed) throw new Error("WasmArena: reserve after commit");
    return super.reserve(bytes);
  }

  /** Grows the memory to everything reserved; false when that passes MAX_WASM_MEMORY_BYTES or the
   *  engine refuses to grow (the caller then keeps the JS kernels). */
  commit(): boolean {
    if (this.top > MAX_WASM_MEMORY_BYTES) return false;
    const need = Math.ceil(this.top / PAGE_BYTES) - this.k.memory.buffer.byteLength / PAGE_BYTES;
    try {
      if (need > 0) this.k.memory.grow(need);
    } catch {
      return false; // RangeError: the engine could not reserve that much
    }
    this.committed = true;
    return true;
  }

  f32(offset: number, n: number): Float32Array {
    return new Float32Array(this.k.memory.buffer, offset, n);
  }

  i8(offset: number, n: number): Int8Array {
    return new Int8Array(this.k.memory.buffer, offset, n);
  }

  u8(offset: number, n: number): Uint8Array {
    return new Uint8Array(this.k.memory.buffer, offset, n);
  }
}
