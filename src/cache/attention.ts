// Attention over a sequence's cached pages, read in place through the codecs' dotRun / axpyRun
// (never through a dequantized copy). GQA, causal by retained order, one or more query tokens.
// `denseAttention` (dense-attention.ts) is the naive reference the tests hold this kernel to.

import { axpyRunGroup, dotRunGroup, GROUPED_ACC_PER_SLOT } from "./codecs/grouped.js";
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
 * Query tokens one pass over the cached runs serves when several are attended at once (prefill):
 * with QUERY_BLOCK queries x G heads through the stores' grouped kernels, each cached key/value
 * is decoded once per block instead of once per query (stories260K prefill: 2 queries x 2 heads
 * of a KV head fill the 4-wide kernels). Scratch grows by this factor.
 */
export const QUERY_BLOCK = 2;

/** Float counts of the scratch arrays the wasm kernels share with AttentionScratch (store-memory.ts lays them out). */
export function attentionScratchFloats(nHead: number, window: number, maxHeadDimK: number, maxHeadDimV: number): ScratchFloats {
  return {
    scores: QUERY_BLOCK * nHead * window,
    qBlock: QUERY_BLOCK * nHead * maxHeadDimK,
    outBlock: QUERY_BLOCK * nHead * maxHeadDimV,
    invSum: QUERY_BLOCK * nHead,
  };
}

/** Byte offsets of AttentionScratch's shared arrays in `buffer`. */
export interface ScratchMemory {
  readonly buffer: ArrayBuffer;
  readonly scores: number;
  readonly qBlock: number;
  readonly outBlock: number;
}

/** Buffers the kernel reuses; sized for the window once. */
export class AttentionScratch {
  readonly scores: Float32Array; // [QUERY_BLOCK * nHead][window]
  readonly qRot: Float32Array; // [nHead][maxHeadDimK]
  readonly qBlock: Float32Array; // [QUERY_BLOCK * nHead][maxHeadDimK], rows by (KV head, query, head in group)
  readonly outBlock: Float32Array; // [QUERY_BLOCK * nHead][maxHeadDimV], rows as qBlock
  readonly wAvg: Float32Array; // [window]
  readonly invSum: Float64Array; // [QUERY_BLOCK * nHead] 1 / softmax denominator per head
  readonly acc4: Float64Array; // [4 * pageSize] partial sums of the stores' grouped kernels (grouped.ts)
  readonly window: number;

  /** `memory`: where scores, qBlock and outBlock live (the wasm kernels' memory; sizes from attentionScratchFloats). */
  constructor(nHead: number, window: number, maxHeadDimK: number, pageSize = 16, maxHeadDimV = maxHeadDimK, memory?: ScratchMemory) {
    this.window = window;
    const f = attentionScratchFloats(nHead, window, maxHeadDimK, maxHeadDimV);
    this.acc4 = new Float64Array(GROUPED_ACC_PER_SLOT * pageSize);
    this.scores = memory ? new Float32Array(memory.buffer, memory.scores, f.scores) : new Float32Array(f.scores);
    this.qRot = new Float32Array(nHead * maxHeadDimK);
    this.qBlock = memory ? new Float32Array(memory.buffer, memory.qBlock, f.qBlock) : new Float32Array(f.qBlock);
    this.outBlock = memory ? new Float32Array(memory.buffer, memory.outBlock, f.outBlock) : new Float32Array(f.outBlock);
    this.wAvg = new Float32Array(window);
    this.invSum = new Float64Array(QUERY_BLOCK * nHead);
  }
}

/** Receives, per query token, the head-averaged weights over the retained tokens it sees. */
export type AttentionWeightsHook = (queryIndex: number, nQuery: number, w: Float32Array, nVisible: number) => void;

