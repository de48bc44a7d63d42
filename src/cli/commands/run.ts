// `kvbound run --model M --prompt "..."`: one generation, streamed to stdout (prompt then
// continuation) with a summary line on stderr, or with --json one object
// `{ promptIds, ids, text, stats }`. Also the model loading the engine commands share.

import type { Command } from "commander";

import { loadModel, type LoadedModel } from "../../engine/load-model.js";
import { Session } from "../../engine/session.js";
import { DEFAULT_MAX_TOKENS, type DoneEvent } from "../../engine/generate.js";
import type { SamplerSettings } from "../../engine/sampler.js";
import { InvalidSettingError } from "../../errors.js";
import { progressBar } from "../../model/model-ref.js";
import { parseCount } from "../../plan/parse.js";
import { addCacheFlags, cacheConfigFromFlags, DEFAULT_CLI_CONTEXT_WINDOW, type RawCacheFlags } from "../cache-flags.js";
import { addThreadsFlag, threadsFromFlags, threadsNoteLine, type ThreadsFlags } from "../threads-flag.js";
import { addBackendFlag, backendDefaultCodec, backendFromFlags, type BackendFlags } from "../backend-flag.js";
import type { Backend } from "../../model/async-forward.js";
import { formatBytes } from "../format.js";
import { runtimeCache } from "../runtime-cache.js";
import type { CliIo } from "../main.js";

export interface SamplingFlags {
  temperature?: string;
  topK?: string;
  topP?: string;
  minP?: string;
  repeatPenalty?: string;
  repeatLastN?: string;
  presencePenalty?: string;
  frequencyPenalty?: string;
  seed?: string;
}

export interface RunFlags extends RawCacheFlags, SamplingFlags, ThreadsFlags, BackendFlags {
  model: string;
  prompt: string;
  maxTokens?: string;
  json?: boolean;
}

/** Adds the sampling flags, named as llama.cpp's (common/arg.cpp): --temperature / --top-k / --top-p /
 *  --min-p / --repeat-penalty / --repeat-last-n / --presence-penalty / --frequency-penalty / --seed. */
export function addSamplingFlags(cmd: Command): Command {
  return cmd
    .option("--temperature <t>", "sampling temperature, applied after top-k/top-p/min-p; 0 = greedy (default 0.8)")
    .option("--top-k <k>", "keep the k most likely tokens; 0 = off (default 40)")
    .option("--top-p <p>", "nucleus: keep the smallest set reaching probability p; 1 = off (default 0.95)")
    .option("--min-p <p>", "keep tokens with probability >= p x the top token's; 0 = off (default 0.05)")
    .option("--repeat-penalty <r>", "penalize tokens in the last --repeat-last-n: logit / r (or x r when negative); 1 = off (default 1)")
    .option("--repeat-last-n <n>", "tokens the penalties look back over; 0 = off (default 64)")
    .option("--presence-penalty <a>", "subtract a from tokens in the window, in [-2, 2]; 0 = off (default 0)")
    .option("--frequency-penalty <a>", "subtract a x count from tokens in the window, in [-2, 2]; 0 = off (default 0)")
    .option("--seed <n>", "PRNG seed, for reproducible sampling (default: random)");
}

function num(value: string | undefined, setting: string): number | undefined {
  if (value === undefined) return undefined;
  const n = value.trim() === "" ? NaN : Number(value);
  if (!Number.isFinite(n)) throw new InvalidSettingError(`${setting} ${JSON.stringify(value)} is not a number`, { setting, value });
  return n;
}

