import { describe, expect, it } from "vitest";

import {
  AttentionSinkSizeError,
  UnknownCacheTypeError,
  WindowSizeConfigurationError,
  WindowSizeSpecificationError,
} from "../errors.js";
import type { LayerSpec, ModelSpec } from "../spec/model-spec.js";
import { resolveWebllmWindows, webllmKv, webllmPages } from "./webllm.js";

// Llama-3.2-1B (config.json): 16 layers, 8 KV heads, head_dim 64, max_position_embeddings 131072.
const layers: LayerSpec[] = Array.from({ length: 16 }, () => ({ kind: "attention", nHeadKv: 8, headDimK: 64, headDimV: 64, swa: false }) as const);
const llama1b: ModelSpec = {
  name: "Llama 3.2 1B",
  arch: "llama",
  source: "test",
  nLayer: 16,
  nEmbd: 2048,
  nHead: 32,
  nFf: 8192,
  nVocab: 128256,
  nCtxTrain: 131072,
  nSwa: 0,
  swaType: "none",
  layers,
  mla: null,
  experts: null,
  params: 1_235_814_400,
  weights: null,
};

describe("webllmPages (TVM paged_kv_cache.cc creator)", () => {
  it("context window: ceil(window / 16) + 1", () => {
    expect(webllmPages({ contextWindowSize: 4096, slidingWindowSize: -1, attentionSinkSize: 0 })).toBe(257);
    expect(webllmPages({ contextWindowSize: 4097, slidingWindowSize: -1, attentionSinkSize: 0 })).toBe(258);
    expect(webllmPages({ contextWindowSize: 1, slidingWindowSize: -1, attentionSinkSize: 0 })).toBe(2);
  });
  it("sliding window: ceil(window / 16) + 1 + 2 per sequence; sinks live inside the window", () => {
    expect(webllmPages({ contextWindowSize: -1, slidingWindowSize: 1024, attentionSinkSize: 4 })).toBe(67);
    expect(webllmPages({ contextWindowSize: -1, slidingWindowSize: 1024, attentionSinkSize: 0 })).toBe(67);
  });
});

describe("webllmKv", () => {
  it("f16 context window bytes", () => {
    const r = webllmKv(llama1b, { contextWindowSize: 4096 });
    // 257 pages x 16 tokens x 8 heads x 64 dims x 2 B = 4,210,688 B of K per layer; x16 layers
    expect(r.kv.kBytes).toBe(257 * 16 * 8 * 64 * 2 * 16);
    expect(r.kv.vBytes).toBe(r.kv.kBytes);
    expect(r.kv.totalBytes).toBe(134_742_016);
    expect(r.kv.caches[0]?.cells).toBe(257 * 16);
    expect(r.settings.slidingWindowSize).toBe(-1);
  });

  it("f32 doubles it; sliding window is bounded", () => {
    expect(webllmKv(llama1b, { contextWindowSize: 4096, kvCacheDtype: "f32" }).kv.totalBytes).toBe(2 * 134_742_016);
    const s = webllmKv(llama1b, { contextWindowSize: -1, slidingWindowSize: 1024, attentionSinkSize: 4 });
    // 67 pages x 16 x 8 x (64 + 64) x 2 B x 16 layers
    expect(s.kv.totalBytes).toBe(67 * 16 * 8 * 128 * 2 * 16);
    expect(s.kv.caches[0]?.kind).toBe("swa");
  });

  it("uses ctx, then the training context, when no window is given", () => {
    expect(webllmKv(llama1b, { ctx: 2048 }).settings.contextWindowSize).toBe(2048);
    expect(webllmKv(llama1b, {}).settings.contextWindowSize).toBe(131072);
  });

  it("enforces WebLLM's window rules with its error classes", () => {
    expect(() => resolveWebllmWindows(llama1b, { contextWindowSize: 4096, slidingWindowSize: 1024, attentionSinkSize: 4 })).toThrow(WindowSizeConfigurationError);
    expect(() => resolveWebllmWindows(llama1b, { contextWindowSize: -1, slidingWindowSize: -1 })).toThrow(WindowSizeConfigurationError);
    expect(() => resolveWebllmWindows(llama1b, { contextWindowSize: -1 })).toThrow(WindowSizeConfigurationError);
    expect(() => resolveWebllmWindows(llama1b, { contextWindowSize: -1, slidingWindowSize: 1024 })).toThrow(AttentionSinkSizeError);
    expect(() => resolveWebllmWindows(llama1b, { contextWindowSize: -1, slidingWindowSize: 1024, attentionSinkSize: 1024 })).toThrow(AttentionSinkSizeError);
    expect(() => resolveWebllmWindows(llama1b, { contextWindowSize: 0 })).toThrow(WindowSizeSpecificationError);
    expect(() => resolveWebllmWindows(llama1b, { contextWindowSize: 1.5 })).toThrow(WindowSizeSpecificationError);
    expect(() => resolveWebllmWindows(llama1b, { contextWindowSize: -2 })).toThrow(WindowSizeSpecificationError);
    expect(() => webllmKv(llama1b, { contextWindowSize: 4096, kvCacheDtype: "q8_0" })).toThrow(UnknownCacheTypeError);
  });
});
