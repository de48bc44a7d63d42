// The shape every engine rule returns. `MemoryPlan` is the JSON contract of `kvbound plan --json`
// (documented in the README): change it only together with the README and its tests.

import type { ModelSpec } from "../spec/model-spec.js";

export type EngineName = "llama.cpp" | "vllm" | "webllm" | "kvbound" | "ollama" | "mlx";
export const ENGINES: readonly EngineName[] = ["llama.cpp", "vllm", "webllm", "kvbound", "ollama", "mlx"];

/** One cache the engine allocates (llama.cpp allocates one per kind: full, SWA, recurrent). */
export interface KvCachePlan {
  readonly kind: "full" | "swa" | "mla" | "recurrent";
  /** Token slots per stream (recurrent: state slots = sequences). */
  readonly cells: number;
  /** Layers stored in this cache. */
  readonly layers: number;
  /** Independent streams (llama.cpp: one per sequence unless kv_unified). */
  readonly streams: number;
  readonly typeK: string;
  readonly typeV: string;
  readonly kBytes: number;
  readonly vBytes: number;
  /** Recurrent caches: conv / token-shift state bytes and SSM / WKV state bytes. */
  readonly rBytes?: number;
  readonly sBytes?: number;
  /** Bytes one more cell costs across this cache's layers (K + V), 0 for recurrent state. */
  readonly bytesPerCell: number;
}

export interface KvPlan {
  readonly totalBytes: number;
  readonly kBytes: number;
  readonly vBytes: number;
  readonly caches: readonly KvCachePlan[];
}

/**
 * One device of a llama.cpp plan with `gpus` (src/plan/llama-cpp-offload.ts): what llama.cpp puts
 * on it. GPUs are named GPU0, GPU1... in llama.cpp's device order (its logs say CUDA0, Vulkan0,
 * ROCm0, Metal...); the host is "CPU". Byte counts are exact except `compute`, an estimate.
 */
export interface DevicePlan {
  readonly name: string;
  readonly kind: "gpu" | "cpu";
  /** Repeating layers placed here (indices, ascending). */
  readonly layers: readonly number[];
  /** Holds the output layer (output_norm + output, or the tied token embeddings' copy). */
  readonly output: boolean;
  /** Holds the input layer (token embeddings): always the CPU in llama.cpp. */
  readonly input: boolean;
  /** Weight bytes: its layers' tensors, plus the input / output layer where it holds them. */
  readonly weights: number;
  /** KV cache (and recurrent state) bytes of the layers here (all on the CPU with kvOffload false). */
  readonly kv: number;
  /** Compute buffer estimate (CPU: plus llama.cpp's logits output buffer). */
  readonly compute: number;
  /** weights + kv + compute. */
  readonly total: number;
  /** The memory given for it (--gpu / --ram), null when none was given. */
  readonly budget: number | null;
  /** Bytes llama.cpp's --fit keeps free on a GPU (--fit-target, default 1024 MiB); 0 on the CPU. */
  readonly reserve: number;
  /** total + reserve <= budget; null without a budget. */
  readonly fits: boolean | null;
}

export interface MemoryPlan {
  readonly model: Record<string, unknown>;
  readonly engine: EngineName;
  /** The engine's settings after defaults were applied (llama.cpp: ctx, seqs, kvUnified, ubatch,
   *  flashAttn, swaFull, typeK, typeV, build; other engines: their own names). */
  readonly settings: Readonly<Record<string, unknown>>;
  readonly kv: KvPlan;
  readonly weights: { readonly bytes: number; readonly quant: string; readonly source: string } | null;
  readonly compute: { readonly bytes: number; readonly note: string } | null;
  /** kv + weights + compute (the parts that are known). */
  readonly totalBytes: number;
  /** Engine-specific facts a user should read (e.g. vLLM blocks and max concurrency). */
  readonly extra?: Readonly<Record<string, unknown>>;
  /** Explanations: which rule applied, what was padded and why. */
  readonly notes: readonly string[];
  /** llama.cpp with `gpus`: per-device placement (GPUs first, the CPU last). Absent otherwise. */
  readonly devices?: readonly DevicePlan[];
}

/** Settings common to all engines, as the CLI and the library accept them. Each engine reads the
 *  ones it understands and validates them (InvalidSettingError / UnknownCacheTypeError). */
export interface PlanSettings {
  ctx?: number;
  seqs?: number;
  kvUnified?: boolean;
  ubatch?: number;
  flashAttn?: boolean;
  swaFull?: boolean;
  typeK?: string;
  typeV?: string;
  /** llama.cpp build number (bNNNN) whose rules to apply; default: current rules. */
  llamaCppBuild?: number;
  /** vLLM */
  gpuMemoryUtilization?: number;
  tensorParallel?: number;
  kvCacheDtype?: string;
  blockSize?: number;
  /** Memory available to the engine in bytes (vLLM: the GPU's memory; fit/rank: the budget). */
  budgetBytes?: number;
  /** WebLLM / kvbound windows (WebLLM semantics: -1 = unset). */
  contextWindowSize?: number;
  slidingWindowSize?: number;
  attentionSinkSize?: number;
  prefillChunkSize?: number;
  /** kvbound runtime */
  pageSize?: number;
  codec?: string;
  /** kvbound: the backend whose memory to plan: "cpu" (wasm, default) or "webgpu" (GPU buffers,
   *  src/plan/webgpu.ts), with the WebGPU forward's batch rows and the adapter's binding limit. */
  backend?: string;
  maxBatchTokens?: number;
  maxBindingBytes?: number;
  /** mlx-lm (src/plan/mlx.ts): --max-kv-size, --kv-bits, --kv-group-size, --quantized-kv-start,
   *  and how many of ctx's tokens were the prompt (default: all). */
  maxKvSize?: number;
  kvBits?: number;
  kvGroupSize?: number;
  quantizedKvStart?: number;
  promptTokens?: number;
  /** llama.cpp devices (src/plan/llama-cpp-offload.ts): each GPU's free memory in bytes, in device
   *  order (--gpu 8GiB,8GiB). Setting it turns on per-device planning. */
  gpus?: number[];
  /** Host memory for the CPU side in bytes (--ram); only judged when given. */
  ramBytes?: number;
  /** llama.cpp -ngl: layers to offload counting the output layer (n_layer + 1 = all); default:
   *  what llama.cpp's --fit picks (builds with --fit), else all (from b6325), else 0. */
  nGpuLayers?: number;
  /** llama.cpp --tensor-split: proportions per GPU; default: the GPUs' free memory. */
  tensorSplit?: number[];
  /** llama.cpp -nkvo sets it false: every layer's KV cache stays in host memory. Default true. */
  kvOffload?: boolean;
  /** llama.cpp --fit-target: bytes --fit keeps free on each GPU (default 1024 MiB). */
  fitTargetBytes?: number;
}

export type EnginePlanner = (spec: ModelSpec, settings: PlanSettings) => MemoryPlan;

/** What one engine's KV rule returns; `planMemory` (src/plan/plan.ts) adds weights and compute. */
export interface EngineKvResult {
  /** The engine's settings after defaults (the JSON contract's `settings`). */
  readonly settings: Readonly<Record<string, unknown>>;
  readonly kv: KvPlan;
  readonly notes: readonly string[];
  readonly extra?: Readonly<Record<string, unknown>>;
  /** llama.cpp: each spec layer's K+V (or recurrent R+S) bytes, 0 for layers without memory, so
   *  the offload rule can put them on their layer's device. Not part of the JSON contract. */
  readonly layerKvBytes?: readonly number[];
}
