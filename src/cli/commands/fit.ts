// `kvbound fit <model> --budget B`: the largest context per KV type (and the bounded choice),
// and with --ctx the cheapest settings that make it fit. For the kvbound engine it also prints the
// `kvbound run` command of each option, in flags `kvbound run` accepts (src/plan/advice.ts).

import { kvboundRunFlags, planFlagsFor, shellWord } from "../../plan/advice.js";
import { exportPlan } from "../../plan/export.js";
import { cheapestFor, fitContexts, fitOffload, type CheapestResult, type FitOption, type FitResult, type OffloadFitResult, type OffloadOption } from "../../plan/fit.js";
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
  const gpus = parsed.settings.gpus;
  if (parsed.budgetBytes === undefined && gpus === undefined) {
    io.stderr("error: required option '--budget <bytes>' not specified (or give llama.cpp's devices: --gpu 8GiB)\n");
    return 2;
  }
  const spec = await loadModelSpec(model, { quant: parsed.quant, fetch: io.fetch });
  const { ctx, ...rest } = parsed.settings;
  if (gpus !== undefined && ctx !== undefined) {
    // "How many layers can I offload at this context, and what stays in RAM?"
    const offload = fitOffload(spec, ctx, rest);
    if (flags.json) {
      io.stdout(`${JSON.stringify({ model: spec.name, source: spec.source, ...offload, options: offload.options.map(stripOffloadPlan) }, null, 2)}\n`);
      return 0;
    }
    io.stdout(renderOffload(spec, offload, rest));
    return 0;
  }
  // With devices and no context: the largest context at one offload (every layer, or --ngl), judged
  // per device; the budget is then only a nominal figure (the devices' sum).
  const budgetBytes = parsed.budgetBytes ?? nominalBudget(rest);
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

function nominalBudget(settings: PlanSettings): number {
  let sum = settings.ramBytes ?? 0;
  for (const g of settings.gpus ?? []) sum += g;
  return sum;
}

/** The JSON form of an offload option: devices and flags, without the whole plan. */
function stripOffloadPlan(o: OffloadOption): unknown {
  const { plan, ...rest } = o;
  return { ...rest, flags: plan === null ? null : exportPlan(plan, "llama.cpp") };
}

/** `kvbound fit M --gpu 8GiB --ctx 32k`: per KV type, the -ngl llama.cpp's --fit picks, each
 *  device's bytes, what stays in RAM, and the llama.cpp flags that realize it. */
export function renderOffload(spec: ModelSpec, r: OffloadFitResult, given: PlanSettings): string {
  const out: string[] = [];
  out.push(`model    ${spec.name} (${spec.arch}, ${spec.nLayer} layers + the output layer${spec.nCtxTrain !== null ? `, training context ${spec.nCtxTrain}` : ""})`);
  out.push(`source   ${spec.source}`);
  const reserve = r.options.find((o) => o.devices.length > 0)?.devices[0]?.reserve ?? 0;
  out.push(
    `engine   llama.cpp, ctx ${r.ctx}, ${r.gpus.map((g, i) => `GPU${i} ${formatBytes(g)}`).join(", ")}` +
      `${reserve > 0 ? ` (keeping ${formatBytes(reserve)} free on each, --fit-target)` : ""}${given.ramBytes !== undefined ? `, RAM ${formatBytes(given.ramBytes)}` : ""}`,
  );
  out.push("");
  const names = r.gpus.map((_, i) => `GPU${i}`);
  const rows: string[][] = [["KV setting", "-ngl", ...names, "CPU (RAM)", "fits", "kvbound flags"]];
  for (const o of r.options) {
    if (o.plan === null) {
      rows.push([o.label, "", ...names.map(() => ""), "", "n/a", ""]);
      continue;
    }
    const dev = (name: string): string => {
      const d = o.devices.find((x) => x.name === name);
      return d === undefined ? "" : formatBytes(d.total);
    };
    rows.push([
      o.label,
      o.nGpuLayers === null ? "?" : `${o.nGpuLayers}/${spec.layers.length + 1}`,
      ...names.map(dev),
      dev("CPU"),
      o.fits ? "yes" : "no",
      planFlagsFor(o.settings, given),
    ]);
  }
  out.push(table(rows, ["l", "r", ...names.map((): "r" => "r"), "r", "l", "l"]));
  out.push("");
  out.push("llama.cpp flags:");
  for (const o of r.options) if (o.plan !== null) out.push(`  ${o.label.padEnd(10)} ${exportPlan(o.plan, "llama.cpp")}`);
  out.push("");
  out.push("notes:");
  for (const n of r.notes) out.push(`  - ${n}`);
  for (const o of r.options) out.push(`  - ${o.label}: ${o.note}`);
  const first = r.options.find((o) => o.plan !== null)?.plan;
  if (first) for (const n of first.notes.filter((x) => x.startsWith("per-device weights") || x.startsWith("device compute buffers"))) out.push(`  - ${n}`);
  out.push("");
  return out.join("\n");
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
  out.push(
    given.gpus !== undefined
      ? `engine   ${fit.engine}, ${given.gpus.map((g, i) => `GPU${i} ${formatBytes(g)}`).join(", ")}${given.ramBytes !== undefined ? `, RAM ${formatBytes(given.ramBytes)}` : ""}, context in steps of ${fit.granularity} tokens`
      : `engine   ${fit.engine}, budget ${formatBytes(fit.budgetBytes)}, context in steps of ${fit.granularity} tokens`,
  );
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
