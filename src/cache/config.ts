// The cache's configuration: WebLLM's window names and semantics (context_window_size /
// sliding_window_size / attention_sink_size, -1 = unset) plus kvbound's page, codec and policy
// settings, validated once into a frozen, fully defaulted object.

import {
  AttentionSinkSizeError,
  CacheConfigError,
  WindowSizeConfigurationError,
  WindowSizeSpecificationError,
} from "../errors.js";
import { CODEC_KINDS, type CodecKind } from "./codecs/types.js";
import type { RopeSpec } from "./rope.js";

/** How positions are given to cached tokens: their place in the text, or their place in the cache. */
export type PositionsMode = "original" | "reassigned";

/** A policy as the user writes it: every number is optional and defaults from the window. */
export type CachePolicyInput =
  | { readonly kind: "context" }
  | { readonly kind: "sliding"; readonly sinks?: number; readonly positions?: PositionsMode }
  | { readonly kind: "fifo"; readonly positions?: PositionsMode }
  | { readonly kind: "prefix-recent"; readonly prefix?: number; readonly positions?: PositionsMode }
  | {
      readonly kind: "h2o";
      readonly sinks?: number;
      /** Newest tokens always kept; with `heavy`, the two must add up to window - sinks. Default: half the rest, rounded up. */
      readonly recent?: number;
      /** Tokens kept by accumulated attention. Default: what `recent` leaves. */
      readonly heavy?: number;
      /**
       * Attention is accumulated over the last `scoreWindow` queries only (one per decoded token, one
       * per prompt token), so a token that stops being attended ages out. Unset or null: over every
       * query since the token arrived (the H2O paper's rule). Costs 8 x (scoreWindow + 2) bytes per
       * retained token and sequence instead of 8.
       */
      readonly scoreWindow?: number | null;
      readonly positions?: PositionsMode;
    }
  | { readonly kind: "tova"; readonly sinks?: number; readonly positions?: PositionsMode };

/**
 * A resolved policy. Every kind holds exactly `window` tokens at most; `pinned` leading tokens are
 * never evicted (sinks / prefix). The sizes always add up: sliding sinks + recent = window,
 * prefix-recent prefix + recent = window, h2o sinks + recent + heavy = window.
 */
export type CachePolicy =
  | { readonly kind: "context"; readonly window: number; readonly positions: PositionsMode }
  | { readonly kind: "sliding"; readonly window: number; readonly sinks: number; readonly recent: number; readonly positions: PositionsMode }
  | { readonly kind: "fifo"; readonly window: number; readonly positions: PositionsMode }
  | { readonly kind: "prefix-recent"; readonly window: number; readonly prefix: number; readonly recent: number; readonly positions: PositionsMode }
  | {
      readonly kind: "h2o";
      readonly window: number;
      readonly sinks: number;
      readonly recent: number;
      readonly heavy: number;
      /** Queries the scores sum over; null: every query since the token arrived. */
      readonly scoreWindow: number | null;
      readonly positions: PositionsMode;
    }
  | { readonly kind: "tova"; readonly window: number; readonly sinks: number; readonly positions: PositionsMode };

export type CachePolicyKind = CachePolicy["kind"];
export const CACHE_POLICY_KINDS: readonly CachePolicyKind[] = ["context", "sliding", "fifo", "prefix-recent", "h2o", "tova"];

export interface CacheConfigInput {
  /** WebLLM `context_window_size`: tokens a sequence may hold; a prompt beyond it is refused. -1 = unset. */
  readonly contextWindowSize?: number;
  /** WebLLM `sliding_window_size`: tokens a sequence holds at most, sinks included. -1 = unset. */
  readonly slidingWindowSize?: number;
  /** WebLLM `attention_sink_size`: leading tokens a sliding window never evicts. */
  readonly attentionSinkSize?: number;
  /** Tokens per page; a power of two. Default 16 (WebLLM's and vLLM's page size). */
  readonly pageSize?: number;
  /** Sequences that may live at once (forks included). Default 1. */
  readonly maxSequences?: number;
  /** Most tokens one `reserve` may append (the engine's prefill chunk). */
  readonly prefillChunkSize?: number;
  /** Bytes the pool may reserve; without it the pool is sized to hold every sequence's window. */
  readonly budgetBytes?: number;
  readonly codec?: CodecKind;
  readonly policy?: CachePolicyInput;
}

