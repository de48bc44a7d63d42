// Everything a CacheGroup allocates besides its page stores (eviction, compaction and RoPE buffers,
// the run table, the attention scratch; in the wasm kernels' memory or not; the per-token scores of
// a score-based policy for every sequence), and the bytes it takes.
//
// One function, scratchLengths, sizes every array. CacheScratch allocates from it and checks at
// construction that what it got adds up to scratchBytesOf(lengths); cacheScratchBytes (the planner's
// figure) and cacheKernelLayout predict from the same lengths. So allocation and prediction cannot drift.

import { CacheConfigError } from "../errors.js";
import { AttentionScratch, RunTable, attentionScratchFloats } from "./attention.js";
import { pageStoreBytes } from "./codecs/index.js";
import type { CacheConfig, CacheModelShape } from "./config.js";
import { layerPageShape, planPoolLayout, type PoolLayout } from "./page-pool.js";
import { createPolicy } from "./policies/index.js";
import {
  CacheKernelMemory,
  layoutCacheMemory,
  MAX_CACHE_MEMORY_BYTES,
  splitsByHead,
  wasmAttentionSupports,
  type CacheMemoryLayout,
  type LayerStoreBytes,
  type ScratchFloats,
} from "./wasm/store-memory.js";

/**
 * Most bytes of per-token policy scores one group keeps (maxSequences x window x scoresPerToken f64,
 * allocated at once): 2 GiB, past which one Float64Array fails in browsers' engines. Unlike the
 * pages, a budget does not bound them, so a large window, sequence count and score window is refused.
 */
export const MAX_POLICY_SCORE_BYTES = 2 ** 31;

/** Element counts of every scratch array (the comment on each says its type and shape). */
export interface ScratchLengths {
  readonly window: number;
  readonly nHead: number;
  readonly maxHeadDimK: number;
  readonly maxHeadDimV: number;
  readonly evictIdx: number; // int32 [window] retained indices the policy chose to evict
  readonly doomed: number; // int32 [pagesPerSequence + window + 1] entry indices a reserve releases
  readonly kScratch: number; // f32 [max nHeadKv * headDimK] one key, rotated before it is stored
  readonly gather: number; // f32 [pageSize][max token stride] compaction buffer
  readonly posScratch: number; // int32 [window] compaction positions
  /** RunTable capacity: int32 [window] x 6 (page, slotStart, length, index: shared with the wasm kernels; pos, rotPos: JS). */
  readonly runs: number;
  readonly qRot: number; // f32 [nHead * maxHeadDimK]
  readonly wAvg: number; // f32 [window]
  readonly invSum: number; // f64 [nHead]
  readonly jsScores: number; // f32 [nHead * window] one query's scores (JS kernels)
  /** f64 numbers a score-based policy keeps per retained token (0: the policy reads no attention). */
  readonly scoresPerToken: number;
  readonly policyScores: number; // f64 [maxSequences][window][scoresPerToken] every sequence's per-token policy records
  /** f32 counts of the attention scratch inside the wasm kernels' memory. */
  readonly kernel: ScratchFloats;
}

/** The widest head dims and K/V token strides over the layers (what the shared buffers are sized by). */
function layerMaxima(model: CacheModelShape): { maxK: number; maxV: number; maxStride: number } {
  let maxK = 0;
  let maxV = 0;
  let maxStride = 0;
  for (const layer of model.layers) {
    maxK = Math.max(maxK, layer.headDimK);
    maxV = Math.max(maxV, layer.headDimV);
    maxStride = Math.max(maxStride, layer.nHeadKv * layer.headDimK, layer.nHeadKv * layer.headDimV);
  }
  return { maxK, maxV, maxStride };
}

/** The sizes of every scratch array for (config, model) and its pool. */
export function scratchLengths(config: CacheConfig, model: CacheModelShape, pool: PoolLayout): ScratchLengths {
  const W = config.windowTokens;
  const { maxK, maxV, maxStride } = layerMaxima(model);
  const scoresPerToken = createPolicy(config.policy).scoresPerToken;
  const scoreBytes = 8 * config.maxSequences * W * scoresPerToken;
  if (scoreBytes > MAX_POLICY_SCORE_BYTES) {
    throw new CacheConfigError(
      `policy ${config.policy.kind} keeps ${8 * scoresPerToken} bytes of scores per token: ${config.maxSequences} sequences x ${W} tokens = ${scoreBytes} bytes, ` +
        `more than ${MAX_POLICY_SCORE_BYTES}; lower the score window, maxSequences or the window`,
      { field: "policy", value: config.policy.kind },
    );
  }
  return {
    window: W,
    nHead: model.nHead,
    maxHeadDimK: maxK,
    maxHeadDimV: maxV,
    evictIdx: W,
    // Each entry a reserve empties lost at least one evicted token, so this bound is never reached.
    doomed: pool.pagesPerSequence + W + 1,
    kScratch: maxStride,
    gather: config.pageSize * maxStride,
    posScratch: W,
    runs: W,
    qRot: model.nHead * maxK,
    wAvg: W,
    invSum: model.nHead,
    jsScores: model.nHead * W,
    scoresPerToken,
    policyScores: config.maxSequences * W * scoresPerToken,
    kernel: attentionScratchFloats(model.nHead, W, maxK, maxV),
  };
}

