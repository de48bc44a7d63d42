// The long-stream evaluation matrix: every cache setting `kvbound eval streams` measures, named by
// a stable id (`sinks4-W256`, `h2o-50`, `oracle-W448`...). Data, not code: the runner treats every
// entry alike; the groups only decide which table and plot an entry lands in.
//
// Windows count every token the cache holds, sinks included: "sinks 4 + window 252" is
// slidingWindowSize 256 with attentionSinkSize 4 (WebLLM's sliding_window_size semantics).

import type { CacheConfigInput } from "../cache/config.js";
import type { CodecKind } from "../cache/codecs/types.js";
import { InvalidSettingError } from "../errors.js";

/** The training context of stories260K (llama2.c's config: max_seq_len 512), which the budgets refer to. */
export const TRAINING_CONTEXT = 512;
/** Windows (tokens held, sinks included) of the fifo, sliding and oracle rows. */
export const STREAM_WINDOWS: readonly number[] = [64, 128, 256, 448];
export const STREAM_SINKS: readonly number[] = [1, 2, 4, 8];
/**
 * Budgets of the score-based policies, as a share of the training context: 25% = a 128-token
 * cache, 50% = 256 (H2O and TOVA report quality at a KV budget given as a fraction of the context).
 */
export const POLICY_BUDGETS: readonly { readonly percent: number; readonly window: number }[] = [
  { percent: 25, window: (TRAINING_CONTEXT * 25) / 100 },
  { percent: 50, window: (TRAINING_CONTEXT * 50) / 100 },
];
/** Sinks kept by h2o and tova (StreamingLLM's 4), so only the eviction rule differs from sliding. */
export const POLICY_SINKS = 4;
/**
 * H2O score windows measured against plain H2O (attention accumulated since each token arrived):
 * the last 32 / 128 tokens' queries, an eighth / half of the 256-token budget's window.
 */
export const H2O_SCORE_WINDOWS: readonly number[] = [32, 128];
/** The codec rows: sinks 4 + window 252; f16 (the default codec) is the `sinks4-W256` row itself. */
export const CODEC_ROWS: readonly CodecKind[] = ["f32", "int8", "int4", "fp8"];
/**
 * Dense attention costs O(n) per token, so its run is capped: 8192 tokens take about as long as a
 * 64k-token bounded run and already show the collapse (it starts near 2k tokens; ../shared/golden).
 */
export const DENSE_MAX_TOKENS = 8192;
/**
 * The oracle predicts every k-th token only (each prediction costs W forward passes); the bounded
 * runs are compared with it on exactly those tokens.
 */
export const ORACLE_EVERY = 128;

export type StreamGroup = "dense" | "fifo" | "sliding" | "positions" | "oracle" | "policy" | "codec";

export interface StreamConfig {
  readonly id: string;
  readonly group: StreamGroup;
  /** What a reader sees in a table. */
  readonly label: string;
  /** Tokens held (the window, sinks included). */
  readonly window: number;
  /** The cache (unset windows: a context window holding the whole stream). */
  readonly cache: CacheConfigInput;
  readonly recompute?: number;
  readonly recomputeEvery?: number;
  /** This row's own cap on stream tokens (dense). */
  readonly maxTokens?: number;
}

/** Every row of the matrix, in table order. */
export function streamsMatrix(): StreamConfig[] {
  const rows: StreamConfig[] = [];
  rows.push({ id: "dense", group: "dense", label: "dense (no eviction)", window: Infinity, cache: {}, maxTokens: DENSE_MAX_TOKENS });
  for (const w of STREAM_WINDOWS) {
    rows.push({ id: `fifo-W${w}`, group: "fifo", label: `fifo, window ${w}`, window: w, cache: { slidingWindowSize: w, policy: { kind: "fifo" } } });
  }
  for (const w of STREAM_WINDOWS) {
    for (const s of STREAM_SINKS) {
      rows.push({
        id: `sinks${s}-W${w}`,
        group: "sliding",
        label: `sinks ${s} + window ${w - s}`,
        window: w,
        cache: { slidingWindowSize: w, attentionSinkSize: s },
      });
    }
  }
  rows.push({
    id: "sinks4-W256-original",
    group: "positions",
    label: "sinks 4 + window 252, original positions",
    window: 256,
    cache: { slidingWindowSize: 256, attentionSinkSize: 4, policy: { kind: "sliding", positions: "original" } },
  });
  for (const w of STREAM_WINDOWS) {
    rows.push({
      id: `oracle-W${w}`,
      group: "oracle",
      label: `recompute oracle, window ${w}`,
      window: w,
      cache: { contextWindowSize: w },
      recompute: w,
      recomputeEvery: ORACLE_EVERY,
    });
  }
  for (const { percent, window: w } of POLICY_BUDGETS) {
    const prefix = w / 4;
    rows.push({
      id: `prefix-recent-${percent}`,
      group: "policy",
      label: `prefix-recent ${percent}% (window ${w}: prefix ${prefix} + recent ${w - prefix})`,
      window: w,
      cache: { slidingWindowSize: w, policy: { kind: "prefix-recent", prefix, positions: "reassigned" } },
    });
    rows.push({
      id: `h2o-${percent}`,
      group: "policy",
      label: `h2o ${percent}% (window ${w}: sinks ${POLICY_SINKS}, recent and heavy split evenly)`,
      window: w,
      cache: { slidingWindowSize: w, policy: { kind: "h2o", sinks: POLICY_SINKS, positions: "reassigned" } },
    });
    for (const n of H2O_SCORE_WINDOWS) {
      rows.push({
        id: `h2o-sw${n}-${percent}`,
        group: "policy",
        label: `h2o ${percent}%, score window ${n} (as h2o ${percent}%, attention summed over the last ${n} tokens only)`,
        window: w,
        cache: { slidingWindowSize: w, policy: { kind: "h2o", sinks: POLICY_SINKS, scoreWindow: n, positions: "reassigned" } },
      });
    }
    rows.push({
      id: `tova-${percent}`,
      group: "policy",
      label: `tova ${percent}% (window ${w}: sinks ${POLICY_SINKS})`,
      window: w,
      cache: { slidingWindowSize: w, policy: { kind: "tova", sinks: POLICY_SINKS, positions: "reassigned" } },
    });
  }
  for (const codec of CODEC_ROWS) {
    rows.push({
      id: `sinks4-W256-${codec}`,
      group: "codec",
      label: `sinks 4 + window 252, ${codec}`,
      window: 256,
      cache: { slidingWindowSize: 256, attentionSinkSize: 4, codec },
    });
  }
  return rows;
}

/**
 * The rows whose id matches `pattern`: comma-separated alternatives, each a glob with `*`
 * (`sinks4-*,oracle-W256`). Throws InvalidSettingError when nothing matches.
 */
export function selectRows(rows: readonly StreamConfig[], pattern: string | undefined): StreamConfig[] {
  if (pattern === undefined || pattern.trim() === "") return [...rows];
  const res = pattern.split(",").map((p) => new RegExp(`^${p.trim().replace(/[.+?^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*")}$`));
  const out = rows.filter((r) => res.some((re) => re.test(r.id)));
  if (out.length === 0) {
    throw new InvalidSettingError(`--only ${JSON.stringify(pattern)} matches no row; ids look like ${rows.slice(0, 4).map((r) => r.id).join(", ")}`, {
      setting: "only",
      value: pattern,
    });
  }
  return out;
}
