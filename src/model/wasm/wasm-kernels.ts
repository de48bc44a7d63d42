// Loads the WebAssembly SIMD kernels (kernels.as, embedded by build.mjs as kernels-wasm.ts) and
// gives each model one instance over its own linear memory, laid out once: weights copied in at
// load, activations after them, the memory made at its final size and never grown (growing would
// detach the JS views). With threads > 1 that memory is a SharedArrayBuffer and a MatmulPool's
// workers run the same module over it, splitting the matmuls by rows (row-call.ts).
// Callers fall back to the JS kernels when `wasmKernelsAvailable()` is false (no WebAssembly, or
// no SIMD: Safari < 16.4, Node < 16.4).
//
// Memory cost: a copied matrix takes F32 4 B/value, Q8_0 34 B per 32 values (int8 + the file's
// f16 scale, read through a 256 KiB f16 -> f32 table), as much as the file; a streaming load
// (loadModel from a path, URL or Blob) keeps no other copy of it, a load from bytes keeps the
// caller's. `TransformerModel.wasmBytes` reports the exact figure; `kernels: "js"` avoids the copy
// (and the speed).

import { KERNELS_RELAXED_WASM_BASE64 } from "./kernels-relaxed-wasm.js";
import { KERNELS_WASM_BASE64 } from "./kernels-wasm.js";
import { ArenaLayout, compileEmbedded, MAX_WASM_MEMORY_BYTES, WASM_PAGE_BYTES, type MemoryKind } from "../../wasm/embedded.js";
import { MatmulPool, MAX_JOB_CALLS, MIN_SPLIT_WORK, threadsUnavailable, type PoolStats } from "./matmul-pool.js";
import { ROW_KERNELS, RowCall, runRows, type RowCallPool, type RowKernelFn } from "../../wasm/row-call.js";

export interface KernelExports {
  /** The imported memory, exported back (the arena's `memory`). */
  readonly memory: WebAssembly.Memory;
  quantizeQ8(x: number, n: number, qx: number, dx: number): void;
  /** Q8_K (n % 256 == 0): qs like quantizeQ8's, the 256-block's f32 d written once per 32 values. */
  quantizeQ8K(x: number, n: number, qx: number, dx: number): void;
  /** wq, wd: a q8 matrix (kernels.as: rows in groups of 4); x16: one token's activations widened to
   *  int16 (widenQ8); f16: 1 when the weight scales (wd) are f16, 0 when they are f32. */
  matvecQ8(out: number, wq: number, wd: number, rows: number, cols: number, x16: number, dx: number, f16: number): void;
  widenQ8(qx: number, dx: number, nTok: number, cols: number, x16: number, dxT: number): void;
  /** pk: a chunk of rows packed by packQ8 or packQ4K; sx: blockSumsQ8's sums of the nTok tokens where the rows have offsets (Q4_K, Q2_K), else 0; g16: q8g16 rows (per-16 scales). */
  matmulPacked(out: number, outStride: number, pk: number, rows: number, cols: number, x16: number, dxT: number, nTok: number, sx: number, g16: number): void;
  /** A chunk of q8 rows (f16 scales, or with g16 the q8g16 per-16 pairs and wc Q2_K's offsets) repacked for matmulPacked. */
  packQ8(dst: number, wq: number, wd: number, wc: number, rows: number, cols: number, g16: number): void;
  packQ4K(dst: number, wq: number, wa: number, wc: number, rows: number, cols: number): void;
  /** quantizeQ8 or quantizeQ8K (k = 1), blockSumsQ8 with k, then widenQ8, over `rows` rows of `width` at x. */
  quantizeRows(x: number, rows: number, width: number, qx: number, dx: number, x16: number, dxT: number, sx: number, k: number): void;
  /** Per 32 values, or per 16 with g16 (Q2_K's offsets). */
  blockSumsQ8(qx: number, dx: number, n: number, sx: number, g16: boolean): void;
  /** One token's Q8_K activations: x16 widened (widenQ8; the plain build reads it), qx int8 (the relaxed build reads it), dx, sx. */
  matvecQ4K(out: number, wq: number, wa: number, wc: number, rows: number, cols: number, x16: number, qx: number, dx: number, sx: number): void;
  /** wc: per-16 offsets (Q2_K), 0 for none; s16: the activations' per-16 sums (blockSumsQ8 g16). */
  matvecQ8g16(out: number, wq: number, wd: number, rows: number, cols: number, x16: number, dx: number, wc: number, s16: number): void;
  matmulF32(out: number, outStride: number, w: number, rows: number, cols: number, x: number, xStride: number, nTok: number): void;
  /** elementwise.as's: g[i] = silu(g[i]) * u[i] for i < n (here to run on the pool's threads). */
  swiglu(g: number, u: number, n: number): void;
}

