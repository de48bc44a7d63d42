// `kvbound eval streams` and `kvbound eval passkey`: the long-stream matrix and the passkey task,
// run in worker processes (one per core), printed as a table or JSON, and with --out written into
// docs/RESULTS.md (only this command's own sections) and docs/plots/*.svg.

import { mkdir, readFile, writeFile } from "node:fs/promises";
import { availableParallelism, cpus } from "node:os";
import { join } from "node:path";
import { deserialize, serialize } from "node:v8";

import type { Command } from "commander";

import { InvalidSettingError } from "../../errors.js";
import { MAX_STREAM_TOKENS } from "../../engine/text-stream.js";
import { parseCount } from "../../plan/parse.js";
import type { EvalInit, EvalJob, EvalJobResult } from "../../eval/jobs.js";
import { PASSKEY_CUE, PASSKEY_DISTANCES, PASSKEY_FACT, PASSKEY_NAMES, type PasskeyResult } from "../../eval/passkey.js";
import { passkeyMarkdown, passkeyPlot, passkeySettings, PASSKEY_FILLER_OFFSETS, PASSKEY_FILLER_SKIP_DOCS } from "../../eval/passkey-report.js";
import { replaceSection } from "../../eval/results-md.js";
import { ORACLE_EVERY, selectRows, streamsMatrix, type StreamConfig } from "../../eval/streams-matrix.js";
import { streamsMarkdown, streamsPlots, type StreamRun } from "../../eval/streams-report.js";
import { denseRow, rowCacheConfig } from "../../eval/streams-run.js";
import { runJobs, MAX_WORKERS } from "../../eval/worker-pool.js";
import { addBackendFlag, backendFromFlags, type BackendFlags } from "../backend-flag.js";
import { table } from "../format.js";
import type { CliIo } from "../main.js";

export const DEFAULT_EVAL_MODEL = "../shared/models/stories260K.gguf";
export const DEFAULT_EVAL_TEXT = "../shared/text/tinystories-valid-excerpt.txt";
export const PASSKEY_SECTION = "## Passkey retrieval";
/** Tokens a passkey prompt takes besides its filler (BOS, fact, cue, a name), at most. */
const PASSKEY_PROMPT_MARGIN = 256;

interface CommonFlags extends BackendFlags {
  model: string;
  text: string;
  workers?: string;
  json?: boolean;
  out?: string;
}

interface StreamsFlags extends CommonFlags {
  maxTokens?: string;
  oracleEvery?: string;
  section?: string;
  save?: string;
  load?: string;
  skipDocs?: string;
  only?: string;
}

interface PasskeyFlags extends CommonFlags {
  only?: string;
  distances?: string;
  save?: string;
  load?: string;
}

export function registerEval(program: Command, io: CliIo, setExit: (code: number) => void): Command {
  const ev = program.command("eval").description("measure cache policies and codecs on real text (long streams, passkey retrieval)");
  const streams = ev.command("streams")
    .description("perplexity of every policy, window and codec over a long TinyStories stream, with cache bytes and tokens/s")
    .option("--model <ref>", "model", DEFAULT_EVAL_MODEL)
    .option("--text <file>", "text: documents separated by <|endoftext|> lines", DEFAULT_EVAL_TEXT)
    .option("--max-tokens <n>", "stream tokens per row (default: the whole text; dense is capped at 8192)")
    .option("--skip-docs <n>", "stories skipped at the start (the excerpt's first one is cut off; ../shared/golden skips it too)", "1")
    .option("--only <ids>", "rows whose id matches: comma-separated globs, e.g. 'sinks4-*,oracle-W256'")
    .option("--oracle-every <k>", `the recompute oracle predicts every k-th token (default ${ORACLE_EVERY})`)
    .option("--workers <n>", "worker processes (default: the number of cores)")
    .option("--json", "print the results as JSON")
    .option("--out <dir>", "write <dir>/RESULTS.md (section '## Long streams') and <dir>/plots/*.svg")
    .option("--section <title>", "the RESULTS.md section (and plot file prefix) to write", "Long streams")
    .option("--save <file>", "also save the raw results (per-token NLLs included) to re-render them later with --load")
    .option("--load <file>", "re-render results saved by --save instead of running");
  addBackendFlag(streams).action(async (flags: StreamsFlags) => {
    setExit(await evalStreamsCommand(flags, io));
  });
  const passkey = ev.command("passkey")
    .description("does a name stated once survive N tokens of filler under each cache policy?")
    .option("--model <ref>", "model", DEFAULT_EVAL_MODEL)
    .option("--text <file>", "text the filler is taken from", DEFAULT_EVAL_TEXT)
    .option("--only <labels>", "settings whose id matches: comma-separated globs")
    .option("--distances <list>", `filler tokens between fact and cue (default ${PASSKEY_DISTANCES.join(",")})`)
    .option("--workers <n>", "worker processes (default: the number of cores)")
    .option("--json", "print the results as JSON")
    .option("--out <dir>", "write <dir>/RESULTS.md (section '## Passkey retrieval') and <dir>/plots/passkey.svg")
    .option("--save <file>", "also save the raw results to re-render them later with --load")
    .option("--load <file>", "re-render results saved by --save instead of running");
  addBackendFlag(passkey).action(async (flags: PasskeyFlags) => {
    setExit(await evalPasskeyCommand(flags, io));
  });
  return ev;
}

