// attendRuns (../attention.ts) through the wasm kernels: the same blocks of QUERY_BLOCK queries,
// the same row order (KV head, query, head in group) and causal masking, with the per-token work
// (q.k over every retained key, the softmax, the weighted sum of values) in attention.as. JS keeps
// what is per block: rotating the queries by each run range's RoPE offset, and the final 1/sum
// scaling into `out`.

import { loadBlockQueries, QUERY_BLOCK, scatterBlockRows, type AttendShape, type AttentionScratch, type RunTable } from "../attention.js";
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
  for (let qi0 = 0; qi0 < nQuery; qi0 += QUERY_BLOCK) {
    const nb = Math.min(QUERY_BLOCK, nQuery - qi0);
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
    softmaxRows(L.scores, W, nRows, group, nb, self0, nVisLast, L.invSum);
    outBlock.fill(0, 0, nRows * dv);
    t.v.values(t.vDesc, rt, cap, 0, runs.n, nVisLast, nHeadKv, L.scores, G, W, L.outBlock, dv);
    scatterBlockRows(out, outOff, qi0, nb, nHead, group, dv, outBlock, invSum);
  }
}
