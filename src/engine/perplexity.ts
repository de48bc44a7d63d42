// Perplexity of a token stream under a cache setting: the stream is fed through the paged cache and
// each next token's negative log-likelihood is recorded; or, with `recompute`, StreamingLLM's oracle
// baseline (every token predicted from a fresh pass over the previous W tokens).
//
// Tokens go through the model in batches (forwardBatch, every position's logits) where that changes
// nothing a token sees, one at a time elsewhere: see feedBatchSize for the rule. Every NLL is the
// one-token-at-a-time NLL up to float summation order (batchTokens: 1 runs that reference path).
//
// Indexing: nlls[i] is the NLL of ids[i+1] given the logits after ids[i] (the model sees ids[0..i],
// or what the cache keeps of them). A stream of n tokens has n-1 predictions; ids[n-1] is never fed.
//
// A context window that cannot hold the stream is refused before any compute with
// ContextWindowSizeExceededError (its message names the fix: a larger window, or a sliding window):
// silently restarting or truncating would measure something other than what the user asked for.

import { resolveCacheConfig, type CacheConfig } from "../cache/config.js";
import type { PagedKvCache, PagedKvCacheOptions } from "../cache/paged-kv-cache.js";
import type { CacheStats } from "../cache/stats.js";
import { AbortError, InvalidSettingError } from "../errors.js";
import { asyncForwardOf, type AsyncForwardLM } from "../model/async-forward.js";
import type { CausalLM } from "../model/causal-lm.js";
import { CacheKv, createModelCache } from "../model/cache-kv.js";

/** Predicted tokens per reported segment (stories260K's training length; llama.cpp's perplexity default chunk). */
export const SEGMENT_TOKENS = 512;
/** Largest recompute window: the oracle costs n x W forward passes, so a larger W is hours, not a baseline. */
export const MAX_RECOMPUTE_WINDOW = 65536;
/** How often (ms of compute) the loop reports progress and yields so an abort or a repaint can run. */
const YIELD_INTERVAL_MS = 50;

/** What the loop needs of a model. */
export type PerplexityModel = Pick<CausalLM, "hp" | "attention" | "forward" | "forwardBatch" | "maxBatchTokens">;

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
  /**
   * Most tokens per forward pass, 1..model.maxBatchTokens (default model.maxBatchTokens); the
   * batching rule (feedBatchSize) cuts batches further. 1: one model.forward per token (the reference).
   */
  readonly batchTokens?: number;
  /**
   * The cache's attention kernels (PagedKvCacheOptions.kernels; default "wasm" where the runtime,
   * codec and policy allow). "js" sums in the same order for a batch as for one query, so batched
   * NLLs are bit-identical to batchTokens 1 there (the tests' check of the batching rule).
   */
  readonly cacheKernels?: "wasm" | "js";
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
  /** Tokens run through the model, batched or not (with recompute: up to W per prediction). */
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
  const gpu = asyncForwardOf(model as CausalLM);
  if (gpu !== null) checkAsync(gpu, opts);
  const batch = gpu !== null ? 1 : checkBatchTokens(model, opts.batchTokens);
  const loop = new Loop(m, Math.ceil(m / every), opts);
  const run =
    gpu !== null
      ? streamThroughAsync(gpu, ids, opts.cacheConfig, loop)
      : opts.recompute === undefined
        ? streamThroughCache(model, ids, opts.cacheConfig, batch, loop).then((c) => c.stats())
        : recomputeOracle(model, ids, checkWindow(opts.recompute), every, opts.cacheConfig, batch, loop).then((c) => c.stats());
  const cacheStats = await run;
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
    cache: cacheStats,
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

/** What an async (WebGPU) model runs: the stream one token a pass (its forward reports the last position's logits only), no recompute oracle. */
function checkAsync(model: AsyncForwardLM, opts: PerplexityOptions): void {
  if (opts.recompute !== undefined) {
    throw new InvalidSettingError(`the recompute oracle runs on the cpu backend, not ${model.backend}; use backend cpu`, { setting: "recompute", value: opts.recompute });
  }
  if (opts.batchTokens !== undefined && opts.batchTokens !== 1) {
    throw new InvalidSettingError(`batchTokens ${opts.batchTokens}: the ${model.backend} backend feeds perplexity one token a pass (its forward returns the last position's logits only); use 1`, {
      setting: "batchTokens",
      value: opts.batchTokens,
    });
  }
}

