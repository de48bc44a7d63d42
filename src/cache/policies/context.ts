// context: fill up to the window and never evict; overflow is refused (prompt) or ends decoding
// with finish reason "length" (the cache reports it; the engine decides which).

import type { CachePolicy } from "../config.js";
import { noObserve, type EvictionPolicy } from "./types.js";

export function contextPolicy(config: Extract<CachePolicy, { kind: "context" }>): EvictionPolicy {
  return {
    config,
    window: config.window,
    pinned: 0,
    positions: config.positions,
    holes: false,
    usesScores: false,
    scoresPerToken: 0,
    observedQueries: 0,
    pagesPerSequence: (pageSize) => Math.ceil(config.window / pageSize),
    selectEvictions: () => {
      throw new Error("context policy never evicts (the cache refuses instead)");
    },
    observe: noObserve,
  };
}
