// The cache settings `run`, `chat` and `serve` run with, asked of the planner before the weights
// load: `--budget B` (default: a share of the memory free at start) covers weights + cache +
// compute; the requested window is kept when it fits, else the cheapest codec or the largest
// sliding window that does (printed), and weights alone over the budget are refused up front.

import type { CodecKind } from "../cache/codecs/types.js";
import { freemem } from "node:os";

import type { CacheConfigInput } from "../cache/config.js";
import { DEFAULT_BUDGET_SHARE, chooseRuntimeCache, type RuntimeChoice } from "../plan/runtime-choice.js";
import { parseBytes } from "../plan/parse.js";
import type { PlanSettings } from "../plan/types.js";
import { loadModelSpec } from "../spec/load.js";
import { cacheConfigFromFlags, DEFAULT_CLI_CONTEXT_WINDOW, type RawCacheFlags } from "./cache-flags.js";
import { formatBytes } from "./format.js";
import type { CliIo } from "./main.js";

export interface RuntimeCache {
  readonly cacheInput: CacheConfigInput;
  /** The window the model is built for (LongRoPE factors are chosen by it, as llama.cpp does by n_ctx). */
  readonly window: number;
  readonly choice: RuntimeChoice;
}

export interface RuntimeCacheOptions {
  /** Sequences the pool serves (serve --parallel). */
  readonly sequences?: number;
  /**
   * Tokens a run will hold at most (prompt + max tokens). With --budget and no window flags, a run
   * longer than the default window asks for a sliding window of it, so it can finish.
   */
  readonly runTokens?: number;
  /** The codec when --codec is not given and the backend runs only one (WebGPU: f32); pinned like a --codec. */
  readonly defaultCodec?: CodecKind;
}

export async function runtimeCache(ref: string, flags: RawCacheFlags, io: CliIo, opts: RuntimeCacheOptions = {}): Promise<RuntimeCache> {
  const budgetGiven = flags.budget !== undefined;
  const budgetBytes = budgetGiven ? parseBytes(flags.budget!, "budget") : Math.floor(freemem() * DEFAULT_BUDGET_SHARE);
  const spec = await loadModelSpec(ref, io.fetch ? { fetch: io.fetch } : {});
  const dflt = Math.min(spec.nCtxTrain ?? DEFAULT_CLI_CONTEXT_WINDOW, DEFAULT_CLI_CONTEXT_WINDOW);
  let requested = cacheConfigFromFlags(flags, dflt);
  const windowGiven = flags.contextWindow !== undefined || flags.slidingWindow !== undefined || flags.policy !== undefined;
  if (budgetGiven && !windowGiven && opts.runTokens !== undefined && opts.runTokens > dflt) {
    requested = { ...requested, contextWindowSize: -1, slidingWindowSize: dflt, attentionSinkSize: 4 };
  }
  // The planner sizes windows with sinks; a prefix-recent prefix pins as many tokens, in as many pages.
  const policy = requested.policy;
  const pinned = requested.attentionSinkSize ?? (policy?.kind === "prefix-recent" ? policy.prefix : (requested.slidingWindowSize ?? -1) > 0 ? 0 : undefined);
  const settings: PlanSettings = {
    contextWindowSize: requested.contextWindowSize ?? -1,
    slidingWindowSize: requested.slidingWindowSize ?? -1,
    ...(pinned !== undefined ? { attentionSinkSize: pinned } : {}),
    codec: requested.codec ?? opts.defaultCodec ?? "f16",
    ...(requested.pageSize !== undefined ? { pageSize: requested.pageSize } : {}),
    ...(requested.prefillChunkSize !== undefined ? { prefillChunkSize: requested.prefillChunkSize } : {}),
    ...(opts.sequences !== undefined ? { seqs: opts.sequences } : {}),
  };
  const choice = chooseRuntimeCache(spec, { settings, codecPinned: flags.codec !== undefined || opts.defaultCodec !== undefined, budgetBytes });
  const s = choice.settings;
  const sliding = (s.slidingWindowSize ?? -1) > 0;
  const cacheInput: { -readonly [K in keyof CacheConfigInput]: CacheConfigInput[K] } = {
    ...requested,
    contextWindowSize: s.contextWindowSize ?? -1,
    slidingWindowSize: s.slidingWindowSize ?? -1,
    codec: s.codec as CacheConfigInput["codec"],
  };
  if (sliding && choice.changed && policy?.kind !== "prefix-recent") cacheInput.attentionSinkSize = s.attentionSinkSize ?? 4;
  else if (choice.changed) {
    // A context window chosen in place of the user's sliding one: no sinks, no evicting policy.
    delete cacheInput.attentionSinkSize;
    delete cacheInput.policy;
  }
  if (budgetGiven || choice.changed) {
    const p = choice.plan;
    const what = sliding ? `sliding window ${s.slidingWindowSize} tokens (${s.attentionSinkSize ?? 4} sinks)` : `context window ${s.contextWindowSize} tokens`;
    io.stderr(
      `[budget ${formatBytes(budgetBytes)}${budgetGiven ? "" : ` (${DEFAULT_BUDGET_SHARE * 100}% of the memory free at start)`}: ${what}, ${s.codec}; ` +
        `weights ${formatBytes(p.weights?.bytes ?? 0)} + cache ${formatBytes(p.kv.totalBytes)} + compute ${formatBytes(p.compute?.bytes ?? 0)} = ${formatBytes(p.totalBytes)}` +
        `${choice.changed ? `; ${choice.note}` : ""}]\n`,
    );
  }
  return { cacheInput, window: Math.max(cacheInput.contextWindowSize ?? -1, cacheInput.slidingWindowSize ?? -1), choice };
}
