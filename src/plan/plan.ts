// planMemory: one engine's KV rule plus weights plus the compute/activation estimate, as the
// MemoryPlan JSON contract. The engine rules live one per file; the table is a parameter so
// tests and callers can swap a rule.

import { InvalidSettingError } from "../errors.js";
import { summarizeSpec, type ModelSpec } from "../spec/model-spec.js";
import { computeEstimate, defaultComputeInputs, type ComputeEstimate, type ComputeInputs } from "./compute.js";
import { kvboundCacheInput, kvboundCompute, kvboundKv, kvboundWeights } from "./kvbound.js";
import { llamaCppKv } from "./llama-cpp.js";
import { llamaCppOffload } from "./llama-cpp-offload.js";
import { mlxKv } from "./mlx.js";
import { ollamaKv } from "./ollama.js";
import { ENGINES, type EngineKvResult, type EngineName, type MemoryPlan, type PlanSettings } from "./types.js";
import { vllmKv, vllmOverheads } from "./vllm.js";
import { webllmKv } from "./webllm.js";
import { weightBytes } from "./weights.js";
import { parseBackend, webgpuMemory } from "./webgpu.js";
import { resolveCacheConfig } from "../cache/config.js";

export type EngineRule = (spec: ModelSpec, settings: PlanSettings) => EngineKvResult;
export type EngineRules = Readonly<Record<EngineName, EngineRule>>;

export const ENGINE_RULES: EngineRules = {
  "llama.cpp": llamaCppKv,
  vllm: (spec, settings) => vllmKv(spec, settings),
  webllm: webllmKv,
  kvbound: kvboundKv,
  ollama: ollamaKv,
  mlx: mlxKv,
};

export const DEFAULT_ENGINE: EngineName = "llama.cpp";

export type PlanRequest = PlanSettings & { engine?: EngineName };

/** Checks an engine name typed by a user (CLI, JSON). */
export function parseEngine(name: string): EngineName {
  const found = ENGINES.find((e) => e === name);
  if (found === undefined) {
    throw new InvalidSettingError(`unknown engine ${JSON.stringify(name)}; use one of ${ENGINES.join(", ")}`, { setting: "engine", value: name });
  }
  return found;
}

function ruleFor(engine: EngineName, rules: EngineRules): EngineRule {
  switch (engine) {
    case "llama.cpp":
      return rules["llama.cpp"];
    case "vllm":
      return rules.vllm;
    case "webllm":
      return rules.webllm;
    case "kvbound":
      return rules.kvbound;
    case "ollama":
      return rules.ollama;
    case "mlx":
      return rules.mlx;
    default:
      return engine satisfies never;
  }
}

function num(v: unknown): number | undefined {
  return typeof v === "number" && Number.isFinite(v) ? v : undefined;
}

/** Compute inputs from the rule's resolved settings where it reports them, else the defaults. */
function computeInputs(engine: EngineName, spec: ModelSpec, settings: PlanSettings, result: EngineKvResult): ComputeInputs {
  const base = defaultComputeInputs(engine, spec, settings);
  const resolved = result.settings;
  const cw = num(resolved.contextWindowSize);
  const sw = num(resolved.slidingWindowSize);
  const window = cw !== undefined && cw > 0 ? cw : sw !== undefined && sw > 0 ? sw : undefined;
  // llama.cpp reserves its graph over a whole (padded) stream of cells: n_ctx_seq when reported.
  const kvTokens = num(result.extra?.nCtxSeq) ?? num(resolved.ctx) ?? num(resolved.maxModelLen) ?? window ?? base.kvTokens;
  const chunkTokens = num(resolved.ubatch) ?? num(resolved.maxNumBatchedTokens) ?? num(resolved.prefillChunkSize) ?? base.chunkTokens;
  const flashAttn = typeof resolved.flashAttn === "boolean" ? resolved.flashAttn : base.flashAttn;
  return { ...base, kvTokens, chunkTokens, flashAttn };
}

