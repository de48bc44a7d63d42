// `kvbound plan [model]`: one model's memory plan as a table (or the MemoryPlan JSON, or the
// engine flags that realize it); without a model, the registry's models on this machine's memory.

import { totalmem } from "node:os";

import { InvalidSettingError } from "../../errors.js";
import { largestFittingCtx, suggestFix } from "../../plan/advice.js";
import { exportPlan, type ExportTarget } from "../../plan/export.js";
import { planMemory } from "../../plan/plan.js";
import type { MemoryPlan } from "../../plan/types.js";
import { planVerdict } from "../../plan/verdict.js";
import { loadModelSpec } from "../../spec/load.js";
import { listRegistry, registrySpec } from "../../spec/registry.js";
import type { CliIo } from "../main.js";
import { formatBytes, formatInt, formatParams, formatTokens, mib, table, type Align } from "../format.js";
import { parseSettings, type ParsedSettings, type RawPlanFlags } from "../options.js";
import { layerRanges } from "../../plan/llama-cpp-offload.js";

export interface PlanFlags extends RawPlanFlags {
  json?: boolean;
  export?: string;
}

const EXPORT_TARGETS: readonly ExportTarget[] = ["llama.cpp", "vllm", "webllm", "node-llama-cpp", "ollama", "mlx"];

function parseExportTarget(value: string): ExportTarget {
  for (const t of EXPORT_TARGETS) if (t === value.toLowerCase()) return t;
  throw new InvalidSettingError(`export ${JSON.stringify(value)} is unknown; use one of ${EXPORT_TARGETS.join(", ")}`, {
    setting: "export",
    value,
    allowed: EXPORT_TARGETS,
  });
}

export async function planCommand(model: string | undefined, flags: PlanFlags, io: CliIo): Promise<number> {
  const parsed = parseSettings(flags);
  const target = flags.export !== undefined ? parseExportTarget(flags.export) : undefined;
  if (model === undefined) {
    if (target !== undefined) {
      throw new InvalidSettingError("--export needs a model: kvbound plan <model> --export llama.cpp", { setting: "export", value: flags.export });
    }
    return machinePlan(parsed, flags.json === true, io, totalmem());
  }
  const spec = await loadModelSpec(model, { quant: parsed.quant, fetch: io.fetch });
  const plan = planMemory(spec, { ...parsed.settings, engine: parsed.engine });
  if (flags.json) {
    io.stdout(`${JSON.stringify(plan, null, 2)}\n`);
    return 0;
  }
  if (target !== undefined) {
    io.stdout(`${exportPlan(plan, target).trimEnd()}\n`);
    return 0;
  }
  io.stdout(renderPlan(plan));
  if (plan.devices !== undefined && plan.devices.some((d) => d.budget !== null)) {
    // Judged per device (src/plan/verdict.ts "devices" rule); the fix for a device that misses is
    // fewer layers: `kvbound fit` with the same --gpu and --ctx finds the most that fit.
    const v = planVerdict(plan, parsed.budgetBytes ?? 1);
    io.stdout(`${v.line}${v.fits ? "" : `; try kvbound fit ${model} --gpu ... --ctx ${String(plan.settings["ctx"])} for the most layers that fit, or --ngl lower`}\n`);
  } else if (parsed.budgetBytes !== undefined) {
    const ctx = typeof plan.settings["ctx"] === "number" ? plan.settings["ctx"] : parsed.settings.ctx;
    const budgetBytes = parsed.budgetBytes;
    io.stdout(`${verdictLine(plan, budgetBytes, () => (ctx === undefined ? null : suggestFix(spec, { ...parsed.settings, engine: parsed.engine, budgetBytes }, ctx)))}\n`);
  }
  return 0;
}

function settingsLine(settings: Readonly<Record<string, unknown>>): string {
  const parts: string[] = [];
  for (const [key, value] of Object.entries(settings)) {
    if (value === undefined || value === null) continue;
    parts.push(`${key} ${typeof value === "object" ? JSON.stringify(value) : String(value)}`);
  }
  return parts.join(", ");
}

