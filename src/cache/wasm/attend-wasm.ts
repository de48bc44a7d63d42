// attendRuns (../attention.ts) through the wasm kernels: the same blocks of scratch.queryBlock queries,
// the same row order (KV head, query, head in group) and causal masking, with the per-token work
// (q.k over every retained key, the softmax, the weighted sum of values) in attention.as.
//
// For f32, f16 and fp8 pages, where every run was rotated by one RoPE offset and the scores need no
// transform, attention runs in fused jobs of up to ATTEND_JOB_QUERIES queries (attendJobs): the
// kernel loads and rotates the queries, attends every block and writes the rows out. Otherwise JS
// keeps what is per block: rotating the queries by each run range's RoPE offset, transforming the
// scores (soft-cap, sliding window), and the final 1/sum scaling into `out`.
//
// With a thread pool (the model's, over a shared kernel memory) a job or block whose work pays for
// it is split in units: KV heads, or, where the heads do not divide among the threads (SmolLM2's 3
// on 2), halves of a head's rows (its queries' first and second half). A block's rows are KV
// head-major, so each unit owns disjoint rows of every buffer, and each has a descriptor of its own
// whose kernel scratch is its own tile (store-memory.ts writeHeadDescriptors). A row's score, weight
// and value sum are computed by the same code in the same order however the units fall: the bits
// do not depend on the split.

import { ATTEND_JOB_QUERIES, hasScoreTransform, transformScores, type AttendShape, type AttentionScratch, type RunTable } from "../attention.js";
import type { Rope } from "../rope.js";
import type { KernelTable, RowCall, RowCallPool, RowKernelFn } from "../../wasm/row-call.js";
import { DESCRIPTOR_WORDS, SPLIT_PARTS, type AttendFn, type CacheKernelMemory, type CodecKernels, type ScratchFloats } from "./store-memory.js";

/** A cache's attention kernels attached to a pool: the table's exports (CacheKernelMemory.splitKernelNames). */
export interface WasmAttendSplit {
  readonly pool: RowCallPool;
  readonly table: KernelTable;
  /** This thread's exports of the table (SPLIT_FN). */
  readonly fns: readonly RowKernelFn[];
  /** The RowCalls a block's jobs are written into (three: scores, softmax, values), and the last two alone. */
  readonly calls: readonly RowCall[];
  readonly softmaxValues: readonly RowCall[];
}

/** The table's kernels by index (CacheKernelMemory.splitKernelNames). */
const SPLIT_FN = { scores: 0, values: 1, softmax: 2, scoresUnits: 3, valuesUnits: 4, attend: 5 } as const;

/** A fused job's parameters: int32 words at layout.jobParams (attention.as A_*), scale an f64 at SCALE. */
const ATTEND_PARAM = {
  NQUERY: 0, QB: 1, SELF0: 2, NHEAD: 3, GROUP: 4, DK: 5, DV: 6, PARTS: 7, HALF: 8, NEOX: 9, W: 10, CAP: 11, NRUNS: 12,
  RT: 13, QIN: 14, COSSIN: 15, QBLOCK: 16, SCORES: 17, INVSUM: 18, OUTBLOCK: 19, OUT: 20, KDESC: 21, VDESC: 22, SCALE: 24,
} as const;

/** Where a codec splits by head: the fused job's kernel and its staging (views of the kernel memory). */
export class AttendJobs {
  readonly params: Int32Array;
  readonly scale: Float64Array;
  readonly queries: Float32Array;
  readonly out: Float32Array;
  readonly cosSin: Float64Array;

  /** `attend`: this thread's kernel (CacheKernelMemory.attendKernel); `floats`: the scratch's sizes. */
  constructor(readonly attend: AttendFn, mem: CacheKernelMemory, floats: ScratchFloats) {
    const L = mem.layout, b = mem.buffer;
    this.params = new Int32Array(b, L.jobParams, ATTEND_PARAM.SCALE);
    this.scale = new Float64Array(b, L.jobParams + ATTEND_PARAM.SCALE * 4, 1);
    this.queries = new Float32Array(b, L.jobQueries, floats.jobQueries);
    this.out = new Float32Array(b, L.jobOut, floats.jobOut);
    this.cosSin = new Float64Array(b, L.jobCosSin, floats.jobCosSin / 2);
    const p = this.params, A = ATTEND_PARAM;
    p[A.RT] = L.runTable;
    p[A.QIN] = L.jobQueries;
    p[A.COSSIN] = L.jobCosSin;
    p[A.QBLOCK] = L.qBlock;
    p[A.SCORES] = L.scores;
    p[A.INVSUM] = L.invSum;
    p[A.OUTBLOCK] = L.outBlock;
    p[A.OUT] = L.jobOut;
  }
}

