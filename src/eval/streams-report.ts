// The long-stream results as a reader gets them: markdown tables for docs/RESULTS.md and the SVG
// plots next to it, all computed from the measured rows (nothing here is typed in by hand).

import { rangePerplexity } from "../engine/perplexity.js";
import type { StreamConfig } from "./streams-matrix.js";
import type { StreamRowResult } from "./streams-run.js";
import { linePlot, PALETTE, type PlotSeries } from "./svg-plot.js";

export interface StreamRun {
  readonly row: StreamConfig;
  readonly result: StreamRowResult;
}

/** Coarse position ranges of the per-segment table: inside training length, just past, far past. */
export const REPORT_RANGES: readonly (readonly [number, number])[] = [
  [0, 512],
  [512, 1024],
  [1024, 2048],
  [2048, 4096],
  [4096, 8192],
  [8192, 32768],
  [32768, Infinity],
];
/** Predictions per point of the perplexity-against-position plots. */
export const PLOT_SEGMENT_TOKENS = 2048;

function fmtPpl(v: number): string {
  if (!Number.isFinite(v)) return "-";
  return v >= 100 ? v.toFixed(1) : v.toFixed(3);
}

function rate(v: number): string {
  return v >= 10 ? v.toFixed(0) : v.toFixed(2);
}

function kib(bytes: number): string {
  return `${(bytes / 1024).toFixed(1)} KiB`;
}

function mdTable(header: readonly string[], rows: readonly (readonly string[])[], leftColumns = 1): string {
  const out = [`| ${header.join(" | ")} |`, `| ${header.map((_, i) => (i < leftColumns ? "---" : "---:")).join(" | ")} |`];
  for (const r of rows) out.push(`| ${r.join(" | ")} |`);
  return out.join("\n");
}

/** Perplexity of `r` over the predictions where `mask` (another row's nlls) is not NaN. */
export function pairedPerplexity(r: StreamRowResult, mask: Float32Array): { ppl: number; n: number } {
  let s = 0;
  let n = 0;
  const m = Math.min(r.nlls.length, mask.length);
  for (let i = 0; i < m; i++) {
    const a = mask[i]!;
    const v = r.nlls[i]!;
    if (a === a && v === v) {
      s += v;
      n++;
    }
  }
  return { ppl: n > 0 ? Math.exp(s / n) : NaN, n };
}

/** The row's H2O score window, or null (not h2o, or plain h2o). */
function scoreWindowOf(r: StreamRun): number | null {
  const p = r.result.config.policy;
  return p.kind === "h2o" ? (p.scoreWindow ?? null) : null;
}

function rangeLabel([a, b]: readonly [number, number]): string {
  return b === Infinity ? `${a}..end` : `${a}..${b - 1}`;
}

