import { describe, expect, it } from "vitest";
import {
  AttentionSinkSizeError,
  BudgetTooSmallError,
  CacheConfigError,
  WindowSizeConfigurationError,
  WindowSizeSpecificationError,
} from "../errors.js";
import { MAX_SCORE_WINDOW, resolveCacheConfig, uniformModelShape, type CachePolicyInput } from "./config.js";
import { planPoolLayout } from "./page-pool.js";

describe("resolveCacheConfig (WebLLM window semantics)", () => {
  it("needs exactly one positive window", () => {
    expect(() => resolveCacheConfig({})).toThrow(WindowSizeConfigurationError);
    expect(() => resolveCacheConfig({ contextWindowSize: -1, slidingWindowSize: -1 })).toThrow(WindowSizeConfigurationError);
    expect(() => resolveCacheConfig({ contextWindowSize: 10, slidingWindowSize: 10, attentionSinkSize: 0 })).toThrow(WindowSizeConfigurationError);
  });

  it("rejects non-integer, zero and < -1 windows", () => {
    for (const bad of [0, -2, 1.5, Number.NaN]) {
      expect(() => resolveCacheConfig({ contextWindowSize: bad })).toThrow(WindowSizeSpecificationError);
      expect(() => resolveCacheConfig({ slidingWindowSize: bad, attentionSinkSize: 0 })).toThrow(WindowSizeSpecificationError);
    }
  });

  it("sliding needs 0 <= attention_sink_size < sliding_window_size", () => {
    expect(() => resolveCacheConfig({ slidingWindowSize: 8 })).toThrow(/attention_sink_size -1 .*it was not given: a sliding window needs its sink count, e\.g\. --sinks 4/);
    expect(() => resolveCacheConfig({ slidingWindowSize: 8 })).toThrow(AttentionSinkSizeError);
    expect(() => resolveCacheConfig({ slidingWindowSize: 8, attentionSinkSize: 8 })).toThrow(AttentionSinkSizeError);
    expect(() => resolveCacheConfig({ slidingWindowSize: 8, attentionSinkSize: -3 })).toThrow(AttentionSinkSizeError);
    const c = resolveCacheConfig({ slidingWindowSize: 8, attentionSinkSize: 4 });
    expect(c.policy).toEqual({ kind: "sliding", window: 8, sinks: 4, recent: 4, positions: "reassigned" });
  });

  it("fills defaults and freezes", () => {
    const c = resolveCacheConfig({ contextWindowSize: 4096 });
    expect(c).toMatchObject({ pageSize: 16, maxSequences: 1, prefillChunkSize: 512, budgetBytes: null, codec: "f16", windowTokens: 4096 });
    expect(c.policy).toEqual({ kind: "context", window: 4096, positions: "original" });
    expect(Object.isFrozen(c)).toBe(true);
    expect(Object.isFrozen(c.policy)).toBe(true);
    // A sliding window's chunk must fit beside the sinks.
    expect(resolveCacheConfig({ slidingWindowSize: 100, attentionSinkSize: 4 }).prefillChunkSize).toBe(96);
    expect(() => resolveCacheConfig({ slidingWindowSize: 100, attentionSinkSize: 4, prefillChunkSize: 97 })).toThrow(CacheConfigError);
  });

  it("rejects bad page sizes, codecs, policies contradicting the window mode", () => {
    expect(() => resolveCacheConfig({ contextWindowSize: 64, pageSize: 12 })).toThrow(CacheConfigError);
    expect(() => resolveCacheConfig({ contextWindowSize: 64, pageSize: 0 })).toThrow(CacheConfigError);
    expect(() => resolveCacheConfig({ contextWindowSize: 64, codec: "q4_0" as never })).toThrow(CacheConfigError);
    expect(() => resolveCacheConfig({ contextWindowSize: 64, policy: { kind: "sliding", sinks: 4 } })).toThrow(CacheConfigError);
    expect(() => resolveCacheConfig({ slidingWindowSize: 64, policy: { kind: "context" } })).toThrow(CacheConfigError);
    expect(() => resolveCacheConfig({ slidingWindowSize: 64, policy: { kind: "lru" } as never })).toThrow(CacheConfigError);
    expect(() => resolveCacheConfig({ slidingWindowSize: 64, attentionSinkSize: 4, policy: { kind: "sliding", sinks: 2 } })).toThrow(CacheConfigError);
    expect(() => resolveCacheConfig({ slidingWindowSize: 64, attentionSinkSize: 4, policy: { kind: "fifo" } })).toThrow(CacheConfigError);
  });

  it("derives policy sizes from the window", () => {
    expect(resolveCacheConfig({ slidingWindowSize: 64, attentionSinkSize: 4, policy: { kind: "h2o" } }).policy).toEqual({
      kind: "h2o",
      window: 64,
      sinks: 4,
      recent: 30,
      heavy: 30,
      scoreWindow: null,
      positions: "original",
    });
    expect(resolveCacheConfig({ slidingWindowSize: 64, policy: { kind: "prefix-recent", prefix: 20 } }).policy).toMatchObject({ prefix: 20, recent: 44 });
    expect(resolveCacheConfig({ slidingWindowSize: 64, policy: { kind: "tova" } }).policy).toMatchObject({ sinks: 0, positions: "original" });
  });

  it("h2o takes recent, heavy (either one, or both adding up) and a score window", () => {
    const h2o = (policy: Record<string, unknown>) => resolveCacheConfig({ slidingWindowSize: 64, attentionSinkSize: 4, policy: { kind: "h2o", ...policy } as CachePolicyInput }).policy;
    expect(h2o({ recent: 10 })).toMatchObject({ recent: 10, heavy: 50, scoreWindow: null });
    expect(h2o({ heavy: 10 })).toMatchObject({ recent: 50, heavy: 10 });
    expect(h2o({ recent: 20, heavy: 40, scoreWindow: 32 })).toMatchObject({ recent: 20, heavy: 40, scoreWindow: 32 });
    expect(h2o({ scoreWindow: null })).toMatchObject({ scoreWindow: null });
    // recent + heavy must fill the window beside the sinks; the message names the sum to give.
    expect(() => h2o({ recent: 20, heavy: 20 })).toThrow(/add up to 60/);
    expect(() => h2o({ heavy: 61 })).toThrow(CacheConfigError);
    for (const bad of [0, -1, 1.5, MAX_SCORE_WINDOW + 1]) expect(() => h2o({ scoreWindow: bad })).toThrow(/scoreWindow/);
  });

  it("a budget below one page per layer is BudgetTooSmallError", () => {
    const model = uniformModelShape(2, 4, 2, 8);
    // One f32 page: 16 tokens x 2 heads x 8 dims x 4 B x (K+V) x 2 layers = 4096 B (plus the
    // codec's small fixed side buffers, well under 2048 B here).
    expect(() => planPoolLayout(resolveCacheConfig({ contextWindowSize: 64, codec: "f32", budgetBytes: 4095 }), model)).toThrow(BudgetTooSmallError);
    const layout = planPoolLayout(resolveCacheConfig({ contextWindowSize: 64, codec: "f32", budgetBytes: 4096 + 2048 }), model);
    expect(layout.nPages).toBe(1);
    expect(layout.bytesPerPage).toBe(4096);
  });

  it("a budget that cannot hold an evicting window is BudgetTooSmallError (it would stop, never evicting)", () => {
    const model = uniformModelShape(2, 4, 2, 8);
    const sliding = { slidingWindowSize: 256, attentionSinkSize: 4, codec: "f32" as const };
    const need = planPoolLayout(resolveCacheConfig(sliding), model);
    expect(() => planPoolLayout(resolveCacheConfig({ ...sliding, budgetBytes: need.reservedBytes - 1 }), model)).toThrow(
      expect.objectContaining({ name: "BudgetTooSmallError", message: expect.stringMatching(new RegExp(`the ${need.nPages} pages a 256-token sliding window spans`)) }),
    );
    expect(planPoolLayout(resolveCacheConfig({ ...sliding, budgetBytes: need.reservedBytes }), model).nPages).toBe(need.nPages);
    // A context window under a budget stops at the budget by design ("length", cause "budget").
    expect(planPoolLayout(resolveCacheConfig({ contextWindowSize: 256, codec: "f32", budgetBytes: 8192 }), model).nPages).toBe(1);
  });
});