export interface CacheConfig {
  /** -1 when unset, as in WebLLM. */
  readonly contextWindowSize: number;
  readonly slidingWindowSize: number;
  /** 0 in context mode. */
  readonly attentionSinkSize: number;
  /** The window in tokens, whichever mode set it. */
  readonly windowTokens: number;
  readonly pageSize: number;
  readonly maxSequences: number;
  readonly prefillChunkSize: number;
  /** null: sized from the window. */
  readonly budgetBytes: number | null;
  readonly codec: CodecKind;
  readonly policy: CachePolicy;
}

/** The model facts the cache needs. Each layer may have its own K/V shape (nHeadKv, head dims). */
export interface CacheModelShape {
  /** Query heads (GQA: a multiple of every layer's nHeadKv). */
  readonly nHead: number;
  readonly layers: readonly CacheLayerShape[];
  /** RoPE applied to keys and queries; absent for models without rotary positions. */
  readonly rope?: RopeSpec;
}

export interface CacheLayerShape {
  readonly nHeadKv: number;
  readonly headDimK: number;
  readonly headDimV: number;
  /** This layer's RoPE when it differs from the model's (gemma3 local layers); null: no RoPE (smollm3's NoPE layers). */
  readonly rope?: RopeSpec | null;
  /**
   * The model's own sliding window (llama.cpp n_swa, standard type): a query at position p sees
   * keys at p - n_swa + 1 .. p. Such layers live in a group of their own that keeps only what that
   * mask can reach, whatever the user's policy (see cache-groups.ts). Absent: a full-attention layer.
   */
  readonly slidingWindow?: number;
  /** Attention logit soft-capping (gemma2): scores become c * tanh(scores / c) before the softmax. */
  readonly softcap?: number;
}

/** A model whose layers all have one shape. */
export function uniformModelShape(
  nLayer: number,
  nHead: number,
  nHeadKv: number,
  headDimK: number,
  headDimV: number = headDimK,
  rope?: RopeSpec,
): CacheModelShape {
  const layers: CacheLayerShape[] = [];
  for (let i = 0; i < nLayer; i++) layers.push({ nHeadKv, headDimK, headDimV });
  return rope === undefined ? { nHead, layers } : { nHead, layers, rope };
}

// Named limits on hostile config values, with the reason.
/** Largest page: 2^16 tokens; larger pages defeat eviction at page granularity. */
export const MAX_PAGE_SIZE = 65536;
/** Largest window: 2^26 tokens (64M), far beyond any model's context, keeps position math in int32. */
export const MAX_WINDOW_TOKENS = 2 ** 26;
/** Sequences per cache: every one costs a page table; 4096 is far above any local batch. */
export const MAX_SEQUENCES = 4096;
/**
 * Largest H2O score window: each query of the window costs 8 bytes per retained token and sequence
 * (32 KiB per token at 4096, more than the K/V of most models' token); beyond a few thousand queries
 * the window no longer ages anything out within a typical stream anyway.
 */
export const MAX_SCORE_WINDOW = 4096;

/**
 * Default codec: f16. It is what WebLLM's compiled models and llama.cpp store K/V in by default, it
 * halves f32's bytes, and its rounding (~5e-4 relative) is below the noise of the quantized
 * weights these runtimes use. Tests that need exact results pass `codec: "f32"`.
 */
export const DEFAULT_CODEC: CodecKind = "f16";
export const DEFAULT_PAGE_SIZE = 16;
/** WebLLM's default prefill_chunk_size is 2048 for most prebuilt models; 512 bounds the attention scratch. */
export const DEFAULT_PREFILL_CHUNK_SIZE = 512;
/** StreamingLLM keeps 4 sink tokens. */
export const STREAMING_LLM_SINKS = 4;

function checkWindowField(field: string, value: number | undefined): number {
  if (value === undefined) return -1;
  if (!Number.isInteger(value) || value === 0 || value < -1) throw new WindowSizeSpecificationError(field, value);
  if (value > MAX_WINDOW_TOKENS) throw new WindowSizeSpecificationError(field, value);
  return value;
}

