// `kvbound fit <model> --budget B`: the largest context per KV type (and the bounded choice),
// and with --ctx the cheapest settings that make it fit. For the kvbound engine it also prints the
// `kvbound run` command of each option, in flags `kvbound run` accepts (src/plan/advice.ts).

import { kvboundRunFlags, planFlagsFor, shellWord } from "../../plan/advice.js";
import { cheapestFor, fitContexts, type CheapestResult, type FitOption, type FitResult } from "../../plan/fit.js";
import { KVBOUND_ARCHS } from "../../plan/kvbound.js";
import type { PlanSettings } from "../../plan/types.js";
import { loadModelSpec } from "../../spec/load.js";
import type { ModelSpec } from "../../spec/model-spec.js";
import { formatBytes, formatInt, table } from "../format.js";
import type { CliIo } from "../main.js";
import { parseSettings, type RawPlanFlags } from "../options.js";

export interface FitFlags extends RawPlanFlags {
  json?: boolean;
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
  io.stdout(renderFit(spec, fit, rest, model));
  const kvbound = fit.engine === "kvbound" ? { runRef: kvboundRunnable(spec) === null ? model : undefined } : undefined;
  if (cheapest !== undefined && ctx !== undefined) io.stdout(`${renderCheapest(ctx, cheapest, rest, kvbound)}\n`);
  return 0;
}

/** The JSON form of a cheapest result: the plan is summarized by its total (plan it to see it). */
function stripPlan(c: CheapestResult): unknown {
  if (!c.fits) return c;
  const { plan, ...rest } = c;
  return { ...rest, totalBytes: plan.totalBytes };
}

/** The flags of an option: `kvbound run` cache flags for the kvbound engine (they are valid
 *  `kvbound plan --engine kvbound` flags too), `kvbound plan` flags otherwise. */
function optionFlags(engine: FitResult["engine"], o: FitOption, given: PlanSettings): string {
  if (o.maxCtx === null) return "";
  const settings = o.bounded ? o.settings : { ...o.settings, ctx: o.maxCtx };
  if (engine === "kvbound") return kvboundRunFlags(runSettings(o, given));
  return planFlagsFor(settings, given);
}

/** Why `kvbound run --model <ref>` would refuse this model, or null when it takes it: it runs GGUF
 *  files (path, URL, hf:) of the architectures it has a forward pass for. */
function kvboundRunnable(spec: ModelSpec): string | null {
  if (!KVBOUND_ARCHS.includes(spec.arch)) return `kvbound run has no forward pass for ${spec.arch} (it runs ${KVBOUND_ARCHS.join(", ")})`;
  if (spec.weights?.source !== "gguf-tensors") return "kvbound run takes the model's GGUF file (a path, an http(s) URL or hf:owner/repo/file.gguf), not this reference";
  return null;
}

/** The settings `kvbound run` needs for a kvbound option: the user's (page size, prefill chunk)
 *  under the option's codec and window. */
function runSettings(o: FitOption, given: PlanSettings): PlanSettings {
  return o.bounded ? { ...given, ...o.settings } : { ...given, ...o.settings, contextWindowSize: o.maxCtx ?? undefined, slidingWindowSize: -1 };
}

/** `kvbound run --model <ref> --prompt "..." <flags>`: a command `kvbound run` accepts as printed. */
export function kvboundRunCommand(modelRef: string, settings: PlanSettings): string {
  return `kvbound run --model ${shellWord(modelRef)} --prompt "..." ${kvboundRunFlags(settings)}`.trimEnd();
}

export function renderFit(spec: ModelSpec, fit: FitResult, given: PlanSettings, modelRef?: string): string {
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
      optionFlags(fit.engine, o, given),
    ]);
  }
  out.push(table(rows, ["l", "r", "r", "l", "l"]));
  const runnable = kvboundRunnable(spec);
  if (fit.engine === "kvbound" && modelRef !== undefined && runnable !== null) {
    out.push("");
    out.push(`run it: ${runnable}; the flags column is what kvbound run takes`);
  } else if (fit.engine === "kvbound" && modelRef !== undefined) {
    const runs = fit.options.filter((o) => o.maxCtx !== null);
    if (runs.length > 0) {
      out.push("");
      out.push("run it:");
      for (const o of runs) {
        out.push(`  ${kvboundRunCommand(modelRef, runSettings(o, given))}`);
      }
    }
  }
  const notes = [...fit.notes];
  for (const o of fit.options) notes.push(`${o.label}: ${o.note}`);
  out.push("");
  out.push("notes:");
  for (const n of notes) out.push(`  - ${n}`);
  out.push("");
  return out.join("\n");
}

/** The cheapest settings for --ctx. For the kvbound engine (`kvbound`) the flags are the ones
 *  `kvbound run` takes, and with a runnable model its `kvbound run` command follows. */
export function renderCheapest(ctx: number, c: CheapestResult, given: PlanSettings, kvbound?: { runRef: string | undefined }): string {
  if (c.fits) {
    const flags = kvbound === undefined ? planFlagsFor(c.settings, { ...given, ctx }) : kvboundRunFlags(c.settings);
    const run = kvbound?.runRef === undefined ? "" : `\n  ${kvboundRunCommand(kvbound.runRef, c.settings)}`;
    return `cheapest for ctx ${ctx}: ${c.label}, ${formatBytes(c.bytes)}${flags ? `: ${flags}` : " (as given)"}\n  ${c.note}${run}`;
  }
  return `ctx ${ctx} does not fit: ${c.reason}`;
}
