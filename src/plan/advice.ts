// Advice a person can paste: the `kvbound plan` flags of a setting, the `kvbound run` flags of a
// kvbound-engine setting (only flags `kvbound run` accepts: src/cli/cache-flags.ts), and the fix
// for a plan that misses its budget. Browser-safe: the planner page shows the same fix as the CLI.

import type { ModelSpec } from "../spec/model-spec.js";
import { cheapestFor, ctxGranularity, fitCap, fitContexts, largestFitting, type FitRequest } from "./fit.js";
import { formatBytes } from "./parse.js";
import { planMemory } from "./plan.js";
import type { EngineName, PlanSettings } from "./types.js";
import { planVerdict } from "./verdict.js";

/** Settings and the `kvbound plan` / `fit` / `rank` flag that sets each (src/cli/options.ts). */
const PLAN_FLAGS: ReadonlyArray<readonly [keyof PlanSettings, string]> = [
  ["ctx", "--ctx"],
  ["typeK", "--type-k"],
  ["typeV", "--type-v"],
  ["flashAttn", "--flash-attn"],
  ["swaFull", "--swa-full"],
  ["kvCacheDtype", "--kv-cache-dtype"],
  ["codec", "--codec"],
  ["contextWindowSize", "--context-window"],
  ["slidingWindowSize", "--sliding-window"],
  ["attentionSinkSize", "--sinks"],
  ["maxKvSize", "--max-kv-size"],
  ["kvBits", "--kv-bits"],
  ["kvGroupSize", "--kv-group-size"],
  ["quantizedKvStart", "--quantized-kv-start"],
  ["nGpuLayers", "--ngl"],
  ["tensorSplit", "--tensor-split"],
];

/** Boolean settings whose flag takes no value (present = true). */
const SWITCHES: ReadonlySet<keyof PlanSettings> = new Set<keyof PlanSettings>(["swaFull", "kvUnified"]);

/** The `kvbound plan` flags for the settings in `chosen` that differ from what the user gave in `given`. */
export function planFlagsFor(chosen: PlanSettings, given: PlanSettings): string {
  const parts: string[] = [];
  for (const [key, flag] of PLAN_FLAGS) {
    const v = chosen[key];
    if (v === undefined || v === given[key] || (Array.isArray(v) && Array.isArray(given[key]) && String(v) === String(given[key]))) continue;
    if (SWITCHES.has(key)) {
      if (v === true) parts.push(flag);
      continue;
    }
    parts.push(`${flag} ${typeof v === "boolean" ? (v ? "on" : "off") : String(v)}`);
  }
  return parts.join(" ");
}

function positive(v: number | undefined): number | undefined {
  return v !== undefined && v > 0 ? v : undefined;
}

/**
 * The `kvbound run` / `chat` cache flags that realize a kvbound-engine setting: a sliding window
 * with its sinks, or a context window (never the WebLLM "-1 = unset" value, which `--context-window`
 * refuses), the codec, page size and prefill chunk. `kvbound run` has no --ctx: a context becomes
 * --context-window.
 */
export function kvboundRunFlags(settings: PlanSettings): string {
  const parts: string[] = [];
  const sw = positive(settings.slidingWindowSize);
  const cw = positive(settings.contextWindowSize) ?? positive(settings.ctx);
  if (sw !== undefined) {
    parts.push(`--sliding-window ${sw}`);
    if (settings.attentionSinkSize !== undefined && settings.attentionSinkSize > 0) parts.push(`--sinks ${settings.attentionSinkSize}`);
  } else if (cw !== undefined) {
    parts.push(`--context-window ${cw}`);
  }
  if (settings.codec !== undefined) parts.push(`--codec ${settings.codec}`);
  if (settings.pageSize !== undefined) parts.push(`--page-size ${settings.pageSize}`);
  if (settings.prefillChunkSize !== undefined) parts.push(`--prefill-chunk ${settings.prefillChunkSize}`);
  return parts.join(" ");
}

/** A model reference as one shell word (quoted when it holds anything beyond plain path characters). */
export function shellWord(s: string): string {
  return /^[A-Za-z0-9._/:@%+=,-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/** Largest context (in the engine's allocation steps, up to the training context) that fits
 *  `budgetBytes` under `settings`; 0 when none does. */
export function largestFittingCtx(spec: ModelSpec, engine: EngineName, settings: PlanSettings, budgetBytes: number): number {
  const step = ctxGranularity(engine, settings);
  const cap = fitCap(spec, engine, step);
  const windowed = engine === "webllm" || engine === "kvbound";
  const fits = (ctx: number): boolean => {
    const s: PlanSettings = windowed ? { ...settings, ctx, contextWindowSize: ctx, slidingWindowSize: -1 } : { ...settings, ctx };
    return planVerdict(planMemory(spec, { ...s, engine, budgetBytes }), budgetBytes).fits;
  };
  return largestFitting(step, cap, fits) ?? 0;
}

/** What to change so a plan that misses the budget fits: the cheapest KV setting for the same
 *  context, else the largest context each KV type allows, else the reason. */
export function suggestFix(spec: ModelSpec, request: FitRequest, ctx: number): string | null {
  const { engine = "llama.cpp", budgetBytes, ...given } = request;
  const cheapest = cheapestFor(spec, ctx, { ...given, engine, budgetBytes });
  if (cheapest.fits) {
    const flags = planFlagsFor(cheapest.settings, given);
    return `${flags} (${cheapest.label}: ${formatBytes(cheapest.bytes)})`;
  }
  // The same context cannot fit: offer the largest context each KV type allows.
  const fit = fitContexts(spec, { ...given, engine, budgetBytes });
  const tries: string[] = [];
  for (const o of fit.options) {
    if (o.bounded || o.maxCtx === null) continue;
    tries.push(`${planFlagsFor({ ...o.settings, ctx: o.maxCtx }, given)} (${o.label})`);
  }
  if (tries.length > 0) return `${tries.join(", or ")}; or a smaller quantization`;
  return cheapest.reason;
}
