// kvbound's public API (browser-safe: nothing here imports Node built-ins; Node-only helpers such as
// reading a model from a local path live in "kvbound/node"). Every export is named explicitly.

export * from "./errors.js";

// Model facts
export type { ModelSpec, LayerSpec, SwaType, WeightsSpec } from "./spec/model-spec.js";
export { kvLayers, summarizeSpec } from "./spec/model-spec.js";
export { specFromGgufMetadata } from "./spec/from-gguf-metadata.js";
export { specFromHfConfig } from "./spec/from-hf-config.js";
export type { RegistryEntry } from "./spec/registry.js";
export { listRegistry, findRegistryEntry, registrySpec, closeRegistryIds } from "./spec/registry.js";

// GGUF
export type { GgmlType } from "./gguf/ggml-types.js";
export { GGML_TYPES, ggmlTypeById, ggmlTypeByName, ggmlRowBytes } from "./gguf/ggml-types.js";
export type { GgufHeader, GgufTensorInfo, GgufValue, ReadGgufHeaderOptions } from "./gguf/header.js";
export { readGgufHeader, readGgufHeaderFromSource } from "./gguf/header.js";
export type { ByteSource } from "./gguf/readers/byte-source.js";
export { blobSource, bytesSource } from "./gguf/readers/blob.js";
export { httpSource } from "./gguf/readers/http.js";

// Planning
export type { EngineName, KvCachePlan, KvPlan, MemoryPlan, PlanSettings, EngineKvResult, DevicePlan } from "./plan/types.js";
export { ENGINES } from "./plan/types.js";
export { planMemory, parseEngine, ENGINE_RULES, DEFAULT_ENGINE } from "./plan/plan.js";
export type { PlanRequest, EngineRule, EngineRules } from "./plan/plan.js";
export { llamaCppKv, formatMiB, LLAMA_CPP_CACHE_TYPES } from "./plan/llama-cpp.js";
export { llamaCppRules, LLAMA_CPP_RULE_HISTORY } from "./plan/llama-cpp-builds.js";
export { vllmKv } from "./plan/vllm.js";
export { webllmKv } from "./plan/webllm.js";
export { kvboundKv, kvboundKvForConfig } from "./plan/kvbound.js";
export { ollamaKv, ollamaDefaultNumCtx, ollamaRunnerFor, exportOllama } from "./plan/ollama.js";
export { mlxKv, mlxKvCacheSlots, mlxRotatingSlots, exportMlx } from "./plan/mlx.js";
export { fitContexts, cheapestFor, fitOffload } from "./plan/fit.js";
export type { FitRequest, FitResult, FitOption, CheapestResult, OffloadFitResult, OffloadOption } from "./plan/fit.js";
export { llamaCppOffload, llamaCppSlotDevices, llamaCppSplitPoints } from "./plan/llama-cpp-offload.js";
export type { OffloadPlan } from "./plan/llama-cpp-offload.js";
export { llamaCppLayerWeights } from "./plan/llama-cpp-tensors.js";
export type { LayerWeights } from "./plan/llama-cpp-tensors.js";
export { rankModels } from "./plan/rank.js";
export type { RankRequest, RankResult, RankedModel } from "./plan/rank.js";
export { exportPlan, EXPORT_TARGETS } from "./plan/export.js";
export type { ExportTarget } from "./plan/export.js";
export { parseBytes, parseCount, formatBytes } from "./plan/parse.js";

// The bounded cache
export type { CacheConfig, CacheConfigInput, CachePolicy, CachePolicyInput, CacheModelShape, PositionsMode } from "./cache/config.js";
export { resolveCacheConfig, uniformModelShape, CACHE_POLICY_KINDS } from "./cache/config.js";
export { cacheShapeFromSpec } from "./plan/cache-shape.js";
export type { ReserveResult, PagedKvCacheOptions } from "./cache/paged-kv-cache.js";
export { PagedKvCache, cacheKernelLayout } from "./cache/paged-kv-cache.js";
export { wasmAttentionAvailable, cacheMemoryBytes } from "./cache/wasm/store-memory.js";
export type { CacheMemoryLayout } from "./cache/wasm/store-memory.js";
export type { CacheStats, SequenceStats } from "./cache/stats.js";
export type { CodecKind, PageShape, PageStore, StoreKernelLayout, StoreRegion } from "./cache/codecs/index.js";
export { CODEC_KINDS, createPageStore, pageStoreBytes } from "./cache/codecs/index.js";
export { denseAttention } from "./cache/dense-attention.js";
export type { RopeSpec } from "./cache/rope.js";
export { Rope } from "./cache/rope.js";
export type { KvRun } from "./cache/runs.js";

// Running models
export { TransformerModel, type ModelOptions } from "./model/transformer.js";
export { defaultThreads, MAX_THREADS, MAX_DEFAULT_THREADS, MIN_SPLIT_WORK } from "./model/wasm/matmul-pool.js";
export { createModel, transformerPlan, architectureOf, SUPPORTED_ARCHS, type CreateModelOptions } from "./model/architectures.js";
export type { CausalLM, KvBackend, LayerAttention, ModelHParams } from "./model/causal-lm.js";
export type { Tokenizer } from "./model/tokenizer/index.js";
export { createTokenizer, tokenizerSettings } from "./model/tokenizer/index.js";
export { renderChatTemplate } from "./model/chat-template.js";
export type { ChatMessage } from "./model/chat-template.js";
export { parseModelRef, hfResolveUrl } from "./model/model-ref.js";
export { createModelCache, CacheKv, modelCacheShape } from "./model/cache-kv.js";
export { asyncForwardOf, createSessionCache, BACKENDS, type AsyncForwardLM, type Backend } from "./model/async-forward.js";
export type { ModelSource, LoadModelOptions, LoadedModel } from "./engine/load-model.js";
export { loadModel } from "./engine/load-model.js";
export { Session } from "./engine/session.js";
export type { GenerateOptions, GenerateEvent, TokenEvent, DoneEvent, FinishReason, TokenStats } from "./engine/generate.js";
export { Sampler } from "./engine/sampler.js";
export type { SamplerSettings } from "./engine/sampler.js";
export type { PerplexityOptions, PerplexityResult, PerplexitySegment } from "./engine/perplexity.js";
export { perplexity, nllOf, rangePerplexity } from "./engine/perplexity.js";
export { splitDocuments, encodeTextStream } from "./engine/text-stream.js";