export { ArenaLayout, MAX_WASM_MEMORY_BYTES } from "../../wasm/embedded.js";
export { defaultThreads, MAX_THREADS } from "./matmul-pool.js";

const compiled = new Map<string, WebAssembly.Module | null>();

/**
 * The compiled module for a shared or a plain memory, the relaxed-SIMD build or the plain one; null
 * when this runtime cannot compile it (no wasm or no SIMD; for the relaxed build, no relaxed SIMD:
 * Chrome has it since 114, Node 20 only behind --experimental-wasm-relaxed-simd).
 */
function kernelModule(memory: MemoryKind, relaxed = false): WebAssembly.Module | null {
  // Synchronous compile: fine in Node and workers (the web page runs the engine in one) and on
  // Chrome's main thread up to 8 MB (4 KiB before Chrome 133: there compileEmbedded gives null and
  // the model keeps the JS kernels, as the attention module already does).
  const key = `${memory}${relaxed ? "-relaxed" : ""}`;
  if (!compiled.has(key)) compiled.set(key, compileEmbedded(relaxed ? KERNELS_RELAXED_WASM_BASE64 : KERNELS_WASM_BASE64, memory));
  return compiled.get(key)!;
}

export function wasmKernelsAvailable(): boolean {
  return kernelModule("unshared") !== null;
}

/**
 * A module whose export f(a, b, out) stores i32x4.relaxed_dot_i8x16_i7x16_add_s(v128 at a, v128 at
 * b, 0) at out, over a memory of its own (exported as mem).
 */
const RELAXED_DOT_PROBE = [
  0, 97, 115, 109, 1, 0, 0, 0, 1, 7, 1, 0x60, 3, 0x7f, 0x7f, 0x7f, 0, 3, 2, 1, 0, 5, 3, 1, 0, 1,
  7, 11, 2, 1, 0x66, 0, 0, 3, 0x6d, 0x65, 0x6d, 2, 0, 10, 29, 1, 27, 0, 0x20, 2, 0x20, 0, 0xfd, 0, 4, 0,
  0x20, 1, 0xfd, 0, 4, 0, 0x41, 0, 0xfd, 0x11, 0xfd, 0x93, 0x02, 0xfd, 0x0b, 4, 0, 0x0b,
];

let relaxedDotChecked: boolean | undefined;

/**
 * Whether the runtime's relaxed int8 dot gives the exact sums where the spec makes them
 * deterministic (second operand 0..127): Node 20's V8 11.3, behind --experimental-wasm-relaxed-simd,
 * returns twice them on x86-64, so there the plain build runs even with the flag.
 */
function relaxedDotExact(): boolean {
  if (relaxedDotChecked !== undefined) return relaxedDotChecked;
  relaxedDotChecked = false;
  try {
    const ex = new WebAssembly.Instance(new WebAssembly.Module(Uint8Array.from(RELAXED_DOT_PROBE))).exports as { f(a: number, b: number, out: number): void; mem: WebAssembly.Memory };
    const m = new Int8Array(ex.mem.buffer, 0, 32);
    const want = [0, 0, 0, 0];
    for (let i = 0; i < 16; i++) {
      m[i] = 100 - 13 * i; // -95..100
      m[16 + i] = 127 - 5 * i; // 52..127
      want[i >> 2]! += m[i]! * m[16 + i]!;
    }
    ex.f(0, 16, 64);
    const got = new Int32Array(ex.mem.buffer, 64, 4);
    relaxedDotChecked = want.every((w, i) => got[i] === w);
  } catch {
    // no relaxed SIMD here
  }
  return relaxedDotChecked;
}

