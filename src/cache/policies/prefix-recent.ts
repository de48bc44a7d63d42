// prefix-recent: keep the first `prefix` tokens (e.g. a system prompt) and the last `recent`;
// the same mechanics as sliding with a prefix sized for a prompt rather than 4 sink tokens.

import type { CachePolicy } from "../config.js";
import { noObserve, prefixRecentPages, type EvictionPolicy } from "./types.js";

export function prefixRecentPolicy(config: Extract<CachePolicy, { kind: "prefix-recent" }>): EvictionPolicy {
  return {
    config,
    window: config.window,
    pinned: config.prefix,
    positions: config.positions,
    holes: false,
    usesScores: false,
    scoresPerToken: 0,
    observedQueries: 0,
    pagesPerSequence: (pageSize) => prefixRecentPages(config.prefix, config.recent, pageSize),
    selectEvictions: (_view, count, _nNew, out) => {
      for (let j = 0; j < count; j++) out[j] = config.prefix + j;
    },
    observe: noObserve,
  };
}