/**
 * Bytes of the scratch with these lengths: the arrays always on the JS heap, plus either the JS
 * run table and scores, or (wasm kernels) everything in the kernel memory that is not a store.
 */
export function scratchBytesOf(len: ScratchLengths, kernel: CacheMemoryLayout | null, storeBytes: number): number {
  let b = 4 * (len.evictIdx + len.doomed + len.posScratch) + 4 * (len.kScratch + len.gather);
  // RunTable pos + rotPos; AttentionScratch qRot, wAvg, invSum; the policy's per-token records.
  b += 2 * 4 * len.runs + 4 * (len.qRot + len.wAvg) + 8 * len.invSum + 8 * len.policyScores;
  if (kernel !== null) return b + kernel.bytes - storeBytes;
  // JS kernels: the run table's four shared arrays and one query's scores.
  return b + 4 * 4 * len.runs + 4 * len.jsScores;
}

/**
 * Where the wasm kernels' memory would put this cache's stores, run table and attention scratch,
 * or null when attention stays in JS whatever the runtime: a score-based policy (h2o, tova), a
 * codec / head dim without wasm kernels, or more than MAX_CACHE_MEMORY_BYTES (about 4 GiB) in all.
 * The planner's kvbound rule sizes the memory with it.
 */
export function cacheKernelLayout(config: CacheConfig, model: CacheModelShape): CacheMemoryLayout | null {
  if (createPolicy(config.policy).usesScores) return null;
  const pool = planPoolLayout(config, model);
  return kernelLayoutFor(config, model, pool, scratchLengths(config, model, pool));
}

function kernelLayoutFor(config: CacheConfig, model: CacheModelShape, pool: PoolLayout, len: ScratchLengths): CacheMemoryLayout | null {
  // A group without layers attends nothing: no kernel memory.
  if (model.layers.length === 0) return null;
  const bytes: LayerStoreBytes[] = [];
  for (const layer of model.layers) {
    if (!wasmAttentionSupports(config.codec, layer.headDimK, layer.headDimV)) return null;
    bytes.push({
      k: pageStoreBytes(config.codec, "k", layerPageShape(pool.nPages, config.pageSize, layer.nHeadKv, layer.headDimK), pool.storeOptions),
      v: pageStoreBytes(config.codec, "v", layerPageShape(pool.nPages, config.pageSize, layer.nHeadKv, layer.headDimV), pool.storeOptions),
      splitHeads: splitsByHead(config.codec) ? layer.nHeadKv : 0,
    });
  }
  const layout = layoutCacheMemory(bytes, len.runs, len.kernel);
  // Past what one instance may hold the cache keeps plain buffers (CacheKernelMemory.create refuses).
  return layout.bytes > MAX_CACHE_MEMORY_BYTES ? null : layout;
}

/**
 * CacheGroup.scratchBytes for (config, model), computed without allocating: with wasm kernels
 * wherever cacheKernelLayout says they run (this runtime has WebAssembly SIMD), JS otherwise.
 */
export function cacheScratchBytes(config: CacheConfig, model: CacheModelShape): number {
  const pool = planPoolLayout(config, model);
  const len = scratchLengths(config, model, pool);
  const kernel = createPolicy(config.policy).usesScores ? null : kernelLayoutFor(config, model, pool, len);
  return scratchBytesOf(len, kernel, pool.reservedBytes);
}

/**
 * The wasm kernel memory for this cache, or null when attention stays in JS (cacheKernelLayout, or
 * no wasm SIMD here, or too much memory); a SharedArrayBuffer's when `shared` and the runtime allows.
 */
export function cacheKernelMemory(config: CacheConfig, model: CacheModelShape, shared = false): CacheKernelMemory | null {
  const layout = cacheKernelLayout(config, model);
  return layout === null ? null : CacheKernelMemory.create(layout, config.codec, shared);
}

