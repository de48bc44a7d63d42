// Answers built on plans: "how long a context fits in this budget, for each KV cache type?"
// (fitContexts) and "what is the cheapest setting that makes this context fit?" (cheapestFor).
// Both only call planMemory, so they inherit each engine's exact KV rule.

import { InvalidSettingError, KvboundError } from "../errors.js";
import type { ModelSpec } from "../spec/model-spec.js";
import { llamaCppShiftRefusal } from "./llama-cpp.js";
import { mlxBoundedOption, mlxKvOptions } from "./mlx.js";
import { ollamaBoundedOption, ollamaKvOptions } from "./ollama.js";
import { formatBytes, MAX_CONTEXT_TOKENS } from "./parse.js";
import { DEFAULT_ENGINE, ENGINE_RULES, parseEngine, planMemory, type EngineRules, type PastTrainingContext } from "./plan.js";
import type { DevicePlan, EngineName, MemoryPlan, PlanSettings } from "./types.js";
import { planVerdict, type Verdict } from "./verdict.js";
import { layerRanges } from "./llama-cpp-offload.js";

/** Sinks kept by the sliding options (StreamingLLM's 4 attention-sink tokens). */
export const FIT_ATTENTION_SINKS = 4;

export type FitRequest = PlanSettings & { engine?: EngineName; budgetBytes: number };

/** One KV setting tried by fitContexts / cheapestFor. */
export interface KvOption {
  readonly label: string;
  /** Settings layered over the caller's. */
  readonly settings: PlanSettings;
  /** Bounded options keep memory fixed at any conversation length (sliding window). */
  readonly bounded: boolean;
}

export interface FitOption extends KvOption {
  /** Largest context (or sliding window, for bounded options) that fits; null when none does. */
  readonly maxCtx: number | null;
  /** Plan total at maxCtx (vLLM: the KV one request needs at maxCtx). */
  readonly bytesAtMax: number | null;
  /** "budget": the next step does not fit; "nCtxTrain": capped at the model's training context. */
  readonly limitedBy: "budget" | "nCtxTrain" | "unavailable";
  readonly note: string;
}

export interface FitResult {
  readonly engine: EngineName;
  readonly budgetBytes: number;
  /** Context granularity of the engine (llama.cpp 256, vLLM block_size, WebLLM 16). */
  readonly granularity: number;
  readonly options: readonly FitOption[];
  readonly notes: readonly string[];
}

/** Context steps each engine allocates in: smaller steps cost the same memory as the next one up. */
export function ctxGranularity(engine: EngineName, settings: PlanSettings): number {
  switch (engine) {
    case "llama.cpp":
      return 256; // n_ctx is padded up to 256 (llama-context.cpp)
    case "vllm":
      return settings.blockSize ?? 16;
    case "webllm":
      return 16; // page size
    case "kvbound":
      return settings.pageSize ?? 16;
    case "ollama":
      return 256; // kvcache/causal.go CachePadding 256; the llama.cpp runner pads n_ctx to 256
    case "mlx":
      return 256; // cache.py KVCache.step
    default:
      return engine satisfies never;
  }
}

/** The KV settings fitContexts tries for an engine, cheapest-memory last. */
export function kvOptions(engine: EngineName): KvOption[] {
  switch (engine) {
    case "llama.cpp":
      return [
        { label: "f16 K+V", settings: { typeK: "f16", typeV: "f16" }, bounded: false },
        { label: "q8_0 K+V", settings: { typeK: "q8_0", typeV: "q8_0", flashAttn: true }, bounded: false },
        { label: "q4_0 K+V", settings: { typeK: "q4_0", typeV: "q4_0", flashAttn: true }, bounded: false },
      ];
    case "vllm":
      return [
        { label: "auto (model dtype)", settings: { kvCacheDtype: "auto" }, bounded: false },
        { label: "fp8", settings: { kvCacheDtype: "fp8" }, bounded: false },
      ];
    case "webllm":
      return [
        { label: "f16", settings: { kvCacheDtype: "f16" }, bounded: false },
        { label: "f32", settings: { kvCacheDtype: "f32" }, bounded: false },
      ];
    case "kvbound":
      return [
        { label: "f16", settings: { codec: "f16" }, bounded: false },
        { label: "int8", settings: { codec: "int8" }, bounded: false },
        { label: "int4", settings: { codec: "int4" }, bounded: false },
      ];
    case "ollama":
      return ollamaKvOptions();
    case "mlx":
      return mlxKvOptions();
    default:
      return engine satisfies never;
  }
}

