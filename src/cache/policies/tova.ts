// tova (Token Omission Via Attention, Oren et al. 2024): when full, drop the token the latest query
// attends to least. TOVA decides per layer with head-averaged weights; kvbound keeps one page table
// for all layers, so the score is the latest query's weight averaged over heads AND layers.

import type { CachePolicy } from "../config.js";
import { selectLowest, type EvictionPolicy } from "./types.js";

export function tovaPolicy(config: Extract<CachePolicy, { kind: "tova" }>): EvictionPolicy {
  const taken = new Uint8Array(config.window);
  return {
    config,
    window: config.window,
    pinned: config.sinks,
    positions: config.positions,
    holes: true,
    usesScores: true,
    scoresPerToken: 1,
    observedQueries: 1,
    pagesPerSequence: (pageSize) => Math.ceil(config.window / pageSize) + 1,
    selectEvictions: (view, count, _nNew, out) => {
      selectLowest(view.scores, config.sinks, view.held, count, out, taken);
    },
    observe: (scores, layer, nLayer, queryIndex, nQuery, w, nVisible) => {
      if (queryIndex !== nQuery - 1) return; // only the latest query counts
      const inv = 1 / nLayer;
      if (layer === 0) for (let t = 0; t < nVisible; t++) scores[t] = w[t]! * inv;
      else for (let t = 0; t < nVisible; t++) scores[t] = scores[t]! + w[t]! * inv;
    },
  };
}