/** The markdown body of `## Long streams` (without the heading). */
export function streamsMarkdown(runs: readonly StreamRun[], meta: { command: string; machine: string; wallSeconds: number; plotsDir: string | null; plotPrefix?: string }): string {
  const by = new Map(runs.map((r) => [r.row.id, r]));
  const out: string[] = [];
  const stream = runs.find((r) => r.row.group !== "dense")?.result.tokens ?? runs[0]?.result.tokens ?? 0;
  let cpu = 0;
  for (const r of runs) cpu += r.result.cpuSeconds;
  out.push(
    `stories260K (\`../shared/models/stories260K.gguf\`, trained at ${512} tokens) over \`../shared/text/tinystories-valid-excerpt.txt\` ` +
      `streamed as BOS + tokens per story: ${stream.toLocaleString("en-US")} tokens per bounded row. The stream is fed through the paged cache ` +
      `(in batches until the window is full, then one token at a time: each token sees what the cache keeps) and the next token's NLL recorded ` +
      `(\`kvbound ppl\`); perplexity = exp(mean NLL).`,
  );
  out.push("");
  out.push("```sh");
  out.push(meta.command);
  out.push("```");
  out.push("");
  out.push(`Machine: ${meta.machine}. Wall time of this run: ${(meta.wallSeconds / 60).toFixed(1)} min (${(cpu / 60).toFixed(1)} CPU-min in the workers).`);
  out.push("");
  out.push(
    "Definitions. *window W* = tokens the cache holds, sinks included (`slidingWindowSize`; \"sinks 4 + window 252\" is W = 256). " +
      "Evicting rows give cached tokens positions by their place in the cache (`positions: reassigned`) unless marked *original positions*. " +
      (by.has("dense")
        ? "*dense* = a context window holding the whole stream, positions growing with the text (capped at " +
          `${by.get("dense")!.result.tokens.toLocaleString("en-US")} tokens: its cost per token grows with the position). `
        : "") +
      "*oracle* = StreamingLLM's sliding window with re-computation: each predicted token gets a fresh pass over the previous W tokens at positions 0..W-1; " +
      `it predicts every ${runs.find((r) => r.row.group === "oracle")?.row.recomputeEvery ?? "-"}th token only, and the other rows are compared with it on exactly those tokens. ` +
      "*25% / 50%* budgets of prefix-recent, h2o and tova = a cache of 25% / 50% of the 512-token training context (W = 128 / 256); " +
      "prefix-recent keeps the first W/4 tokens of the stream plus the most recent ones; h2o keeps 4 sinks and splits the rest evenly between recent and heavy-hitter tokens; tova keeps 4 sinks and evicts the token with the least attention from the newest query. " +
      "*h2o score window N* (`h2o-swN-*`) = h2o whose heavy-hitter scores sum the attention of the last N tokens' queries only, so an old heavy hitter ages out (plain h2o sums every query since the token arrived). " +
      "*bytes* = what the cache's stores reserved; *planned* = `kvboundKvForConfig` (the planner's `kvbound` rule) for the same config.",
  );
  out.push("");

  out.push("### All rows");
  out.push("");
  const all: string[][] = [];
  for (const r of runs) {
    const x = r.result;
    all.push([
      `\`${r.row.id}\``,
      r.row.label,
      x.tokens.toLocaleString("en-US"),
      fmtPpl(x.ppl),
      kib(x.bytesReserved),
      x.plannedBytes === x.bytesReserved ? "= bytes" : `**${kib(x.plannedBytes)}**`,
      kib(x.peakBytesUsed),
      rate(x.tokensPerSecond),
      rate((x.tokens - 1) / x.cpuSeconds),
    ]);
  }
  out.push(mdTable(["id", "setting", "tokens", "ppl", "bytes", "planned", "peak in use", "tok/s (wall)", "tok/s (CPU)"], all, 2));
  out.push("");
  out.push(
    "tok/s (wall) = predictions per wall-clock second of the row's worker; other processes shared the two cores during the run, so " +
      "tok/s (CPU) = predictions per CPU-second of that worker is the figure that does not depend on the machine's load " +
      "(the oracle rows run up to W forward passes per prediction).",
  );
  out.push("");

  out.push("### Perplexity by position");
  out.push("");
  const keyIds = ["dense", "sinks4-W256-original", "fifo-W256", "sinks4-W256", "sinks4-W64", "sinks4-W448", "h2o-50", "tova-50", "prefix-recent-50"];
  const segRows: string[][] = [];
  for (const id of keyIds) {
    const r = by.get(id);
    if (!r) continue;
    const cells = [`\`${id}\``];
    for (const range of REPORT_RANGES) {
      const end = Math.min(range[1], r.result.nlls.length);
      cells.push(range[0] < end ? fmtPpl(rangePerplexity(r.result.nlls, range[0], end)) : "-");
    }
    segRows.push(cells);
  }
  out.push(mdTable(["positions", ...REPORT_RANGES.map(rangeLabel)], segRows));
  out.push("");
  out.push("Every row's perplexity per 512-token segment is in `kvbound eval streams --json` (`segments`).");
  out.push("");

  const sinkGrid: string[][] = [];
  const windows = [...new Set(runs.filter((r) => r.row.group === "sliding" || r.row.group === "fifo").map((r) => r.row.window))].sort((a, b) => a - b);
  if (windows.length > 0) {
    out.push("### Sinks and windows (perplexity over the whole stream)");
    out.push("");
    for (const s of [0, 1, 2, 4, 8]) {
      const cells = [s === 0 ? "0 (fifo)" : String(s)];
      let any = false;
      for (const w of windows) {
        const r = by.get(s === 0 ? `fifo-W${w}` : `sinks${s}-W${w}`);
        if (r) any = true;
        cells.push(r ? fmtPpl(r.result.ppl) : "-");
      }
      if (any) sinkGrid.push(cells);
    }
    out.push(mdTable(["sinks \\ W", ...windows.map((w) => `W ${w}`)], sinkGrid));
    out.push("");
  }

  const oracles = runs.filter((r) => r.row.group === "oracle");
  if (oracles.length > 0) {
    out.push("### Against the recompute oracle (same predicted tokens)");
    out.push("");
    const rows: string[][] = [];
    for (const o of oracles) {
      const w = o.row.window;
      const cells = [`W ${w}`, o.result.forwardPasses.toLocaleString("en-US")];
      const n = pairedPerplexity(o.result, o.result.nlls).n;
      cells.push(String(n), fmtPpl(o.result.ppl));
      for (const id of [`sinks4-W${w}`, `fifo-W${w}`, `sinks1-W${w}`]) {
        const r = by.get(id);
        if (!r) {
          cells.push("-");
          continue;
        }
        const p = pairedPerplexity(r.result, o.result.nlls);
        cells.push(`${fmtPpl(p.ppl)} (${(((p.ppl - o.result.ppl) / o.result.ppl) * 100).toFixed(2)}%)`);
      }
      rows.push(cells);
    }
    out.push(mdTable(["window", "oracle passes", "tokens compared", "oracle ppl", "sinks 4 (diff)", "fifo (diff)", "sinks 1 (diff)"], rows));
    out.push("");
  }

  const windowed = runs.filter((r) => scoreWindowOf(r) !== null);
  if (windowed.length > 0) {
    out.push("### H2O score window (against plain h2o)");
    out.push("");
    const rows: string[][] = [];
    for (const r of runs) {
      if (r.result.config.policy.kind !== "h2o") continue;
      const n = scoreWindowOf(r);
      const plain = by.get(r.row.id.replace(/^h2o-sw\d+-/, "h2o-"));
      const d = plain && n !== null ? ((r.result.ppl - plain.result.ppl) / plain.result.ppl) * 100 : null;
      const last = REPORT_RANGES.find(([a, b]) => a < r.result.nlls.length && r.result.nlls.length <= b) ?? REPORT_RANGES[0]!;
      rows.push([
        `\`${r.row.id}\``,
        String(r.result.config.windowTokens),
        n === null ? "every query" : `last ${n}`,
        fmtPpl(r.result.ppl),
        d === null ? "(reference)" : `${d >= 0 ? "+" : ""}${d.toFixed(2)}%`,
        fmtPpl(rangePerplexity(r.result.nlls, last[0], r.result.nlls.length)),
        String(8 * (n === null ? 1 : n + 2)),
      ]);
    }
    out.push(mdTable(["id", "W", "scores sum", "ppl", "vs plain h2o", "ppl, last range", "score bytes per cached token"], rows));
    out.push("");
    out.push(
      "*ppl, last range* = perplexity from the last of the coarse ranges above to the end of the stream. The score window keeps N + 2 f64 per cached token " +
        "and sequence (a ring of the last N per-query weights, their sum and a clock), counted in the cache's scratch bytes; plain h2o keeps one.",
    );
    out.push("");
  }

  const f16 = by.get("sinks4-W256");
  const codecs = runs.filter((r) => r.row.group === "codec");
  if (f16 && codecs.length > 0) {
    out.push("### Codecs (sinks 4 + window 252)");
    out.push("");
    const rows: string[][] = [];
    for (const r of [f16, ...codecs]) {
      const codec = r.result.config.codec;
      const d = ((r.result.ppl - f16.result.ppl) / f16.result.ppl) * 100;
      rows.push([
        codec,
        fmtPpl(r.result.ppl),
        r === f16 ? "(reference)" : `${d >= 0 ? "+" : ""}${d.toFixed(3)}%`,
        r.result.bytesReserved.toLocaleString("en-US"),
        r.result.plannedBytes.toLocaleString("en-US"),
        r.result.plannedBytes === r.result.bytesReserved ? "yes" : "**no**",
      ]);
    }
    out.push(mdTable(["codec", "ppl", "vs f16", "bytes reserved", "planner (kvbound)", "equal"], rows));
    out.push("");
  }

  if (meta.plotsDir !== null) {
    const drawn = streamsPlots(runs);
    out.push("### Plots");
    out.push("");
    for (const [file, alt] of PLOT_FILES) if (drawn.has(file)) out.push(`![${alt}](${meta.plotsDir}/${meta.plotPrefix ?? ""}${file})`);
    out.push("");
  }
  return out.join("\n");
}