/** Whether this runtime runs the relaxed-SIMD kernels, and runs them right (WasmArena uses them unless told not to). */
export function relaxedSimdAvailable(): boolean {
  return relaxedDotExact() && kernelModule("unshared", true) !== null;
}

/**
 * One kernel instance and a bump layout of its memory: `reserve` hands out 64-byte aligned byte
 * offsets; `commit` makes the memory, at the size of everything reserved, and instantiates the
 * kernels over it; views are valid from then on. `threads` > 1 (where threadsUnavailable() is null)
 * makes that memory shared and splits big matmuls (`run`) over a MatmulPool.
 */
export class WasmArena extends ArenaLayout {
  /** The kernels' exports (after commit). */
  k!: KernelExports;
  /** The instance's memory (after commit): a SharedArrayBuffer's when `threads` > 1. */
  memory!: WebAssembly.Memory;
  /** Threads asked for. */
  readonly threadsWanted: number;
  /** Multiply-adds from which a matmul is split (MIN_SPLIT_WORK unless a benchmark sets it). */
  readonly minSplitWork: number;
  /** Whether the kernels are the relaxed-SIMD build (after commit; the results are the same bits). */
  relaxedSimd = false;
  private readonly relaxedWanted: boolean;
  private committed = false;
  private fns: RowKernelFn[] = [];
  private pool: MatmulPool | null = null;
  /** RowCalls for linear() to fill (nextCall): one, or up to MAX_JOB_CALLS between batch() and flush(). */
  private readonly calls: RowCall[] = [];
  private batching = false;
  private queued = 0;
  private queuedWork = 0;
  private threadsWhy: string | null = null;

  /** `relaxedSimd: false` keeps the plain-SIMD build where the relaxed one would run (tests compare the two). */
  constructor(opts: { readonly threads?: number; readonly minSplitWork?: number; readonly relaxedSimd?: boolean } = {}) {
    super();
    if (kernelModule("unshared") === null) throw new Error("WebAssembly SIMD is unavailable; use the JS kernels");
    this.threadsWanted = Math.max(1, Math.floor(opts.threads ?? 1));
    this.minSplitWork = opts.minSplitWork ?? MIN_SPLIT_WORK;
    this.relaxedWanted = opts.relaxedSimd ?? true;
    for (let i = 0; i < MAX_JOB_CALLS; i++) this.calls.push(new RowCall());
  }

  override reserve(bytes: number): number {
    if (this.committed) throw new Error("WasmArena: reserve after commit");
    return super.reserve(bytes);
  }

  /** Makes the memory for everything reserved and the instance over it; false when that passes
   *  MAX_WASM_MEMORY_BYTES or the engine refuses the memory (the caller then keeps the JS kernels). */
  commit(): boolean {
    if (this.top > MAX_WASM_MEMORY_BYTES) return false;
    const pages = Math.ceil(this.top / WASM_PAGE_BYTES);
    let shared = false;
    if (this.threadsWanted > 1) {
      this.threadsWhy = threadsUnavailable();
      shared = this.threadsWhy === null && kernelModule("shared") !== null;
      if (this.threadsWhy === null && !shared) this.threadsWhy = "the kernels module does not compile for a shared memory here";
    }
    let memory: WebAssembly.Memory;
    try {
      // maximum = initial: never grown (views stay valid), and a shared memory reserves no more.
      memory = new WebAssembly.Memory({ initial: pages, maximum: pages, shared });
    } catch {
      if (!shared) return false; // RangeError: the engine could not reserve that much
      try {
        memory = new WebAssembly.Memory({ initial: pages, maximum: pages });
        this.threadsWhy = `a shared memory of ${this.top} bytes was refused`;
        shared = false;
      } catch {
        return false;
      }
    }
    this.memory = memory;
    const kind = shared ? "shared" : "unshared";
    const relaxed = this.relaxedWanted && relaxedSimdAvailable() ? kernelModule(kind, true) : null;
    this.relaxedSimd = relaxed !== null;
    const mod = relaxed ?? kernelModule(kind)!;
    this.k = new WebAssembly.Instance(mod, { env: { memory } }).exports as unknown as KernelExports;
    const exports = this.k as unknown as Record<string, RowKernelFn>;
    this.fns = ROW_KERNELS.map((name) => exports[name]!);
    if (shared) {
      this.pool = new MatmulPool({ module: mod, memory }, this.threadsWanted, this.minSplitWork);
      this.pool.watch(this);
    }
    this.committed = true;
    return true;
  }

