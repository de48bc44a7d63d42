// The passkey settings `kvbound eval passkey` compares, and its markdown table and plot.

import { PASSKEY_CUE, PASSKEY_FACT, PASSKEY_NAMES, type PasskeyResult, type PasskeySetting } from "./passkey.js";
import { linePlot, type PlotSeries } from "./svg-plot.js";

/**
 * Filler variants: each trial set starts this many tokens into the name-free filler, so a result
 * is not the accident of one stretch of text. 6 names x 2 offsets = 12 trials per cell.
 */
export const PASSKEY_FILLER_OFFSETS: readonly number[] = [0, 5000];
/** Documents skipped before the filler is taken: the stream evaluation starts at document 0. */
export const PASSKEY_FILLER_SKIP_DOCS = 500;
/** The bounded settings hold 128 tokens (a quarter of the training context), so the fact leaves a window by distance ~110. */
export const PASSKEY_WINDOW = 128;

/** Share of trials that counts as "retrieves" in the summary column. */
export const RETRIEVED_SHARE = 0.75;

/** The longest distance up to which every cell retrieved at least RETRIEVED_SHARE of its trials ("-" if the first did not). */
export function retrievesUpTo(r: PasskeyResult): string {
  let last = "-";
  for (const c of r.cells) {
    if (c.retrieved < RETRIEVED_SHARE * c.trials) break;
    last = String(c.distance);
  }
  return last;
}

/** Every setting measured, in table order. */
export function passkeySettings(): PasskeySetting[] {
  const w = PASSKEY_WINDOW;
  return [
    { label: "dense", cache: {} },
    { label: `fifo-W${w}`, cache: { slidingWindowSize: w, policy: { kind: "fifo" } } },
    { label: `sinks4-W${w}`, cache: { slidingWindowSize: w, attentionSinkSize: 4 } },
    { label: `sinks4-W${2 * w}`, cache: { slidingWindowSize: 2 * w, attentionSinkSize: 4 } },
    { label: `prefix-recent-W${w}`, cache: { slidingWindowSize: w, policy: { kind: "prefix-recent", prefix: w / 4, positions: "reassigned" } } },
    { label: `h2o-W${w}`, cache: { slidingWindowSize: w, policy: { kind: "h2o", sinks: 4, positions: "reassigned" } } },
    { label: `tova-W${w}`, cache: { slidingWindowSize: w, policy: { kind: "tova", sinks: 4, positions: "reassigned" } } },
  ];
}

function describe(s: PasskeySetting): string {
  const c = s.cache;
  if (c.slidingWindowSize === undefined) return "context window holding the whole prompt (positions grow with the distance)";
  const p = c.policy;
  const w = c.slidingWindowSize;
  if (p === undefined || p.kind === "sliding") return `sinks ${c.attentionSinkSize ?? 0} + window ${w - (c.attentionSinkSize ?? 0)}`;
  if (p.kind === "prefix-recent") return `first ${p.prefix} tokens + the most recent ${w - (p.prefix ?? 0)}`;
  if (p.kind === "h2o") return `h2o, ${w} tokens: 4 sinks, recent and heavy hitters split evenly`;
  if (p.kind === "tova") return `tova, ${w} tokens: 4 sinks`;
  return `${p.kind}, window ${w}`;
}

/** Markdown body of `## Passkey retrieval`. */
export function passkeyMarkdown(
  results: readonly PasskeyResult[],
  settings: readonly PasskeySetting[],
  meta: { command: string; machine: string; wallSeconds: number; plotsDir: string | null },
): string {
  const out: string[] = [];
  const k = results[0]?.candidates ?? PASSKEY_NAMES.length;
  const distances = results[0]?.cells.map((c) => c.distance) ?? [];
  out.push(
    `A name is stated once at the start of the prompt, name-free TinyStories sentences follow (every sentence naming anyone is dropped), then a cue. ` +
      `Prompt: BOS + "${PASSKEY_FACT.replace("{name}", "<name>")}" + *d* filler tokens + "${PASSKEY_CUE}". ` +
      `Scoring: the log-probability of each candidate name (${PASSKEY_NAMES.join(", ")}; all its tokens summed) as the cue's continuation; ` +
      `a trial retrieves the fact when the true name ranks first. Every candidate takes its turn as the true name over the same filler, ` +
      `so a model that ignores the fact and follows its prior retrieves exactly 1 in ${k} (chance ${(100 / k).toFixed(0)}%). ` +
      `Cells: trials retrieved of ${results[0]?.cells[0]?.trials ?? "-"} (${k} names x ${PASSKEY_FILLER_OFFSETS.length} filler stretches); distance = filler tokens between the fact and the cue.`,
  );
  out.push("");
  out.push("```sh");
  out.push(meta.command);
  out.push("```");
  out.push("");
  out.push(`Machine: ${meta.machine}. Wall time: ${(meta.wallSeconds / 60).toFixed(1)} min.`);
  out.push("");
  out.push(`| setting | cache | ${distances.map((d) => `d=${d}`).join(" | ")} | retrieves up to |`);
  out.push(`| --- | --- | ${distances.map(() => "---:").join(" | ")} | ---: |`);
  for (let i = 0; i < results.length; i++) {
    const r = results[i]!;
    const s = settings[i]!;
    out.push(`| \`${r.label}\` | ${describe(s)} | ${r.cells.map((c) => `${c.retrieved}/${c.trials}`).join(" | ")} | ${retrievesUpTo(r)} |`);
  }
  out.push("");
  out.push(
    `*retrieves up to* = the longest distance up to which every measured distance retrieved at least ${RETRIEVED_SHARE * 100}% of the trials. ` +
      "The cue was chosen by a calibration with dense attention at short distances: \"The girl's name was\" and \"Her name was\" ranked the true name first in at most half of the trials even at distance 0, \"One day,\" (how TinyStories bring the hero back) in most.",
  );
  out.push("");
  out.push("Mean margin (log-probability of the true name minus the best other candidate; > 0 means retrieved on average):");
  out.push("");
  out.push(`| setting | ${distances.map((d) => `d=${d}`).join(" | ")} |`);
  out.push(`| --- | ${distances.map(() => "---:").join(" | ")} |`);
  for (const r of results) out.push(`| \`${r.label}\` | ${r.cells.map((c) => c.meanMargin.toFixed(2)).join(" | ")} |`);
  out.push("");
  if (meta.plotsDir !== null) out.push(`![passkey retrieval against distance](${meta.plotsDir}/passkey.svg)`);
  return out.join("\n");
}

/** Retrieval rate against distance (distances > 0, log axis), one line per setting, chance dashed. */
export function passkeyPlot(results: readonly PasskeyResult[]): string {
  const series: PlotSeries[] = results.map((r) => ({
    label: r.label,
    points: r.cells.filter((c) => c.distance > 0).map((c) => [c.distance, c.retrieved / c.trials] as [number, number]),
    markers: true,
  }));
  const k = results[0]?.candidates ?? PASSKEY_NAMES.length;
  const ds = results[0]?.cells.filter((c) => c.distance > 0).map((c) => c.distance) ?? [1];
  series.push({ label: `chance (1/${k})`, points: [[ds[0]!, 1 / k], [ds[ds.length - 1]!, 1 / k]], color: "#999999", dashed: true });
  return linePlot({
    title: "Passkey: share of trials that rank the true name first",
    xLabel: "filler tokens between the fact and the cue",
    yLabel: "retrieved",
    series,
    logX: true,
    yMin: 0,
    yMax: 1,
  });
}