const PLOT_FILES: readonly (readonly [string, string])[] = [
  ["streams-ppl-position.svg", "perplexity against position: dense, original vs re-assigned positions"],
  ["streams-ppl-windows.svg", "perplexity against position for each window, with and without sinks"],
  ["streams-ppl-policies.svg", "perplexity against position for each eviction policy"],
  ["streams-ppl-codecs.svg", "perplexity against position for each codec"],
  ["streams-cache-bytes.svg", "cache bytes in use against tokens"],
];

function pplSeries(r: StreamRun, label = r.row.id, dashed = false): PlotSeries {
  const pts: [number, number][] = [];
  const n = r.result.nlls.length;
  for (let s = 0; s < n; s += PLOT_SEGMENT_TOKENS) {
    const e = Math.min(n, s + PLOT_SEGMENT_TOKENS);
    pts.push([(s + e) / 2, rangePerplexity(r.result.nlls, s, e)]);
  }
  return { label, points: pts, dashed };
}

/** The SVG plots, by file name. Rows missing from `runs` are left out of each plot. */
export function streamsPlots(runs: readonly StreamRun[]): Map<string, string> {
  const by = new Map(runs.map((r) => [r.row.id, r]));
  const pick = (ids: readonly string[]): StreamRun[] => ids.map((id) => by.get(id)).filter((r): r is StreamRun => r !== undefined);
  const plots = new Map<string, string>();
  const seg = `perplexity per ${PLOT_SEGMENT_TOKENS}-token segment`;
  // A comparison needs two lines; the bytes plot (the last) is worth drawing for one.
  const add = (file: string, title: string, series: PlotSeries[], logY: boolean, yLabel = seg, xLabel = "position in the stream (tokens)"): void => {
    if (series.length < (yLabel === seg ? 2 : 1)) return;
    plots.set(file, linePlot({ title, xLabel, yLabel, series, logY }));
  };
  add(
    "streams-ppl-position.svg",
    "Past the 512-token training length: dense and original positions collapse",
    pick(["dense", "sinks4-W256-original", "fifo-W256", "sinks4-W256"]).map((r) => pplSeries(r)),
    true,
  );
  // One colour per window: solid with sinks, dashed without.
  const win: PlotSeries[] = [];
  const windows = [64, 128, 256, 448];
  for (let i = 0; i < windows.length; i++) {
    const s = by.get(`sinks4-W${windows[i]}`);
    if (s) win.push({ ...pplSeries(s), color: PALETTE[i]! });
  }
  for (let i = 0; i < windows.length; i++) {
    const f = by.get(`fifo-W${windows[i]}`);
    if (f) win.push({ ...pplSeries(f, f.row.id, true), color: PALETTE[i]! });
  }
  add("streams-ppl-windows.svg", "Window size, with 4 sinks (solid) and without (dashed)", win, false);
  add(
    "streams-ppl-policies.svg",
    "Eviction policies at a 128- and 256-token budget",
    pick(["sinks4-W128", "prefix-recent-25", "h2o-25", "tova-25", "sinks4-W256", "prefix-recent-50", "h2o-50", "tova-50"]).map((r) => pplSeries(r)),
    false,
  );
  add(
    "streams-ppl-codecs.svg",
    "Codecs under sinks 4 + window 252",
    pick(["sinks4-W256-f32", "sinks4-W256", "sinks4-W256-int8", "sinks4-W256-fp8", "sinks4-W256-int4"]).map((r) =>
      pplSeries(r, r.row.id === "sinks4-W256" ? "sinks4-W256-f16" : r.row.id),
    ),
    false,
  );
  const bytes: PlotSeries[] = [];
  for (const r of pick(["dense", "sinks4-W448", "sinks4-W256", "sinks4-W128", "sinks4-W64", "h2o-50", "sinks4-W256-int8", "sinks4-W256-int4"])) {
    const pts: [number, number][] = [];
    for (const [t, b] of r.result.bytesTrace) if (b > 0) pts.push([t, b]);
    bytes.push({ label: r.row.id, points: pts });
  }
  add("streams-cache-bytes.svg", "Cache pages in use: bounded policies stay flat", bytes, true, "bytes of KV pages in use", "tokens fed");
  return plots;
}