/** Settings that plan a context of `ctx` tokens on `engine` (WebLLM/kvbound: context_window_size). */
function ctxSettings(engine: EngineName, ctx: number): PlanSettings {
  return engine === "webllm" || engine === "kvbound" ? { ctx, contextWindowSize: ctx, slidingWindowSize: -1 } : { ctx };
}

/** Settings that plan a sliding window of `window` tokens with sinks (WebLLM/kvbound only). */
function windowSettings(window: number): PlanSettings {
  return { contextWindowSize: -1, slidingWindowSize: window, attentionSinkSize: FIT_ATTENTION_SINKS };
}

interface Check {
  readonly fits: boolean;
  /** What the verdict compares (vLLM: the KV one request needs; others: the plan's total). */
  readonly bytes: number;
  readonly plan: MemoryPlan;
  readonly verdict: Verdict;
}

/** Plans `settings` with the budget and asks the one verdict (src/plan/verdict.ts). */
function check(spec: ModelSpec, engine: EngineName, settings: PlanSettings, budget: number, rules: EngineRules): Check {
  const plan = planMemory(spec, { ...settings, engine, budgetBytes: budget }, rules);
  const verdict = planVerdict(plan, budget);
  return { fits: verdict.fits, bytes: verdict.neededBytes, plan, verdict };
}

/** "; not counting the weights, which are unknown" when the verdict leaves parts out. */
function uncountedNote(v: Verdict): string {
  return v.uncounted.length === 0 ? "" : `; not counting the ${v.uncounted.join(" or the ")} (unknown)`;
}

/** "; memory only: ... past the training context ..." for option notes. */
function pastNote(past: PastTrainingContext | null): string {
  return past === null ? "" : `; memory only: ${past.tokens} tokens per sequence is past the model's training context of ${past.nCtxTrain}`;
}

/** Largest multiple of `step` in [step, cap] (or cap itself) for which `fits` holds; fits must be
 *  monotone (true up to some point, false after). Returns null when even `step` does not fit. */
export function largestFitting(step: number, cap: number, fits: (n: number) => boolean): number | null {
  if (cap >= step && !fits(step)) return null;
  if (cap < step) return fits(cap) ? cap : null;
  if (fits(cap)) return cap;
  let lo = 1; // fits(lo * step)
  let hi = Math.floor(cap / step); // answer <= hi
  if (hi * step === cap) hi -= 1; // cap itself does not fit
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (fits(mid * step)) lo = mid;
    else hi = mid - 1;
  }
  return lo * step;
}

/** Smallest multiple of `step` in [step, cap] (or cap) for which the monotone `ok` holds (false
 *  below some size, true from it on); null when none does. */
function smallestValid(step: number, cap: number, ok: (n: number) => boolean): number | null {
  const hiK = Math.floor(cap / step);
  if (hiK < 1) return ok(cap) ? cap : null;
  if (!ok(hiK * step)) return ok(cap) ? cap : null;
  let lo = 1;
  let hi = hiK; // ok(hi * step)
  while (lo < hi) {
    const mid = Math.floor((lo + hi) / 2);
    if (ok(mid * step)) hi = mid;
    else lo = mid + 1;
  }
  return lo * step;
}

/** largestFitting over [min, cap] where `min` (a multiple of step, or cap) is the smallest size
 *  worth trying; null when `min` itself does not fit. */