/** Worker processes: --workers, else one per core on the CPU backend and one on WebGPU (the
 *  processes would share its one device). */
function workers(flags: CommonFlags): number {
  if (flags.workers !== undefined) return parseCount(flags.workers, "workers", MAX_WORKERS);
  return backendFromFlags(flags) === "webgpu" ? 1 : availableParallelism();
}

/** "AMD EPYC, 2 cores, Node v20.20.2, linux x64". */
export function machineLine(): string {
  const c = cpus();
  return `${c[0]?.model.trim() ?? "unknown CPU"}, ${c.length} cores, Node ${process.version}, ${process.platform} ${process.arch}`;
}

/** The command line a reader can paste to reproduce the run. */
function commandLine(sub: string, flags: Record<string, unknown>, keys: readonly string[]): string {
  const parts = ["npx tsx src/cli/main.ts eval", sub];
  for (const k of keys) {
    const v = flags[k];
    if (v === undefined || v === false) continue;
    const flag = `--${k.replace(/[A-Z]/g, (m) => `-${m.toLowerCase()}`)}`;
    parts.push(v === true ? flag : `${flag} ${/^[\w./:,-]+$/.test(String(v)) ? String(v) : `'${String(v)}'`}`);
  }
  return parts.join(" ");
}

async function writeSection(dir: string, heading: string, body: string, plots: Map<string, string>): Promise<void> {
  await mkdir(join(dir, "plots"), { recursive: true });
  for (const [file, svg] of plots) await writeFile(join(dir, "plots", file), svg);
  const path = join(dir, "RESULTS.md");
  const old = await readFile(path, "utf8").catch(() => "");
  await writeFile(path, replaceSection(old, heading, body));
}

/** The longest window the rows take over a stream of at most `maxTokens` tokens (a WebGPU model is
 *  built for it); undefined when a dense row's window is the whole text, not known before it is read. */
function longestWindow(rows: readonly StreamConfig[], maxTokens: number | undefined): number | undefined {
  let longest = 1;
  for (const r of rows) {
    const cap = Math.min(r.maxTokens ?? Infinity, maxTokens ?? Infinity);
    if (!Number.isFinite(cap) && denseRow(r)) return undefined;
    longest = Math.max(longest, rowCacheConfig(r, Number.isFinite(cap) ? cap : 2).windowTokens);
  }
  return longest;
}

/** Longest first, so the two workers finish together: the oracle and dense rows dominate. */
function costOrder(rows: readonly StreamConfig[]): StreamConfig[] {
  const cost = (r: StreamConfig): number => (r.recompute !== undefined ? r.recompute * 1000 : r.maxTokens !== undefined ? 300 : r.window);
  return [...rows].sort((a, b) => cost(b) - cost(a));
}

