// The cache flags `run`, `chat`, `bench` and `ppl` share, declared once on a commander Command,
// and their conversion into a CacheConfigInput. Commander only collects strings; numbers are
// parsed here, and a policy's own flags given with another policy are refused here (a typed
// InvalidSettingError, exit 1, naming the fix); window/policy sizes are left to resolveCacheConfig,
// the one place that validates a cache config.

import type { Command } from "commander";

import { CACHE_POLICY_KINDS, MAX_SCORE_WINDOW, type CacheConfigInput, type CachePolicyInput, type CachePolicyKind } from "../cache/config.js";
import { CODEC_KINDS, type CodecKind } from "../cache/codecs/types.js";
import { InvalidSettingError } from "../errors.js";
import { parseBytes, parseCount } from "../plan/parse.js";

/** What commander hands the action for the cache flags: strings, unvalidated. */
export interface RawCacheFlags {
  contextWindow?: string;
  slidingWindow?: string;
  sinks?: string;
  policy?: string;
  /** prefix-recent only. */
  prefix?: string;
  /** h2o only. */
  h2oRecent?: string;
  h2oHeavy?: string;
  h2oWindow?: string;
  codec?: string;
  pageSize?: string;
  prefillChunk?: string;
  /** run, chat, serve: memory for weights + cache + compute (src/cli/runtime-cache.ts). */
  budget?: string;
  /** Bytes the page pool may use (the library's budgetBytes). */
  cacheBudget?: string;
}

/**
 * Adds the cache flags to `cmd` and returns it (chainable). `runtimeBudget`: the command runs with
 * what the planner picks for `--budget` (run, chat, serve); the others measure the settings given.
 */
export function addCacheFlags(cmd: Command, opts: { runtimeBudget?: boolean } = {}): Command {
  if (opts.runtimeBudget === true) {
    cmd.option(
      "--budget <bytes>",
      "memory for weights + cache + compute: the planner keeps the window asked for if it fits, else picks the cheapest codec or the largest sliding window that does, and prints it (default: 80% of the memory free at start)",
    );
  }
  return cmd
    .option("--context-window <n>", "context_window_size: tokens the cache holds; a longer prompt is refused (default: the model's training context, at most 4096)")
    .option("--sliding-window <n>", "sliding_window_size: tokens the cache holds at most; older ones are evicted (needs --sinks)")
    .option("--sinks <n>", "attention_sink_size: leading tokens a sliding window never evicts (StreamingLLM uses 4)")
    .option("--policy <name>", `eviction policy: ${CACHE_POLICY_KINDS.join(", ")} (default: context, or sliding with --sliding-window)`)
    .option("--prefix <n>", "prefix-recent: leading tokens it keeps (e.g. the system prompt's length); the rest of the window is the most recent tokens")
    .option("--h2o-recent <n>", "h2o: newest tokens always kept (default: half of the window after the sinks)")
    .option("--h2o-heavy <n>", "h2o: tokens kept for their accumulated attention (default: what --h2o-recent leaves); with --h2o-recent, sinks + recent + heavy = window")
    .option("--h2o-window <n>", `h2o: accumulate attention over the last n queries only, so old heavy hitters age out (1..${MAX_SCORE_WINDOW}; default: every query; costs 8 x (n + 2) bytes per cached token)`)
    .option("--codec <name>", `KV page codec: ${CODEC_KINDS.join(", ")} (default f16)`)
    .option("--page-size <n>", "tokens per KV page, a power of two (default 16)")
    .option("--prefill-chunk <n>", "prefill_chunk_size: prompt tokens processed per chunk (default min(512, window))")
    .option("--cache-budget <bytes>", "bytes the KV page pool may use (64MiB, 1GiB, 500MB); a window it cannot hold is an error");
}

/** Largest default context window when the user gives none: keeps a plain `kvbound run` small. */
export const DEFAULT_CLI_CONTEXT_WINDOW = 4096;

function count(value: string | undefined, setting: string): number | undefined {
  return value === undefined ? undefined : parseCount(value, setting);
}

/** A whole number >= 0 (sinks, prefix, the h2o split). */
function whole(value: string | undefined, setting: string, example: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value.trim());
  if (value.trim() === "" || !Number.isSafeInteger(n) || n < 0) {
    throw new InvalidSettingError(`${setting} ${JSON.stringify(value)} is invalid: use a whole number >= 0, e.g. ${example}`, { setting, value });
  }
  return n;
}

