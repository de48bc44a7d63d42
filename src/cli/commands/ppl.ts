// `kvbound ppl --model M --text FILE [cache flags] [--recompute W] [--json]`: perplexity of a text
// stream (documents separated by `<|endoftext|>` lines, each BOS + tokens) fed through the cache
// (in batches where nothing is evicted inside one, else token by token: the NLLs are the
// token-by-token ones); per 512-prediction segment and overall, with cache memory and tokens/s.

import { readFile, stat } from "node:fs/promises";

import type { Command } from "commander";

import { resolveCacheConfig, type CacheConfig, type CacheConfigInput, type CachePolicyInput, type PositionsMode } from "../../cache/config.js";
import { perplexity, type PerplexityProgress, type PerplexityResult } from "../../engine/perplexity.js";
import { loadModel } from "../../engine/load-model.js";
import { encodeTextStream, MAX_STREAM_TOKENS } from "../../engine/text-stream.js";
import { InvalidSettingError } from "../../errors.js";
import { parseCount } from "../../plan/parse.js";
import { addCacheFlags, cacheConfigFromFlags, type RawCacheFlags } from "../cache-flags.js";
import { addBackendFlag, backendDefaultCodec, backendFromFlags, type BackendFlags } from "../backend-flag.js";
import { addThreadsFlag, threadsFromFlags, threadsNoteLine, type ThreadsFlags } from "../threads-flag.js";
import { formatBytes, formatInt, table } from "../format.js";
import type { CliIo } from "../main.js";

/** Largest text file read: 512 MiB, far above any evaluation corpus (TinyStories' validation set is ~20 MB). */
export const MAX_TEXT_BYTES = 512 * 1024 * 1024;
/** Progress bar width in characters. */
const BAR_WIDTH = 30;

export interface PplFlags extends RawCacheFlags, ThreadsFlags, BackendFlags {
  model: string;
  text: string;
  recompute?: string;
  recomputeEvery?: string;
  positions?: string;
  maxTokens?: string;
  skipDocs?: string;
  batch?: string;
  json?: boolean;
  /** commander's --no-progress; undefined: draw the bar when stderr is a TTY. */
  progress?: boolean;
}

/** The `--json` object: exactly these keys. */
export interface PplJson {
  readonly tokens: number;
  readonly ppl: number;
  readonly nll: number;
  readonly segments: { readonly start: number; readonly end: number; readonly ppl: number }[];
  readonly cache: PerplexityResult["cache"];
  readonly tokensPerSecond: number;
}

export function registerPpl(program: Command, io: CliIo, setExit: (code: number) => void): Command {
  const cmd = program
    .command("ppl")
    .description("perplexity of a text stream fed through the cache: in batches while nothing is evicted, then token by token (documents split on <|endoftext|> lines, each BOS + tokens)")
    .requiredOption("--model <ref>", "model: path, http(s) URL or hf:owner/repo/file.gguf")
    .requiredOption("--text <file>", "text file: documents separated by lines that are exactly <|endoftext|>");
  addBackendFlag(addThreadsFlag(addCacheFlags(cmd)))
    .option("--positions <mode>", "positions of cached tokens under an evicting policy: reassigned (their place in the cache) or original")
    .option("--recompute <w>", "StreamingLLM's oracle: predict each token from a fresh pass over the previous W tokens (cost: W passes per token)")
    .option("--recompute-every <k>", "with --recompute: predict only every k-th token (positions i with i % k = 0), a sample of the oracle")
    .option("--max-tokens <n>", "use at most this many tokens of the stream")
    .option("--skip-docs <n>", "skip this many documents at the start (e.g. a cut-off first one)")
    .option("--batch <n>", "most tokens per forward pass (default: the model's batch, 64); batches stop where the cache would evict; 1: one token at a time")
    .option("--json", "print { tokens, ppl, nll, segments, cache, tokensPerSecond } only")
    .option("--no-progress", "no progress bar (default: one on stderr when it is a terminal)")
    .action(async (flags: PplFlags) => {
      setExit(await pplCommand(flags, io));
    });
  return cmd;
}

