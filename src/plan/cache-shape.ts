// The bridge from a ModelSpec to the plain numbers the cache takes (CacheModelShape). It lives on
// the planner's side because the cache imports no spec (plan may import both cache and spec).

import type { CacheLayerShape, CacheModelShape } from "../cache/config.js";
import type { RopeSpec } from "../cache/rope.js";
import { kvLayers, type ModelSpec } from "../spec/model-spec.js";

/**
 * The cache shape of a model as kvbound's runtime stores it: every attention layer that owns its
 * K/V (kvLayers) gets its own stores; recurrent layers and layers sharing another's cache store
 * nothing here. nHead must be a whole multiple of every layer's nHeadKv (GQA).
 */
export function cacheShapeFromSpec(spec: ModelSpec, rope?: RopeSpec): CacheModelShape {
  const layers: CacheLayerShape[] = [];
  // The model's own (standard) sliding-window layers get their window: the runtime keeps them in a group of their own.
  const swa = spec.nSwa > 0 && spec.swaType === "standard" ? spec.nSwa : 0;
  for (const { layer } of kvLayers(spec)) {
    const shape: CacheLayerShape = { nHeadKv: layer.nHeadKv, headDimK: layer.headDimK, headDimV: layer.headDimV };
    layers.push(layer.swa && swa > 0 ? { ...shape, slidingWindow: swa } : shape);
  }
  return rope === undefined ? { nHead: spec.nHead, layers } : { nHead: spec.nHead, layers, rope };
}
