// Perplexity of a token stream under a cache setting: the stream is fed through the paged cache one
// token at a time and each next token's negative log-likelihood is recorded; or, with `recompute`,
// StreamingLLM's oracle baseline (every token predicted from a fresh pass over the previous W tokens).
//
// Indexing: nlls[i] is the NLL of ids[i+1] given the logits after ids[i] (the model sees ids[0..i],
// or what the cache keeps of them). A stream of n tokens has n-1 predictions; ids[n-1] is never fed.
//
// A context window that cannot hold the stream is refused before any compute with
// ContextWindowSizeExceededError (its message names the fix: a larger window, or a sliding window):
// silently restarting or truncating would measure something other than what the user asked for.

import { resolveCacheConfig, type CacheConfig } from "../cache/config.js";
import type { PagedKvCache } from "../cache/paged-kv-cache.js";
import type { CacheStats } from "../cache/stats.js";
import { AbortError, InvalidSettingError } from "../errors.js";
import type { CausalLM } from "../model/causal-lm.js";
import { CacheKv, createModelCache } from "../model/cache-kv.js";

/** Predicted tokens per reported segment (stories260K's training length; llama.cpp's perplexity default chunk). */
export const SEGMENT_TOKENS = 512;
/** Largest recompute window: the oracle costs n x W forward passes, so a larger W is hours, not a baseline. */
export const MAX_RECOMPUTE_WINDOW = 65536;
/** How often (ms of compute) the loop reports progress and yields so an abort or a repaint can run. */
const YIELD_INTERVAL_MS = 50;

/** What the loop needs of a model. */
export type PerplexityModel = Pick<CausalLM, "hp" | "attention" | "forward">;

export interface PerplexityProgress {
  /** Predictions done, of `total`. */
  readonly done: number;
  readonly total: number;
  readonly elapsedMs: number;
  /** Perplexity of the predictions so far (NaN before the first). */
  readonly ppl: number;
  /** Bytes of cache pages in use now. */
  readonly cacheBytes: number;
}

export interface PerplexityOptions {
  /** A resolved cache configuration (resolveCacheConfig). With `recompute`, only its codec and page size are used. */
  readonly cacheConfig: CacheConfig;
  /** StreamingLLM's oracle: predict each token from a fresh pass over the previous W tokens at positions 0..W-1. */
  readonly recompute?: number;
  /**
   * With `recompute`: predict only ids[i+1] for i % every === 0 (a deterministic sample whose
   * indices another run can pick out of its own nlls); the others are NaN in `nlls` and left out of
   * every mean. The full oracle costs W passes per token, far too many for a long stream. Default 1.
   */
  readonly recomputeEvery?: number;
  readonly onProgress?: (p: PerplexityProgress) => void;
  readonly signal?: AbortSignal;
  /** Predictions per segment; default SEGMENT_TOKENS. */
  readonly segmentTokens?: number;
}

export interface PerplexitySegment {
  /** nlls index range [start, end): the context position of the first and past-the-last prediction. */
  readonly start: number;
  readonly end: number;
  /** NaN (null in JSON) when recomputeEvery left the segment without a prediction. */
  readonly ppl: number;
}

export interface PerplexityResult {
  /** Tokens in the stream (predictions = tokens - 1). */
  readonly tokens: number;
  /** exp(nll). */
  readonly ppl: number;
  /** Mean NLL (natural log) over every prediction made. */
  readonly nll: number;
  /** [tokens - 1]: NLL of ids[i+1] (NaN where recomputeEvery skipped it). */
  readonly nlls: Float32Array;
  readonly segments: PerplexitySegment[];
  /** The cache's stats at the end (with recompute: the cache of the last fresh pass). */
  readonly cache: CacheStats;
  /** Model forward passes run (with recompute: up to W per prediction). */
  readonly forwardPasses: number;
  /** Predictions per second of wall time. */
  readonly tokensPerSecond: number;
  /** Most bytes of cache pages in use at once. */
  readonly peakCacheBytes: number;
  readonly seconds: number;
}

/**
 * NLL (natural log) of `target` under softmax(logits), in float64 and shifted by the max logit so a
 * large logit cannot overflow exp.
 */