/** Runs `kvbound ppl`; resolves to the exit code. Typed errors propagate to main. */
export async function pplCommand(flags: PplFlags, io: CliIo, signal?: AbortSignal): Promise<number> {
  const maxTokens = flags.maxTokens === undefined ? undefined : parseCount(flags.maxTokens, "max-tokens", MAX_STREAM_TOKENS);
  const skipDocs = flags.skipDocs === undefined ? 0 : nonNegative(flags.skipDocs, "skip-docs");
  const recompute = flags.recompute === undefined ? undefined : parseCount(flags.recompute, "recompute");
  const recomputeEvery = flags.recomputeEvery === undefined ? undefined : parseCount(flags.recomputeEvery, "recompute-every");
  if (recomputeEvery !== undefined && recompute === undefined) {
    throw new InvalidSettingError("--recompute-every samples the recompute oracle; give --recompute W too", { setting: "recompute-every", value: flags.recomputeEvery });
  }
  const batch = flags.batch === undefined ? undefined : parseCount(flags.batch, "batch");
  const positions = parsePositions(flags.positions);
  const threads = threadsFromFlags(flags);
  const backend = backendFromFlags(flags);
  const text = await readText(flags.text);

  // A WebGPU model is built for a window: the one the flags give, else its default (a stream that
  // needs more is refused by name: pass --context-window or --sliding-window).
  const windowGiven = flags.contextWindow !== undefined || flags.slidingWindow !== undefined;
  const nCtx = backend === "webgpu" && windowGiven ? resolveCacheConfig(cacheConfigFromFlags(flags, 1)).windowTokens : undefined;
  const loaded = await loadModel(flags.model, {
    ...(signal ? { signal } : {}),
    ...(threads !== undefined ? { threads } : {}),
    ...(backend !== undefined ? { backend } : {}),
    ...(nCtx !== undefined ? { nCtx } : {}),
  });
  const note = threadsNoteLine(loaded.model);
  if (note !== null) io.stderr(note);
  const ids = encodeTextStream(loaded.tokenizer, text, { skipDocs, ...(maxTokens !== undefined ? { maxTokens } : {}) });
  if (ids.length < 2) {
    throw new InvalidSettingError(`${flags.text} gives ${ids.length} token(s) after skipping ${skipDocs} document(s); perplexity needs at least 2`, {
      setting: "text",
      value: flags.text,
    });
  }
  // Without window flags the window holds the whole stream: dense attention, nothing evicted.
  const input = cacheConfigFromFlags(flags, ids.length - 1);
  const defaultCodec = backendDefaultCodec(backend);
  const cacheConfig = resolveCacheConfig(withPositions(input.codec === undefined && defaultCodec !== undefined ? { ...input, codec: defaultCodec } : input, positions));

  const showProgress = flags.progress !== false && process.stderr.isTTY === true;
  const onProgress = showProgress ? (p: PerplexityProgress) => io.stderr(`\r${progressLine(p)}`) : undefined;
  const result = await perplexity(loaded.model, ids, {
    cacheConfig,
    ...(recompute !== undefined ? { recompute } : {}),
    ...(recomputeEvery !== undefined ? { recomputeEvery } : {}),
    ...(batch !== undefined ? { batchTokens: batch } : {}),
    ...(onProgress ? { onProgress } : {}),
    ...(signal ? { signal } : {}),
  });
  if (showProgress) io.stderr("\r\x1b[K");

  if (flags.json) {
    io.stdout(`${JSON.stringify(pplJson(result), null, 2)}\n`);
    return 0;
  }
  io.stdout(report(flags, cacheConfig, recompute, result));
  return 0;
}

/** The `--json` object of a result. */
export function pplJson(r: PerplexityResult): PplJson {
  return {
    tokens: r.tokens,
    ppl: r.ppl,
    nll: r.nll,
    segments: r.segments.map((s) => ({ start: s.start, end: s.end, ppl: s.ppl })),
    cache: r.cache,
    tokensPerSecond: r.tokensPerSecond,
  };
}

function report(flags: PplFlags, cfg: CacheConfig, recompute: number | undefined, r: PerplexityResult): string {
  const lines: string[] = [];
  lines.push(`model   ${flags.model}`);
  lines.push(`text    ${flags.text}: ${formatInt(r.tokens)} tokens, ${formatInt(r.tokens - 1)} predicted`);
  const oracle = `recompute oracle, window ${recompute}${flags.recomputeEvery !== undefined ? `, one prediction every ${flags.recomputeEvery} tokens` : ""}`;
  lines.push(`cache   ${recompute !== undefined ? oracle : describeCache(cfg)}, codec ${cfg.codec}, page ${cfg.pageSize}`);
  lines.push("");
  const rows: string[][] = [["positions", "ppl"]];
  for (const s of r.segments) rows.push([`${s.start}..${s.end - 1}`, Number.isNaN(s.ppl) ? "-" : s.ppl.toFixed(3)]);
  lines.push(table(rows, ["l", "r"]));
  lines.push("");
  lines.push(`perplexity  ${r.ppl.toFixed(4)} (mean NLL ${r.nll.toFixed(5)})`);
  lines.push(`memory      ${formatBytes(r.peakCacheBytes)} of cache pages at peak, ${formatBytes(r.cache.bytesReserved)} reserved; ${formatInt(r.cache.evictedTokens)} tokens evicted`);
  lines.push(`speed       ${r.tokensPerSecond.toFixed(1)} tokens/s (${r.seconds.toFixed(2)} s, ${formatInt(r.forwardPasses)} tokens through the model)`);
  return `${lines.join("\n")}\n`;
}

