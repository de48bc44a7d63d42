// Naive references for the codec kernels: decode each token with readToken, then a plain f64 dot
// product / axpy. Tests hold every fast kernel to these; they allocate and are not for the hot path.

import type { PageStore } from "./types.js";

export function referenceDotRun(
  store: PageStore, page: number, slotStart: number, n: number, kvHead: number,
  q: Float32Array, qOff: number, out: Float32Array, outOff: number,
): void {
  const { nHeadKv, headDim } = store.shape;
  const tok = new Float32Array(nHeadKv * headDim);
  for (let t = 0; t < n; t++) {
    store.readToken(page, slotStart + t, tok, 0);
    let acc = 0;
    for (let c = 0; c < headDim; c++) acc += q[qOff + c]! * tok[kvHead * headDim + c]!;
    out[outOff + t] = acc;
  }
}

export function referenceAxpyRun(
  store: PageStore, page: number, slotStart: number, n: number, kvHead: number,
  w: Float32Array, wOff: number, out: Float32Array, outOff: number,
): void {
  const { nHeadKv, headDim } = store.shape;
  const tok = new Float32Array(nHeadKv * headDim);
  const acc = new Float64Array(headDim);
  for (let t = 0; t < n; t++) {
    store.readToken(page, slotStart + t, tok, 0);
    for (let c = 0; c < headDim; c++) acc[c] = acc[c]! + w[wOff + t]! * tok[kvHead * headDim + c]!;
  }
  for (let c = 0; c < headDim; c++) out[outOff + c] = out[outOff + c]! + acc[c]!;
}