function modelLine(model: Readonly<Record<string, unknown>>): string {
  const parts: string[] = [];
  const push = (label: string, key: string): void => {
    const v = model[key];
    if (v !== undefined && v !== null && v !== 0) parts.push(`${label} ${typeof v === "object" ? JSON.stringify(v) : String(v)}`);
  };
  push("arch", "arch");
  push("layers", "nLayer");
  push("n_embd", "nEmbd");
  push("heads", "nHead");
  push("kv heads", "nHeadKv");
  push("head dim", "headDimK");
  push("swa layers", "nSwaLayers");
  push("window", "nSwa");
  push("recurrent layers", "nRecurrentLayers");
  push("train ctx", "nCtxTrain");
  return parts.join(", ");
}

/** The human-readable plan: model, settings, one row per cache, then weights/compute/total and notes. */
export function renderPlan(plan: MemoryPlan): string {
  const out: string[] = [];
  const model = plan.model;
  out.push(`model    ${String(model["name"] ?? "?")} (${modelLine(model)})`);
  if (typeof model["source"] === "string") out.push(`source   ${model["source"]}`);
  out.push(`engine   ${plan.engine}: ${settingsLine(plan.settings)}`);
  out.push("");

  const recurrent = plan.kv.caches.some((c) => c.kind === "recurrent");
  const header = ["cache", "cells", "layers", "streams", "type K", "type V", "K MiB", "V MiB"];
  if (recurrent) header.push("R MiB", "S MiB");
  header.push("bytes/token");
  const rows: string[][] = [header];
  for (const c of plan.kv.caches) {
    const row = [c.kind, formatInt(c.cells), String(c.layers), String(c.streams), c.typeK, c.typeV, mib(c.kBytes), mib(c.vBytes)];
    if (recurrent) row.push(c.rBytes !== undefined ? mib(c.rBytes) : "", c.sBytes !== undefined ? mib(c.sBytes) : "");
    row.push(formatInt(c.bytesPerCell));
    rows.push(row);
  }
  const align: Align[] = ["l", "r", "r", "r", "l", "l", "r", "r", "r", "r", "r"];
  out.push(table(rows, align));
  out.push("");

  const totals: string[][] = [["", "MiB", ""]];
  totals.push(["KV cache", mib(plan.kv.totalBytes), `${formatBytes(plan.kv.totalBytes)} (K ${mib(plan.kv.kBytes)} + V ${mib(plan.kv.vBytes)} MiB)`]);
  totals.push(
    plan.weights
      ? ["weights", mib(plan.weights.bytes), `${formatBytes(plan.weights.bytes)} ${plan.weights.quant} (${plan.weights.source})`]
      : ["weights", "?", "unknown: pass a GGUF file, a safetensors index or a registry id"],
  );
  // kvbound's WebGPU plan counts every buffer (src/plan/webgpu.ts): exact, not an estimate.
  const exact = plan.settings["backend"] === "webgpu";
  totals.push(plan.compute ? ["compute", mib(plan.compute.bytes), `${formatBytes(plan.compute.bytes)} ${exact ? "GPU buffers (exact)" : "estimate"}`] : ["compute", "?", "unknown"]);
  totals.push(["total", mib(plan.totalBytes), formatBytes(plan.totalBytes)]);
  out.push(table(totals, ["l", "r", "l"]));
  if (plan.devices !== undefined) {
    out.push("");
    out.push(renderDevices(plan));
  }

  const notes = [...plan.notes];
  if (plan.extra !== undefined) {
    // Scalars only: nested engine facts (vLLM groups, rule records) are for --json readers.
    const facts: string[] = [];
    for (const [key, value] of Object.entries(plan.extra)) {
      if (typeof value === "number") facts.push(`${key} ${Number.isInteger(value) ? value : value.toFixed(2)}`);
      else if (typeof value === "string" || typeof value === "boolean") facts.push(`${key} ${String(value)}`);
    }
    if (facts.length > 0) notes.push(`${plan.engine}: ${facts.join(", ")}`);
  }
  if (notes.length > 0) {
    out.push("");
    out.push("notes:");
    for (const n of notes) out.push(`  - ${n}`);
  }
  out.push("");
  return out.join("\n");
}