export interface AttendShape {
  readonly nHead: number;
  readonly nHeadKv: number;
  readonly headDimK: number;
  readonly headDimV: number;
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
  // GQA: the query heads of one KV head share one pass over each run (grouped.ts), whatever the
  // group size; one head per call when the group is 1 or the scratch is too small.
  const acc4 = scratch.acc4;
  const groupedK = group > 1 && acc4.length >= GROUPED_ACC_PER_SLOT * kStore.shape.pageSize;
  const groupedV = group > 1 && acc4.length >= GROUPED_ACC_PER_SLOT * vStore.shape.pageSize;
  const gqStride = group * dk; // query offset between KV heads' groups
  const gsStride = group * W; // score offset between KV heads' groups
  const goStride = group * dv; // output offset between KV heads' groups
  // Several queries without a score hook: blocks of QUERY_BLOCK queries share each pass.
  const blocked =
    nQuery > 1 && hook === null &&
    acc4.length >= GROUPED_ACC_PER_SLOT * Math.max(kStore.shape.pageSize, vStore.shape.pageSize) &&
    scratch.qBlock.length >= QUERY_BLOCK * nHead * dk && scratch.outBlock.length >= QUERY_BLOCK * nHead * dv;
  if (blocked) {
    for (let qi = 0; qi < nQuery; qi += QUERY_BLOCK) {
      attendBlock(out, outOff, q, qOff, qi, Math.min(QUERY_BLOCK, nQuery - qi), nQuery, shape, runs, held, kStore, vStore, rope, scale, scratch);
    }
    return;
  }
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
      if (groupedK) {
        for (let kv = 0; kv < nHeadKv; kv++) {
          dotRunGroup(kStore, page, slot, len, kv, group, qRot, kv * gqStride, dk, scores, kv * gsStride + idx, W, acc4);
        }
      } else {
        for (let h = 0; h < nHead; h++) {
          kStore.dotRun(page, slot, len, (h / group) | 0, qRot, h * dk, scores, h * W + idx);
        }
      }
    }
    // Softmax per head over the visible tokens, unnormalized (e^(s - max) <= 1): the 1/sum goes
    // onto the head's output after the value pass, or onto the weights when the hook reads them.
    // Two passes instead of three, and expNonPositive instead of Math.exp (fast-exp.ts: the exp
    // was about a third of stories260K's decode CPU).
    const invSum = scratch.invSum;
    for (let h = 0; h < nHead; h++) {
      const base = h * W;
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
      if (groupedV) {
        for (let kv = 0; kv < nHeadKv; kv++) {
          axpyRunGroup(vStore, page, slot, len, kv, group, scores, kv * gsStride + idx, W, out, oBase + kv * goStride, dv, acc4);
        }
      } else {
        for (let h = 0; h < nHead; h++) {
          vStore.axpyRun(page, slot, len, (h / group) | 0, scores, h * W + idx, out, oBase + h * dv);
        }
      }
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

/** The run holding retained index `self` (runs in retained order, run 0 at index 0). */
function runOf(runs: RunTable, self: number): number {
  let r = runs.n - 1;
  while (r > 0 && runs.index[r]! > self) r--;
  return r;
}

/**
 * Queries qi0 .. qi0+nb of attendRuns in one pass over the runs. Rows of the block are ordered
 * (KV head, query, head in group), so the nb * group rows of one KV head are contiguous and go
 * through one dotRunGroup / axpyRunGroup. Causal: each query's scores beyond its own token are
 * computed with the block's last query's and then zeroed, so they add nothing in the value pass.
 */
function attendBlock(
  out: Float32Array,
  outOff: number,
  q: Float32Array,
  qOff: number,
  qi0: number,
  nb: number,
  nQuery: number,
  shape: AttendShape,
  runs: RunTable,
  held: number,
  kStore: PageStore,
  vStore: PageStore,
  rope: Rope | null,
  scale: number,
  scratch: AttentionScratch,
): void {
  const { nHead, nHeadKv, headDimK: dk, headDimV: dv } = shape;
  const group = nHead / nHeadKv;
  const G = nb * group; // rows per KV head
  const W = scratch.window;
  const scores = scratch.scores;
  const qRot = scratch.qRot;
  const qBlock = scratch.qBlock;
  const outBlock = scratch.outBlock;
  const acc4 = scratch.acc4;
  const invSum = scratch.invSum;
  const self0 = held - nQuery + qi0; // retained index of the block's first query token
  const selfLast = self0 + nb - 1;
  const nVisLast = selfLast + 1;
  if (rope === null) loadBlockQueries(q, qOff, qi0, nb, self0, nHead, group, dk, runs, null, 0, scale, qRot, qBlock);
  let rotOffset = NaN;
  for (let r = 0; r < runs.n; r++) {
    const idx = runs.index[r]!;
    if (idx > selfLast) break;
    const len = Math.min(runs.length[r]!, nVisLast - idx);
    if (rope !== null) {
      // As in attendRuns: the run's keys were rotated by rotPos, so the queries go by qPos + (rotPos - pos).
      const off = runs.rotPos[r]! - runs.pos[r]!;
      if (off !== rotOffset) {
        rotOffset = off;
        loadBlockQueries(q, qOff, qi0, nb, self0, nHead, group, dk, runs, rope, off, scale, qRot, qBlock);
      }
    }
    const page = runs.page[r]!;
    const slot = runs.slotStart[r]!;
    for (let kv = 0; kv < nHeadKv; kv++) {
      dotRunGroup(kStore, page, slot, len, kv, G, qBlock, kv * G * dk, dk, scores, kv * G * W + idx, W, acc4);
    }
  }
  // Unnormalized softmax per row over its query's visible tokens (as attendRuns); the tokens the
  // row's query must not see get weight 0.
  const nRows = nb * nHead;
  for (let row = 0; row < nRows; row++) {
    const b = ((row / group) | 0) % nb;
    const nVis = self0 + b + 1;
    const base = row * W;
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
    for (let t = nVis; t < nVisLast; t++) scores[base + t] = 0;
    invSum[row] = 1 / sum;
  }
  for (let i = 0; i < nRows * dv; i++) outBlock[i] = 0;
  for (let r = 0; r < runs.n; r++) {
    const idx = runs.index[r]!;
    if (idx > selfLast) break;
    const len = Math.min(runs.length[r]!, nVisLast - idx);
    const page = runs.page[r]!;
    const slot = runs.slotStart[r]!;
    for (let kv = 0; kv < nHeadKv; kv++) {
      axpyRunGroup(vStore, page, slot, len, kv, G, scores, kv * G * W + idx, W, outBlock, kv * G * dv, dv, acc4);
    }
  }
  scatterBlockRows(out, outOff, qi0, nb, nHead, group, dv, outBlock, invSum);
}

/**
 * out[query qi0 + b][head kv*group + g] = outBlock[row] * invSum[row] for the block's rows, ordered
 * (KV head, query, head in group): the unnormalized softmax's 1/sum applied on the way out.
 */
export function scatterBlockRows(
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

/**
 * Scales (and with RoPE rotates by each query's position + off) queries qi0 .. qi0+nb into
 * qBlock's rows (KV head, query, head in group); qRot is the one-query staging buffer.
 */
export function loadBlockQueries(
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
