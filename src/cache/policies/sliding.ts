// sliding (StreamingLLM, Xiao et al. 2023): keep the first `sinks` tokens plus the most recent
// ones; the oldest non-sink tokens leave first, so evictions form one contiguous range and whole
// pages free as the window moves (O(1) amortized per token).

import type { CachePolicy } from "../config.js";
import { noObserve, prefixRecentPages, type EvictionPolicy } from "./types.js";

export function slidingPolicy(config: Extract<CachePolicy, { kind: "sliding" }>): EvictionPolicy {
  return {
    config,
    window: config.window,
    pinned: config.sinks,
    positions: config.positions,
    holes: false,
    usesScores: false,
    scoresPerToken: 0,
    observedQueries: 0,
    pagesPerSequence: (pageSize) => prefixRecentPages(config.sinks, config.recent, pageSize),
    selectEvictions: (_view, count, _nNew, out) => {
      for (let j = 0; j < count; j++) out[j] = config.sinks + j;
    },
    observe: noObserve,
  };
}
