// What the cache reports about itself. Counters are kept up to date as the cache changes, so a read
// is O(1) per field (cheap enough for every token); `perSequence` is O(sequences).

import type { CachePolicyKind } from "./config.js";
import type { CodecKind } from "./codecs/types.js";

export interface SequenceStats {
  readonly seqId: number;
  /** Tokens retained. */
  readonly tokens: number;
  /** Pages in this sequence's page table (shared ones counted in every sharer). */
  readonly pages: number;
  /** Original position the next appended token gets (the length of the text so far). */
  readonly nextPosition: number;
  /** Reserves that evicted something, and the tokens they evicted. */
  readonly evictionEvents: number;
  readonly evictedTokens: number;
}

export interface CacheStats {
  readonly policy: CachePolicyKind;
  readonly codec: CodecKind;
  /** Tokens one sequence may hold. */
  readonly windowTokens: number;
  readonly pageSize: number;
  readonly sequences: number;
  /** Tokens retained over all sequences. */
  readonly tokens: number;
  readonly pagesTotal: number;
  readonly pagesUsed: number;
  readonly pagesFree: number;
  /** Bytes the stores reserved at construction (constant for the cache's life). */
  readonly bytesReserved: number;
  /** Bytes of the pages in use (pagesUsed x bytes per page; side buffers excluded). */
  readonly bytesUsed: number;
  readonly evictionEvents: number;
  readonly evictedTokens: number;
  /** Pages copied because a shared (forked) page was written. */
  readonly copyOnWritePages: number;
  /** Compactions of sparse pages (score-based policies). */
  readonly compactions: number;
}

/** Cache-wide counters, mutated only by the cache. */
export class StatsCounters {
  tokens = 0;
  evictionEvents = 0;
  evictedTokens = 0;
  copyOnWritePages = 0;
  compactions = 0;
}