function positiveInt(field: string, value: number | undefined, dflt: number, max: number): number {
  if (value === undefined) return dflt;
  if (!Number.isSafeInteger(value) || value <= 0 || value > max) {
    throw new CacheConfigError(`${field} ${value} is invalid: use an integer in 1..${max}`, { field, value });
  }
  return value;
}

function nonNegInt(field: string, value: number, max: number): number {
  if (!Number.isSafeInteger(value) || value < 0 || value > max) {
    throw new CacheConfigError(`policy ${field} ${value} is invalid: use an integer in 0..${max}`, { field, value });
  }
  return value;
}

/** Validates a cache configuration once, at the boundary; returns it frozen with every default applied. */
export function resolveCacheConfig(input: CacheConfigInput = {}): CacheConfig {
  const ctx = checkWindowField("context_window_size", input.contextWindowSize);
  const sliding = checkWindowField("sliding_window_size", input.slidingWindowSize);
  if ((ctx > 0) === (sliding > 0)) throw new WindowSizeConfigurationError(ctx, sliding);

  const pageSize = positiveInt("pageSize", input.pageSize, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE);
  if ((pageSize & (pageSize - 1)) !== 0) {
    throw new CacheConfigError(`pageSize ${pageSize} is not a power of two; use 16 (WebLLM's page size)`, {
      field: "pageSize",
      value: pageSize,
    });
  }
  const maxSequences = positiveInt("maxSequences", input.maxSequences, 1, MAX_SEQUENCES);
  const codec = input.codec ?? DEFAULT_CODEC;
  if (!CODEC_KINDS.includes(codec)) {
    throw new CacheConfigError(`codec ${String(codec)} is unknown; use one of ${CODEC_KINDS.join(", ")}`, {
      field: "codec",
      value: codec,
    });
  }
  let budgetBytes: number | null = null;
  if (input.budgetBytes !== undefined) {
    if (!Number.isSafeInteger(input.budgetBytes) || input.budgetBytes <= 0) {
      throw new CacheConfigError(`budgetBytes ${input.budgetBytes} is invalid: use a positive integer of bytes`, {
        field: "budgetBytes",
        value: input.budgetBytes,
      });
    }
    budgetBytes = input.budgetBytes;
  }

  const window = ctx > 0 ? ctx : sliding;
  let sinkInput = input.attentionSinkSize;
  if (sinkInput === -1) sinkInput = undefined;
  const policy = resolvePolicy(ctx > 0 ? "context" : "sliding", window, sinkInput, input.policy);
  const attentionSinkSize = policy.kind === "context" ? 0 : pinnedTokens(policy);

  // A reserve evicts before it writes, so one chunk must fit beside the pinned tokens.
  const maxChunk = window - attentionSinkSize;
  const prefillChunkSize = positiveInt(
    "prefillChunkSize",
    input.prefillChunkSize,
    Math.min(DEFAULT_PREFILL_CHUNK_SIZE, maxChunk),
    policy.kind === "context" ? MAX_WINDOW_TOKENS : maxChunk,
  );

  return Object.freeze({
    contextWindowSize: ctx,
    slidingWindowSize: sliding,
    attentionSinkSize,
    windowTokens: window,
    pageSize,
    maxSequences,
    prefillChunkSize,
    budgetBytes,
    codec,
    policy: Object.freeze(policy),
  });
}

/** Leading tokens the policy never evicts. */
export function pinnedTokens(policy: CachePolicy): number {
  switch (policy.kind) {
    case "context":
    case "fifo":
      return 0;
    case "sliding":
    case "h2o":
    case "tova":
      return policy.sinks;
    case "prefix-recent":
      return policy.prefix;
    default:
      return policy satisfies never;
  }
}