function largestFittingFrom(min: number, step: number, cap: number, fits: (n: number) => boolean): number | null {
  if (!fits(min)) return null;
  if (min >= cap) return min;
  const found = largestFitting(step, cap - min + step, (n) => fits(n - step + min));
  return found === null ? min : found - step + min;
}

function errorText(err: unknown): string {
  return err instanceof Error ? `${err.name}: ${err.message}` : String(err);
}

/**
 * For each KV type of the engine (llama.cpp f16 / q8_0 / q4_0; vLLM auto / fp8; WebLLM f16 / f32;
 * kvbound f16 / int8 / int4) the largest context that fits `budgetBytes`, plus the bounded
 * choice: a sliding window with 4 sink tokens (WebLLM, kvbound), or llama.cpp's context shift.
 */
export function fitContexts(spec: ModelSpec, request: FitRequest, rules: EngineRules = ENGINE_RULES): FitResult {
  const { engine: engineIn, budgetBytes, ...baseIn } = request;
  const engine = engineIn === undefined ? DEFAULT_ENGINE : parseEngine(engineIn);
  // With devices, "the largest context" is for one offload: the -ngl given, else every layer
  // (llama.cpp's --fit would otherwise trade layers for context; fitOffload answers that).
  const base: PlanSettings = baseIn.gpus !== undefined && baseIn.nGpuLayers === undefined ? { ...baseIn, nGpuLayers: spec.layers.length + 1 } : baseIn;
  const step = ctxGranularity(engine, base);
  const cap = fitCap(spec, engine, step);
  const notes: string[] = [];
  const options: FitOption[] = [];

  for (const opt of kvOptions(engine)) {
    const settings = { ...base, ...opt.settings };
    try {
      const fits = (ctx: number): boolean => check(spec, engine, { ...settings, ...ctxSettings(engine, ctx) }, budgetBytes, rules).fits;
      const maxCtx = largestFitting(step, cap, fits);
      if (maxCtx === null) {
        const smallest = check(spec, engine, { ...settings, ...ctxSettings(engine, Math.min(step, cap)) }, budgetBytes, rules);
        options.push({
          ...opt,
          maxCtx: null,
          bytesAtMax: null,
          limitedBy: "budget",
          note: `even ${Math.min(step, cap)} tokens need ${formatBytes(smallest.bytes)}${engine === "vllm" ? " of KV, more than vLLM has left" : ""}: does not fit ${formatBytes(budgetBytes)}`,
        });
        continue;
      }
      const at = check(spec, engine, { ...settings, ...ctxSettings(engine, maxCtx) }, budgetBytes, rules);
      options.push({
        ...opt,
        maxCtx,
        bytesAtMax: at.bytes,
        limitedBy: maxCtx === cap && spec.nCtxTrain !== null ? "nCtxTrain" : "budget",
        note:
          (maxCtx === cap && spec.nCtxTrain !== null
            ? cap === spec.nCtxTrain
              ? `the full training context ${cap} fits (${formatBytes(at.bytes)})`
              : `the training context fits: ${cap} tokens, the largest -c on llama.cpp's 256-cell grid within ${spec.nCtxTrain} (${formatBytes(at.bytes)})`
            : `${maxCtx} tokens fit (${formatBytes(at.bytes)}); ${maxCtx + step} do not`) + pastNote(at.verdict.pastTraining),
      });
    } catch (err) {
      if (!(err instanceof KvboundError)) throw err;
      options.push({ ...opt, maxCtx: null, bytesAtMax: null, limitedBy: "unavailable", note: errorText(err) });
    }
  }

  options.push(boundedOption(spec, engine, base, budgetBytes, step, cap, options, rules));

  const small = planMemory(spec, { ...base, ...ctxSettings(engine, Math.min(step, cap)), engine, budgetBytes }, rules);
  const weights = small.weights;
  if (small.devices !== undefined) {
    const ngl = small.settings["ngl"];
    notes.push(
      `contexts for -ngl ${String(ngl)}${ngl === spec.layers.length + 1 ? " (every layer)" : ""}, each GPU keeping llama.cpp's --fit target free; ` +
        `for the most layers a context allows, give it: --ctx N`,
    );
  } else if (weights !== null && weights.bytes > budgetBytes) {
    notes.push(`the weights alone (${formatBytes(weights.bytes)}, ${weights.quant}) exceed the budget ${formatBytes(budgetBytes)} by ${formatBytes(weights.bytes - budgetBytes)}: no context fits; use a smaller quantization or model`);
  }
  const unknown: string[] = [];
  if (weights === null) unknown.push("the weights");
  if (small.compute === null) unknown.push(engine === "vllm" ? "the activation peak" : "the compute buffer");
  if (unknown.length > 0) {
    notes.push(`unknown, so left out of every figure here: ${unknown.join(" and ")}; "fits" means the rest fits`);
  }
  if (spec.nCtxTrain === null) notes.push("the model states no training context: contexts are searched up to the planner's limit, which the model may never have seen");
  return { engine, budgetBytes, granularity: step, options, notes };
}