function checkBatchTokens(model: Pick<CausalLM, "maxBatchTokens">, b: number | undefined): number {
  if (b === undefined) return model.maxBatchTokens;
  if (!Number.isSafeInteger(b) || b < 1 || b > model.maxBatchTokens) {
    throw new InvalidSettingError(`batchTokens ${b} is invalid: use 1..${model.maxBatchTokens} (the model's maxBatchTokens)`, { setting: "batchTokens", value: b });
  }
  return b;
}

/**
 * How many of the next tokens of sequence `seqId` one forward pass may take (at least 1, at most
 * `want`) so that each of them sees exactly what it would see fed one at a time. The rule:
 *
 *   a batch runs only while nothing is evicted: n <= windowTokens - held.
 *
 * Why: reserve(n) evicts held + n - window tokens before any of the n is computed, so under an
 * evicting policy a batch that crosses the window's edge would hide from its first tokens K/V that
 * one-at-a-time feeding still showed them (and, with score-based policies, pick the evictions from
 * scores that lack the batch's own queries). Below the edge nothing leaves: a batch writes the same
 * K/V at the same slots and positions, attention is causal among the batch, and every policy's
 * bookkeeping comes out the same: sliding / fifo / prefix-recent / context keep no state; TOVA's
 * scores are the last query's weights, which the batch's last query gives again; H2O adds the same
 * weights, per layer then per query instead of per query then per layer (f64 sums: equal up to
 * summation order, ~1e-16 relative, so its later evictions pick the same tokens unless two scores
 * tie to that precision); its score window (score-window.ts) is written for batches of queries.
 * Once the window is full every token evicts, so the stream goes one token per pass from there on:
 * a dense run (a context window that holds the stream) batches everything, a sliding window only its
 * first windowTokens tokens. Also n <= window - pinned (reserve's limit) and n <= prefillChunkSize,
 * so a model's own sliding-window layers (their cache group keeps n_swa - 1 + prefillChunkSize
 * tokens) still show every query of the batch its n_swa - 1 predecessors, as session prefill does.
 *
 * The int4 codec (KIVI) keeps a page's tokens in f32 until its last slot is written, then quantizes
 * them together. One at a time, the tokens before that slot attend to the open page; a batch that
 * wrote the last slot would seal the page before they attend. So under int4 a batch writes a page's
 * last slot only as its first token (batches of at most pageSize, cut one slot before each page end).
 * Before any eviction the pages fill front to back from slot 0, so the next slot is held % pageSize.
 *
 * What stays different is float summation order: the wasm attention kernels take a batch's query
 * rows four at a time and sum their q.k lanes in another order than one query's (codecs.as), so
 * f32 pages give NLLs within ~1e-5 of one-at-a-time; on rounded pages (f16, int8, fp8) such a
 * last-bit difference in a K/V value can land on the other side of a rounding step, which moves
 * single NLLs by up to a few 1e-3 (the JS kernels, which score-based policies use, are bit-exact).
 */
export function feedBatchSize(cache: PagedKvCache, seqId: number, want: number): number {
  const window = cache.config.windowTokens;
  const held = cache.length(seqId);
  let room = Math.min(window - held, window - cache.policy.pinned, cache.config.prefillChunkSize, want);
  if (cache.config.codec === "int4") {
    const P = cache.config.pageSize;
    const toPageEnd = P - (held % P); // tokens up to and including the current page's last slot
    room = Math.min(room, toPageEnd === 1 ? P : toPageEnd - 1);
  }
  return Math.max(1, room);
}

