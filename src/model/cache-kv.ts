// Connects a model's forward pass to the paged cache: the model writes each layer's K/V for the
// tokens being processed and attends over what the cache retains, at the positions the policy
// gives. The cache learns each layer's attention (RoPE, the model's own sliding window, soft-cap)
// from the model, so sliding-window layers get a group of their own.

import type { CacheConfig, CacheLayerShape, CacheModelShape } from "../cache/config.js";
import { PagedKvCache, type PagedKvCacheOptions } from "../cache/paged-kv-cache.js";
import type { CausalLM, KvBackend } from "./causal-lm.js";

/** The cache's view of a model: per layer its K/V shape, RoPE, window and soft-cap. */
export function modelCacheShape(model: Pick<CausalLM, "hp" | "attention">): CacheModelShape {
  const layers: CacheLayerShape[] = model.attention.map((a) => ({
    nHeadKv: a.nHeadKv,
    headDimK: a.headDimK,
    headDimV: a.headDimV,
    rope: a.rope,
    ...(a.slidingWindow > 0 ? { slidingWindow: a.slidingWindow } : {}),
    ...(a.softcap > 0 ? { softcap: a.softcap } : {}),
  }));
  return { nHead: model.hp.nHead, layers };
}

/** A cache for `model`'s layers; its attention splits over the model's threads (rowCallPool) unless options say. */
export function createModelCache(model: Pick<CausalLM, "hp" | "attention" | "rowCallPool">, config: CacheConfig, options: PagedKvCacheOptions = {}): PagedKvCache {
  const pool = model.rowCallPool ?? null;
  return new PagedKvCache(config, modelCacheShape(model), pool === null ? options : { threads: pool, ...options });
}

/** A KvBackend over one sequence of a PagedKvCache (the caller reserves the slots). */
export class CacheKv implements KvBackend {
  private readonly scales: Float64Array; // [nLayer] softmax scale of q.k

  constructor(readonly cache: PagedKvCache, public seqId: number, model: Pick<CausalLM, "attention">) {
    this.scales = Float64Array.from(model.attention, (a) => a.scale);
  }

  write(layer: number, k: Float32Array, v: Float32Array): void {
    this.cache.write(layer, this.seqId, 0, k, 0, v, 0);
  }

  /** The n slots the caller reserved (forwardBatch), rows side by side in k and v. */
  writeBatch(layer: number, n: number, k: Float32Array, v: Float32Array): void {
    this.cache.writeRows(layer, this.seqId, 0, n, k, 0, v, 0);
  }

  /** The last nQuery tokens (the reserved batch), causal among them. */
  attendBatch(layer: number, q: Float32Array, nQuery: number, out: Float32Array): void {
    this.cache.attend(layer, this.seqId, q, 0, nQuery, out, 0, this.scales[layer]);
  }

  // The cache knows the query's position (its own place in the retained order), so `pos` is unused.
  attend(layer: number, q: Float32Array, _pos: number, out: Float32Array): void {
    this.cache.attend(layer, this.seqId, q, 0, 1, out, 0, this.scales[layer]);
  }
}