/** The largest context fit and the sliding windows search: the training context (llama.cpp: the
 *  largest -c whose padded n_ctx stays within it, so llama.cpp does not warn "possible training
 *  context overflow"); without one, the planner's limit. */
export function fitCap(spec: ModelSpec, engine: EngineName, step: number): number {
  if (spec.nCtxTrain === null) return MAX_CONTEXT_TOKENS;
  // llama.cpp pads n_ctx up to 256: a training context off that grid would be padded past itself.
  if (engine === "llama.cpp" && spec.nCtxTrain >= step) return Math.floor(spec.nCtxTrain / step) * step;
  return spec.nCtxTrain;
}

function boundedOption(
  spec: ModelSpec,
  engine: EngineName,
  base: PlanSettings,
  budget: number,
  step: number,
  cap: number,
  found: readonly FitOption[],
  rules: EngineRules,
): FitOption {
  switch (engine) {
    case "webllm":
    case "kvbound": {
      const label = `sliding window + ${FIT_ATTENTION_SINKS} sinks`;
      const settings = { ...base, ...kvOptions(engine)[0]!.settings };
      try {
        // The window must exceed the sinks (and hold the caller's prefill chunk after them): the
        // smallest valid window is searched first, then the largest that fits, in page steps.
        const valid = (w: number): boolean => {
          if (w <= FIT_ATTENTION_SINKS) return false;
          try {
            check(spec, engine, { ...settings, ...windowSettings(w) }, budget, rules);
            return true;
          } catch (err) {
            if (err instanceof KvboundError) return false;
            throw err;
          }
        };
        const fits = (w: number): boolean => valid(w) && check(spec, engine, { ...settings, ...windowSettings(w) }, budget, rules).fits;
        const minWindow = smallestValid(step, cap, valid);
        const maxWindow = minWindow === null ? null : largestFittingFrom(minWindow, step, cap, fits);
        const at = maxWindow === null ? null : check(spec, engine, { ...settings, ...windowSettings(maxWindow) }, budget, rules);
        return {
          label,
          settings: { ...kvOptions(engine)[0]!.settings, ...windowSettings(maxWindow ?? step) },
          bounded: true,
          maxCtx: maxWindow,
          bytesAtMax: at?.bytes ?? null,
          limitedBy: maxWindow === null ? "budget" : maxWindow === cap && spec.nCtxTrain !== null ? "nCtxTrain" : "budget",
          note:
            maxWindow === null
              ? `no sliding window fits ${formatBytes(budget)}`
              : `a ${maxWindow}-token window (first ${FIT_ATTENTION_SINKS} tokens kept as attention sinks, the rest the most recent) ` +
                `runs at any conversation length in ${formatBytes(at!.bytes)}; tokens that leave the window are forgotten`,
        };
      } catch (err) {
        if (!(err instanceof KvboundError)) throw err;
        return { label, settings: windowSettings(step), bounded: true, maxCtx: null, bytesAtMax: null, limitedBy: "unavailable", note: errorText(err) };
      }
    }
    case "llama.cpp": {
      // llama.cpp has no bounded sliding cache for full-attention layers. With context shift
      // (llama-server --context-shift) a full context discards half of the tokens after --keep
      // and continues, so memory stays that of -c; the bounded window is the largest -c that fits.
      // Only where llama.cpp can shift the memory (llamaCppShiftRefusal): interleaved-SWA caches
      // shift only at full size (--swa-full), recurrent state and M-RoPE positions never.
      const label = `context shift (--context-shift --keep ${FIT_ATTENTION_SINKS})`;
      const refusal = llamaCppShiftRefusal(spec, base.swaFull === true);
      if (refusal !== null && llamaCppShiftRefusal(spec, true) === null) {
        // iSWA: the shiftable configuration is --swa-full; size it with the cheapest KV type.
        return swaFullShift(spec, base, budget, step, cap, rules, refusal);
      }
      if (refusal !== null) {
        return { label, settings: {}, bounded: true, maxCtx: null, bytesAtMax: null, limitedBy: "unavailable", note: `not offered: ${refusal}` };
      }
      const best = [...found].reverse().find((o) => o.maxCtx !== null);
      return {
        label,
        settings: best?.settings ?? {},
        bounded: true,
        maxCtx: best?.maxCtx ?? null,
        bytesAtMax: best?.bytesAtMax ?? null,
        limitedBy: best === undefined ? "budget" : best.limitedBy,
        note:
          best === undefined
            ? "no context fits, so context shift cannot help"
            : `llama-server --context-shift --keep ${FIT_ATTENTION_SINKS} -c ${best.maxCtx} (${best.label}) keeps memory fixed at any length: ` +
              `when the context fills it drops the older half after the first ${FIT_ATTENTION_SINKS} tokens (not a sliding window per token)`,
      };
    }
    case "vllm":
      return {
        label: "sliding window",
        settings: {},
        bounded: true,
        maxCtx: null,
        bytesAtMax: null,
        limitedBy: "unavailable",
        note: "vLLM has no sliding-window option for full-attention models; requests are limited to max_model_len",
      };
    case "ollama":
      return ollamaBoundedOption(found);
    case "mlx":
      return mlxBoundedOption(spec, step, cap, (s) => check(spec, engine, { ...base, ...s }, budget, rules), largestFitting);
    default:
      return engine satisfies never;
  }
}

