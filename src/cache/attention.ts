// Attention over a sequence's cached pages, read in place through the codecs' dotRun / axpyRun
// (never through a dequantized copy). GQA, causal by retained order, one or more query tokens.
// `denseAttention` (dense-attention.ts) is the naive reference the tests hold this kernel to.

import type { PageStore } from "./codecs/types.js";
import { expNonPositive } from "./fast-exp.js";
import type { Rope } from "./rope.js";
import type { KvRun } from "./runs.js";
import type { StoreRegion } from "./codecs/shape.js";
import type { ScratchFloats } from "./wasm/store-memory.js";

/**
 * A sequence's runs (see runs.ts) in flat typed arrays, rebuilt only when the sequence changes.
 * Runs are in retained order; run r covers retained indices [index[r], index[r] + length[r]).
 */
export class RunTable {
  n = 0;
  capacity: number;
  page: Int32Array;
  slotStart: Int32Array;
  length: Int32Array;
  pos: Int32Array;
  rotPos: Int32Array;
  index: Int32Array;

  /** `region` (the wasm kernels' memory, common.as's run table) holds page, slotStart, length and
   *  index, `capacity` int32 each, one after another; pos and rotPos stay on the JS side. */
  constructor(capacity: number, region?: StoreRegion) {
    this.capacity = capacity;
    const buffer = region?.buffer ?? new ArrayBuffer(16 * capacity);
    const at = region?.byteOffset ?? 0;
    this.page = new Int32Array(buffer, at, capacity);
    this.slotStart = new Int32Array(buffer, at + 4 * capacity, capacity);
    this.length = new Int32Array(buffer, at + 8 * capacity, capacity);
    this.index = new Int32Array(buffer, at + 12 * capacity, capacity);
    this.pos = new Int32Array(capacity);
    this.rotPos = new Int32Array(capacity);
  }

  push(page: number, slotStart: number, length: number, pos: number, rotPos: number, index: number): void {
    const r = this.n++;
    this.page[r] = page;
    this.slotStart[r] = slotStart;
    this.length[r] = length;
    this.pos[r] = pos;
    this.rotPos[r] = rotPos;
    this.index[r] = index;
  }

  /** The runs as objects (diagnostics and tests; allocates). */
  toArray(): KvRun[] {
    const out: KvRun[] = [];
    for (let r = 0; r < this.n; r++) {
      out.push({
        page: this.page[r]!,
        slotStart: this.slotStart[r]!,
        length: this.length[r]!,
        pos: this.pos[r]!,
        rotPos: this.rotPos[r]!,
        index: this.index[r]!,
      });
    }
    return out;
  }
}

/**
 * Query tokens one pass of the wasm kernels over the cached runs serves when several are attended
 * at once (prefill): their rows share each key/value decode (wasm/attend-wasm.ts), so the more the
 * fewer passes, but the kernel memory's scores scratch grows with them. QUERY_BLOCK_MAX while its
 * scores fit QUERY_BLOCK_SCORES_BYTES, else QUERY_BLOCK_MIN (queryBlock). Measured on the bench
 * machine (bench/kernel-profile.ts --prompt 512, 1 thread, alternated runs): 4 instead of 2 made
 * the SmolLM2-shaped prefill 6% faster, Qwen2.5's 3-6%; 8 gained nothing over 4.
 */
export const QUERY_BLOCK_MIN = 2;
export const QUERY_BLOCK_MAX = 4;
/** Most bytes of scores scratch for which a cache takes QUERY_BLOCK_MAX queries a pass (a 4-query
 *  block of 32 heads then reaches a 32k window; a 128k window keeps 2, 32 MiB). */
export const QUERY_BLOCK_SCORES_BYTES = 16 * 2 ** 20;

/** Query tokens per pass of the wasm kernels for `nHead` heads over `window` tokens. */
export function queryBlock(nHead: number, window: number): number {
  return QUERY_BLOCK_MAX * nHead * window * 4 <= QUERY_BLOCK_SCORES_BYTES ? QUERY_BLOCK_MAX : QUERY_BLOCK_MIN;
}

/**
 * Queries one job of the wasm kernels attends whole (attend-wasm.ts attendJobs: loading, scores,
 * softmax, values and the rows out, for every block of them): the kernel memory stages their
 * queries, outputs and cos/sin. Each job costs the threads one meeting; with 4-query blocks, 16
 * queries a job took SmolLM2's 512-token prefill from ~3300 attention jobs to ~930.
 */
export const ATTEND_JOB_QUERIES = 16;

