// `kvbound fit <model> --budget B`: the largest context per KV type (and the bounded choice),
// and with --ctx the cheapest settings that make it fit. Also the helpers `plan` uses for its
// verdict: whether a plan fits, the largest fitting context, and the flags of a fix.

import { cheapestFor, ctxGranularity, fitContexts, largestFitting, type CheapestResult, type FitResult } from "../../plan/fit.js";
import { MAX_CONTEXT_TOKENS } from "../../plan/parse.js";
import { planMemory } from "../../plan/plan.js";
import type { EngineName, MemoryPlan, PlanSettings } from "../../plan/types.js";
import { loadModelSpec } from "../../spec/load.js";
import type { ModelSpec } from "../../spec/model-spec.js";
import { formatBytes, formatInt, table } from "../format.js";
import type { CliIo } from "../main.js";
import { parseSettings, type ParsedSettings, type RawPlanFlags } from "../options.js";

export interface FitFlags extends RawPlanFlags {
  json?: boolean;
}

/** Whether a plan fits `budgetBytes`: vLLM builds its KV pool from the budget, so there the
 *  question is whether one request at max_model_len fits that pool (as fit.ts decides). */
export function planFits(plan: MemoryPlan, budgetBytes: number): boolean {
  if (plan.engine === "vllm" && typeof plan.extra?.["fitsOneRequest"] === "boolean") return plan.extra["fitsOneRequest"];
  return plan.totalBytes <= budgetBytes;
}

/** Largest context (in the engine's allocation steps, up to the training context) that fits
 *  `budgetBytes` under `settings`; 0 when none does. */
export function largestFittingCtx(spec: ModelSpec, engine: EngineName, settings: PlanSettings, budgetBytes: number): number {
  const step = ctxGranularity(engine, settings);
  const cap = spec.nCtxTrain ?? MAX_CONTEXT_TOKENS;
  const windowed = engine === "webllm" || engine === "kvbound";
  const fits = (ctx: number): boolean => {
    const s: PlanSettings = windowed ? { ...settings, ctx, contextWindowSize: ctx, slidingWindowSize: -1 } : { ...settings, ctx };
    return planFits(planMemory(spec, { ...s, engine, budgetBytes }), budgetBytes);
  };
  return largestFitting(step, cap, fits) ?? 0;
}

const FLAG_NAMES: ReadonlyArray<readonly [keyof PlanSettings, string]> = [
  ["ctx", "--ctx"],
  ["typeK", "--type-k"],
  ["typeV", "--type-v"],
  ["flashAttn", "--flash-attn"],
  ["kvCacheDtype", "--kv-cache-dtype"],
  ["codec", "--codec"],
  ["contextWindowSize", "--context-window"],
  ["slidingWindowSize", "--sliding-window"],
  ["attentionSinkSize", "--sinks"],
];

/** The CLI flags for the settings in `chosen` that differ from what the user gave in `given`. */
export function flagsFor(chosen: PlanSettings, given: PlanSettings): string {
  const parts: string[] = [];
  for (const [key, flag] of FLAG_NAMES) {
    const v = chosen[key];
    if (v === undefined || v === given[key]) continue;
    parts.push(`${flag} ${typeof v === "boolean" ? (v ? "on" : "off") : String(v)}`);
  }
  return parts.join(" ");
}

/** What to change so a plan that misses the budget fits: the cheapest KV setting for the same
 *  context, else the largest context that fits with the cheapest setting, else the reason. */
