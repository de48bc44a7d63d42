// One matmul kernel call described so that its output rows can be handed out in ranges: which
// export of kernels.as, its arguments, and how many bytes each argument moves per output row and
// per token. Rows are independent in every kernel (each output row is one dot product per token,
// computed by the same code wherever the range starts), so running rows [r0, r1) on one thread and
// the rest on another gives the same bits as one call over all of them. linear.ts fills a RowCall;
// the model's WasmArena runs it whole or splits it over its MatmulPool. The cache's attention
// (attend-wasm.ts) fills RowCalls too, one row per KV head, over its own kernels: hence src/wasm/,
// which both the model and the cache may import.
//
// A call may also have a prelude: a kernel run before it on each chunk of rows, writing a scratch
// region the call then reads (a batched Q8_0 matmul repacks its rows that way, PACKED_ROWS rows at a
// time). Each thread gets its own slice of the scratch and walks its
// rows in chunks that fit its slice; the prelude is exact per element, so the bits do not change.

/** The kernels a RowCall may name, by index (the pool's workers look them up in the same order). */
export const ROW_KERNELS = ["matvecQ8", "matmulPacked", "matmulF32", "matvecQ4K", "matvecQ8g16", "packQ8", "swiglu", "packQ4K", "quantizeRows"] as const;
export type RowKernel = (typeof ROW_KERNELS)[number];
/** ROW_KERNELS' indices by name. */
export const ROW_KERNEL: { readonly [K in RowKernel]: number } = {
  matvecQ8: 0, matmulPacked: 1, matmulF32: 2, matvecQ4K: 3, matvecQ8g16: 4, packQ8: 5, swiglu: 6, packQ4K: 7, quantizeRows: 8,
};
/** Most arguments a row kernel takes (the attention kernels take 12). */
export const MAX_ROW_ARGS = 12;
/**
 * Rows per block of a split, unless a call says otherwise: every range but the last is a multiple of
 * it, so each thread writes whole 64-byte lines of f32 outputs (no two threads write the same cache
 * line of a row). Attention's rows are KV heads, whole rows of scores apart: a block of 1.
 */
export const ROW_BLOCK = 16;
/** An argument value that stands for the running thread's slice of the call's scratch (offsets are never negative). */
export const SCRATCH_ARG = -1;

/** A kernel export as the pool calls it: i32 arguments (byte offsets and counts), nothing returned. */
export type RowKernelFn = (...args: number[]) => void;

/**
 * `fn(args)` for `tokens` tokens over `rows` output rows. Filled in place (`start`, then `arg` per
 * argument in the kernel's order, `rowsArg` for its row count; `pre` and `preArg` for a prelude):
 * the hot path allocates nothing.
 */
export class RowCall {
  fn = 0;
  nArgs = 0;
  /** Index of the argument that holds the row count (-1 until rowsArg). */
  rowsAt = -1;
  rows = 0;
  /** Rows per block of a split (ROW_BLOCK unless start was told). */
  block = ROW_BLOCK;
  /** Calls made one after another, each argument moved by perToken[i] bytes per call (1: one call). */
  tokens = 1;
  /**
   * Whether the job's later calls read what this one (and every call before it) writes in rows of
   * their own: split, they start only once all of those rows are done (a matmul after the
   * quantization of its input). start() clears it.
   */
  fence = false;
  readonly args = new Int32Array(MAX_ROW_ARGS);
  /** Bytes argument i moves per output row (0: the same for every row: activations, dims). */
  readonly perRow = new Int32Array(MAX_ROW_ARGS);
  /** Bytes argument i moves per token call. */
  readonly perToken = new Int32Array(MAX_ROW_ARGS);

  /** The prelude's kernel, -1 for none; its arguments are at a chunk's first row (preArgs + r * prePerRow). */
  preFn = -1;
  preNArgs = 0;
  readonly preArgs = new Int32Array(MAX_ROW_ARGS);
  readonly prePerRow = new Int32Array(MAX_ROW_ARGS);
  /** The prelude's argument that takes the chunk's row count times preCountPerRow. */
  preCountAt = -1;
  preCountPerRow = 0;
  /** The scratch the prelude writes and the call reads: `scratchRows` rows of `scratchRowBytes` bytes. */
  scratch = 0;
  scratchRows = 0;
  scratchRowBytes = 0;

  start(fn: number, rows: number, tokens = 1, block = ROW_BLOCK): this {
    this.fn = fn;
    this.rows = rows;
    this.tokens = tokens;
    this.block = block;
    this.fence = false;
    this.nArgs = 0;
    this.rowsAt = -1;
    this.preFn = -1;
    this.preNArgs = 0;
    this.preCountAt = -1;
    return this;
  }

  /** The next argument: its value at row 0 and token 0, and its byte steps (SCRATCH_ARG: the thread's scratch slice). */
  arg(value: number, perRow = 0, perToken = 0): this {
    const i = this.nArgs++;
    this.args[i] = value;
    this.perRow[i] = perRow;
    this.perToken[i] = perToken;
    return this;
  }

