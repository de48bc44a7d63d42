// attendRuns (../attention.ts) through the wasm kernels: the same blocks of scratch.queryBlock queries,
// the same row order (KV head, query, head in group) and causal masking, with the per-token work
// (q.k over every retained key, the softmax, the weighted sum of values) in attention.as. JS keeps
// what is per block: rotating the queries by each run range's RoPE offset, and the final 1/sum
// scaling into `out`.

import { hasScoreTransform, transformScores, type AttendShape, type AttentionScratch, type RunTable } from "../attention.js";
import type { Rope } from "../rope.js";
import type { CacheKernelMemory, CodecKernels } from "./store-memory.js";

/** Where one layer's stores and the shared buffers are in the kernel memory. */
export interface WasmAttendTarget {
  readonly mem: CacheKernelMemory;
  readonly k: CodecKernels;
  readonly v: CodecKernels;
  readonly kDesc: number;
  readonly vDesc: number;
  /** The softmax's 1/sum per row (layout.invSum). */
  readonly invSum: Float32Array;
}

/** Same contract as attendRuns without a weights hook; `scratch` and `runs` must live in `t.mem`. */
export function attendRunsWasm(
  out: Float32Array,
  outOff: number,
  q: Float32Array,
  qOff: number,
  nQuery: number,
  shape: AttendShape,
  runs: RunTable,
  held: number,
  t: WasmAttendTarget,
  rope: Rope | null,
  scale: number,
  scratch: AttentionScratch,
): void {
  const { nHead, nHeadKv, headDimK: dk, headDimV: dv } = shape;
  const group = nHead / nHeadKv;
  const W = scratch.window;
  const L = t.mem.layout;
  const softmaxRows = t.mem.exports.softmaxRows;
  const invSum = t.invSum;
  const outBlock = scratch.outBlock;
  const rt = L.runTable;
  const cap = runs.capacity;
  const qb = scratch.queryBlock;
  for (let qi0 = 0; qi0 < nQuery; qi0 += qb) {
    const nb = Math.min(qb, nQuery - qi0);
    const G = nb * group; // rows per KV head
    const self0 = held - nQuery + qi0;
    const nVisLast = self0 + nb;
    if (rope === null) {
      loadBlockQueries(q, qOff, qi0, nb, self0, nHead, group, dk, runs, null, 0, scale, scratch.qRot, scratch.qBlock);
      t.k.scores(t.kDesc, rt, cap, 0, runs.n, nVisLast, nHeadKv, L.qBlock, G, dk, L.scores, W);
    } else {
      // Runs whose keys were rotated with the same offset (rotPos - pos) share one rotation of the
      // queries: one range in a plain window, two or three with re-assigned positions.
      let r = 0;
      while (r < runs.n && runs.index[r]! < nVisLast) {
        const off = runs.rotPos[r]! - runs.pos[r]!;
        let r1 = r + 1;
        while (r1 < runs.n && runs.index[r1]! < nVisLast && runs.rotPos[r1]! - runs.pos[r1]! === off) r1++;
        loadBlockQueries(q, qOff, qi0, nb, self0, nHead, group, dk, runs, rope, off, scale, scratch.qRot, scratch.qBlock);
        t.k.scores(t.kDesc, rt, cap, r, r1, nVisLast, nHeadKv, L.qBlock, G, dk, L.scores, W);
        r = r1;
      }
    }
    const nRows = nb * nHead;
    if (hasScoreTransform(shape)) {
      // Rows are (KV head, query, head in group): row's query b sees self0 + b + 1 tokens.
      const scores = scratch.scores;
      for (let row = 0; row < nRows; row++) transformScores(scores, row * W, self0 + ((row / group) | 0) % nb + 1, shape);
    }
    softmaxRows(L.scores, W, nRows, group, nb, self0, nVisLast, L.invSum);
    outBlock.fill(0, 0, nRows * dv);
    t.v.values(t.vDesc, rt, cap, 0, runs.n, nVisLast, nHeadKv, L.scores, G, W, L.outBlock, dv);
    scatterBlockRows(out, outOff, qi0, nb, nHead, group, dv, outBlock, invSum);
  }
}

/**
 * Scales (and with RoPE rotates by each query's position + off) queries qi0 .. qi0+nb into
 * qBlock's rows (KV head, query, head in group); qRot is the one-query staging buffer.
 */
function loadBlockQueries(
  q: Float32Array, qOff: number, qi0: number, nb: number, self0: number, nHead: number, group: number, dk: number,
  runs: RunTable, rope: Rope | null, off: number, scale: number, qRot: Float32Array, qBlock: Float32Array,
): void {
  const qStride = nHead * dk;
  for (let b = 0; b < nb; b++) {
    const qBase = qOff + (qi0 + b) * qStride;
    for (let i = 0; i < qStride; i++) qRot[i] = q[qBase + i]! * scale;
    if (rope !== null) {
      const self = self0 + b;
      const r = runOf(runs, self);
      rope.rotate(qRot, 0, nHead, runs.pos[r]! + (self - runs.index[r]!) + off);
    }
    for (let h = 0; h < nHead; h++) {
      const kv = (h / group) | 0;
      const row = (kv * nb + b) * group + (h - kv * group);
      const src = h * dk, dst = row * dk;
      for (let i = 0; i < dk; i++) qBlock[dst + i] = qRot[src + i]!;
    }
  }
}

/** The run holding retained index `self` (runs in retained order, run 0 at index 0). */
function runOf(runs: RunTable, self: number): number {
  let r = runs.n - 1;
  while (r > 0 && runs.index[r]! > self) r--;
  return r;
}

/**
 * out[query qi0 + b][head kv*group + g] = outBlock[row] * invSum[row] for the block's rows, ordered
 * (KV head, query, head in group): the unnormalized softmax's 1/sum applied on the way out.
 */
function scatterBlockRows(
  out: Float32Array, outOff: number, qi0: number, nb: number, nHead: number, group: number, dv: number,
  outBlock: Float32Array, invSum: Float32Array | Float64Array,
): void {
  const nRows = nb * nHead;
  for (let row = 0; row < nRows; row++) {
    const g = row % group;
    const kvb = (row / group) | 0;
    const b = kvb % nb;
    const kv = (kvb / nb) | 0;
    const o = outOff + (qi0 + b) * nHead * dv + (kv * group + g) * dv;
    const inv = invSum[row]!;
    const src = row * dv;
    for (let i = 0; i < dv; i++) out[o + i] = outBlock[src + i]! * inv;
  }
}