/** Context shift for an interleaved-SWA model: only with --swa-full (SWA layers sized like the
 *  full ones, which costs memory), with the cheapest KV type. */
function swaFullShift(spec: ModelSpec, base: PlanSettings, budget: number, step: number, cap: number, rules: EngineRules, refusal: string): FitOption {
  const kv = kvOptions("llama.cpp");
  const cheapest = kv[kv.length - 1]!;
  const settings: PlanSettings = { ...cheapest.settings, swaFull: true };
  const label = `context shift (--swa-full --context-shift --keep ${FIT_ATTENTION_SINKS})`;
  try {
    const fits = (ctx: number): boolean => check(spec, "llama.cpp", { ...base, ...settings, ctx }, budget, rules).fits;
    const maxCtx = largestFitting(step, cap, fits);
    if (maxCtx === null) {
      return { label, settings, bounded: true, maxCtx: null, bytesAtMax: null, limitedBy: "budget", note: `${refusal}; with --swa-full no context fits ${formatBytes(budget)}` };
    }
    const at = check(spec, "llama.cpp", { ...base, ...settings, ctx: maxCtx }, budget, rules);
    return {
      label,
      settings,
      bounded: true,
      maxCtx,
      bytesAtMax: at.bytes,
      limitedBy: maxCtx === cap && spec.nCtxTrain !== null ? "nCtxTrain" : "budget",
      note:
        `without --swa-full llama.cpp cannot shift this model (${refusal}); llama-server --swa-full --context-shift --keep ${FIT_ATTENTION_SINKS} ` +
        `-c ${maxCtx} (${cheapest.label}) keeps memory fixed at any length in ${formatBytes(at.bytes)}` + pastNote(at.verdict.pastTraining),
    };
  } catch (err) {
    if (!(err instanceof KvboundError)) throw err;
    return { label, settings, bounded: true, maxCtx: null, bytesAtMax: null, limitedBy: "unavailable", note: errorText(err) };
  }
}