  /** The next argument is the row count (replaced by the range's length when split). */
  rowsArg(): this {
    this.rowsAt = this.nArgs;
    return this.arg(this.rows);
  }

  /** A prelude `fn`, run on each chunk of rows before the call, into `scratchRows` rows of `rowBytes` at `scratch`. */
  pre(fn: number, scratch: number, scratchRows: number, rowBytes: number): this {
    this.preFn = fn;
    this.preNArgs = 0;
    this.scratch = scratch;
    this.scratchRows = scratchRows;
    this.scratchRowBytes = rowBytes;
    return this;
  }

  /** The prelude's next argument at row 0 and the bytes it moves per row (SCRATCH_ARG: the thread's scratch slice). */
  preArg(value: number, perRow = 0): this {
    const i = this.preNArgs++;
    this.preArgs[i] = value;
    this.prePerRow[i] = perRow;
    return this;
  }

  /** The prelude's next argument is the chunk's row count times `perRow` (a count of elements). */
  preCountArg(perRow: number): this {
    this.preCountAt = this.preNArgs;
    this.preCountPerRow = perRow;
    return this.preArg(0);
  }
}

/**
 * Rows a prelude's chunk takes when `slices` threads share a scratch of `scratchRows` rows: whole
 * groups of 4 (the q8 layout's row groups, kernels.as), so a chunk's scales are one contiguous run.
 * The scratch holds at least 4 rows per thread (PACKED_ROWS / MAX_THREADS).
 */
export function preludeChunk(scratchRows: number, slices: number): number {
  return Math.max(4, Math.floor(scratchRows / slices / 4) * 4);
}

/** Scratch for runRows: the arguments at a chunk's first row (one call at a time on a thread). */
const at = new Float64Array(MAX_ROW_ARGS);

/**
 * Runs rows [r0, r1) of `c` on this thread with `fns` (ROW_KERNELS' exports of an instance). With a
 * prelude, this thread is slice `slice` of `slices` threads sharing the scratch. pool-worker.ts runs
 * the same steps from the control block: the two must stay alike.
 */
export function runRows(fns: readonly RowKernelFn[], c: RowCall, r0: number, r1: number, slice = 0, slices = 1): void {
  const f = fns[c.fn]!;
  const a = c.args, pr = c.perRow, pt = c.perToken;
  const pre = c.preFn >= 0 ? fns[c.preFn]! : null;
  // Without a prelude one chunk covers the range; with one, chunks fit this thread's slice.
  const chunk = pre === null ? r1 - r0 : preludeChunk(c.scratchRows, slices);
  const mine = c.scratch + slice * chunk * c.scratchRowBytes;
  for (let r = r0; r < r1; r += chunk) {
    const m = Math.min(chunk, r1 - r);
    if (pre !== null) {
      const pa = c.preArgs, pp = c.prePerRow;
      for (let i = 0; i < MAX_ROW_ARGS; i++) at[i] = i >= c.preNArgs ? 0 : pa[i] === SCRATCH_ARG ? mine : pa[i]! + r * pp[i]!;
      at[c.preCountAt] = m * c.preCountPerRow;
      pre(at[0]!, at[1]!, at[2]!, at[3]!, at[4]!, at[5]!, at[6]!, at[7]!, at[8]!, at[9]!, at[10]!, at[11]!);
    }
    for (let i = 0; i < MAX_ROW_ARGS; i++) at[i] = i >= c.nArgs ? 0 : a[i] === SCRATCH_ARG ? mine : a[i]! + r * pr[i]!;
    at[c.rowsAt] = m;
    for (let t = 0; t < c.tokens; t++) {
      f(at[0]! + t * pt[0]!, at[1]! + t * pt[1]!, at[2]! + t * pt[2]!, at[3]! + t * pt[3]!, at[4]! + t * pt[4]!,
        at[5]! + t * pt[5]!, at[6]! + t * pt[6]!, at[7]! + t * pt[7]!, at[8]! + t * pt[8]!, at[9]! + t * pt[9]!,
        at[10]! + t * pt[10]!, at[11]! + t * pt[11]!);
    }
  }
}

/** Kernels a pool's workers run as table `table` (RowCallPool.attach). */
export interface KernelTable {
  readonly table: number;
}

/**
 * What the cache sees of the model's thread pool (the model's WasmArena gives it; the cache may not
 * import the model): run RowCalls split over its threads, over kernels attached to every worker.
 */
export interface RowCallPool {
  /** Threads a split may use (the caller included). */
  readonly threads: number;
  /** Multiply-adds of a job below which splitting it does not pay. */
  readonly minSplitWork: number;
  /** Instantiates `module` over `memory` (shared) on every worker as a table of the exports `names`. */
  attach(module: WebAssembly.Module, memory: WebAssembly.Memory, names: readonly string[]): KernelTable;
  /** Lets the workers drop the table (and the memory it holds). */
  detach(table: KernelTable): void;
  /** Runs calls[0 .. n) split over the threads; `fns` are this thread's instance's exports `names`. */
  run(calls: readonly RowCall[], n: number, fns: readonly RowKernelFn[], work: number, table: KernelTable): void;
}