export function suggestFix(spec: ModelSpec, parsed: ParsedSettings, ctx: number): string | null {
  const budgetBytes = parsed.budgetBytes;
  if (budgetBytes === undefined) return null;
  const cheapest = cheapestFor(spec, ctx, { ...parsed.settings, engine: parsed.engine, budgetBytes });
  if (cheapest.fits) {
    const flags = flagsFor(cheapest.settings, parsed.settings);
    return `${flags} (${cheapest.label}: ${formatBytes(cheapest.bytes)})`;
  }
  // The same context cannot fit: offer the largest context each KV type allows.
  const fit = fitContexts(spec, { ...parsed.settings, engine: parsed.engine, budgetBytes });
  const tries: string[] = [];
  for (const o of fit.options) {
    if (o.bounded || o.maxCtx === null) continue;
    tries.push(`${flagsFor({ ...o.settings, ctx: o.maxCtx }, parsed.settings)} (${o.label})`);
  }
  if (tries.length > 0) return `${tries.join(", or ")}; or a smaller quantization`;
  return cheapest.reason;
}

export async function fitCommand(model: string, flags: FitFlags, io: CliIo): Promise<number> {
  const parsed = parseSettings(flags);
  const budgetBytes = parsed.budgetBytes!; // --budget is a required option
  const spec = await loadModelSpec(model, { quant: parsed.quant, fetch: io.fetch });
  const { ctx, ...rest } = parsed.settings;
  const fit = fitContexts(spec, { ...rest, engine: parsed.engine, budgetBytes });
  const cheapest = ctx !== undefined ? cheapestFor(spec, ctx, { ...rest, engine: parsed.engine, budgetBytes }) : undefined;
  if (flags.json) {
    io.stdout(`${JSON.stringify({ model: spec.name, source: spec.source, ...fit, ...(cheapest ? { ctx, cheapest: stripPlan(cheapest) } : {}) }, null, 2)}\n`);
    return 0;
  }
  io.stdout(renderFit(spec, fit, rest));
  if (cheapest !== undefined && ctx !== undefined) io.stdout(`${renderCheapest(ctx, cheapest, rest)}\n`);
  return 0;
}

/** The JSON form of a cheapest result: the plan is summarized by its total (plan it to see it). */
function stripPlan(c: CheapestResult): unknown {
  if (!c.fits) return c;
  const { plan, ...rest } = c;
  return { ...rest, totalBytes: plan.totalBytes };
}

export function renderFit(spec: ModelSpec, fit: FitResult, given: PlanSettings): string {
  const out: string[] = [];
  out.push(`model    ${spec.name} (${spec.arch}, ${spec.nLayer} layers${spec.nCtxTrain !== null ? `, training context ${spec.nCtxTrain}` : ""})`);
  out.push(`source   ${spec.source}`);
  out.push(`engine   ${fit.engine}, budget ${formatBytes(fit.budgetBytes)}, context in steps of ${fit.granularity} tokens`);
  out.push("");
  const rows: string[][] = [["KV setting", "max ctx", "bytes at max", "limited by", "flags"]];
  for (const o of fit.options) {
    rows.push([
      o.label,
      o.maxCtx === null ? "none" : formatInt(o.maxCtx),
      o.bytesAtMax === null ? "" : formatBytes(o.bytesAtMax),
      o.limitedBy === "nCtxTrain" ? "training ctx" : o.limitedBy,
      o.maxCtx === null ? "" : flagsFor(o.bounded ? o.settings : { ...o.settings, ctx: o.maxCtx }, given),
    ]);
  }
  out.push(table(rows, ["l", "r", "r", "l", "l"]));
  const notes = [...fit.notes];
  for (const o of fit.options) notes.push(`${o.label}: ${o.note}`);
  out.push("");
  out.push("notes:");
  for (const n of notes) out.push(`  - ${n}`);
  out.push("");
  return out.join("\n");
}

export function renderCheapest(ctx: number, c: CheapestResult, given: PlanSettings): string {
  if (c.fits) {
    const flags = flagsFor(c.settings, { ...given, ctx });
    return `cheapest for ctx ${ctx}: ${c.label}, ${formatBytes(c.bytes)}${flags ? `: ${flags}` : " (as given)"}\n  ${c.note}`;
  }
  return `ctx ${ctx} does not fit: ${c.reason}`;
}
