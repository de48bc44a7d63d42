// Shared by the cache's tests: a seeded generator and a driver that streams tokens through a cache
// while keeping each token's pre-RoPE K/V, so a test can rebuild what the cache should hold.

import type { CacheModelShape } from "../src/cache/config.js";
import { denseAttention } from "../src/cache/dense-attention.js";
import type { PagedKvCache } from "../src/cache/paged-kv-cache.js";

/** mulberry32: a tiny seeded PRNG (tests must be reproducible). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Pre-RoPE K and V of one token for every layer. The token's id is V's last value of head 0 of layer 0. */
export interface TokenKv {
  readonly k: Float32Array[];
  readonly v: Float32Array[];
}

export function makeTokenKv(model: CacheModelShape, id: number, rand: () => number): TokenKv {
  const k: Float32Array[] = [];
  const v: Float32Array[] = [];
  for (const layer of model.layers) {
    const kk = new Float32Array(layer.nHeadKv * layer.headDimK);
    const vv = new Float32Array(layer.nHeadKv * layer.headDimV);
    for (let i = 0; i < kk.length; i++) kk[i] = rand() * 2 - 1;
    for (let i = 0; i < vv.length; i++) vv[i] = rand() * 2 - 1;
    k.push(kk);
    v.push(vv);
  }
  v[0]![model.layers[0]!.headDimV - 1] = id;
  return { k, v };
}

/** Reserves n tokens and writes their K/V in every layer; returns the ids, or null when refused. */
export function appendTokens(cache: PagedKvCache, seqId: number, kvs: readonly TokenKv[]): boolean {
  const r = cache.reserve(seqId, kvs.length);
  if (!r.ok) return false;
  for (let l = 0; l < cache.nLayer; l++) {
    for (let i = 0; i < kvs.length; i++) cache.write(l, seqId, i, kvs[i]!.k[l]!, 0, kvs[i]!.v[l]!, 0);
  }
  return true;
}

/** The ids of the retained tokens, read back from the cache's V pages (layer 0, head 0, last value). */
export function retainedIds(cache: PagedKvCache, seqId: number): number[] {
  const layer = cache.model.layers[0]!;
  const k = new Float32Array(layer.nHeadKv * layer.headDimK);
  const v = new Float32Array(layer.nHeadKv * layer.headDimV);
  const ids: number[] = [];
  for (let i = 0; i < cache.length(seqId); i++) {
    cache.readToken(0, seqId, i, k, v);
    ids.push(v[layer.headDimV - 1]!);
  }
  return ids;
}

/** max |got - want| / max |want|. */
export function maxRelErr(got: Float32Array, want: Float32Array): number {
  let maxAbs = 0;
  let err = 0;
  for (let i = 0; i < want.length; i++) {
    maxAbs = Math.max(maxAbs, Math.abs(want[i]!));
    err = Math.max(err, Math.abs(got[i]! - want[i]!));
  }
  return err / Math.max(maxAbs, 1e-30);
}

/**
 * The naive reference for cache.attend of the last `n` retained tokens' queries `q` in `layer`:
 * dense attention over the retained tokens `ids` (their K/V from `kvById`) at `positions`.
 */
export function denseOverRetained(
  model: CacheModelShape,
  layer: number,
  kvById: readonly TokenKv[],
  ids: readonly number[],
  positions: readonly number[],
  q: Float32Array,
  n: number,
): Float32Array {
  const shape = model.layers[layer]!;
  const held = ids.length;
  const k = new Float32Array(held * shape.nHeadKv * shape.headDimK);
  const v = new Float32Array(held * shape.nHeadKv * shape.headDimV);
  for (let t = 0; t < held; t++) {
    k.set(kvById[ids[t]!]!.k[layer]!, t * shape.nHeadKv * shape.headDimK);
    v.set(kvById[ids[t]!]!.v[layer]!, t * shape.nHeadKv * shape.headDimV);
  }
  return denseAttention({
    nHead: model.nHead,
    nHeadKv: shape.nHeadKv,
    headDimK: shape.headDimK,
    headDimV: shape.headDimV,
    q,
    qPos: positions.slice(held - n),
    k,
    v,
    kPos: positions,
    ...(model.rope ? { rope: model.rope } : {}),
  });
}