/** Sampler settings from the flags (range checks happen in resolveSamplerSettings). */
export function samplerFromFlags(f: SamplingFlags): SamplerSettings {
  const out: { -readonly [K in keyof SamplerSettings]: SamplerSettings[K] } = {};
  const t = num(f.temperature, "temperature");
  if (t !== undefined) out.temperature = t;
  const k = num(f.topK, "top-k");
  if (k !== undefined) out.topK = k;
  const p = num(f.topP, "top-p");
  if (p !== undefined) out.topP = p;
  const minP = num(f.minP, "min-p");
  if (minP !== undefined) out.minP = minP;
  const repeat = num(f.repeatPenalty, "repeat-penalty");
  if (repeat !== undefined) out.repeatPenalty = repeat;
  const lastN = num(f.repeatLastN, "repeat-last-n");
  if (lastN !== undefined) out.penaltyLastN = lastN;
  const presence = num(f.presencePenalty, "presence-penalty");
  if (presence !== undefined) out.presencePenalty = presence;
  const frequency = num(f.frequencyPenalty, "frequency-penalty");
  if (frequency !== undefined) out.frequencyPenalty = frequency;
  const s = num(f.seed, "seed");
  if (s !== undefined) out.seed = s;
  return out;
}

/**
 * Loads a model reference (path, URL, hf:) with a progress bar on stderr when it is a terminal,
 * built for a `window`-token context when given (LongRoPE models pick their factors by it, as
 * llama.cpp does by n_ctx), its matmuls on `threads` threads (default: the cores, at most 4; a line
 * on stderr says so when fewer run), on `backend` (default cpu; webgpu: a line on stderr names the adapter).
 */
export async function loadModelForCli(ref: string, io: CliIo, window?: number, threads?: number, backend?: Backend): Promise<LoadedModel> {
  // Only a terminal gets a redrawn bar; a pipe or a log file would fill with carriage returns.
  const tty = process.stderr.isTTY === true;
  let lastDraw = 0;
  const loaded = await loadModel(ref, {
    ...(window !== undefined && window > 0 ? { nCtx: window } : {}),
    ...(threads !== undefined ? { threads } : {}),
    ...(backend !== undefined ? { backend } : {}),
    ...(io.fetch ? { fetch: io.fetch } : {}),
    ...(tty
      ? {
          onProgress: (done: number, total: number | undefined) => {
            const t = Date.now();
            if (t - lastDraw < 100 && done !== total) return;
            lastDraw = t;
            io.stderr(`\r${progressBar(done, total)}\x1b[K`);
          },
        }
      : {}),
  });
  if (tty && lastDraw > 0) io.stderr("\n");
  const note = threadsNoteLine(loaded.model);
  if (note !== null) io.stderr(note);
  const gpu = (loaded.model as { context?: { description?: string } }).context;
  if (backend === "webgpu") io.stderr(`[backend: webgpu${gpu?.description ? ` (${gpu.description})` : ""}]\n`);
  return loaded;
}

/** The window the cache flags give (-1: none given), for loadModelForCli. */
export function flagsWindow(flags: RawCacheFlags): number {
  if (flags.contextWindow === undefined && flags.slidingWindow === undefined) return -1;
  const given = cacheConfigFromFlags(flags);
  return Math.max(given.contextWindowSize ?? -1, given.slidingWindowSize ?? -1);
}

/** A session for the loaded model with the cache flags (context window default: min(training context, 4096)). */
export function sessionFromFlags(loaded: LoadedModel, flags: RawCacheFlags): Session {
  const dflt = Math.min(loaded.model.hp.nCtxTrain, DEFAULT_CLI_CONTEXT_WINDOW);
  return new Session(loaded, cacheConfigFromFlags(flags, dflt));
}

export function tokensPerSecond(tokens: number, ms: number): number {
  return ms > 0 ? (tokens * 1000) / ms : 0;
}

/** The summary a user reads after a generation (stderr). */
export function summaryLine(done: DoneEvent): string {
  const n = done.ids.length;
  const why = done.finishReason + (done.lengthCause ? ` (${done.lengthCause})` : "");
  const s = done.stats;
  return (
    `[${n} tokens, finish ${why}; prefill ${done.prefilledTokens} tokens at ${tokensPerSecond(done.prefilledTokens, done.prefillMs).toFixed(1)} tok/s, ` +
    `decode ${tokensPerSecond(n, done.decodeMs).toFixed(1)} tok/s; ${memoryLine(s)}]\n`
  );
}