// ---------------------------------------------------------------------------------------------

export type CheapestResult =
  | {
      readonly fits: true;
      readonly label: string;
      /** The settings (caller's + chosen) that make ctx fit. */
      readonly settings: PlanSettings;
      readonly bytes: number;
      /** The verdict's spare bytes (vLLM: the KV memory left after one request). */
      readonly headroomBytes: number;
      readonly plan: MemoryPlan;
      /** Bounded options fit by replacing the full context with a sliding window. */
      readonly bounded: boolean;
      /** Set when ctx is past the model's training context: the memory fits, the model is not trained for it. */
      readonly pastTraining: PastTrainingContext | null;
      readonly note: string;
    }
  | {
      readonly fits: false;
      /** The cheapest setting tried and what it needs. */
      readonly cheapestLabel: string;
      readonly bytes: number;
      readonly shortfallBytes: number;
      readonly reason: string;
    };

/** The ladder cheapestFor climbs, most faithful first (llama.cpp: f16 -> q8_0 -> q8_0 K + q4_0 V -> q4_0). */
export function cheapestLadder(engine: EngineName): KvOption[] {
  switch (engine) {
    case "llama.cpp":
      return [
        { label: "f16 K+V", settings: { typeK: "f16", typeV: "f16" }, bounded: false },
        { label: "q8_0 K+V", settings: { typeK: "q8_0", typeV: "q8_0", flashAttn: true }, bounded: false },
        // Keys are more sensitive to quantization than values (KIVI), so V goes to 4 bits first.
        { label: "q8_0 K + q4_0 V", settings: { typeK: "q8_0", typeV: "q4_0", flashAttn: true }, bounded: false },
        { label: "q4_0 K+V", settings: { typeK: "q4_0", typeV: "q4_0", flashAttn: true }, bounded: false },
      ];
    case "vllm":
    case "webllm":
    case "kvbound":
    case "ollama":
    case "mlx":
      // f32 (WebLLM) costs more than f16: never a cheaper step.
      return kvOptions(engine).filter((o) => o.label !== "f32");
    default:
      return engine satisfies never;
  }
}

/**
 * The cheapest settings that make `ctx` fit `budgetBytes`: climbs the engine's KV type ladder,
 * then (WebLLM, kvbound) falls back to the largest sliding window with sinks that fits. When
 * nothing fits, says by how much the cheapest try misses, and whether the weights alone do.
 */