/** The per-device table of a llama.cpp plan with --gpu: where each layer went and what it costs. */
export function renderDevices(plan: MemoryPlan): string {
  const devices = plan.devices ?? [];
  const nLayer = typeof plan.model["nLayer"] === "number" ? plan.model["nLayer"] : 0;
  const ngl = plan.settings["ngl"];
  const split = plan.settings["tensorSplit"];
  const rows: string[][] = [["device", "layers", "weights MiB", "KV MiB", "compute MiB", "total", "of", "fits"]];
  for (const d of devices) {
    const held: string[] = [];
    if (d.layers.length > 0) held.push(`${layerRanges(d.layers, ",")} (${d.layers.length})`);
    if (d.output) held.push("output");
    if (d.input) held.push("embeddings");
    rows.push([
      d.name,
      held.join(" + ") || "-",
      mib(d.weights),
      mib(d.kv),
      `~${mib(d.compute)}`,
      formatBytes(d.total),
      d.budget === null ? "" : `${formatBytes(d.budget)}${d.reserve > 0 ? ` - ${formatBytes(d.reserve)} kept free` : ""}`,
      d.fits === null ? "" : d.fits ? "yes" : "no",
    ]);
  }
  const head = `devices: -ngl ${String(ngl)} of ${nLayer + 1}${Array.isArray(split) ? `, --tensor-split ${split.join(",")}` : ""} (compute is an estimate)`;
  return `${head}\n${table(rows, ["l", "l", "r", "r", "r", "r", "l", "l"])}`;
}

/**
 * One line against a budget, from the one verdict (src/plan/verdict.ts): "fits: 5.21 GiB of 8.00 GiB
 * (65%)", or "does not fit: needs 1.20 GiB more (9.20 GiB of 8.00 GiB); try ...", with what the
 * figure leaves out. `suggest` is only run when the plan does not fit (it may plan many variants).
 */
export function verdictLine(plan: MemoryPlan, budgetBytes: number, suggest: () => string | null): string {
  const verdict = planVerdict(plan, budgetBytes);
  if (verdict.fits) return verdict.line;
  const fix = suggest();
  return verdict.line + (fix ? `; try ${fix}` : "");
}

// ---------------------------------------------------------------------------------------------
// `kvbound plan` without a model: the registry on this machine

/** The context the machine plan shows KV for: the training context, capped where most local use
 *  stops (32k), so the table answers "does it run here at a context I would use". */
export const MACHINE_PLAN_DEFAULT_CTX = 32 * 1024;

export interface MachinePlanRow {
  readonly id: string;
  readonly name: string;
  readonly params: number;
  readonly ctx: number;
  readonly plan: MemoryPlan | null;
  readonly fits: boolean;
  /** The context is past the model's training context (the memory may fit; the model is not trained for it). */
  readonly pastTraining: boolean;
  /** Largest context that fits the budget under the same settings (capped at the training
   *  context), 0 when not even the weights fit, null when unknown. */
  readonly maxCtx: number | null;
  readonly error: { readonly name: string; readonly message: string } | null;
}