export async function evalStreamsCommand(flags: StreamsFlags, io: CliIo): Promise<number> {
  const maxTokens = flags.maxTokens === undefined ? undefined : parseCount(flags.maxTokens, "max-tokens", MAX_STREAM_TOKENS);
  const oracleEvery = flags.oracleEvery === undefined ? ORACLE_EVERY : parseCount(flags.oracleEvery, "oracle-every", MAX_STREAM_TOKENS);
  const matrix = streamsMatrix().map((r) => (r.recompute !== undefined ? { ...r, recomputeEvery: oracleEvery } : r));
  const backend = backendFromFlags(flags);
  const rows = selectRows(matrix, flags.only);
  const skipDocs = flags.skipDocs === undefined ? 1 : parseWhole(flags.skipDocs, "skip-docs");
  const nCtx = backend === "webgpu" ? longestWindow(rows, maxTokens) : undefined;
  const init: EvalInit = {
    model: flags.model, text: flags.text, skipDocs,
    ...(maxTokens !== undefined ? { maxTokens } : {}),
    ...(backend !== undefined ? { backend } : {}),
    ...(nCtx !== undefined ? { nCtx } : {}),
  };
  const jobs: EvalJob[] = costOrder(rows).map((row) => ({ kind: "stream", key: row.id, row }));
  const t0 = performance.now();
  let results: EvalJobResult[];
  let wallSeconds: number;
  let machine = machineLine();
  if (flags.load !== undefined) {
    const saved = deserialize(await readFile(flags.load)) as { results: EvalJobResult[]; wallSeconds: number; machine: string };
    results = saved.results.filter((r) => rows.some((x) => x.id === r.key));
    wallSeconds = saved.wallSeconds;
    machine = saved.machine;
  } else {
    results = await runJobs(init, jobs, {
      workers: workers(flags),
      onResult: (r, done, total) => {
        if (r.kind !== "stream") return;
        const x = r.result;
        io.stderr(`[${done}/${total}] ${x.id}: ppl ${x.ppl.toFixed(4)}, ${x.tokens} tokens, ${x.tokensPerSecond.toFixed(0)} tok/s, ${x.seconds.toFixed(0)} s\n`);
      },
    });
    wallSeconds = (performance.now() - t0) / 1000;
    if (flags.save !== undefined) await writeFile(flags.save, serialize({ results, wallSeconds, machine }));
  }
  const byId = new Map<string, StreamRun>();
  for (const r of results) if (r.kind === "stream") byId.set(r.key, { row: rows.find((x) => x.id === r.key)!, result: r.result });
  const runs = rows.filter((r) => byId.has(r.id)).map((r) => byId.get(r.id)!);
  const mismatched = runs.filter((r) => r.result.plannedBytes !== r.result.bytesReserved);

  if (flags.json) {
    const json = {
      machine,
      wallSeconds,
      rows: runs.map((r) => ({
        id: r.row.id,
        label: r.row.label,
        tokens: r.result.tokens,
        ppl: r.result.ppl,
        nll: r.result.nll,
        segments: r.result.segments,
        bytesReserved: r.result.bytesReserved,
        plannedBytes: r.result.plannedBytes,
        peakBytesUsed: r.result.peakBytesUsed,
        tokensPerSecond: r.result.tokensPerSecond,
        seconds: r.result.seconds,
        cpuSeconds: r.result.cpuSeconds,
      })),
    };
    io.stdout(`${JSON.stringify(json, null, 2)}\n`);
  } else {
    const t: string[][] = [["id", "tokens", "ppl", "bytes", "planned", "tok/s", "s"]];
    for (const r of runs) {
      const x = r.result;
      t.push([r.row.id, String(x.tokens), x.ppl.toFixed(4), String(x.bytesReserved), String(x.plannedBytes), x.tokensPerSecond.toFixed(0), x.seconds.toFixed(1)]);
    }
    io.stdout(`${table(t, ["l", "r", "r", "r", "r", "r", "r"])}\n\nwall time ${(wallSeconds / 60).toFixed(1)} min on ${machineLine()}\n`);
  }
  if (flags.out !== undefined) {
    const shown = { ...flags, ...(flags.section === "Long streams" ? { section: undefined } : {}), ...(flags.skipDocs === "1" ? { skipDocs: undefined } : {}) };
    const command = commandLine("streams", shown, ["maxTokens", "skipDocs", "only", "oracleEvery", "backend", "workers", "out", "section"]);
    const title = flags.section ?? "Long streams";
    const prefix = title === "Long streams" ? "" : `${title.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "")}-`;
    const body = streamsMarkdown(runs, { command, machine, wallSeconds, plotsDir: "plots", plotPrefix: prefix });
    const plots = new Map([...streamsPlots(runs)].map(([f, svg]) => [`${prefix}${f}`, svg] as [string, string]));
    await writeSection(flags.out, `## ${title}`, body, plots);
  }
  if (mismatched.length > 0) {
    io.stderr(`error: cache bytes differ from the planner's kvbound prediction for ${mismatched.map((r) => r.row.id).join(", ")}\n`);
    return 1;
  }
  return 0;
}

function parseWhole(v: string, setting: string): number {
  const n = Number(v.trim());
  if (v.trim() === "" || !Number.isSafeInteger(n) || n < 0) {
    throw new InvalidSettingError(`--${setting} ${JSON.stringify(v)} is invalid: use a whole number >= 0`, { setting, value: v });
  }
  return n;
}