function describeCache(cfg: CacheConfig): string {
  const p = cfg.policy;
  switch (p.kind) {
    case "context":
      return `context window ${p.window}`;
    case "sliding":
      return `sliding window ${p.window} (sinks ${p.sinks}), positions ${p.positions}`;
    case "fifo":
      return `fifo window ${p.window}, positions ${p.positions}`;
    case "prefix-recent":
      return `prefix-recent window ${p.window} (prefix ${p.prefix}), positions ${p.positions}`;
    case "h2o":
      return `h2o window ${p.window} (sinks ${p.sinks}, recent ${p.recent}, heavy ${p.heavy}, scores over ${p.scoreWindow === null ? "every query" : `the last ${p.scoreWindow} queries`}), positions ${p.positions}`;
    case "tova":
      return `tova window ${p.window} (sinks ${p.sinks}), positions ${p.positions}`;
    default:
      return p satisfies never;
  }
}

/** `[#####-----]  42.0%  1,234/4,095  ppl 5.12  812 tok/s` */
export function progressLine(p: PerplexityProgress): string {
  const frac = p.total > 0 ? Math.min(1, p.done / p.total) : 0;
  const filled = Math.round(frac * BAR_WIDTH);
  const rate = p.elapsedMs > 0 ? (p.done * 1000) / p.elapsedMs : 0;
  const ppl = Number.isFinite(p.ppl) ? p.ppl.toFixed(2) : "-";
  return `[${"#".repeat(filled)}${"-".repeat(BAR_WIDTH - filled)}] ${(frac * 100).toFixed(1).padStart(5)}%  ${formatInt(p.done)}/${formatInt(p.total)}  ppl ${ppl}  ${rate.toFixed(0)} tok/s`;
}

function parsePositions(v: string | undefined): PositionsMode | undefined {
  if (v === undefined) return undefined;
  const m = v.trim().toLowerCase();
  if (m === "original" || m === "reassigned") return m;
  throw new InvalidSettingError(`positions ${JSON.stringify(v)} is unknown; use reassigned or original`, { setting: "positions", value: v });
}

/** Puts --positions on the policy (sliding when a sliding window is set and no policy is named). */
function withPositions(input: CacheConfigInput, positions: PositionsMode | undefined): CacheConfigInput {
  if (positions === undefined) return input;
  const kind = input.policy?.kind ?? (input.slidingWindowSize !== undefined && input.slidingWindowSize > 0 ? "sliding" : "context");
  if (kind === "context") {
    // Nothing is evicted, so a token's place in the cache is its place in the text.
    if (positions === "original") return input;
    throw new InvalidSettingError("--positions reassigned needs an evicting policy (a --sliding-window); a context window never evicts", {
      setting: "positions",
      value: positions,
    });
  }
  return { ...input, policy: { ...(input.policy ?? { kind }), positions } as CachePolicyInput };
}

function nonNegative(v: string, setting: string): number {
  const n = Number(v.trim());
  if (v.trim() === "" || !Number.isSafeInteger(n) || n < 0) {
    throw new InvalidSettingError(`${setting} ${JSON.stringify(v)} is invalid: use a whole number >= 0`, { setting, value: v });
  }
  return n;
}

async function readText(path: string): Promise<string> {
  let size: number;
  try {
    size = (await stat(path)).size;
  } catch {
    throw new InvalidSettingError(`--text ${path} does not exist or cannot be read; give a text file`, { setting: "text", value: path });
  }
  if (size > MAX_TEXT_BYTES) {
    throw new InvalidSettingError(`${path} is ${size} bytes, more than ppl reads (${MAX_TEXT_BYTES}); cut it or use --max-tokens on a smaller file`, {
      setting: "text",
      value: path,
    });
  }
  return readFile(path, "utf8");
}