/**
 * The memory one engine needs for `spec` under `settings`: KV (the engine's exact rule), weights
 * (the spec's bytes, or params x 2) and an estimated compute buffer. vLLM plans are per GPU:
 * weights are divided by the tensor-parallel size, and with `budgetBytes` the KV is the block
 * pool vLLM builds from what is left.
 */
export function planMemory(spec: ModelSpec, settings: PlanRequest, rules: EngineRules = ENGINE_RULES): MemoryPlan {
  const { engine: engineIn, ...rest } = settings;
  const engine = engineIn === undefined ? DEFAULT_ENGINE : parseEngine(engineIn);
  const backend = rest.backend === undefined ? "cpu" : parseBackend(rest.backend);
  if (engine !== "kvbound" && (rest.backend !== undefined || rest.maxBatchTokens !== undefined || rest.maxBindingBytes !== undefined)) {
    throw new InvalidSettingError(`backend, maxBatchTokens and maxBindingBytes plan kvbound's own backends; they do not apply to engine ${engine} (use --engine kvbound)`, { setting: "backend", value: rest.backend ?? null });
  }
  if (backend === "webgpu") {
    // The WebGPU backend's cache defaults to f32 pages (src/cli/backend-flag.ts backendDefaultCodec).
    const gpuSettings = { ...rest, codec: rest.codec ?? "f32" };
    return planWebGpu(spec, gpuSettings, ruleFor(engine, rules)(spec, gpuSettings));
  }
  const result = ruleFor(engine, rules)(spec, rest);
  const notes = [...result.notes];

  let weights = weightBytes(spec);
  let compute: ComputeEstimate | null;
  if (engine === "vllm") {
    const tp = rest.tensorParallel ?? 1;
    const o = vllmOverheads(spec, rest);
    if (weights && tp > 1) {
      weights = { ...weights, bytes: o.weightsBytes };
      notes.push(`weights are per GPU: 1/${tp} of the model (tensor parallel)`);
    }
    compute = o.activationNote === undefined ? null : { bytes: o.activationBytes, note: o.activationNote };
  } else if (engine === "kvbound") {
    // kvbound's own runtime: the model's layout rule, not an estimate (src/plan/kvbound.ts).
    weights = kvboundWeights(spec);
    const scratch = result.extra?.cacheScratchBytes;
    compute = kvboundCompute(spec, typeof scratch === "number" ? scratch : 0);
  } else {
    compute = computeEstimate(engine, spec, computeInputs(engine, spec, rest, result));
  }
  const past = pastTraining(engine, spec.nCtxTrain, result.settings, result.extra);
  if (past !== null) notes.push(past.note);
  if (weights === null) notes.push("weights unknown (no weight bytes and no parameter count): totalBytes leaves them out");
  if (compute === null) notes.push("compute buffer unknown (n_vocab or n_ff missing): totalBytes leaves it out");
  else notes.push(compute.note);

  // llama.cpp with devices: which layers go where, and each device's bytes (llama-cpp-offload.ts).
  let settingsOut = result.settings;
  let devices: MemoryPlan["devices"];
  if (rest.gpus !== undefined) {
    if (engine !== "llama.cpp") {
      throw new InvalidSettingError(`per-device planning (gpus, --gpu) is implemented for llama.cpp only, not ${engine}`, { setting: "gpus", value: rest.gpus });
    }
    const offload = llamaCppOffload(spec, result, rest, compute?.bytes ?? null);
    if (offload !== null) {
      devices = offload.devices;
      settingsOut = { ...result.settings, ngl: offload.nGpuLayers, tensorSplit: offload.tensorSplit, kvOffload: rest.kvOffload !== false };
      notes.push(...offload.notes);
    }
  }

  const totalBytes = result.kv.totalBytes + (weights?.bytes ?? 0) + (compute?.bytes ?? 0);
  return {
    model: summarizeSpec(spec),
    engine,
    settings: settingsOut,
    kv: result.kv,
    weights,
    compute,
    totalBytes,
    ...(result.extra !== undefined ? { extra: result.extra } : {}),
    notes,
    ...(devices !== undefined ? { devices } : {}),
  };
}