/** Float counts of the scratch arrays the wasm kernels share with AttentionScratch (store-memory.ts lays them out). */
export function attentionScratchFloats(nHead: number, window: number, maxHeadDimK: number, maxHeadDimV: number): ScratchFloats {
  const qb = queryBlock(nHead, window);
  return {
    scores: qb * nHead * window,
    qBlock: qb * nHead * maxHeadDimK,
    outBlock: qb * nHead * maxHeadDimV,
    invSum: qb * nHead,
    // A key decoded once (maxHeadDimK), or two tokens' values (2 maxHeadDimV): codecs.as decodeOnce.
    headTile: Math.max(maxHeadDimK, 2 * maxHeadDimV),
    jobQueries: ATTEND_JOB_QUERIES * nHead * maxHeadDimK,
    jobOut: ATTEND_JOB_QUERIES * nHead * maxHeadDimV,
    // Per query, nRot / 2 cos then as many sin, f64 (two floats each): at most 2 maxHeadDimK floats.
    jobCosSin: ATTEND_JOB_QUERIES * 2 * maxHeadDimK,
  };
}

/** Byte offsets of AttentionScratch's shared arrays in `buffer`. */
export interface ScratchMemory {
  readonly buffer: ArrayBuffer;
  readonly scores: number;
  readonly qBlock: number;
  readonly outBlock: number;
}

/**
 * Buffers the kernels reuse; sized for the window once. With `memory` (the wasm kernels' memory,
 * sizes from attentionScratchFloats) scores, qBlock and outBlock are views of it; without, the JS
 * kernels need scores for one query's heads and no blocks.
 */
export class AttentionScratch {
  readonly scores: Float32Array; // [queryBlock * nHead][window] (wasm) or [nHead][window] (JS)
  readonly qRot: Float32Array; // [nHead][maxHeadDimK]
  readonly qBlock: Float32Array; // wasm: [queryBlock * nHead][maxHeadDimK], rows by (KV head, query, head in group)
  readonly outBlock: Float32Array; // wasm: [queryBlock * nHead][maxHeadDimV], rows as qBlock
  readonly wAvg: Float32Array; // [window]
  readonly invSum: Float64Array; // [nHead] 1 / softmax denominator per head (JS kernels)
  readonly window: number;
  /** Queries per pass of the wasm kernels (queryBlock). */
  readonly queryBlock: number;

  constructor(nHead: number, window: number, maxHeadDimK: number, maxHeadDimV = maxHeadDimK, memory?: ScratchMemory) {
    this.window = window;
    this.queryBlock = queryBlock(nHead, window);
    const f = attentionScratchFloats(nHead, window, maxHeadDimK, maxHeadDimV);
    this.scores = memory ? new Float32Array(memory.buffer, memory.scores, f.scores) : new Float32Array(nHead * window);
    this.qRot = new Float32Array(nHead * maxHeadDimK);
    this.qBlock = memory ? new Float32Array(memory.buffer, memory.qBlock, f.qBlock) : new Float32Array(0);
    this.outBlock = memory ? new Float32Array(memory.buffer, memory.outBlock, f.outBlock) : new Float32Array(0);
    this.wAvg = new Float32Array(window);
    this.invSum = new Float64Array(nHead);
  }
}

/** Receives, per query token, the head-averaged weights over the retained tokens it sees. */
export type AttentionWeightsHook = (queryIndex: number, nQuery: number, w: Float32Array, nVisible: number) => void;

export interface AttendShape {
  readonly nHead: number;
  readonly nHeadKv: number;
  readonly headDimK: number;
  readonly headDimV: number;
  /** > 0: the query at retained index i sees only indices > i - slidingWindow (a model's own SWA,
   *  kept in a FIFO group where retained indices are consecutive positions). */
  readonly slidingWindow?: number;
  /** > 0: scores become softcap * tanh(score / softcap) before the softmax (gemma2). */
  readonly softcap?: number;
}

/**
 * Applies the layer's sliding-window mask and soft-capping to one row of scores (scaled q.k over
 * retained indices 0 .. nVis-1, the query at nVis - 1): masked scores become -Infinity, which the
 * softmax (JS and wasm) turns into 0. A no-op for plain layers.
 */
export function transformScores(scores: Float32Array, base: number, nVis: number, shape: AttendShape): void {
  const sw = shape.slidingWindow ?? 0;
  const lo = sw > 0 ? Math.max(0, nVis - sw) : 0;
  for (let t = 0; t < lo; t++) scores[base + t] = -Infinity;
  const cap = shape.softcap ?? 0;
  if (cap > 0) {
    const inv = 1 / cap;
    for (let t = lo; t < nVis; t++) scores[base + t] = cap * Math.tanh(scores[base + t]! * inv);
  }
}

/** Whether transformScores changes anything for this shape (the fast path skips it). */
export function hasScoreTransform(shape: AttendShape): boolean {
  return (shape.slidingWindow ?? 0) > 0 || (shape.softcap ?? 0) > 0;
}

