// The contract between the paged cache and an eviction policy. The cache owns pages and slots;
// a policy only decides which retained tokens leave (by their index in retained order) and,
// for score-based policies, folds attention weights into per-token scores.

import type { CachePolicy, PositionsMode } from "../config.js";

export interface EvictionView {
  /** Tokens retained now, before the new ones are appended. */
  readonly held: number;
  /**
   * Per retained token, in retained order, the policy's `scoresPerToken` numbers (score-based
   * policies only; else an empty array): token t's record is scores[t * scoresPerToken ..].
   */
  readonly scores: Float64Array;
}

export interface EvictionPolicy {
  readonly config: CachePolicy;
  readonly window: number;
  /** Leading tokens never evicted (sinks / prefix). */
  readonly pinned: number;
  readonly positions: PositionsMode;
  /** True when evictions leave holes mid-sequence: the cache then compacts sparse pages. */
  readonly holes: boolean;
  /** True when the policy reads attention weights (the cache keeps per-token scores for it). */
  readonly usesScores: boolean;
  /**
   * f64 numbers the cache keeps per retained token for the policy (0 when !usesScores): the record
   * moves with its token when others are evicted, is zeroed when the token is appended, copied by
   * fork and saved by snapshots. Its first number is the token's score.
   */
  readonly scoresPerToken: number;
  /**
   * What a backend that reduces attention weights outside the cache (the GPU) hands observeSummed,
   * per call: "sum", the weights of every query of the call summed (the policy's score is a plain
   * sum: unbounded H2O); a number n > 0, the last n queries' weights each on its own (windowed H2O
   * n = scoreWindow, TOVA 1); 0 for policies that read no weights.
   */
  readonly observedQueries: "sum" | number;
  /** Most pages one sequence's retained tokens can span under this policy. */
  pagesPerSequence(pageSize: number): number;
  /**
   * Writes `count` distinct retained indices, ascending, into `out`: the tokens that leave before
   * `nNew` tokens are appended. Called only with 0 < count <= view.held - pinned.
   */
  selectEvictions(view: EvictionView, count: number, nNew: number, out: Int32Array): void;
  /**
   * The attention-weights hook. `w[t]` (t < nVisible) is the weight query `queryIndex` of `nQuery`
   * gave retained token t in layer `layer`, averaged over query heads (each head's weights sum to 1).
   * Called per layer in increasing order, and within a layer per query in increasing order.
   */
  observe(scores: Float64Array, layer: number, nLayer: number, queryIndex: number, nQuery: number, w: Float32Array, nVisible: number): void;
}

/**
 * Retained-order selection of the `count` lowest scores in [lo, hi), ties to the older token. Token
 * i's score is scores[i * stride] (the first number of its record).
 */
export function selectLowest(scores: Float64Array, lo: number, hi: number, count: number, out: Int32Array, taken: Uint8Array, stride = 1): void {
  for (let i = lo; i < hi; i++) taken[i] = 0;
  for (let j = 0; j < count; j++) {
    let best = -1;
    let bestScore = Infinity;
    for (let i = lo; i < hi; i++) {
      const s = scores[i * stride]!;
      if (taken[i] === 0 && s < bestScore) {
        bestScore = s;
        best = i;
      }
    }
    if (best < 0) {
      // Every candidate scored Infinity/NaN: fall back to the oldest untaken ones.
      for (let i = lo; i < hi; i++) if (taken[i] === 0) { best = i; break; }
    }
    taken[best] = 1;
    out[j] = best;
  }
  out.subarray(0, count).sort();
}

/** Pages a pinned prefix plus a contiguous recent run can span (the recent run may straddle one page more). */
export function prefixRecentPages(pinned: number, recent: number, pageSize: number): number {
  return Math.ceil(pinned / pageSize) + Math.ceil(recent / pageSize) + 1;
}

export function noObserve(): void {}