function parseDistances(v: string | undefined): number[] | undefined {
  if (v === undefined) return undefined;
  const out: number[] = [];
  for (const part of v.split(",")) {
    const n = Number(part.trim());
    if (part.trim() === "" || !Number.isSafeInteger(n) || n < 0) {
      throw new InvalidSettingError(`--distances ${JSON.stringify(v)} is invalid: use comma-separated whole numbers, e.g. 0,64,256`, { setting: "distances", value: v });
    }
    out.push(n);
  }
  return out;
}

export async function evalPasskeyCommand(flags: PasskeyFlags, io: CliIo): Promise<number> {
  const distances = parseDistances(flags.distances) ?? [...PASSKEY_DISTANCES];
  const all = passkeySettings();
  let chosen = all;
  if (flags.only !== undefined) {
    const res = flags.only.split(",").map((p) => new RegExp(`^${p.trim().replace(/[.+?^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*")}$`));
    chosen = all.filter((s) => res.some((re) => re.test(s.label)));
    if (chosen.length === 0) {
      throw new InvalidSettingError(`--only ${JSON.stringify(flags.only)} matches no setting; they are ${all.map((s) => s.label).join(", ")}`, { setting: "only", value: flags.only });
    }
  }
  const backend = backendFromFlags(flags);
  // A WebGPU model is built for the longest window: a sliding setting's, or a dense prompt's (the
  // filler plus a margin for the fact, the cue and a name).
  let nCtx = Math.max(...distances) + PASSKEY_PROMPT_MARGIN;
  for (const s of chosen) nCtx = Math.max(nCtx, s.cache.slidingWindowSize ?? s.cache.contextWindowSize ?? 0);
  const init: EvalInit = {
    model: flags.model, text: flags.text, maxTokens: 2, fillerSkipDocs: PASSKEY_FILLER_SKIP_DOCS,
    ...(backend !== undefined ? { backend, nCtx } : {}),
  };
  const jobs: EvalJob[] = chosen.map((setting) => ({ kind: "passkey", key: setting.label, setting, options: { distances, fillerOffsets: PASSKEY_FILLER_OFFSETS } }));
  // Dense costs grow with the distance squared: start it first.
  jobs.sort((a, b) => (a.key === "dense" ? -1 : b.key === "dense" ? 1 : 0));
  const t0 = performance.now();
  let results: EvalJobResult[];
  let wallSeconds: number;
  if (flags.load !== undefined) {
    const saved = deserialize(await readFile(flags.load)) as { results: EvalJobResult[]; wallSeconds: number };
    results = saved.results.filter((r) => chosen.some((s) => s.label === r.key));
    wallSeconds = saved.wallSeconds;
    chosen = chosen.filter((s) => results.some((r) => r.key === s.label));
  } else {
    results = await runJobs(init, jobs, {
      workers: workers(flags),
      onResult: (r, done, total) => {
        if (r.kind === "passkey") io.stderr(`[${done}/${total}] ${r.result.label}: ${r.result.seconds.toFixed(0)} s\n`);
      },
    });
    wallSeconds = (performance.now() - t0) / 1000;
    if (flags.save !== undefined) await writeFile(flags.save, serialize({ results, wallSeconds }));
  }
  const byKey = new Map<string, PasskeyResult>();
  for (const r of results) if (r.kind === "passkey") byKey.set(r.key, r.result);
  const ordered = chosen.map((s) => byKey.get(s.label)!);
  if (flags.json) {
    io.stdout(`${JSON.stringify({ machine: machineLine(), wallSeconds, fact: PASSKEY_FACT, cue: PASSKEY_CUE, names: PASSKEY_NAMES, results: ordered }, null, 2)}\n`);
  } else {
    const t: string[][] = [["setting", ...distances.map(String)]];
    for (const r of ordered) t.push([r.label, ...r.cells.map((c) => `${c.retrieved}/${c.trials}`)]);
    io.stdout(`${table(t, ["l", ...distances.map(() => "r" as const)])}\n\nretrieved / trials (chance 1/${PASSKEY_NAMES.length}); wall time ${(wallSeconds / 60).toFixed(1)} min\n`);
  }
  if (flags.out !== undefined) {
    const command = commandLine("passkey", { ...flags }, ["only", "distances", "backend", "workers", "out"]);
    // (--save / --load are left out of the command: they do not change the numbers.)
    const body = passkeyMarkdown(ordered, chosen, { command, machine: machineLine(), wallSeconds, plotsDir: "plots" });
    await writeSection(flags.out, PASSKEY_SECTION, body, new Map([["passkey.svg", passkeyPlot(ordered)]]));
  }
  return 0;
}
