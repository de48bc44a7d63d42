// fifo: a plain window without sinks (StreamingLLM's "window attention" baseline, which collapses
// once the first tokens leave; kept for comparison and for models trained with a window).

import type { CachePolicy } from "../config.js";
import { noObserve, prefixRecentPages, type EvictionPolicy } from "./types.js";

export function fifoPolicy(config: Extract<CachePolicy, { kind: "fifo" }>): EvictionPolicy {
  return {
    config,
    window: config.window,
    pinned: 0,
    positions: config.positions,
    holes: false,
    usesScores: false,
    scoresPerToken: 0,
    observedQueries: 0,
    pagesPerSequence: (pageSize) => prefixRecentPages(0, config.window, pageSize),
    selectEvictions: (_view, count, _nNew, out) => {
      for (let j = 0; j < count; j++) out[j] = j;
    },
    observe: noObserve,
  };
}