/**
 * out[qi][h][0..headDimV) = softmax_t(scale * <R(qPos) q[qi][h], R(kPos_t) k_t>) . v_t over the
 * retained tokens t <= the query's own index, where the queries are the last `nQuery` retained
 * tokens (written by the last reserve). q is pre-RoPE, [nQuery][nHead][headDimK].
 */
export function attendRuns(
  out: Float32Array,
  outOff: number,
  q: Float32Array,
  qOff: number,
  nQuery: number,
  shape: AttendShape,
  runs: RunTable,
  held: number,
  kStore: PageStore,
  vStore: PageStore,
  rope: Rope | null,
  scale: number,
  scratch: AttentionScratch,
  hook: AttentionWeightsHook | null,
): void {
  const { nHead, nHeadKv, headDimK: dk, headDimV: dv } = shape;
  const group = nHead / nHeadKv;
  const W = scratch.window;
  const scores = scratch.scores;
  const qRot = scratch.qRot;
  const qStride = nHead * dk;
  for (let qi = 0; qi < nQuery; qi++) {
    const self = held - nQuery + qi; // retained index of the query's own token
    // The query's attention position: from the run that holds its own token.
    let qr = runs.n - 1;
    while (qr > 0 && runs.index[qr]! > self) qr--;
    const qPos = runs.pos[qr]! + (self - runs.index[qr]!);
    const qBase = qOff + qi * qStride;
    // The softmax scale goes onto the query once (rotation is linear), not onto every score.
    if (rope === null) for (let i = 0; i < qStride; i++) qRot[i] = q[qBase + i]! * scale;
    let rotOffset = NaN;
    const nVis = self + 1;
    for (let r = 0; r < runs.n; r++) {
      const idx = runs.index[r]!;
      if (idx > self) break;
      const len = Math.min(runs.length[r]!, nVis - idx);
      if (rope !== null) {
        // Keys of this run were rotated by rotPos; rotating the query by qPos + (rotPos - pos)
        // gives the angle difference qPos - pos of dense attention at the assigned positions.
        const off = runs.rotPos[r]! - runs.pos[r]!;
        if (off !== rotOffset) {
          rotOffset = off;
          for (let i = 0; i < qStride; i++) qRot[i] = q[qBase + i]! * scale;
          rope.rotate(qRot, 0, nHead, qPos + off);
        }
      }
      const page = runs.page[r]!;
      const slot = runs.slotStart[r]!;
      for (let h = 0; h < nHead; h++) kStore.dotRun(page, slot, len, (h / group) | 0, qRot, h * dk, scores, h * W + idx);
    }
    // Softmax per head over the visible tokens, unnormalized (e^(s - max) <= 1): the 1/sum goes
    // onto the head's output after the value pass, or onto the weights when the hook reads them.
    // Two passes instead of three, and expNonPositive instead of Math.exp (fast-exp.ts: the exp
    // was about a third of stories260K's decode CPU).
    const invSum = scratch.invSum;
    const transform = hasScoreTransform(shape);
    for (let h = 0; h < nHead; h++) {
      const base = h * W;
      if (transform) transformScores(scores, base, nVis, shape);
      let max = -Infinity;
      for (let t = 0; t < nVis; t++) {
        const s = scores[base + t]!;
        if (s > max) max = s;
      }
      let sum = 0;
      for (let t = 0; t < nVis; t++) {
        const e = expNonPositive(scores[base + t]! - max);
        scores[base + t] = e;
        sum += e;
      }
      const inv = 1 / sum;
      invSum[h] = inv;
      if (hook !== null) for (let t = 0; t < nVis; t++) scores[base + t] = scores[base + t]! * inv;
    }
    const oBase = outOff + qi * nHead * dv;
    for (let i = 0; i < nHead * dv; i++) out[oBase + i] = 0;
    for (let r = 0; r < runs.n; r++) {
      const idx = runs.index[r]!;
      if (idx > self) break;
      const len = Math.min(runs.length[r]!, nVis - idx);
      const page = runs.page[r]!;
      const slot = runs.slotStart[r]!;
      for (let h = 0; h < nHead; h++) vStore.axpyRun(page, slot, len, (h / group) | 0, scores, h * W + idx, out, oBase + h * dv);
    }
    if (hook === null) {
      for (let h = 0; h < nHead; h++) {
        const inv = invSum[h]!;
        const o = oBase + h * dv;
        for (let i = 0; i < dv; i++) out[o + i] = out[o + i]! * inv;
      }
    } else {
      const w = scratch.wAvg;
      const invH = 1 / nHead;
      for (let t = 0; t < nVis; t++) w[t] = 0;
      for (let h = 0; h < nHead; h++) {
        const base = h * W;
        for (let t = 0; t < nVis; t++) w[t] = w[t]! + scores[base + t]!;
      }
      for (let t = 0; t < nVis; t++) w[t] = w[t]! * invH;
      hook(qi, nQuery, w, nVis);
    }
  }
}