/** The flags that belong to one policy, as `--flag` names, by the policy they need. */
const POLICY_FLAGS: readonly { readonly flag: string; readonly key: keyof RawCacheFlags; readonly policy: CachePolicyKind }[] = [
  { flag: "--prefix", key: "prefix", policy: "prefix-recent" },
  { flag: "--h2o-recent", key: "h2oRecent", policy: "h2o" },
  { flag: "--h2o-heavy", key: "h2oHeavy", policy: "h2o" },
  { flag: "--h2o-window", key: "h2oWindow", policy: "h2o" },
];

/**
 * The policy the flags ask for, with its own numbers. A policy's flag given with another policy (or
 * none) is an error rather than ignored: the user meant that policy.
 */
function policyFromFlags(opts: RawCacheFlags): CachePolicyInput | undefined {
  let kind: CachePolicyKind | undefined;
  if (opts.policy !== undefined) {
    const k = opts.policy.trim().toLowerCase();
    if (!(CACHE_POLICY_KINDS as readonly string[]).includes(k)) {
      throw new InvalidSettingError(`policy ${JSON.stringify(opts.policy)} is unknown; use one of ${CACHE_POLICY_KINDS.join(", ")}`, {
        setting: "policy",
        value: opts.policy,
      });
    }
    kind = k as CachePolicyKind;
  }
  for (const f of POLICY_FLAGS) {
    if (opts[f.key] !== undefined && kind !== f.policy) {
      throw new InvalidSettingError(
        `${f.flag} sets the ${f.policy} policy's split but the policy is ${kind ?? "not given (context, or sliding with --sliding-window)"}; add --policy ${f.policy}, or drop ${f.flag}`,
        { setting: f.flag.slice(2), value: opts[f.key] },
      );
    }
  }
  if (kind === undefined) return undefined;
  switch (kind) {
    case "prefix-recent": {
      // --sinks would set the same pinned count under another name (attention_sink_size): one way to say it.
      if (opts.sinks !== undefined) {
        throw new InvalidSettingError("--sinks is for sliding, h2o and tova; prefix-recent keeps --prefix N leading tokens: use --prefix instead", {
          setting: "sinks",
          value: opts.sinks,
        });
      }
      const prefix = whole(opts.prefix, "prefix", "32");
      if (prefix === undefined) {
        throw new InvalidSettingError("--policy prefix-recent needs --prefix N: the leading tokens it keeps (e.g. the system prompt's length)", {
          setting: "prefix",
          value: undefined,
        });
      }
      return { kind, prefix };
    }
    case "h2o": {
      const recent = whole(opts.h2oRecent, "h2o-recent", "64");
      const heavy = whole(opts.h2oHeavy, "h2o-heavy", "64");
      const scoreWindow = opts.h2oWindow === undefined ? undefined : parseCount(opts.h2oWindow, "h2o-window", MAX_SCORE_WINDOW);
      return {
        kind,
        ...(recent !== undefined ? { recent } : {}),
        ...(heavy !== undefined ? { heavy } : {}),
        ...(scoreWindow !== undefined ? { scoreWindow } : {}),
      };
    }
    case "context":
    case "sliding":
    case "fifo":
    case "tova":
      return { kind };
    default:
      return kind satisfies never;
  }
}

/**
 * Maps the cache flags to a CacheConfigInput. With neither --context-window nor --sliding-window,
 * the context window is `defaultContextWindow` (callers pass the model's training context capped
 * at DEFAULT_CLI_CONTEXT_WINDOW); without it, DEFAULT_CLI_CONTEXT_WINDOW.
 */
export function cacheConfigFromFlags(opts: RawCacheFlags, defaultContextWindow: number = DEFAULT_CLI_CONTEXT_WINDOW): CacheConfigInput {
  const contextWindowSize = count(opts.contextWindow, "context-window");
  const slidingWindowSize = count(opts.slidingWindow, "sliding-window");
  const attentionSinkSize = whole(opts.sinks, "sinks", "4");
  const policy = policyFromFlags(opts);
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
  if (opts.cacheBudget !== undefined) out.budgetBytes = parseBytes(opts.cacheBudget, "cache-budget");
  return out;
}
