// A causal LM whose forward pass is asynchronous and keeps K/V in a cache of its own making (the
// WebGPU backend: pages are GPU buffers, logits come back through a buffer map). Session and the
// API server check for it with `asyncForwardOf` and await its forward; the CPU models
// (TransformerModel) are not one, so their path stays synchronous, with no await per token.

import type { CacheConfig, CacheConfigInput } from "../cache/config.js";
import type { CodecKind } from "../cache/codecs/types.js";
import type { PagedKvCache } from "../cache/paged-kv-cache.js";
import type { CausalLM } from "./causal-lm.js";
import { createModelCache } from "./cache-kv.js";

/** Where a model's forward pass runs: the CPU (wasm / JS kernels) or WebGPU. */
export type Backend = "cpu" | "webgpu";
export const BACKENDS: readonly Backend[] = ["cpu", "webgpu"];

export interface AsyncForwardLM extends CausalLM {
  readonly backend: Exclude<Backend, "cpu">;
  /** The codec a cache gets when its config names none (the backend may run only some). */
  readonly defaultCodec: CodecKind;
  /** A paged cache whose pages this model's forward pass reads and writes (typed errors for configs it does not run). */
  createPagedCache(config: CacheConfig): PagedKvCache;
  /**
   * tokens[start .. start+n) of sequence `seqId` of `cache` (made by createPagedCache; the caller
   * reserved the n slots, n <= maxBatchTokens); `logits` receives the last token's when given.
   */
  forwardAsync(tokens: ArrayLike<number>, start: number, n: number, cache: PagedKvCache, seqId: number, logits: Float32Array | null): Promise<void>;
  /**
   * Reads sequence `seqId`'s pages back from where the forward keeps them (the GPU), so that
   * `cache.snapshot(seqId)` runs until the returned function is called (Session.saveAsync).
   */
  readPages(cache: PagedKvCache, seqId: number): Promise<() => void>;
  /** Frees what a cache made by createPagedCache holds outside the JS heap (GPU buffers); the cache cannot run afterwards. */
  releasePagedCache?(cache: PagedKvCache): void;
}

/** The model as an AsyncForwardLM, or null for a synchronous (CPU) one. */
export function asyncForwardOf(model: CausalLM): AsyncForwardLM | null {
  const m = model as Partial<AsyncForwardLM>;
  return typeof m.forwardAsync === "function" && typeof m.createPagedCache === "function" ? (model as AsyncForwardLM) : null;
}

/** `input` with an async model's own codec where it names none (a backend may run only some: WebGPU f32). */
export function withBackendCodec(model: CausalLM, input: CacheConfigInput): CacheConfigInput {
  const a = asyncForwardOf(model);
  return a !== null && input.codec === undefined ? { ...input, codec: a.defaultCodec } : input;
}

/** The cache a session of `model` runs on: the async model's own, else a CPU paged cache. */
export function createSessionCache(model: CausalLM, config: CacheConfig): PagedKvCache {
  const a = asyncForwardOf(model);
  return a !== null ? a.createPagedCache(config) : createModelCache(model, config);
}