/**
 * kvbound on WebGPU: the bytes of every GPU buffer (src/plan/webgpu.ts). kv: the page stores;
 * weights: the matrices and norms as uploaded; compute: activations, RoPE tables, uniforms, page
 * bounce buffers and the logits readback; totalBytes: the peak GPU bytes.
 */
function planWebGpu(spec: ModelSpec, settings: PlanSettings, result: EngineKvResult): MemoryPlan {
  const config = resolveCacheConfig(kvboundCacheInput(spec, settings));
  const m = webgpuMemory(spec, config, { maxBatchTokens: settings.maxBatchTokens, maxBindingBytes: settings.maxBindingBytes });
  const notes = [...result.notes, ...m.notes];
  const past = pastTraining("kvbound", spec.nCtxTrain, result.settings, result.extra);
  if (past !== null) notes.push(past.note);
  const kvTotal = m.kBytes + m.vBytes;
  const computeBytes = m.activationBytes + m.ropeTableBytes + m.uniformBytes + m.bounceBytes + m.statsBytes + m.readbackBytes;
  notes.push(
    `WebGPU compute: activations ${m.activationBytes} B + RoPE/run tables ${m.ropeTableBytes} B + uniforms ${m.uniformBytes} B + ` +
      `page copy buffers ${m.bounceBytes} B + ${m.statsBytes > 0 ? `attention stats ${m.statsBytes} B + ` : ""}logits readback ${m.readbackBytes} B; host memory also holds the model file (token rows are read from it)`,
  );
  // One row per cache group as the CPU rule has them, their bytes the GPU stores' (shared out by the
  // CPU rows' proportions when the model keeps SWA layers in a group of their own).
  const share = (bytes: number, part: number, whole: number) => (result.kv.caches.length === 1 || whole === 0 ? bytes : Math.round((bytes * part) / whole));
  const caches = result.kv.caches.map((c) => {
    const kBytes = share(m.kBytes, c.kBytes, result.kv.kBytes), vBytes = share(m.vBytes, c.vBytes, result.kv.vBytes);
    return { ...c, kBytes, vBytes, bytesPerCell: (kBytes + vBytes) / c.cells };
  });
  return {
    model: summarizeSpec(spec),
    engine: "kvbound",
    settings: { ...result.settings, backend: "webgpu", maxBatchTokens: m.maxBatchTokens, maxBindingBytes: m.maxBindingBytes },
    kv: { totalBytes: kvTotal, kBytes: m.kBytes, vBytes: m.vBytes, caches },
    weights: { bytes: m.weightsBytes, quant: spec.weights?.quant ?? "unknown", source: "webgpu-upload" },
    compute: { bytes: computeBytes, note: "WebGPU buffers (src/plan/webgpu.ts)" },
    totalBytes: kvTotal + m.weightsBytes + computeBytes,
    extra: {
      ...result.extra,
      webgpu: {
        weightsBytes: m.weightsBytes, kBytes: m.kBytes, vBytes: m.vBytes, bounceBytes: m.bounceBytes, activationBytes: m.activationBytes,
        ropeTableBytes: m.ropeTableBytes, uniformBytes: m.uniformBytes, statsBytes: m.statsBytes, readbackBytes: m.readbackBytes, steadyBytes: m.steadyBytes, peakBytes: m.peakBytes,
        buffers: m.matrices.reduce((n, x) => n + x.chunks.length, 0),
      },
    },
    notes,
  };
}

// ---------------------------------------------------------------------------------------------
// Contexts past the training context

