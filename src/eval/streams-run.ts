// One row of the long-stream matrix, run in this process: perplexity of the stream under the row's
// cache, the cache bytes the planner predicts for that exact config next to the bytes the cache
// reserved, and a trace of the bytes in use as the stream grows (the flat-memory plot).

import { resolveCacheConfig, type CacheConfig } from "../cache/config.js";
import { asyncForwardOf, withBackendCodec } from "../model/async-forward.js";
import type { CausalLM } from "../model/causal-lm.js";
import { perplexity, type PerplexityProgress } from "../engine/perplexity.js";
import { kvboundKvForConfig } from "../plan/kvbound.js";
import { webgpuMemory } from "../plan/webgpu.js";
import type { ModelSpec } from "../spec/model-spec.js";
import type { StreamConfig } from "./streams-matrix.js";

/** Points kept of the bytes-in-use trace (thinned evenly); enough for a smooth plot. */
export const BYTES_TRACE_POINTS = 256;

export interface StreamRowResult {
  readonly id: string;
  /** Stream tokens fed (predictions = tokens - 1). */
  readonly tokens: number;
  readonly ppl: number;
  readonly nll: number;
  /** Per-512-prediction segments (null ppl where the oracle made no prediction). */
  readonly segments: { readonly start: number; readonly end: number; readonly ppl: number | null }[];
  /** [tokens - 1] per-token NLLs, NaN where not predicted. */
  readonly nlls: Float32Array;
  /** Bytes the cache's stores reserved. */
  readonly bytesReserved: number;
  /** The planner's kvbound prediction for the same config (must equal bytesReserved). */
  readonly plannedBytes: number;
  readonly peakBytesUsed: number;
  /** [predictions done, bytes of pages in use] through the run, then the end. */
  readonly bytesTrace: [number, number][];
  readonly evictedTokens: number;
  readonly forwardPasses: number;
  readonly tokensPerSecond: number;
  readonly seconds: number;
  /** CPU seconds this process spent on the row (wall time on a shared machine overstates the cost). */
  readonly cpuSeconds: number;
  /** The cache config as resolved (policy, windows, codec). */
  readonly config: CacheConfig;
}

/** The resolved cache config of a row for a stream of `tokens` tokens (dense: a window holding it all). */
export function rowCacheConfig(row: StreamConfig, tokens: number): CacheConfig {
  return resolveCacheConfig(denseRow(row) ? { ...row.cache, contextWindowSize: Math.max(1, tokens - 1) } : row.cache);
}

/** Whether a row names no window: dense, its window the whole stream. */
export function denseRow(row: StreamConfig): boolean {
  const c = row.cache;
  return (c.contextWindowSize === undefined || c.contextWindowSize === -1) && (c.slidingWindowSize === undefined || c.slidingWindowSize === -1);
}

/** Runs `row` over `ids` (already cut to the row's cap by the caller or here). */
export async function runStreamRow(
  model: CausalLM,
  spec: ModelSpec,
  ids: readonly number[],
  row: StreamConfig,
  signal?: AbortSignal,
): Promise<StreamRowResult> {
  const stream = row.maxTokens !== undefined && ids.length > row.maxTokens ? ids.slice(0, row.maxTokens) : ids;
  const gpu = asyncForwardOf(model);
  const config = rowCacheConfig({ ...row, cache: withBackendCodec(model, row.cache) }, stream.length);
  const trace: [number, number][] = [[0, 0]];
  const onProgress = (p: PerplexityProgress): void => {
    trace.push([p.done, p.cacheBytes]);
  };
  const cpu0 = process.cpuUsage();
  const r = await perplexity(model, stream, {
    cacheConfig: config,
    onProgress,
    ...(row.recompute !== undefined ? { recompute: row.recompute } : {}),
    ...(row.recomputeEvery !== undefined ? { recomputeEvery: row.recomputeEvery } : {}),
    ...(signal ? { signal } : {}),
  });
  const cpu = process.cpuUsage(cpu0);
  trace.push([stream.length - 1, r.cache.bytesUsed]);
  return {
    id: row.id,
    tokens: r.tokens,
    ppl: r.ppl,
    nll: r.nll,
    segments: r.segments.map((s) => ({ start: s.start, end: s.end, ppl: Number.isFinite(s.ppl) ? s.ppl : null })),
    nlls: r.nlls,
    bytesReserved: r.cache.bytesReserved,
    plannedBytes: gpu !== null ? gpuKvBytes(spec, config) : kvboundKvForConfig(spec, config).kv.totalBytes,
    peakBytesUsed: r.peakCacheBytes,
    bytesTrace: thin(trace, BYTES_TRACE_POINTS),
    evictedTokens: r.cache.evictedTokens,
    forwardPasses: r.forwardPasses,
    tokensPerSecond: r.tokensPerSecond,
    seconds: r.seconds,
    cpuSeconds: (cpu.user + cpu.system) / 1e6,
    config,
  };
}

/** The page stores the WebGPU backend allocates for `config` (the planner's --backend webgpu). */
function gpuKvBytes(spec: ModelSpec, config: CacheConfig): number {
  const m = webgpuMemory(spec, config);
  return m.kBytes + m.vBytes;
}

/** At most `n` points, evenly spaced over the trace, first and last kept. */
export function thin<T>(points: readonly T[], n: number): T[] {
  if (points.length <= n) return [...points];
  const out: T[] = [];
  for (let i = 0; i < n; i++) out.push(points[Math.round((i * (points.length - 1)) / (n - 1))]!);
  return out;
}