  /** Whether the memory is a SharedArrayBuffer's (modules instantiated over it must import it shared). */
  get shared(): boolean {
    return this.pool !== null;
  }

  /** The pool, for the cache's attention to split over too (null: one thread). */
  get rowCallPool(): RowCallPool | null {
    return this.pool;
  }

  /** Threads the matmuls are split over (1 without a pool). */
  get threads(): number {
    return this.pool === null ? 1 : this.pool.threads;
  }

  /** Why fewer threads run than `threadsWanted`, or null. */
  get threadsNote(): string | null {
    return this.threadsWhy ?? this.pool?.note ?? null;
  }

  /** Starts the pool's workers and resolves once they are up (at once without a pool). */
  async whenThreadsReady(): Promise<void> {
    await this.pool?.whenReady();
  }

  /** Matmuls the pool has split so far (0 without one). */
  get splits(): number {
    return this.pool?.stats.splits ?? 0;
  }

  /** The pool's split jobs and what they cost the calling thread (null without one). */
  get threadStats(): Readonly<PoolStats> | null {
    return this.pool?.stats ?? null;
  }

  /** The RowCall for the next matmul to fill and pass to run(). */
  nextCall(): RowCall {
    return this.calls[this.queued]!;
  }

  /**
   * Runs the matmul `c` (from nextCall), of `work` multiply-adds: split over the pool when that is
   * worth it. Between batch() and flush() it is queued instead, to run with the others as one job.
   */
  run(c: RowCall, work: number): void {
    if (c !== this.calls[this.queued]) throw new Error("WasmArena.run takes the RowCall nextCall() gave");
    this.queued++;
    this.queuedWork += work;
    if (!this.batching || this.queued === MAX_JOB_CALLS) this.runQueued();
  }

  /**
   * Queues the matmuls run() gets until flush(): matrices that read the same input (q, k, v) go to
   * the threads as one job, with one wake-up and one wait instead of one per matrix. Their outputs
   * are valid after flush(); their inputs must stay unchanged until then.
   */
  batch(): void {
    this.batching = true;
  }

  /** Runs what batch() queued and ends the batch. */
  flush(): void {
    this.batching = false;
    if (this.queued > 0) this.runQueued();
  }

  /** Runs what batch() queued so far, the batch going on (a matrix that needs its input quantized anew). */
  drain(): void {
    if (this.queued > 0) this.runQueued();
  }

  private runQueued(): void {
    const n = this.queued, work = this.queuedWork;
    this.queued = 0;
    this.queuedWork = 0;
    if (this.pool !== null && work >= this.minSplitWork) this.pool.run(this.calls, n, this.fns, work);
    else for (let i = 0; i < n; i++) runRows(this.fns, this.calls[i]!, 0, this.calls[i]!.rows);
  }

  /** Stops the pool's workers; the kernels go on, on this thread. */
  dispose(): void {
    this.pool?.dispose();
  }

  f32(offset: number, n: number): Float32Array {
    return new Float32Array(this.memory.buffer, offset, n);
  }

  i8(offset: number, n: number): Int8Array {
    return new Int8Array(this.memory.buffer, offset, n);
  }

  u8(offset: number, n: number): Uint8Array {
    return new Uint8Array(this.memory.buffer, offset, n);
  }

  u16(offset: number, n: number): Uint16Array {
    return new Uint16Array(this.memory.buffer, offset, n);
  }
}
