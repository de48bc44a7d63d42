// Any GQA group size through the stores' fixed-width grouped kernels: a group of G query heads
// sharing one KV head is split into calls of 4, then one of 3, 2 or 1 heads (G = 7 -> 4 + 3,
// G = 6 -> 4 + 2), so each key/value is read once per call instead of once per head. Widths a
// store lacks fall back to single-head calls. Specialized fixed widths rather than one loop over
// G: V8 keeps the unrolled heads' sums in registers, a loop over G would go through memory.

import type { PageStore } from "./types.js";

/** Scratch the grouped kernels need: `acc` of at least this many f64 per page slot. */
export const GROUPED_ACC_PER_SLOT = 4;

/** `out[outOff + j*outStride + t] = dot(q[qOff + j*qStride ..], key(page, slotStart + t, kvHead))`, j < G, t < n. */
export function dotRunGroup(
  store: PageStore, page: number, slotStart: number, n: number, kvHead: number, G: number,
  q: Float32Array, qOff: number, qStride: number, out: Float32Array, outOff: number, outStride: number, acc: Float64Array,
): void {
  let j = 0;
  if (store.dotRun4 !== undefined) {
    for (; j + 4 <= G; j += 4) store.dotRun4(page, slotStart, n, kvHead, q, qOff + j * qStride, qStride, out, outOff + j * outStride, outStride, acc);
  }
  const rem = G - j;
  if (rem === 3 && store.dotRun3 !== undefined) {
    store.dotRun3(page, slotStart, n, kvHead, q, qOff + j * qStride, qStride, out, outOff + j * outStride, outStride, acc);
    return;
  }
  if (rem >= 2 && store.dotRun2 !== undefined) {
    store.dotRun2(page, slotStart, n, kvHead, q, qOff + j * qStride, qStride, out, outOff + j * outStride, outStride, acc);
    j += 2;
  }
  for (; j < G; j++) store.dotRun(page, slotStart, n, kvHead, q, qOff + j * qStride, out, outOff + j * outStride);
}

/** `out[outOff + j*outStride + c] += sum_t w[wOff + j*wStride + t] * value(page, slotStart + t, kvHead)[c]`, j < G. */
export function axpyRunGroup(
  store: PageStore, page: number, slotStart: number, n: number, kvHead: number, G: number,
  w: Float32Array, wOff: number, wStride: number, out: Float32Array, outOff: number, outStride: number, acc: Float64Array,
): void {
  let j = 0;
  if (store.axpyRun4 !== undefined) {
    for (; j + 4 <= G; j += 4) store.axpyRun4(page, slotStart, n, kvHead, w, wOff + j * wStride, wStride, out, outOff + j * outStride, outStride, acc);
  }
  const rem = G - j;
  if (rem === 3 && store.axpyRun3 !== undefined) {
    store.axpyRun3(page, slotStart, n, kvHead, w, wOff + j * wStride, wStride, out, outOff + j * outStride, outStride, acc);
    return;
  }
  if (rem >= 2 && store.axpyRun2 !== undefined) {
    store.axpyRun2(page, slotStart, n, kvHead, w, wOff + j * wStride, wStride, out, outOff + j * outStride, outStride, acc);
    j += 2;
  }
  for (; j < G; j++) store.axpyRun(page, slotStart, n, kvHead, w, wOff + j * wStride, out, outOff + j * outStride);
}