export function nllOf(logits: Float32Array, target: number): number {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i]! > max) max = logits[i]!;
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i]! - max);
  return Math.log(sum) + max - logits[target]!;
}

/** exp(mean NLL) of nlls[start..end), NaN entries (predictions not made) left out. NaN when none is left. */
export function rangePerplexity(nlls: Float32Array, start: number, end: number): number {
  return Math.exp(meanNll(nlls, start, end));
}

function meanNll(nlls: Float32Array, start: number, end: number): number {
  let s = 0;
  let n = 0;
  for (let i = start; i < end; i++) {
    const v = nlls[i]!;
    if (!Number.isNaN(v)) {
      s += v;
      n++;
    }
  }
  return n > 0 ? s / n : NaN;
}

/** Perplexity of `ids` under `opts.cacheConfig` (or the recompute oracle). */
export async function perplexity(model: PerplexityModel, ids: readonly number[], opts: PerplexityOptions): Promise<PerplexityResult> {
  const segmentTokens = opts.segmentTokens ?? SEGMENT_TOKENS;
  if (!Number.isSafeInteger(segmentTokens) || segmentTokens <= 0) {
    throw new InvalidSettingError(`segmentTokens ${segmentTokens} is invalid: use a positive integer`, { setting: "segmentTokens", value: segmentTokens });
  }
  if (ids.length < 2) {
    throw new InvalidSettingError(`the stream has ${ids.length} token(s); perplexity needs at least 2 (one prediction)`, {
      setting: "tokens",
      value: ids.length,
    });
  }
  const { nVocab } = model.hp;
  for (let i = 0; i < ids.length; i++) {
    const t = ids[i]!;
    if (!Number.isInteger(t) || t < 0 || t >= nVocab) {
      throw new InvalidSettingError(`token id ${t} at ${i} is outside the vocabulary (0..${nVocab - 1})`, { setting: "ids", value: t, index: i });
    }
  }
  const m = ids.length - 1;
  const every = opts.recomputeEvery ?? 1;
  if (!Number.isSafeInteger(every) || every < 1 || (every > 1 && opts.recompute === undefined)) {
    throw new InvalidSettingError(`recomputeEvery ${every} is invalid: use a positive integer, and only with recompute`, { setting: "recomputeEvery", value: every });
  }
  const loop = new Loop(m, Math.ceil(m / every), opts);
  const run =
    opts.recompute === undefined
      ? streamThroughCache(model, ids, opts.cacheConfig, loop)
      : recomputeOracle(model, ids, checkWindow(opts.recompute), every, opts.cacheConfig, loop);
  const cache = await run;
  const seconds = loop.elapsedMs() / 1000;
  const nlls = loop.nlls;
  const nll = meanNll(nlls, 0, nlls.length);
  const segments: PerplexitySegment[] = [];
  for (let start = 0; start < nlls.length; start += segmentTokens) {
    const end = Math.min(nlls.length, start + segmentTokens);
    segments.push({ start, end, ppl: rangePerplexity(nlls, start, end) });
  }
  return {
    tokens: ids.length,
    ppl: Math.exp(nll),
    nll,
    nlls,
    segments,
    cache: cache.stats(),
    forwardPasses: loop.forwards,
    tokensPerSecond: seconds > 0 ? loop.total / seconds : 0,
    peakCacheBytes: loop.peakCacheBytes,
    seconds,
  };
}

function checkWindow(w: number): number {
  if (!Number.isSafeInteger(w) || w < 1 || w > MAX_RECOMPUTE_WINDOW) {
    throw new InvalidSettingError(`recompute window ${w} is invalid: use an integer in 1..${MAX_RECOMPUTE_WINDOW}`, { setting: "recompute", value: w });
  }
  return w;
}

/** Bookkeeping shared by both modes: NLLs, timing, progress, abort, peak bytes. */
class Loop {
  readonly nlls: Float32Array;
  forwards = 0;
  peakCacheBytes = 0;
  private done = 0;
  private sum = 0;
  private readonly t0 = performance.now();
  private lastYield = this.t0;