export function cheapestFor(spec: ModelSpec, ctx: number, request: FitRequest, rules: EngineRules = ENGINE_RULES): CheapestResult {
  const { engine: engineIn, budgetBytes, ...base } = request;
  const engine = engineIn === undefined ? DEFAULT_ENGINE : parseEngine(engineIn);
  let last: { label: string; check: Check } | null = null;
  const skipped: string[] = [];
  for (const opt of cheapestLadder(engine)) {
    const settings = { ...base, ...opt.settings, ...ctxSettings(engine, ctx) };
    let c: Check;
    try {
      c = check(spec, engine, settings, budgetBytes, rules);
    } catch (err) {
      if (!(err instanceof KvboundError)) throw err;
      skipped.push(`${opt.label} (${errorText(err)})`);
      continue;
    }
    if (c.fits) {
      return {
        fits: true,
        label: opt.label,
        settings,
        bytes: c.bytes,
        headroomBytes: c.verdict.headroomBytes,
        plan: c.plan,
        bounded: false,
        pastTraining: c.verdict.pastTraining,
        note: `${ctx} tokens fit with ${opt.label}: ${formatBytes(c.bytes)} of ${formatBytes(budgetBytes)}` + pastNote(c.verdict.pastTraining) + uncountedNote(c.verdict),
      };
    }
    last = { label: opt.label, check: c };
  }

  // Bounded fallback: a sliding window that fits (memory fixed at any length, older tokens dropped).
  if (engine === "webllm" || engine === "kvbound") {
    const fit = fitContexts(spec, { ...base, engine, budgetBytes }, rules);
    const bounded = fit.options.find((o) => o.bounded && o.maxCtx !== null);
    if (bounded !== undefined && bounded.maxCtx !== null) {
      const settings = { ...base, ...bounded.settings, ...windowSettings(Math.min(bounded.maxCtx, ctx)) };
      const c = check(spec, engine, settings, budgetBytes, rules);
      return {
        fits: true,
        label: `${bounded.label} (${Math.min(bounded.maxCtx, ctx)} tokens)`,
        settings,
        bytes: c.bytes,
        headroomBytes: c.verdict.headroomBytes,
        plan: c.plan,
        bounded: true,
        pastTraining: c.verdict.pastTraining,
        note:
          `${ctx} tokens do not fit as a full context even with ${last?.label ?? "the cheapest type"}; a sliding window of ` +
          `${Math.min(bounded.maxCtx, ctx)} tokens with ${FIT_ATTENTION_SINKS} sinks does (${formatBytes(c.bytes)}), forgetting tokens outside it`,
      };
    }
  }

  if (last === null) {
    return {
      fits: false,
      cheapestLabel: "none",
      bytes: 0,
      shortfallBytes: 0,
      reason: `no KV setting is valid for this model on ${engine}: ${skipped.join("; ")}`,
    };
  }
  const plan = last.check.plan;
  let reason: string;
  const shortfall = -last.check.verdict.headroomBytes;
  if (engine === "vllm") {
    const available = last.check.verdict.availableBytes;
    reason =
      available <= 0
        ? `weights and activations leave no memory for KV within ${formatBytes(budgetBytes)} x gpu_memory_utilization; use tensor parallel, a smaller quantization, or a larger GPU`
        : `does not fit even with ${last.label}: one ${ctx}-token request needs ${formatBytes(last.check.bytes)} of KV, ` +
          `${formatBytes(shortfall)} more than the ${formatBytes(available)} vLLM has left; use tensor parallel or a shorter max_model_len` +
          (typeof plan.extra?.estimatedMaxModelLen === "number" ? ` (at most ${plan.extra.estimatedMaxModelLen})` : "");
  } else {
    const weights = plan.weights?.bytes ?? 0;
    reason =
      weights > budgetBytes
        ? `the weights alone (${formatBytes(weights)}) exceed the budget ${formatBytes(budgetBytes)} by ${formatBytes(weights - budgetBytes)}; use a smaller quantization or model`
        : `does not fit even with ${last.label}: needs ${formatBytes(last.check.bytes)} (${last.check.bytes} bytes), ${formatBytes(shortfall)} (${shortfall} bytes) more than ${formatBytes(budgetBytes)}`;
  }
  if (skipped.length > 0) reason += `; skipped: ${skipped.join("; ")}`;
  return { fits: false, cheapestLabel: last.label, bytes: last.check.bytes, shortfallBytes: shortfall, reason };
}

// ---------------------------------------------------------------------------------------------
// Devices: the most layers a context allows (llama.cpp's --fit, src/plan/llama-cpp-offload.ts)

export interface OffloadOption {
  readonly label: string;
  /** The caller's settings with this KV type, the context and the -ngl / --tensor-split chosen. */
  readonly settings: PlanSettings;
  /** The plan at those settings (null when the KV type does not apply to the model). */
  readonly plan: MemoryPlan | null;
  readonly nGpuLayers: number | null;
  readonly tensorSplit: readonly number[] | null;
  readonly devices: readonly DevicePlan[];
  /** Every device with a size fits (GPUs keeping the --fit target free). */
  readonly fits: boolean;
  readonly note: string;
}

