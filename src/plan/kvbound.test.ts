// The kvbound engine rule predicts exactly the bytes a constructed PagedKvCache reserves, for
// several shapes, codecs, windows, page sizes, sequence counts and budgets; plus hand-computed
// figures that do not come from the code under test.

import { describe, expect, it } from "vitest";
import { resolveCacheConfig } from "../cache/config.js";
import { cacheShapeFromSpec } from "./cache-shape.js";
import { PagedKvCache } from "../cache/paged-kv-cache.js";
import type { LayerSpec, ModelSpec } from "../spec/model-spec.js";
import { kvboundCacheInput, kvboundKv, kvboundKvForConfig } from "./kvbound.js";
import type { PlanSettings } from "./types.js";

function spec(nLayer: number, nHead: number, nHeadKv: number, headDim: number, extra: LayerSpec[] = []): ModelSpec {
  const layers: LayerSpec[] = [];
  for (let i = 0; i < nLayer; i++) layers.push({ kind: "attention", nHeadKv, headDimK: headDim, headDimV: headDim, swa: false });
  layers.push(...extra);
  return {
    name: `test ${nLayer}x${nHeadKv}x${headDim}`,
    arch: "llama",
    source: "test",
    nLayer: layers.length,
    nEmbd: nHead * headDim,
    nHead,
    nFf: null,
    nVocab: null,
    nCtxTrain: 2048,
    nSwa: 0,
    swaType: "none",
    layers,
    mla: null,
    experts: null,
    params: null,
    weights: null,
  };
}

describe("kvbound plan == runtime reserved bytes", () => {
  const shapes = [spec(2, 4, 2, 8), spec(3, 8, 8, 16), spec(1, 6, 2, 64, [{ kind: "recurrent", rElems: 10, sElems: 20 }])];
  const settingsList: PlanSettings[] = [
    { contextWindowSize: 64, codec: "f32" },
    { contextWindowSize: 100, codec: "f16", pageSize: 8 },
    { slidingWindowSize: 48, attentionSinkSize: 4, codec: "int8" },
    { slidingWindowSize: 64, attentionSinkSize: 4, codec: "int4", seqs: 3 },
    { slidingWindowSize: 40, attentionSinkSize: 0, codec: "fp8", pageSize: 4, seqs: 2 },
    { ctx: 256, codec: "f16" },
  ];
  for (const s of shapes) {
    for (const settings of settingsList) {
      it(`${s.name} ${JSON.stringify(settings)}`, () => {
        const plan = kvboundKv(s, settings);
        const cache = new PagedKvCache(resolveCacheConfig(kvboundCacheInput(s, settings)), cacheShapeFromSpec(s));
        expect(plan.kv.totalBytes).toBe(cache.reservedBytes);
        expect(plan.kv.kBytes + plan.kv.vBytes).toBe(cache.reservedBytes);
        expect(cache.stats().bytesReserved).toBe(cache.reservedBytes);
      });
    }
    for (const codec of ["f32", "f16", "int8", "int4", "fp8"] as const) {
      it(`${s.name} ${codec} with a byte budget`, () => {
        const config = resolveCacheConfig({ slidingWindowSize: 64, attentionSinkSize: 4, codec, budgetBytes: 400_000, maxSequences: 2 });
        const plan = kvboundKvForConfig(s, config);
        const cache = new PagedKvCache(config, cacheShapeFromSpec(s));
        expect(plan.kv.totalBytes).toBe(cache.reservedBytes);
        expect(cache.reservedBytes).toBeLessThanOrEqual(400_000);
      });
    }
  }

  it("matches hand-computed figures", () => {
    const s = spec(2, 4, 2, 8);
    // One f32 page across the model: 16 tokens x 2 heads x 8 dims x 4 B x (K+V) x 2 layers.
    const page = 16 * 2 * 8 * 4 * 2 * 2;
    // Context 64 tokens, page 16: 4 pages.
    const ctx = kvboundKv(s, { contextWindowSize: 64, codec: "f32" });
    expect(ctx.extra?.nPages).toBe(4);
    expect(ctx.extra?.bytesPerPage).toBe(page);
    // Codecs may add fixed side buffers (scratch), never more than a fraction of a page here.
    expect(ctx.kv.totalBytes).toBeGreaterThanOrEqual(4 * page);
    expect(ctx.kv.totalBytes).toBeLessThan(5 * page);
    // Sliding 64 with 4 sinks: ceil(4/16) + ceil(60/16) + 1 = 6 pages; f16 = half of f32 per page.
    const sl = kvboundKv(s, { slidingWindowSize: 64, attentionSinkSize: 4, codec: "f16" });
    expect(sl.extra?.nPages).toBe(6);
    expect(sl.extra?.bytesPerPage).toBe(page / 2);
    // Two sequences double the pool.
    expect(kvboundKv(s, { slidingWindowSize: 64, attentionSinkSize: 4, codec: "f16", seqs: 2 }).extra?.nPages).toBe(12);
    // A budget of 10 pages plus half a page of slack holds exactly 10 pages.
    const config = resolveCacheConfig({ contextWindowSize: 64, codec: "f32", budgetBytes: 10 * page + page / 2 });
    const b = kvboundKvForConfig(s, config);
    expect(b.extra?.nPages).toBe(10);
    expect(b.kv.totalBytes).toBeLessThanOrEqual(10 * page + page / 2);
  });
});
