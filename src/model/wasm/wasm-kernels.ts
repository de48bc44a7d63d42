// Loads the WebAssembly SIMD kernels (kernels.as, embedded by build.mjs as kernels-wasm.ts) and
// gives each model one instance with its own linear memory, laid out once: weights copied in at
// load, activations after them, never grown afterwards (growing would detach the JS views).
// Callers fall back to the JS kernels when `wasmKernelsAvailable()` is false (no WebAssembly, or
// no SIMD: Safari < 16.4, Node < 16.4).
//
// Memory cost: a copied matrix takes F32 4 B/value, Q8_0 34 B per 32 values (int8 + the file's
// f16 scale, read through a 256 KiB f16 -> f32 table), as much as the file; a streaming load
// (loadModel from a path, URL or Blob) keeps no other copy of it, a load from bytes keeps the
// caller's. `TransformerModel.wasmBytes` reports the exact figure; `kernels: "js"` avoids the copy
// (and the speed).

import { KERNELS_WASM_BASE64 } from "./kernels-wasm.js";
import { F16_TO_F32 } from "../../cache/codecs/half.js";
import { ArenaLayout, compileEmbedded, growMemoryTo } from "../../wasm/embedded.js";

export interface KernelExports {
  readonly memory: WebAssembly.Memory;
  quantizeQ8(x: number, n: number, qx: number, dx: number): void;
  /** Q8_K (n % 256 == 0): qs like quantizeQ8's, the 256-block's f32 d written once per 32 values. */
  quantizeQ8K(x: number, n: number, qx: number, dx: number): void;
  /** f16tbl: the arena's f16 table when the weight scales (wd) are f16, 0 when they are f32. */
  matvecQ8(out: number, wq: number, wd: number, rows: number, cols: number, qx: number, dx: number, f16tbl: number): void;
  widenQ8(qx: number, dx: number, nTok: number, cols: number, x16: number, dxT: number): void;
  /** wd: f32 scales (an f16-scale matrix's widened by widenScales first). */
  matmulQ8x16(out: number, outStride: number, wq: number, wd: number, rows: number, cols: number, x16: number, dxT: number, nTok: number): void;
  /** dst[i] = the f32 of the f16 bits src[i], through the f16 table, for i < n. */
  widenScales(dst: number, src: number, n: number, f16tbl: number): void;
  /** Per 32 values, or per 16 with g16 (Q2_K's offsets). */
  blockSumsQ8(qx: number, dx: number, n: number, sx: number, g16: boolean): void;
  matvecQ4K(out: number, wq: number, wa: number, wc: number, rows: number, cols: number, qx: number, dx: number, sx: number): void;
  /** wc: per-16 offsets (Q2_K), 0 for none; s16: the activations' per-16 sums (blockSumsQ8 g16). */
  matvecQ8g16(out: number, wq: number, wd: number, rows: number, cols: number, qx: number, dx: number, wc: number, s16: number): void;
  matmulF32(out: number, outStride: number, w: number, rows: number, cols: number, x: number, xStride: number, nTok: number): void;
}

export { ArenaLayout, MAX_WASM_MEMORY_BYTES } from "../../wasm/embedded.js";

let compiled: WebAssembly.Module | null | undefined;

/** The compiled module, or null when this runtime cannot compile it (no wasm or no SIMD). */
function kernelModule(): WebAssembly.Module | null {
  // Synchronous compile: the module is ~3 KiB, under the 4 KiB that browsers allow on the main thread.
  if (compiled === undefined) compiled = compileEmbedded(KERNELS_WASM_BASE64);
  return compiled;
}

export function wasmKernelsAvailable(): boolean {
  return kernelModule() !== null;
}

/**
 * One kernel instance and a bump layout of its memory: `reserve` hands out 64-byte aligned byte
 * offsets; `commit` grows the memory once to hold them all; views are valid from then on.
 */
export class WasmArena extends ArenaLayout {
  readonly k: KernelExports;
  /** Offset of the f16 -> f32 table the q8 kernels read f16 scales through; 0 until fillF16Table. */
  f16Table = 0;
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
    if (!growMemoryTo(this.k.memory, this.top)) return false;
    this.committed = true;
    return true;
  }

  /** Writes the f16 -> f32 table at `offset` (reserved: F16_TABLE_BYTES, after commit) and uses it from now on. */
  fillF16Table(offset: number): void {
    if (!this.committed || offset <= 0) throw new Error("WasmArena: the f16 table needs a reserved offset, after commit");
    this.f32(offset, 65536).set(F16_TO_F32);
    this.f16Table = offset;
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

  u16(offset: number, n: number): Uint16Array {
    return new Uint16Array(this.k.memory.buffer, offset, n);
  }
}