export interface OffloadFitResult {
  readonly engine: "llama.cpp";
  readonly ctx: number;
  readonly gpus: readonly number[];
  readonly options: readonly OffloadOption[];
  readonly notes: readonly string[];
}

/** "stays in RAM: ..." for the CPU device of a plan. */
export function hostSummary(cpu: DevicePlan, nLayer: number): string {
  const parts: string[] = [];
  if (cpu.layers.length > 0) parts.push(`layers ${layerRanges(cpu.layers)} (${cpu.layers.length} of ${nLayer})`);
  if (cpu.output) parts.push("the output layer");
  parts.push("the token embeddings");
  return (
    `in RAM: ${parts.join(", ")}: ${formatBytes(cpu.weights)} of weights, ${formatBytes(cpu.kv)} of KV cache, ` +
    `${formatBytes(cpu.compute)} of compute and output buffers (estimate); ${formatBytes(cpu.total)} in all`
  );
}

/**
 * For `ctx` tokens on the GPUs of `request.gpus`: for each llama.cpp KV type, the -ngl (and
 * --tensor-split) llama.cpp's --fit picks, each device's bytes, and what stays in host memory.
 * With `request.nGpuLayers` given it is kept (as llama.cpp keeps a user's -ngl) and only judged.
 */
export function fitOffload(spec: ModelSpec, ctx: number, request: PlanSettings, rules: EngineRules = ENGINE_RULES): OffloadFitResult {
  const gpus = request.gpus;
  if (gpus === undefined || gpus.length === 0) {
    throw new InvalidSettingError("fitOffload needs the GPUs' memory (gpus, --gpu 8GiB)", { setting: "gpus", value: null });
  }
  let nominal = 0;
  for (const g of gpus) nominal += g;
  nominal += request.ramBytes ?? 0;
  const options: OffloadOption[] = [];
  for (const opt of kvOptions("llama.cpp")) {
    const settings: PlanSettings = { ...request, ...opt.settings, ctx };
    let plan: MemoryPlan;
    try {
      plan = planMemory(spec, { ...settings, engine: "llama.cpp" }, rules);
    } catch (err) {
      if (!(err instanceof KvboundError)) throw err;
      options.push({ ...opt, settings, plan: null, nGpuLayers: null, tensorSplit: null, devices: [], fits: false, note: errorText(err) });
      continue;
    }
    const verdict = planVerdict(plan, nominal);
    const ngl = typeof plan.settings["ngl"] === "number" ? plan.settings["ngl"] : null;
    const split = Array.isArray(plan.settings["tensorSplit"]) ? (plan.settings["tensorSplit"] as number[]) : null;
    const devices = plan.devices ?? [];
    const cpu = devices.find((d) => d.kind === "cpu");
    const chosen: PlanSettings = { ...settings, ...(ngl !== null ? { nGpuLayers: ngl } : {}), ...(split !== null ? { tensorSplit: split } : {}) };
    const head = split !== null ? `--tensor-split ${split.join(",")}: ` : "";
    options.push({
      ...opt,
      settings: chosen,
      plan,
      nGpuLayers: ngl,
      tensorSplit: split,
      devices,
      fits: verdict.fits,
      note: `${head}${verdict.line}${cpu !== undefined ? `; ${hostSummary(cpu, spec.layers.length)}` : ""}` + pastNote(verdict.pastTraining),
    });
  }
  const notes: string[] = [];
  if (request.nGpuLayers !== undefined) notes.push(`-ngl ${request.nGpuLayers} as given: llama.cpp's --fit leaves a user's -ngl alone, so this only judges it`);
  else notes.push("-ngl per KV type as llama.cpp's --fit picks it: the most whole layers, filled from the last GPU back, that leave --fit-target free on each GPU");
  return { engine: "llama.cpp", ctx, gpus, options, notes };
}
