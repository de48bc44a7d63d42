// What a reserve decided: the result a caller sees (ReserveResult) and the pending plan that
// CacheGroup.planReserve fills and commitReserve applies (as llama.cpp keeps find_slot apart from apply_ubatch).

import type { SequenceState } from "./sequence.js";

/** What `reserve` did. Refusals change nothing. */
export type ReserveResult =
  | { readonly ok: true; readonly evicted: number }
  /** context policy: the window is full. A prompt boundary throws ContextWindowSizeExceededError;
   *  a decoding loop finishes with reason "length". */
  | { readonly ok: false; readonly reason: "length"; readonly held: number; readonly window: number }
  /** The pool has too few free pages (a budget shared by sequences, or forks holding pages). */
  | { readonly ok: false; readonly reason: "exhausted"; readonly neededPages: number; readonly freePages: number };

/**
 * The last ok planReserve, valid while its sequence is unchanged (same object, same version). One
 * object per group, refilled: a decode loop plans every token and must not allocate.
 */
export class ReservePlan {
  seq: SequenceState | null = null;
  /** Tokens to append. */
  n = 0;
  /** Tokens to evict first (the policy's choice sits in the scratch's evictIdx). */
  evictions = 0;
  /** Entries the evictions empty (their indices sit in the scratch's doomed). */
  nDoomed = 0;
  /** Pack the survivors into fewer pages before appending (policies that leave holes). */
  compact = false;
  /** The sequence's version when planned: any change in between voids the plan. */
  version = -1;

  set(s: SequenceState, n: number, evictions: number, nDoomed: number, compact: boolean): void {
    this.seq = s;
    this.n = n;
    this.evictions = evictions;
    this.nDoomed = nDoomed;
    this.compact = compact;
    this.version = s.version;
  }

  clear(): void {
    this.seq = null;
  }
}

/** Successful reserve results for small eviction counts, frozen, made on first use: a decode loop in
 *  a full window gets the same `{ ok: true, evicted: 1 }` every token instead of a new object. */
const OK_RESULTS: ReserveResult[] = [];
const OK_RESULTS_CACHED = 64;
export function okResult(evicted: number): ReserveResult {
  if (evicted > OK_RESULTS_CACHED) return { ok: true, evicted };
  return (OK_RESULTS[evicted] ??= Object.freeze({ ok: true as const, evicted }));
}