  /** `predictions` = stream tokens - 1; `total` = the ones this run predicts. */
  constructor(predictions: number, readonly total: number, private readonly opts: PerplexityOptions) {
    this.nlls = new Float32Array(predictions).fill(NaN);
    if (opts.signal?.aborted) throw new AbortError("perplexity aborted");
  }

  elapsedMs(): number {
    return performance.now() - this.t0;
  }

  record(i: number, nll: number): void {
    this.nlls[i] = nll;
    this.sum += nll;
    this.done++;
  }

  noteCache(cache: PagedKvCache): void {
    const used = cache.stats().bytesUsed;
    if (used > this.peakCacheBytes) this.peakCacheBytes = used;
  }

  /** Reports and yields every YIELD_INTERVAL_MS (and at the end); throws AbortError once aborted. */
  async tick(cache: PagedKvCache, final = false): Promise<void> {
    const now = performance.now();
    if (!final && now - this.lastYield < YIELD_INTERVAL_MS) return;
    this.lastYield = now;
    this.opts.onProgress?.({
      done: this.done,
      total: this.total,
      elapsedMs: now - this.t0,
      ppl: this.done > 0 ? Math.exp(this.sum / this.done) : NaN,
      cacheBytes: cache.stats().bytesUsed,
    });
    if (!final) await new Promise<void>((resolve) => setTimeout(resolve, 0));
    if (this.opts.signal?.aborted) throw new AbortError("perplexity aborted");
  }
}

/** The stream through one cache sequence, one token per forward pass. */
async function streamThroughCache(model: PerplexityModel, ids: readonly number[], config: CacheConfig, loop: Loop): Promise<PagedKvCache> {
  const cache = createModelCache(model, config);
  cache.add(0);
  // The last token is never fed, so a window of ids.length - 1 suffices.
  cache.assertPromptFits(0, ids.length - 1);
  const kv = new CacheKv(cache, 0, model);
  const logits = new Float32Array(model.hp.nVocab);
  for (let p = 0; p < ids.length - 1; p++) {
    cache.reserveOrThrow(0, 1);
    loop.noteCache(cache);
    model.forward(ids[p]!, p, kv, logits);
    loop.forwards++;
    loop.record(p, nllOf(logits, ids[p + 1]!));
    await loop.tick(cache);
  }
  await loop.tick(cache, true);
  return cache;
}

/**
 * StreamingLLM's "sliding window with re-computation" (Xiao et al. 2023, Sec. 4.1): ids[i+1] is
 * predicted from a fresh pass over ids[i-W+1..i] at positions 0..W-1. While i < W the window is the
 * whole prefix from position 0, which one incremental pass computes exactly; past that every
 * prediction costs W forward passes, only the last of which computes logits.
 */
async function recomputeOracle(
  model: PerplexityModel,
  ids: readonly number[],
  w: number,
  every: number,
  config: CacheConfig,
  loop: Loop,
): Promise<PagedKvCache> {
  const cache = createModelCache(model, resolveCacheConfig({ contextWindowSize: w, codec: config.codec, pageSize: config.pageSize }));
  const kv = new CacheKv(cache, 0, model);
  const logits = new Float32Array(model.hp.nVocab);
  const m = ids.length - 1;
  cache.add(0);
  const prefix = Math.min(w, m);
  for (let p = 0; p < prefix; p++) {
    cache.reserveOrThrow(0, 1);
    loop.noteCache(cache);
    model.forward(ids[p]!, p, kv, logits);
    loop.forwards++;
    if (p % every === 0) loop.record(p, nllOf(logits, ids[p + 1]!));
    await loop.tick(cache);
  }
  for (let i = prefix; i < m; i++) {
    if (i % every !== 0) continue;
    cache.remove(0);
    cache.add(0);
    const first = i - w + 1;
    for (let j = 0; j < w; j++) {
      cache.reserveOrThrow(0, 1);
      model.forward(ids[first + j]!, j, kv, j === w - 1 ? logits : null);
      loop.forwards++;
    }
    loop.noteCache(cache);
    loop.record(i, nllOf(logits, ids[i + 1]!));
    await loop.tick(cache);
  }
  await loop.tick(cache, true);
  return cache;
}
