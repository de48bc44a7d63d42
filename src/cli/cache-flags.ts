// The cache flags `run`, `chat`, `bench` and `ppl` share, declared once on a commander Command,
// and their conversion into a CacheConfigInput. Commander only collects strings; numbers are
// parsed here (a bad value is a typed InvalidSettingError, exit 1); window/policy consistency is
// left to resolveCacheConfig, the one place that validates a cache config.

import type { Command } from "commander";

import { CACHE_POLICY_KINDS, type CacheConfigInput, type CachePolicyInput, type CachePolicyKind } from "../cache/config.js";
import { CODEC_KINDS, type CodecKind } from "../cache/codecs/types.js";
import { InvalidSettingError } from "../errors.js";
import { parseBytes, parseCount } from "../plan/parse.js";

/** What commander hands the action for the cache flags: strings, unvalidated. */
export interface RawCacheFlags {
  contextWindow?: string;
  slidingWindow?: string;
  sinks?: string;
  policy?: string;
  codec?: string;
  pageSize?: string;
  prefillChunk?: string;
  budget?: string;
}

/** Adds the cache flags to `cmd` and returns it (chainable). */
export function addCacheFlags(cmd: Command): Command {
  return cmd
    .option("--context-window <n>", "context_window_size: tokens the cache holds; a longer prompt is refused (default: the model's training context, at most 4096)")
    .option("--sliding-window <n>", "sliding_window_size: tokens the cache holds at most; older ones are evicted (needs --sinks)")
    .option("--sinks <n>", "attention_sink_size: leading tokens a sliding window never evicts (StreamingLLM uses 4)")
    .option("--policy <name>", `eviction policy: ${CACHE_POLICY_KINDS.join(", ")} (default: context, or sliding with --sliding-window)`)
    .option("--codec <name>", `KV page codec: ${CODEC_KINDS.join(", ")} (default f16)`)
    .option("--page-size <n>", "tokens per KV page, a power of two (default 16)")
    .option("--prefill-chunk <n>", "prefill_chunk_size: prompt tokens processed per chunk (default min(512, window))")
    .option("--budget <bytes>", "bytes the KV page pool may use: 64MiB, 1GiB, 500MB");
}

/** Largest default context window when the user gives none: keeps a plain `kvbound run` small. */
export const DEFAULT_CLI_CONTEXT_WINDOW = 4096;

function count(value: string | undefined, setting: string): number | undefined {
  return value === undefined ? undefined : parseCount(value, setting);
}

/**
 * Maps the cache flags to a CacheConfigInput. With neither --context-window nor --sliding-window,
 * the context window is `defaultContextWindow` (callers pass the model's training context capped
 * at DEFAULT_CLI_CONTEXT_WINDOW); without it, DEFAULT_CLI_CONTEXT_WINDOW.
 */
export function cacheConfigFromFlags(opts: RawCacheFlags, defaultContextWindow: number = DEFAULT_CLI_CONTEXT_WINDOW): CacheConfigInput {
  const contextWindowSize = count(opts.contextWindow, "context-window");
  const slidingWindowSize = count(opts.slidingWindow, "sliding-window");
  let attentionSinkSize: number | undefined;
  if (opts.sinks !== undefined) {
    const n = Number(opts.sinks.trim());
    if (opts.sinks.trim() === "" || !Number.isSafeInteger(n) || n < 0) {
      throw new InvalidSettingError(`sinks ${JSON.stringify(opts.sinks)} is invalid: use a whole number >= 0, e.g. 4`, {
        setting: "sinks",
        value: opts.sinks,
      });
    }
    attentionSinkSize = n;
  }
  let policy: CachePolicyInput | undefined;
  if (opts.policy !== undefined) {
    const kind = opts.policy.trim().toLowerCase();
    if (!(CACHE_POLICY_KINDS as readonly string[]).includes(kind)) {
      throw new InvalidSettingError(`policy ${JSON.stringify(opts.policy)} is unknown; use one of ${CACHE_POLICY_KINDS.join(", ")}`, {
        setting: "policy",
        value: opts.policy,
      });
    }
    policy = { kind: kind as CachePolicyKind } as CachePolicyInput;
  }
  let codec: CodecKind | undefined;
  if (opts.codec !== undefined) {
    const c = opts.codec.trim().toLowerCase();
    if (!(CODEC_KINDS as readonly string[]).includes(c)) {
      throw new InvalidSettingError(`codec ${JSON.stringify(opts.codec)} is unknown; use one of ${CODEC_KINDS.join(", ")}`, {
        setting: "codec",
        value: opts.codec,
      });
    }
    codec = c as CodecKind;
  }
  const windowGiven = contextWindowSize !== undefined || slidingWindowSize !== undefined;
  // An evicting policy without a window size: the user meant a sliding window of the default size.
  const evicting = policy !== undefined && policy.kind !== "context";
  const out: {
    -readonly [K in keyof CacheConfigInput]: CacheConfigInput[K];
  } = {};
  if (windowGiven) {
    if (contextWindowSize !== undefined) out.contextWindowSize = contextWindowSize;
    if (slidingWindowSize !== undefined) out.slidingWindowSize = slidingWindowSize;
  } else if (evicting) {
    out.slidingWindowSize = defaultContextWindow;
  } else {
    out.contextWindowSize = defaultContextWindow;
  }
  if (attentionSinkSize !== undefined) out.attentionSinkSize = attentionSinkSize;
  if (policy !== undefined) out.policy = policy;
  if (codec !== undefined) out.codec = codec;
  const pageSize = count(opts.pageSize, "page-size");
  if (pageSize !== undefined) out.pageSize = pageSize;
  const prefillChunkSize = count(opts.prefillChunk, "prefill-chunk");
  if (prefillChunkSize !== undefined) out.prefillChunkSize = prefillChunkSize;
  if (opts.budget !== undefined) out.budgetBytes = parseBytes(opts.budget, "budget");
  return out;
}