/** Plans every registry model at min(training ctx, 32k) (or --ctx) against `budget`. */
export function machinePlanRows(parsed: ParsedSettings, budgetBytes: number): MachinePlanRow[] {
  const rows: MachinePlanRow[] = [];
  for (const entry of listRegistry()) {
    let ctx = parsed.settings.ctx ?? MACHINE_PLAN_DEFAULT_CTX;
    try {
      // --quant names one quant; entries that lack it keep their default rather than failing the table.
      const quant = parsed.quant !== undefined && Object.keys(entry.weights).some((q) => q.toUpperCase() === parsed.quant!.toUpperCase())
        ? parsed.quant
        : undefined;
      const spec = registrySpec(entry.id, quant);
      if (parsed.settings.ctx === undefined && spec.nCtxTrain !== null) ctx = Math.min(ctx, spec.nCtxTrain);
      const settings = { ...parsed.settings, ctx, budgetBytes };
      const plan = planMemory(spec, { ...settings, engine: parsed.engine });
      const maxCtx = largestFittingCtx(spec, parsed.engine, settings, budgetBytes);
      const verdict = planVerdict(plan, budgetBytes);
      rows.push({ id: entry.id, name: entry.name, params: entry.params, ctx, plan, fits: verdict.fits, pastTraining: verdict.pastTraining !== null, maxCtx, error: null });
    } catch (err) {
      // One model the settings do not suit (e.g. a quantized V it cannot take) must not hide the rest.
      const e = err instanceof Error ? err : new Error(String(err));
      rows.push({ id: entry.id, name: entry.name, params: entry.params, ctx, plan: null, fits: false, pastTraining: false, maxCtx: null, error: { name: e.name, message: e.message } });
    }
  }
  rows.sort((a, b) => (a.plan?.totalBytes ?? Infinity) - (b.plan?.totalBytes ?? Infinity));
  return rows;
}

export function machinePlan(parsed: ParsedSettings, json: boolean, io: CliIo, totalMemBytes: number): number {
  const budgetBytes = parsed.budgetBytes ?? totalMemBytes;
  const rows = machinePlanRows(parsed, budgetBytes);
  if (json) {
    io.stdout(`${JSON.stringify({ engine: parsed.engine, budgetBytes, totalMemBytes, models: rows }, null, 2)}\n`);
    return 0;
  }
  const fitting = rows.filter((r) => r.fits).length;
  const out: string[] = [];
  out.push(
    `kvbound plan: ${rows.length} built-in models, engine ${parsed.engine}, budget ${formatBytes(budgetBytes)} ` +
      (parsed.budgetBytes === undefined ? `(this machine's total memory; the OS and other programs need some of it)` : "(--budget)"),
  );
  out.push(`KV at ${parsed.settings.ctx === undefined ? "min(training context, 32k)" : `ctx ${parsed.settings.ctx}`}, default quant; "max ctx" = largest context that fits (up to the training context)`);
  out.push("");
  const table_: string[][] = [["model", "params", "quant", "weights", "ctx", "KV", "total", "fits", "max ctx"]];
  for (const r of rows) {
    if (r.plan === null) {
      table_.push([r.id, formatParams(r.params), "", "", formatTokens(r.ctx), "", "", "error", `${r.error?.name ?? ""}`]);
      continue;
    }
    const p = r.plan;
    table_.push([
      r.id,
      formatParams(r.params),
      p.weights?.quant ?? "?",
      p.weights ? formatBytes(p.weights.bytes) : "?",
      formatTokens(r.ctx),
      formatBytes(p.kv.totalBytes),
      formatBytes(p.totalBytes),
      r.fits ? (r.pastTraining ? "yes*" : "yes") : "no",
      r.maxCtx === null ? "?" : r.maxCtx === 0 ? "-" : r.maxCtx % 1024 === 0 ? formatTokens(r.maxCtx) : formatInt(r.maxCtx),
    ]);
  }
  out.push(table(table_, ["l", "r", "l", "r", "r", "r", "r", "l", "r"]));
  out.push("");
  if (rows.some((r) => r.fits && r.pastTraining)) out.push("* memory only: the context is past the model's training context");
  out.push(`${fitting} of ${rows.length} fit. Details: kvbound plan <model> --ctx 32k --budget ${formatBytes(budgetBytes).replace(" ", "")}; ` + `what fits best: kvbound rank --budget ${formatBytes(budgetBytes).replace(" ", "")} --ctx 32k`);
  for (const r of rows) if (r.error) out.push(`  ${r.id}: ${r.error.name}: ${r.error.message}`);
  io.stdout(`${out.join("\n")}\n`);
  return 0;
}

export type { ParsedSettings };