/**
 * Feeds ids[from..to) into sequence `kv.seqId` of `cache`, in batches of at most `batchTokens`
 * under feedBatchSize's rule (reserving each batch's slots). `logits` receives the last token's
 * logits; with `onLogits`, every token's in turn (onLogits(p, logits) for ids index p, the buffer
 * reused). Returns the tokens fed (to - from, or 0 when to <= from).
 */
export function feedTokens(
  model: PerplexityModel,
  cache: PagedKvCache,
  kv: CacheKv,
  ids: readonly number[],
  from: number,
  to: number,
  batchTokens: number,
  logits: Float32Array | null,
  onLogits?: (p: number, logits: Float32Array) => void,
): number {
  const seq = kv.seqId;
  let p = from;
  while (p < to) {
    const n = Math.min(to - p, feedBatchSize(cache, seq, batchTokens));
    cache.reserveOrThrow(seq, n);
    forwardPiece(model, kv, ids, p, n, cache.length(seq) - n, p + n === to ? logits : null, logits, onLogits);
    p += n;
  }
  return p - from;
}

/**
 * feedTokens on an asynchronous backend (WebGPU), whose forward gives the last position's logits
 * only: batches under the same rule where only the last token's logits are wanted, one token a
 * pass where every token's are (onLogits).
 */
export async function feedTokensAsync(
  model: AsyncForwardLM,
  cache: PagedKvCache,
  seq: number,
  ids: readonly number[],
  from: number,
  to: number,
  batchTokens: number,
  logits: Float32Array | null,
  onLogits?: (p: number, logits: Float32Array) => void,
): Promise<number> {
  let p = from;
  while (p < to) {
    const n = onLogits !== undefined ? 1 : Math.min(to - p, feedBatchSize(cache, seq, batchTokens));
    cache.reserveOrThrow(seq, n);
    await model.forwardAsync(ids, p, n, cache, seq, onLogits !== undefined || p + n === to ? logits : null);
    if (onLogits !== undefined) onLogits(p, logits!);
    p += n;
  }
  return p - from;
}

/**
 * ids[p..p+n) through the model into the n slots just reserved: one forward for n = 1 (the
 * reference path, bit for bit), else forwardBatch. `last` receives the last token's logits; with
 * onLogits, `buf` receives every token's and onLogits(p + i, buf) runs for each.
 */
function forwardPiece(
  model: PerplexityModel,
  kv: CacheKv,
  ids: readonly number[],
  p: number,
  n: number,
  pos: number,
  last: Float32Array | null,
  buf: Float32Array | null,
  onLogits?: (p: number, logits: Float32Array) => void,
): void {
  if (n === 1) {
    const out = onLogits !== undefined ? buf : last;
    model.forward(ids[p]!, pos, kv, out);
    onLogits?.(p, out!);
  } else if (onLogits !== undefined) {
    let reported = 0;
    model.forwardBatch(ids, p, n, kv, buf, pos, (i, l) => {
      reported++;
      onLogits(p + i, l);
    });
    // A model whose forwardBatch ignored onLogits would leave predictions silently unrecorded.
    if (reported !== n) throw new Error(`model.forwardBatch reported ${reported} of ${n} positions' logits; it must call onLogits for each`);
  } else {
    model.forwardBatch(ids, p, n, kv, last, pos);
  }
}

/** Bookkeeping shared by both modes: NLLs, timing, progress, abort, peak bytes. */
class Loop {
  readonly nlls: Float32Array;
  forwards = 0;
  peakCacheBytes = 0;
  readonly cacheOptions: PagedKvCacheOptions;
  private done = 0;
  private sum = 0;
  private readonly t0 = performance.now();
  private lastYield = this.t0;