/** Where one layer's stores and the shared buffers are in the kernel memory. */
export interface WasmAttendTarget {
  readonly mem: CacheKernelMemory;
  readonly k: CodecKernels;
  readonly v: CodecKernels;
  readonly kDesc: number;
  readonly vDesc: number;
  /** The softmax's 1/sum per row (layout.invSum). */
  readonly invSum: Float32Array;
  /** Where the codec splits by head: its per-unit descriptors (layout.kHeadDesc / vHeadDesc) and fused jobs. */
  readonly kHeadDesc: number;
  readonly vHeadDesc: number;
  readonly jobs: AttendJobs | null;
  /** With a pool, where the codec splits. */
  readonly split: WasmAttendSplit | null;
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
  if (t.jobs !== null && !hasScoreTransform(shape)) {
    const off = ropeOffset(runs, rope);
    if (!Number.isNaN(off)) return attendJobs(out, outOff, q, qOff, nQuery, shape, runs, held, t, t.jobs, rope, off, scale, scratch);
  }
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
    const work = nb * nHead * nVisLast * (dk + dv);
    if (t.split !== null && work >= t.split.pool.minSplitWork && attendBlockSplit(t, t.split, q, qOff, qi0, nb, self0, shape, runs, rope, scale, scratch, work)) {
      scatterBlockRows(out, outOff, qi0, nb, nHead, group, dv, outBlock, invSum);
      continue;
    }
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
 * Parts a KV head's rows split in over `threads` threads, a block having G rows a head: 1 (whole
 * heads) where the heads divide among the threads or the rows do not halve (decode's single query
 * with an odd group: each half would decode every key again for one row), else SPLIT_PARTS.
 */
function unitParts(nHeadKv: number, threads: number, G: number): number {
  return nHeadKv % threads === 0 || G % SPLIT_PARTS !== 0 ? 1 : SPLIT_PARTS;
}

/** The RoPE offset (rotPos - pos) every run shares: 0 without RoPE, NaN when they differ. */
function ropeOffset(runs: RunTable, rope: Rope | null): number {
  if (rope === null || runs.n === 0) return 0;
  const off = runs.rotPos[0]! - runs.pos[0]!;
  for (let r = 1; r < runs.n; r++) if (runs.rotPos[r]! - runs.pos[r]! !== off) return Number.NaN;
  return off;
}

/**
 * attendRunsWasm in fused jobs of up to ATTEND_JOB_QUERIES queries (attention.as attendUnits): the
 * queries copied into the kernel memory with their cos/sin, every block of them loaded, attended and
 * written out by the kernel, split in units over the pool when the job's work pays for it (as
 * attendBlockSplit: whole KV heads where they divide among the threads, else halves). One rotation
 * offset for every run (else the caller takes the per-block path).
 */
function attendJobs(
  out: Float32Array, outOff: number, q: Float32Array, qOff: number, nQuery: number, shape: AttendShape,
  runs: RunTable, held: number, t: WasmAttendTarget, jobs: AttendJobs, rope: Rope | null, off: number, scale: number,
  scratch: AttentionScratch,
): void {
  const { nHead, nHeadKv, headDimK: dk, headDimV: dv } = shape;
  const p = jobs.params, A = ATTEND_PARAM;
  const qb = scratch.queryBlock;
  const half = rope === null ? 0 : rope.spec.nRot / 2;
  const sp = t.split;
  const parts = sp === null ? 1 : unitParts(nHeadKv, sp.pool.threads, Math.min(qb, nQuery) * (nHead / nHeadKv));
  const units = nHeadKv * parts;
  p[A.QB] = qb;
  p[A.NHEAD] = nHead;
  p[A.GROUP] = nHead / nHeadKv;
  p[A.DK] = dk;
  p[A.DV] = dv;
  p[A.HALF] = half;
  p[A.NEOX] = rope?.spec.neox === true ? 1 : 0;
  p[A.W] = scratch.window;
  p[A.CAP] = runs.capacity;
  p[A.NRUNS] = runs.n;
  p[A.KDESC] = t.kHeadDesc;
  p[A.VDESC] = t.vHeadDesc;
  jobs.scale[0] = scale;
  for (let j0 = 0, n = 0; j0 < nQuery; j0 += n) {
    // A short last block goes alone: in one job, its rows would not be the other blocks' (attention.as attendUnits).
    n = Math.min(ATTEND_JOB_QUERIES, nQuery - j0);
    if (n > qb && n % qb !== 0) n -= n % qb;
    const self0 = held - nQuery + j0;
    jobs.queries.set(q.subarray(qOff + j0 * nHead * dk, qOff + (j0 + n) * nHead * dk));
    for (let b = 0; rope !== null && b < n; b++) {
      const r = runOf(runs, self0 + b);
      rope.cosSin64(runs.pos[r]! + (self0 + b - runs.index[r]!) + off, jobs.cosSin, b * 2 * half);
    }
    p[A.NQUERY] = n;
    p[A.SELF0] = self0;
    let work = 0; // multiply-adds of the job's blocks: each query's rows over what it sees
    for (let b = 0; b < n; b += qb) work += Math.min(qb, n - b) * nHead * (self0 + Math.min(b + qb, n)) * (dk + dv);
    if (sp !== null && units > 1 && work >= sp.pool.minSplitWork) {
      p[A.PARTS] = parts;
      sp.calls[0]!.start(SPLIT_FN.attend, units, 1, 1).arg(t.mem.layout.jobParams).arg(0, 1).rowsArg();
      sp.pool.run(sp.calls, 1, sp.fns, work, sp.table);
    } else {
      p[A.PARTS] = 1; // alone: every head in one call of the codec's kernels
      jobs.attend(t.mem.layout.jobParams, 0, nHeadKv);
    }
    out.set(jobs.out.subarray(0, n * nHead * dv), outOff + j0 * nHead * dv);
  }
}

