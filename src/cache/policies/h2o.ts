// h2o (Heavy-Hitter Oracle, Zhang et al. 2023): keep sinks, the `recent` newest tokens, and the
// `heavy` tokens with the largest attention accumulated over every query, head and layer so far,
// or with `scoreWindow` over the last scoreWindow queries only (score-window.ts).
// Evictions leave holes mid-sequence; the cache compacts pages when they grow sparse.

import type { CachePolicy } from "../config.js";
import { observeScoreWindow, scoreWindowStride } from "./score-window.js";
import { selectLowest, type EvictionPolicy } from "./types.js";

export function h2oPolicy(config: Extract<CachePolicy, { kind: "h2o" }>): EvictionPolicy {
  const taken = new Uint8Array(config.window);
  const n = config.scoreWindow;
  const stride = n === null ? 1 : scoreWindowStride(n);
  return {
    config,
    window: config.window,
    pinned: config.sinks,
    positions: config.positions,
    holes: true,
    usesScores: true,
    scoresPerToken: stride,
    observedQueries: n === null ? "sum" : n,
    pagesPerSequence: (pageSize) => Math.ceil(config.window / pageSize) + 1,
    selectEvictions: (view, count, nNew, out) => {
      // After the append the newest `recent` tokens are protected: nNew of them are the new ones.
      const protectedOld = Math.max(0, config.recent - nNew);
      selectLowest(view.scores, config.sinks, view.held - protectedOld, count, out, taken, stride);
    },
    observe:
      n === null
        ? (scores, _layer, _nLayer, _qi, _nQuery, w, nVisible) => {
            for (let t = 0; t < nVisible; t++) scores[t] = scores[t]! + w[t]!;
          }
        : (scores, layer, _nLayer, qi, nQuery, w, nVisible) => observeScoreWindow(scores, n, layer, qi, nQuery, w, nVisible),
  };
}
