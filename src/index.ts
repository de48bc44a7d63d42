// kvbound's public API. Every export is named here explicitly.

export * from "./errors.js";
export type { ModelSpec, LayerSpec, SwaType, WeightsSpec } from "./spec/model-spec.js";
export { kvLayers, summarizeSpec } from "./spec/model-spec.js";
export type { EngineName, KvCachePlan, KvPlan, MemoryPlan, PlanSettings, EnginePlanner } from "./plan/types.js";
export { ENGINES } from "./plan/types.js";
export type { GgmlType } from "./gguf/ggml-types.js";
export { GGML_TYPES, ggmlTypeById, ggmlTypeByName, ggmlRowBytes } from "./gguf/ggml-types.js";