/**
 * One block of attendRunsWasm's loop on the pool, one row per unit: a job per run range of the
 * scores (the queries are rotated between them), the last one with the softmax and the values
 * (unless the layer transforms its scores first). Leaves outBlock and invSum as the loop does;
 * false (and nothing done) when the block has a single unit.
 */
function attendBlockSplit(
  t: WasmAttendTarget, sp: WasmAttendSplit,
  q: Float32Array, qOff: number, qi0: number, nb: number, self0: number, shape: AttendShape,
  runs: RunTable, rope: Rope | null, scale: number, scratch: AttentionScratch, work: number,
): boolean {
  const { nHead, nHeadKv, headDimK: dk, headDimV: dv } = shape;
  const group = nHead / nHeadKv;
  const G = nb * group;
  // Whole heads: the codec's kernels over a range of heads (every SPLIT_PARTS-th descriptor is a head's first).
  const parts = unitParts(nHeadKv, sp.pool.threads, G);
  const units = nHeadKv * parts, U = G / parts; // U rows a unit
  if (units < 2) return false;
  const descBytes = (DESCRIPTOR_WORDS * 4 * SPLIT_PARTS) / parts;
  const W = scratch.window;
  const L = t.mem.layout;
  const rt = L.runTable, cap = runs.capacity;
  const nVisLast = self0 + nb;
  const [cs, cm, cv] = sp.calls as [RowCall, RowCall, RowCall];
  scratch.outBlock.fill(0, 0, nb * nHead * dv);
  for (let r = 0; ; ) {
    // Runs r .. r1 share one rotation of the queries (all of them without RoPE).
    const off = rope === null ? 0 : runs.rotPos[r]! - runs.pos[r]!;
    let r1 = r + 1;
    while (r1 < runs.n && runs.index[r1]! < nVisLast && (rope === null || runs.rotPos[r1]! - runs.pos[r1]! === off)) r1++;
    loadBlockQueries(q, qOff, qi0, nb, self0, nHead, group, dk, runs, rope, off, scale, scratch.qRot, scratch.qBlock);
    cs.start(parts === 1 ? SPLIT_FN.scores : SPLIT_FN.scoresUnits, units, 1, 1).arg(t.kHeadDesc, descBytes).arg(rt).arg(cap);
    cs.arg(r).arg(r1).arg(nVisLast).rowsArg().arg(L.qBlock, U * dk * 4).arg(U).arg(dk).arg(L.scores, U * W * 4).arg(W);
    r = r1;
    if (r >= runs.n || runs.index[r]! >= nVisLast) break; // the last range: its job goes on below
    sp.pool.run(sp.calls, 1, sp.fns, work, sp.table);
  }
  cm.start(SPLIT_FN.softmax, units, 1, 1).arg(L.scores, U * W * 4).arg(W).rowsArg().arg(U).arg(group).arg(nb).arg(self0).arg(nVisLast);
  cm.arg(L.invSum, U * 4).arg(0, 1);
  cv.start(parts === 1 ? SPLIT_FN.values : SPLIT_FN.valuesUnits, units, 1, 1).arg(t.vHeadDesc, descBytes).arg(rt).arg(cap);
  cv.arg(0).arg(runs.n).arg(nVisLast).rowsArg().arg(L.scores, U * W * 4).arg(U).arg(W).arg(L.outBlock, U * dv * 4).arg(dv);
  if (!hasScoreTransform(shape)) {
    sp.pool.run(sp.calls, 3, sp.fns, work, sp.table);
    return true;
  }
  sp.pool.run(sp.calls, 1, sp.fns, work, sp.table);
  // Rows are (KV head, query, head in group): row's query b sees self0 + b + 1 tokens.
  for (let row = 0; row < nb * nHead; row++) transformScores(scratch.scores, row * W, self0 + ((row / group) | 0) % nb + 1, shape);
  sp.pool.run(sp.softmaxValues, 2, sp.fns, work, sp.table);
  return true;
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