/** Tokens one sequence can hold under resolved settings: llama.cpp n_ctx_seq (the cells of one
 *  stream, as llama.cpp compares it), vLLM max_model_len, WebLLM / kvbound the window. */
function contextTokens(engine: EngineName, settings: Readonly<Record<string, unknown>>, extra: Readonly<Record<string, unknown>> | undefined): number | null {
  switch (engine) {
    case "llama.cpp":
      return num(extra?.nCtxSeq) ?? num(settings.ctx) ?? null;
    case "vllm":
      return num(settings.maxModelLen) ?? null;
    case "webllm":
    case "kvbound": {
      const cw = num(settings.contextWindowSize);
      const sw = num(settings.slidingWindowSize);
      return cw !== undefined && cw > 0 ? cw : sw !== undefined && sw > 0 ? sw : null;
    }
    case "ollama":
      // num_ctx per slot, already capped at the training context by the rule (src/plan/ollama.ts).
      return num(settings.ctx) ?? null;
    case "mlx":
      return num(extra?.nCtxSeq) ?? num(settings.ctx) ?? null;
    default:
      return engine satisfies never;
  }
}

export interface PastTrainingContext {
  /** Tokens one sequence holds under the plan. */
  readonly tokens: number;
  /** The model's training context. */
  readonly nCtxTrain: number;
  /** What the engine does about it, with the source. */
  readonly note: string;
}

function pastTraining(
  engine: EngineName,
  nCtxTrain: number | null,
  settings: Readonly<Record<string, unknown>>,
  extra: Readonly<Record<string, unknown>> | undefined,
): PastTrainingContext | null {
  const tokens = contextTokens(engine, settings, extra);
  if (tokens === null || nCtxTrain === null || nCtxTrain <= 0 || tokens <= nCtxTrain) return null;
  let note: string;
  switch (engine) {
    case "llama.cpp":
      // llama-context.cpp: "n_ctx_seq (%u) > n_ctx_train (%u) -- possible training context overflow";
      // llama-server load_model: "the slot context (%d) exceeds the training context of the model (%d) - capping".
      note =
        `past the training context: ${tokens} tokens per sequence > the model's ${nCtxTrain}; llama.cpp warns "possible training context overflow" ` +
        `and llama-server caps each slot at ${nCtxTrain} tokens while still allocating these cells; positions past ${nCtxTrain} were never trained on`;
      break;
    case "vllm":
      // vllm/config/model.py _get_and_verify_max_len.
      note =
        `past the training context: max_model_len ${tokens} > the model's ${nCtxTrain}; vLLM refuses it ("User-specified max_model_len ... ` +
        `is greater than the derived max_model_len") unless VLLM_ALLOW_LONG_MAX_MODEL_LEN=1, and positions past ${nCtxTrain} were never trained on`;
      break;
    case "webllm":
    case "kvbound":
      note = `past the training context: a ${tokens}-token window > the model's ${nCtxTrain}; positions past ${nCtxTrain} were never trained on, so attention there degrades`;
      break;
    case "ollama":
      // Unreachable in practice: llm/server.go caps num_ctx at the model's context_length.
      note = `past the training context: num_ctx ${tokens} > the model's ${nCtxTrain}; Ollama caps num_ctx at ${nCtxTrain}`;
      break;
    case "mlx":
      note = `past the training context: ${tokens} tokens > the model's ${nCtxTrain}; mlx-lm does not refuse, but positions past ${nCtxTrain} were never trained on`;
      break;
    default:
      return engine satisfies never;
  }
  return { tokens, nCtxTrain, note };
}

/** Whether a plan holds more tokens per sequence than the model was trained on (null: it does not,
 *  or the training context is unknown). fit, rank and the verdict say so rather than propose it silently. */
export function planPastTrainingContext(plan: MemoryPlan): PastTrainingContext | null {
  const train = plan.model["nCtxTrain"];
  return pastTraining(plan.engine, typeof train === "number" ? train : null, plan.settings, plan.extra);
}
