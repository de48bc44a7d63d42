// `kvbound rank --budget B --ctx N`: the registry's models that hold N tokens in B, best first,
// and the ones that do not, demoted with the reason; `kvbound list`: the registry ids.

import { rankModels, type RankResult } from "../../plan/rank.js";
import { listRegistry } from "../../spec/registry.js";
import { formatBytes, formatParams, table } from "../format.js";
import type { CliIo } from "../main.js";
import { parseSettings, type RawPlanFlags } from "../options.js";

export interface RankFlags extends RawPlanFlags {
  json?: boolean;
}


export async function rankCommand(flags: RankFlags, io: CliIo): Promise<number> {
  const parsed = parseSettings(flags);
  const budgetBytes = parsed.budgetBytes!; // --budget is a required option
  const { ctx, ...rest } = parsed.settings;
  const result = rankModels({
    ...rest,
    engine: parsed.engine,
    budgetBytes,
    ctx: ctx ?? 32 * 1024,
    ...(parsed.quant !== undefined ? { quant: parsed.quant } : {}),
  });
  if (flags.json) {
    io.stdout(`${JSON.stringify({ engine: parsed.engine, ...result }, null, 2)}\n`);
    return 0;
  }
  io.stdout(renderRank(result, parsed.engine));
  return 0;
}

export function renderRank(result: RankResult, engine: string): string {
  const out: string[] = [];
  const fitting = result.models.filter((m) => m.fits);
  const demoted = result.models.filter((m) => !m.fits);
  out.push(`${fitting.length} of ${result.models.length} registry models hold ${result.ctx} tokens in ${formatBytes(result.budgetBytes)} on ${engine}, best first:`);
  out.push("");
  if (fitting.length > 0) {
    const rows: string[][] = [["#", "model", "params", "quant", "KV setting", engine === "vllm" ? "KV/request" : "total", "spare"]];
    for (let i = 0; i < fitting.length; i++) {
      const m = fitting[i]!;
      rows.push([
        String(i + 1),
        m.id,
        formatParams(m.params),
        m.quant,
        m.kvSetting,
        formatBytes(m.bytes),
        m.headroomBytes === null ? "" : formatBytes(m.headroomBytes),
      ]);
    }
    out.push(table(rows, ["r", "l", "r", "l", "l", "r", "r"]));
    out.push("");
  }
  if (demoted.length > 0) {
    out.push(`cannot hold the context (${demoted.length}), closest first:`);
    for (const m of demoted) out.push(`  ${m.id} ${m.quant} (${formatParams(m.params)}): ${m.reason}`);
    out.push("");
  }
  return out.join("\n");
}

/** `kvbound list`: every registry id with its size and quantizations. */
export function listCommand(flags: { json?: boolean }, io: CliIo): number {
  const entries = listRegistry();
  if (flags.json) {
    io.stdout(`${JSON.stringify(entries.map((e) => ({ id: e.id, name: e.name, params: e.params, defaultQuant: e.defaultQuant, quants: Object.keys(e.weights), source: e.source })), null, 2)}\n`);
    return 0;
  }
  const rows: string[][] = [["id", "name", "params", "arch", "quants (default first)"]];
  for (const e of entries) {
    const quants = [e.defaultQuant, ...Object.keys(e.weights).filter((q) => q !== e.defaultQuant)];
    rows.push([e.id, e.name, formatParams(e.params), String(e.metadata["general.architecture"] ?? "?"), quants.join(" ")]);
  }
  io.stdout(`${table(rows, ["l", "l", "r", "l", "l"])}\n`);
  return 0;
}