/** cache bytes / tokens held / evictions, as `kvbound chat` shows it live. */
export function memoryLine(s: DoneEvent["stats"]): string {
  return `cache ${formatBytes(s.cacheBytes)} of ${formatBytes(s.cacheBytesReserved)}, ${s.tokensHeld} tokens held, ${s.evictions} evicted`;
}

export async function runCommand(flags: RunFlags, io: CliIo): Promise<number> {
  const sampling = samplerFromFlags(flags);
  const threads = threadsFromFlags(flags);
  const backend = backendFromFlags(flags);
  const maxTokens = flags.maxTokens === undefined ? undefined : Number(flags.maxTokens) === 0 ? 0 : parseCount(flags.maxTokens, "max-tokens");
  // The planner picks the cache before the weights load (--budget); a prompt's tokens are at most its UTF-8 bytes + BOS.
  const runTokens = new TextEncoder().encode(flags.prompt).length + 1 + (maxTokens ?? DEFAULT_MAX_TOKENS);
  const defaultCodec = backendDefaultCodec(backend);
  const rc = await runtimeCache(flags.model, flags, io, { runTokens, ...(defaultCodec !== undefined ? { defaultCodec } : {}) });
  const loaded = await loadModelForCli(flags.model, io, rc.window, threads, backend);
  const session = new Session(loaded, rc.cacheInput);
  const promptIds = session.encode(flags.prompt);
  const gen = session.generate(promptIds, { ...sampling, ...(maxTokens !== undefined ? { maxTokens } : {}) });
  if (flags.json) {
    const ids: number[] = [];
    let done: DoneEvent | undefined;
    for await (const ev of gen) {
      if (ev.type === "token") ids.push(ev.id);
      else done = ev;
    }
    const d = done!;
    io.stdout(
      JSON.stringify(
        {
          promptIds,
          ids,
          text: d.text,
          stats: {
            finishReason: d.finishReason,
            ...(d.lengthCause ? { lengthCause: d.lengthCause } : {}),
            promptTokens: d.promptTokens,
            generatedTokens: ids.length,
            prefillMs: d.prefillMs,
            decodeMs: d.decodeMs,
            prefillTokensPerSecond: tokensPerSecond(d.prefilledTokens, d.prefillMs),
            decodeTokensPerSecond: tokensPerSecond(ids.length, d.decodeMs),
            threads: loaded.model.threads,
            backend: backend ?? "cpu",
            ...d.stats,
            cache: session.cache.stats(),
          },
        },
        null,
        2,
      ) + "\n",
    );
    return 0;
  }
  io.stdout(flags.prompt);
  for await (const ev of gen) {
    if (ev.type === "token") io.stdout(ev.text);
    else {
      io.stdout(ev.remainder + "\n");
      io.stderr(summaryLine(ev));
    }
  }
  return 0;
}

export function registerRun(program: Command, io: CliIo, setExit: (code: number) => void): void {
  const cmd = program
    .command("run")
    .description("generate a continuation of a prompt with a Llama-family GGUF model, through the bounded KV cache")
    .requiredOption("--model <ref>", "a GGUF path, an http(s) URL or hf:owner/repo/file.gguf")
    .requiredOption("--prompt <text>", "the prompt text")
    .option("--max-tokens <n>", "tokens to generate at most (default 256)")
    .option("--json", "print { promptIds, ids, text, stats } only");
  addSamplingFlags(cmd);
  addThreadsFlag(cmd);
  addBackendFlag(cmd);
  addCacheFlags(cmd, { runtimeBudget: true }).action(async (flags: RunFlags) => {
    setExit(await runCommand(flags, io));
  });
}
