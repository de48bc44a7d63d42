// Which position attention gives a cached token. "original": its place in the text. "reassigned":
// its place in the cache (0..held-1), as StreamingLLM does so that positions never pass the
// training length however long the text grows.
//
// Keys are rotated once, at write time, by their original position and never re-rotated; the
// attention kernel rotates the query per run by queryPos + (rotPos - pos) instead (see runs.ts).
// Measured choice: re-rotating on eviction would touch every retained key on every eviction
// (O(window) per token, and a re-quantization for int4/int8 pages), while a per-run query rotation
// costs one rotation per page per query head group and is exact for every codec.
//
// Defaults (config.ts): sliding, fifo and prefix-recent re-assign (StreamingLLM: "positions within
// the cache"); context, h2o and tova keep original positions (the H2O and TOVA papers evaluate with
// the model's own positions; a context window never evicts, so the two modes coincide there).

import type { PositionsMode } from "./config.js";

export type { PositionsMode } from "./config.js";

/** The attention position of the retained token at `index` whose original position is `original`. */
export function attentionPosition(mode: PositionsMode, index: number, original: number): number {
  switch (mode) {
    case "original":
      return original;
    case "reassigned":
      return index;
    default:
      return mode satisfies never;
  }
}