  /** `predictions` = stream tokens - 1; `total` = the ones this run predicts. */
  constructor(predictions: number, readonly total: number, private readonly opts: PerplexityOptions) {
    this.nlls = new Float32Array(predictions).fill(NaN);
    this.cacheOptions = opts.cacheKernels !== undefined ? { kernels: opts.cacheKernels } : {};
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

/** The stream through one cache sequence, in batches under feedBatchSize's rule. */
async function streamThroughCache(model: PerplexityModel, ids: readonly number[], config: CacheConfig, batchTokens: number, loop: Loop): Promise<PagedKvCache> {
  const cache = createModelCache(model, config, loop.cacheOptions);
  cache.add(0);
  // The last token is never fed, so a window of ids.length - 1 suffices.
  cache.assertPromptFits(0, ids.length - 1);
  const kv = new CacheKv(cache, 0, model);
  const logits = new Float32Array(model.hp.nVocab);
  const record = (p: number, l: Float32Array): void => loop.record(p, nllOf(l, ids[p + 1]!));
  const end = ids.length - 1;
  let p = 0;
  while (p < end) {
    const n = Math.min(end - p, feedBatchSize(cache, 0, batchTokens));
    cache.reserveOrThrow(0, n);
    // Peak bytes: a batch under the rule evicts nothing, so its pages are what its n one-token
    // reserves would have added up to.
    loop.noteCache(cache);
    forwardPiece(model, kv, ids, p, n, p, null, logits, record);
    loop.forwards += n;
    p += n;
    await loop.tick(cache);
  }
  await loop.tick(cache, true);
  return cache;
}

/** The stream through an async model's own cache (WebGPU pages), one token a pass; its GPU buffers are freed at the end. */
async function streamThroughAsync(model: AsyncForwardLM, ids: readonly number[], config: CacheConfig, loop: Loop): Promise<CacheStats> {
  const cache = model.createPagedCache(config);
  try {
    cache.add(0);
    cache.assertPromptFits(0, ids.length - 1);
    const logits = new Float32Array(model.hp.nVocab);
    for (let p = 0; p < ids.length - 1; p++) {
      cache.reserveOrThrow(0, 1);
      loop.noteCache(cache);
      await model.forwardAsync(ids, p, 1, cache, 0, logits);
      loop.record(p, nllOf(logits, ids[p + 1]!));
      loop.forwards++;
      await loop.tick(cache);
    }
    await loop.tick(cache, true);
    return cache.stats();
  } finally {
    model.releasePagedCache?.(cache);
  }
}

/**
 * StreamingLLM's "sliding window with re-computation" (Xiao et al. 2023, Sec. 4.1): ids[i+1] is
 * predicted from a fresh pass over ids[i-W+1..i] at positions 0..W-1. While i < W the window is the
 * whole prefix from position 0, which one incremental pass computes exactly; past that every
 * prediction costs W token passes (in batches: a fresh context window of W never evicts), only the
 * last of which computes logits.
 */
async function recomputeOracle(
  model: PerplexityModel,
  ids: readonly number[],
  w: number,
  every: number,
  config: CacheConfig,
  batchTokens: number,
  loop: Loop,
): Promise<PagedKvCache> {
  const cache = createModelCache(model, resolveCacheConfig({ contextWindowSize: w, codec: config.codec, pageSize: config.pageSize }), loop.cacheOptions);
  const kv = new CacheKv(cache, 0, model);
  const logits = new Float32Array(model.hp.nVocab);
  const m = ids.length - 1;
  cache.add(0);
  const prefix = Math.min(w, m);
  const record = (p: number, l: Float32Array): void => {
    if (p % every === 0) loop.record(p, nllOf(l, ids[p + 1]!));
  };
  let p = 0;
  while (p < prefix) {
    const n = Math.min(prefix - p, feedBatchSize(cache, 0, batchTokens));
    cache.reserveOrThrow(0, n);
    loop.noteCache(cache);
    forwardPiece(model, kv, ids, p, n, p, null, logits, record);
    loop.forwards += n;
    p += n;
    await loop.tick(cache);
  }
  for (let i = prefix; i < m; i++) {
    if (i % every !== 0) continue;
    cache.remove(0);
    cache.add(0);
    // ids[i-W+1..i] at positions 0..W-1; only the last token's logits are read.
    loop.forwards += feedTokens(model, cache, kv, ids, i - w + 1, i + 1, batchTokens, logits);
    loop.noteCache(cache);
    loop.record(i, nllOf(logits, ids[i + 1]!));
    await loop.tick(cache);
  }
  await loop.tick(cache, true);
  return cache;
}
