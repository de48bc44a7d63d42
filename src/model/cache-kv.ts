// Connects the forward pass to the paged cache: the model writes each layer's K/V for the token
// being processed and attends over what the cache retains, at the positions the policy gives.

import type { CacheConfig } from "../cache/config.js";
import { PagedKvCache } from "../cache/paged-kv-cache.js";
import type { KvBackend, LlamaHParams } from "../model/llama.js";
import { uniformModelShape } from "../cache/config.js";

/** The cache's view of a Llama model: every layer has the same K/V shape and RoPE. */
export function createModelCache(hp: LlamaHParams, config: CacheConfig): PagedKvCache {
  return new PagedKvCache(config, uniformModelShape(hp.nLayer, hp.nHead, hp.nHeadKv, hp.headDim, hp.headDim, hp.rope));
}

/** A KvBackend over one sequence of a PagedKvCache, one token at a time (the caller reserves). */
export class CacheKv implements KvBackend {
  constructor(readonly cache: PagedKvCache, public seqId: number) {}

  write(layer: number, k: Float32Array, v: Float32Array): void {
    this.cache.write(layer, this.seqId, 0, k, 0, v, 0);
  }

  /** Token i of the n slots the caller reserved (LlamaModel.forwardBatch). */
  writeBatch(layer: number, i: number, k: Float32Array, kOff: number, v: Float32Array, vOff: number): void {
    this.cache.write(layer, this.seqId, i, k, kOff, v, vOff);
  }

  /** The last nQuery tokens (the reserved batch), causal among them. */
  attendBatch(layer: number, q: Float32Array, nQuery: number, out: Float32Array): void {
    this.cache.attend(layer, this.seqId, q, 0, nQuery, out, 0);
  }

  // The cache knows the query's position (its own place in the retained order), so `pos` is unused.
  attend(layer: number, q: Float32Array, _pos: number, out: Float32Array): void {
    this.cache.attend(layer, this.seqId, q, 0, 1, out, 0);
  }
}