/** The scratch of one cache group, allocated once (in `mem` where the wasm kernels run). */
export class CacheScratch {
  readonly lengths: ScratchLengths;
  readonly evictIdx: Int32Array; // [window]
  readonly doomed: Int32Array; // [pagesPerSequence + window + 1]
  readonly kScratch: Float32Array; // [max nHeadKv * headDimK]
  readonly gather: Float32Array; // [pageSize][max token stride]
  readonly posScratch: Int32Array; // [window]
  readonly runs: RunTable;
  readonly attention: AttentionScratch;
  /** wasm kernels: the softmax denominators in their memory ([queryBlock * nHead] f32); null with JS kernels. */
  readonly kernelInvSum: Float32Array | null;
  /** wasm kernels: the float counts of their scratch (attentionScratchFloats); null with JS kernels. */
  readonly kernelFloats: ScratchFloats | null;
  readonly policyScores: Float64Array; // [maxSequences][window][scoresPerToken]
  /** One view of policyScores per sequence slot ([window * scoresPerToken] each), and the free slots. */
  private readonly scoreViews: Float64Array[] = [];
  private readonly freeScoreSlots: number[] = [];
  /**
   * Bytes allocated besides the stores (constant): the arrays above, the policy's per-token scores of
   * maxSequences sequences included; with wasm kernels, everything in the kernel memory that is not
   * a store. Per-sequence page tables (a few bytes per page) are not counted.
   */
  readonly bytes: number;

  /** `pool` is the group's layout; `mem`, when given, already holds the stores and reserves the rest by its layout. */
  constructor(config: CacheConfig, model: CacheModelShape, pool: PoolLayout, mem: CacheKernelMemory | null) {
    const len = scratchLengths(config, model, pool);
    this.lengths = len;
    this.evictIdx = new Int32Array(len.evictIdx);
    this.doomed = new Int32Array(len.doomed);
    this.kScratch = new Float32Array(len.kScratch);
    this.gather = new Float32Array(len.gather);
    this.posScratch = new Int32Array(len.posScratch);
    this.policyScores = new Float64Array(len.policyScores);
    if (len.policyScores > 0) {
      const per = len.window * len.scoresPerToken;
      for (let i = 0; i < config.maxSequences; i++) this.scoreViews.push(this.policyScores.subarray(i * per, (i + 1) * per));
      for (let i = config.maxSequences - 1; i >= 0; i--) this.freeScoreSlots.push(i);
    }
    if (mem !== null) {
      const L = mem.layout;
      this.runs = new RunTable(len.runs, { buffer: mem.buffer, byteOffset: L.runTable });
      this.attention = new AttentionScratch(len.nHead, len.window, len.maxHeadDimK, len.maxHeadDimV, {
        buffer: mem.buffer,
        scores: L.scores,
        qBlock: L.qBlock,
        outBlock: L.outBlock,
      });
      this.kernelInvSum = new Float32Array(mem.buffer, L.invSum, len.kernel.invSum);
      this.kernelFloats = len.kernel;
    } else {
      this.runs = new RunTable(len.runs);
      this.attention = new AttentionScratch(len.nHead, len.window, len.maxHeadDimK, len.maxHeadDimV);
      this.kernelInvSum = null;
      this.kernelFloats = null;
    }
    this.bytes = scratchBytesOf(len, mem?.layout ?? null, pool.reservedBytes);
    // What was allocated must be what the lengths say (the planner predicts from them): checked once here.
    const got = this.allocatedBytes(mem !== null ? mem.layout.bytes - pool.reservedBytes : -1);
    if (got !== this.bytes) {
      throw new Error(`cache scratch allocated ${got} bytes but scratchLengths predicts ${this.bytes}: update scratchLengths with the allocation`);
    }
  }

  /**
   * A free sequence's per-token score records (the caller's until releaseScores), or null when the
   * policy keeps none. The cache holds at most maxSequences sequences, so a slot is always free.
   */
  takeScores(): Float64Array | null {
    if (this.scoreViews.length === 0) return null;
    const slot = this.freeScoreSlots.pop();
    if (slot === undefined) throw new Error("cache scratch: every sequence's score records are taken: more sequences than maxSequences");
    return this.scoreViews[slot]!;
  }

  /** Gives back what takeScores returned (a sequence removed). */
  releaseScores(scores: Float64Array | null): void {
    if (scores === null) return;
    const slot = this.scoreViews.indexOf(scores);
    if (slot < 0 || this.freeScoreSlots.includes(slot)) throw new Error("cache scratch: score records released twice or not taken from this cache");
    this.freeScoreSlots.push(slot);
  }

  /** Sum of the byteLengths actually allocated (`kernelBytes` >= 0: the kernel memory's non-store bytes, which hold the shared arrays). */
  private allocatedBytes(kernelBytes: number): number {
    const r = this.runs;
    const a = this.attention;
    let b = this.evictIdx.byteLength + this.doomed.byteLength + this.kScratch.byteLength + this.gather.byteLength + this.posScratch.byteLength;
    b += r.pos.byteLength + r.rotPos.byteLength + a.qRot.byteLength + a.wAvg.byteLength + a.invSum.byteLength + this.policyScores.byteLength;
    if (kernelBytes >= 0) return b + kernelBytes;
    return b + r.page.buffer.byteLength + a.scores.byteLength;
  }
}