function resolvePolicy(
  mode: "context" | "sliding",
  window: number,
  attentionSinkSize: number | undefined,
  input: CachePolicyInput | undefined,
): CachePolicy {
  const kind = input?.kind ?? (mode === "context" ? "context" : "sliding");
  if (!CACHE_POLICY_KINDS.includes(kind)) {
    throw new CacheConfigError(`policy ${String(kind)} is unknown; use one of ${CACHE_POLICY_KINDS.join(", ")}`, {
      field: "policy",
      value: kind,
    });
  }
  const positions = (input as { positions?: unknown } | undefined)?.positions;
  if (positions !== undefined && positions !== "original" && positions !== "reassigned") {
    throw new CacheConfigError(`policy positions ${String(positions)} is unknown; use "original" or "reassigned"`, {
      field: "positions",
      value: positions,
    });
  }
  if ((kind === "context") !== (mode === "context")) {
    throw new CacheConfigError(
      mode === "context"
        ? `policy ${kind} evicts tokens but context_window_size is set; set sliding_window_size instead (and context_window_size -1)`
        : `policy context never evicts but sliding_window_size is set; set context_window_size instead, or pick an evicting policy`,
      { field: "policy", value: kind },
    );
  }
  // Sinks: attention_sink_size when given; the policy's own number must agree with it.
  const sinksFrom = (own: number | undefined, field: string, dflt: number | null): number => {
    if (own !== undefined && attentionSinkSize !== undefined && own !== attentionSinkSize) {
      throw new CacheConfigError(
        `policy ${field} ${own} contradicts attention_sink_size ${attentionSinkSize}; give one of them`,
        { field, value: own },
      );
    }
    const v = own ?? attentionSinkSize ?? dflt;
    if (v === null) throw new AttentionSinkSizeError(-1, window);
    if (!Number.isInteger(v) || v < 0 || v >= window) throw new AttentionSinkSizeError(v, window);
    return v;
  };
  const inp = input ?? ({ kind } as CachePolicyInput);
  switch (inp.kind) {
    case "context":
      return { kind: "context", window, positions: "original" };
    case "sliding": {
      // WebLLM requires attention_sink_size in sliding mode; there is no silent default.
      const sinks = sinksFrom(inp.sinks, "sinks", null);
      return { kind: "sliding", window, sinks, recent: window - sinks, positions: inp.positions ?? "reassigned" };
    }
    case "fifo":
      if (attentionSinkSize !== undefined && attentionSinkSize !== 0) {
        throw new CacheConfigError(`policy fifo keeps no sinks but attention_sink_size is ${attentionSinkSize}; use policy sliding`, {
          field: "attentionSinkSize",
          value: attentionSinkSize,
        });
      }
      return { kind: "fifo", window, positions: inp.positions ?? "reassigned" };
    case "prefix-recent": {
      const prefix = sinksFrom(inp.prefix, "prefix", null);
      return { kind: "prefix-recent", window, prefix, recent: window - prefix, positions: inp.positions ?? "reassigned" };
    }
    case "h2o": {
      const sinks = sinksFrom(inp.sinks, "sinks", 0);
      const rest = window - sinks;
      // H2O (Zhang et al. 2023) splits the budget evenly between recent and heavy-hitter tokens.
      const heavyIn = inp.heavy === undefined ? undefined : nonNegInt("heavy", inp.heavy, rest);
      const recent = nonNegInt("recent", inp.recent ?? (heavyIn !== undefined ? rest - heavyIn : Math.ceil(rest / 2)), rest);
      const heavy = rest - recent;
      if (heavyIn !== undefined && heavyIn !== heavy) {
        throw new CacheConfigError(
          `policy h2o recent ${recent} + heavy ${heavyIn} + sinks ${sinks} != window ${window}; give recent and heavy that add up to ${rest}, or only one of them`,
          { field: "heavy", value: heavyIn },
        );
      }
      const sw = inp.scoreWindow;
      if (sw !== undefined && sw !== null && (!Number.isSafeInteger(sw) || sw < 1 || sw > MAX_SCORE_WINDOW)) {
        throw new CacheConfigError(
          `policy h2o scoreWindow ${sw} is invalid: use an integer in 1..${MAX_SCORE_WINDOW} (queries the scores sum over), or leave it unset for every query`,
          { field: "scoreWindow", value: sw },
        );
      }
      return { kind: "h2o", window, sinks, recent, heavy, scoreWindow: sw ?? null, positions: inp.positions ?? "original" };
    }
    case "tova": {
      const sinks = sinksFrom(inp.sinks, "sinks", 0);
      return { kind: "tova", window, sinks, positions: inp.positions ?? "original" };
    }
    default:
      return inp satisfies never;
  }
}
