// One matvecQ4K RowCall on random Q4_K-layout data, the same bytes in every runtime (a seeded
// xorshift): the relaxed-SIMD page (main.ts), its worker (worker.ts) and the Node test import it.
// Rows are ragged (53: not a multiple of any row block), 768 columns (3 super-blocks, 24 sub-blocks
// of 32), 11 tokens. The weight bytes start 0..255, so
// both nibbles take every value 0..15 beside every other, the activations reach +-127 (quantizeQ8K's
// max), and one 256-value block of one token is all zero (d = 0, q = 0).

import { ROW_KERNEL } from "../../../../src/wasm/row-call.js";
import { WasmArena } from "../../../../src/model/wasm/wasm-kernels.js";

export const ROWS = 53;
export const COLS = 768;
export const NTOK = 11;

/** What one run gives back. */
export interface Q4KRun {
  /** arena.relaxedSimd after commit: which build ran. */
  readonly relaxed: boolean;
  /** arena.threads once its workers are up. */
  readonly threads: number;
  /** Matmuls the pool split (0 on one thread). */
  readonly splits: number;
  /** out[t * ROWS + r], NTOK * ROWS values. */
  readonly out: Float32Array;
}

function xorshift(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    return s;
  };
}

/**
 * Runs matvecQ4K over NTOK tokens once on an arena of `threads` threads (every matmul split: minSplitWork 0) with the
 * relaxed build asked for or not. `perturb` flips the low nibble of one weight byte (row 17): the
 * negative control, whose output must differ.
 */
export async function runQ4K(opts: { readonly relaxedSimd: boolean; readonly threads: number; readonly perturb?: boolean }): Promise<Q4KRun> {
  const next = xorshift(0x5eed);
  const unit = () => next() / 4294967296; // [0, 1)
  const arena = new WasmArena({ threads: opts.threads, minSplitWork: 0, relaxedSimd: opts.relaxedSimd });
  const nsb = COLS / 32;
  const nTok4 = (NTOK + 3) & ~3;
  const wq = arena.reserve((ROWS * COLS) / 2), wa = arena.reserve(ROWS * nsb * 4), wc = arena.reserve(ROWS * nsb * 4);
  const x = arena.reserve(NTOK * COLS * 4), qx = arena.reserve(NTOK * COLS), dx = arena.reserve(NTOK * nsb * 4), sx = arena.reserve(NTOK * nsb * 4);
  const x16 = arena.reserve(nTok4 * COLS * 2), dT = arena.reserve(nTok4 * nsb * 4);
  const out = arena.reserve(NTOK * ROWS * 4);
  if (!arena.commit()) throw new Error("WasmArena.commit refused the memory");
  await arena.whenThreadsReady();

  const q = arena.u8(wq, (ROWS * COLS) / 2);
  for (let i = 0; i < q.length; i++) q[i] = i < 256 ? i : next() & 255;
  if (opts.perturb === true) q[17 * (COLS / 2) + 40]! ^= 0x05;
  const a = arena.f32(wa, ROWS * nsb);
  for (let i = 0; i < a.length; i++) a[i] = (0.25 + unit()) * 0.004;
  const c = arena.f32(wc, ROWS * nsb);
  for (let i = 0; i < c.length; i++) c[i] = -unit() * 0.02;
  const xs = arena.f32(x, NTOK * COLS);
  for (let i = 0; i < xs.length; i++) xs[i] = unit() * 4 - 2;
  xs.fill(0, 5 * COLS + 256, 5 * COLS + 512); // token 5's second super-block: amax 0

  const k = arena.k;
  k.quantizeQ8K(x, NTOK * COLS, qx, dx);
  k.blockSumsQ8(qx, dx, NTOK * COLS, sx, false);
  k.widenQ8(qx, dx, NTOK, COLS, x16, dT);
  const o = arena.f32(out, NTOK * ROWS);
  o.fill(NaN);
  const call = arena.nextCall();
  call.start(ROW_KERNEL.matvecQ4K, ROWS, NTOK).arg(out, 4, ROWS * 4).arg(wq, COLS / 2).arg(wa, COLS / 8).arg(wc, COLS / 8).rowsArg().arg(COLS)
    .arg(x16, 0, COLS * 2).arg(qx, 0, COLS).arg(dx, 0, COLS / 8).arg(sx, 0, COLS / 8);
  arena.run(call, ROWS * COLS * NTOK);
  const res: Q4KRun = { relaxed: arena.relaxedSimd, threads: arena.threads, splits: arena.splits, out: o.slice() };
  arena.dispose();
  return res;
}

export function toBase64(u8: Uint8Array): string {
  let s = "";
  // In chunks: String.fromCharCode's arguments are bounded by the call stack.
  for (let i = 0; i < u8.length; i += 0x8000) s += String.fromCharCode(...u8.subarray(i, i + 0x8000));
  return btoa(s);
}
