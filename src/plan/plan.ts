// planMemory: one engine's KV rule plus weights plus the compute/activation estimate, as the
// MemoryPlan JSON contract. The engine rules live one per file; the table is a parameter so
// tests and callers can swap a rule.

import { InvalidSettingError } from "../errors.js";
import { summarizeSpec, type ModelSpec } from "../spec/model-spec.js";
import { computeEstimate, defaultComputeInputs, type ComputeEstimate, type ComputeInputs } from "./compute.js";
import { kvboundCompute, kvboundKv, kvboundWeights } from "./kvbound.js";
import { llamaCppKv } from "./llama-cpp.js";
import { ENGINES, type EngineKvResult, type EngineName, type MemoryPlan, type PlanSettings } from "./types.js";
import { vllmKv, vllmOverheads } from "./vllm.js";
import { webllmKv } from "./webllm.js";
import { weightBytes } from "./weights.js";

export type EngineRule = (spec: ModelSpec, settings: PlanSettings) => EngineKvResult;
export type EngineRules = Readonly<Record<EngineName, EngineRule>>;

export const ENGINE_RULES: EngineRules = {
  "llama.cpp": llamaCppKv,
  vllm: (spec, settings) => vllmKv(spec, settings),
  webllm: webllmKv,
  kvbound: kvboundKv,
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
  if (weights === null) notes.push("weights unknown (no weight bytes and no parameter count): totalBytes leaves them out");
  if (compute === null) notes.push("compute buffer unknown (n_vocab or n_ff missing): totalBytes leaves it out");
  else notes.push(compute.note);

  const totalBytes = result.kv.totalBytes + (weights?.bytes ?? 0) + (compute?.bytes ?? 0);
  return {
    model: summarizeSpec(spec),
    engine,
    settings: result.settings,
    kv: result.kv,
    weights,
    compute,
    totalBytes,
    ...(result.extra !== undefined ? { extra: result.extra } : {}),
    notes,
  };
}
