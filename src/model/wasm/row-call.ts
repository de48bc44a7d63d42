// One matmul kernel call described so that its output rows can be handed out in ranges: which
// export of kernels.as, its arguments, and how many bytes each argument moves per output row and
// per token. Rows are independent in every kernel (each output row is one dot product per token,
// computed by the same code wherever the range starts), so running rows [r0, r1) on one thread and
// the rest on another gives the same bits as one call over all of them. linear.ts fills a RowCall;
// the model's WasmArena runs it whole or splits it over its MatmulPool.

/** The kernels a RowCall may name, by index (the pool's workers look them up in the same order). */
export const ROW_KERNELS = ["matvecQ8", "matmulQ8x16", "matmulF32", "matvecQ4K", "matvecQ8g16"] as const;
export type RowKernel = (typeof ROW_KERNELS)[number];
/** ROW_KERNELS' indices by name. */
export const ROW_KERNEL: { readonly [K in RowKernel]: number } = {
  matvecQ8: 0, matmulQ8x16: 1, matmulF32: 2, matvecQ4K: 3, matvecQ8g16: 4,
};
/** Most arguments a row kernel takes. */
export const MAX_ROW_ARGS = 10;

/** A kernel export as the pool calls it: i32 arguments (byte offsets and counts), nothing returned. */
export type RowKernelFn = (...args: number[]) => void;

/**
 * `fn(args)` for `tokens` tokens over `rows` output rows. Filled in place (`start`, then `arg` per
 * argument in the kernel's order, `rowsArg` for its row count): the hot path allocates nothing.
 */
export class RowCall {
  fn = 0;
  nArgs = 0;
  /** Index of the argument that holds the row count (-1 until rowsArg). */
  rowsAt = -1;
  rows = 0;
  /** Calls made one after another, each argument moved by perToken[i] bytes per call (1: one call). */
  tokens = 1;
  readonly args = new Int32Array(MAX_ROW_ARGS);
  /** Bytes argument i moves per output row (0: the same for every row: activations, dims). */
  readonly perRow = new Int32Array(MAX_ROW_ARGS);
  /** Bytes argument i moves per token call. */
  readonly perToken = new Int32Array(MAX_ROW_ARGS);

  start(fn: number, rows: number, tokens = 1): this {
    this.fn = fn;
    this.rows = rows;
    this.tokens = tokens;
    this.nArgs = 0;
    this.rowsAt = -1;
    return this;
  }

  /** The next argument: its value at row 0 and token 0, and its byte steps. */
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
}

/** Scratch for runRows: the arguments at the range's first row (one call at a time on a thread). */
const at = new Float64Array(MAX_ROW_ARGS);

/** Runs rows [r0, r1) of `c` on this thread with `fns` (ROW_KERNELS' exports of an instance). */
export function runRows(fns: readonly RowKernelFn[], c: RowCall, r0: number, r1: number): void {
  const f = fns[c.fn]!;
  const a = c.args, pr = c.perRow, pt = c.perToken;
  for (let i = 0; i < MAX_ROW_ARGS; i++) at[i] = i < c.nArgs ? a[i]! + r0 * pr[i]! : 0;
  at[c.rowsAt] = r1 - r0;
  for (let t = 0; t < c.tokens; t++) {
    f(at[0]! + t * pt[0]!, at[1]! + t * pt[1]!, at[2]! + t * pt[2]!, at[3]! + t * pt[3]!, at[4]! + t * pt[4]!,
      at[5]! + t * pt[5]!, at[6]! + t * pt[6]!, at[7]! + t * pt[7]!, at[8]! + t * pt[8]!, at[9]! + t * pt[9]!);
  }
}
