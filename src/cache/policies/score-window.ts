// H2O's score window: attention summed over the last N queries only, so a token that was a heavy
// hitter once and is no longer attended ages out (VeloxQuant's `eviction_attention_window`).
//
// Exact, not a decay: each retained token keeps a ring of its last N per-query contributions.
// Record per token, f64, N + 2 numbers (the cache moves, zeroes, forks and snapshots it whole):
//
//   [0] score: the sum of the ring        [1] queries that have seen the token (its ring's clock)
//   [2 .. 2 + N) ring: slot (q mod N) holds query q's weight, summed over layers
//
// A query that sees the token first takes the slot N queries old out of the score and overwrites it
// (layer 0), the other layers add to that slot; every N queries the score is recomputed from the ring,
// so rounding from the subtractions never builds up over a long stream. Cost per query: O(1) per
// visible token and layer (as unbounded H2O), plus O(N) per token every N queries; no allocation.
// Memory: 8 x (N + 2) bytes per retained token and sequence (unbounded H2O: 8).

/** f64 numbers per retained token for a score window of `n` queries. */
export function scoreWindowStride(n: number): number {
  return n + 2;
}

/**
 * Folds one query's weights into the records (EvictionPolicy.observe for a windowed H2O). Relies on
 * the cache's order: every layer in turn, and within a layer the queries in increasing order, so
 * after layer 0 a token's clock counts every query of this call that saw it, and query `qi` of a
 * later layer lands in the slot layer 0 gave it.
 */
export function observeScoreWindow(rec: Float64Array, n: number, layer: number, qi: number, nQuery: number, w: Float32Array, nVisible: number): void {
  const stride = n + 2;
  // Queries before the call's last n leave the window before the next eviction reads the scores:
  // they only age old slots out.
  const counted = qi >= nQuery - n;
  if (layer === 0) {
    for (let t = 0; t < nVisible; t++) {
      const r = t * stride;
      const seen = rec[r + 1]!;
      const k = seen % n;
      const slot = r + 2 + k;
      const old = rec[slot]!;
      const v = counted ? w[t]! : 0;
      rec[slot] = v;
      rec[r + 1] = seen + 1;
      if (k === n - 1) {
        let s = 0;
        for (let i = r + 2; i < r + 2 + n; i++) s += rec[i]!;
        rec[r] = s;
      } else {
        rec[r] = rec[r]! - old + v;
      }
    }
    return;
  }
  if (!counted) return;
  for (let t = 0; t < nVisible; t++) {
    const r = t * stride;
    // The query's place on this token's clock: layer 0 advanced it once per query that saw it.
    const q = rec[r + 1]! - nQuery + qi;
    if (q < 0) continue; // this layer attended without layer 0 before it: not the cache's order
    const slot = r + 2 + (q % n);
    const v = w[t]!;
    rec[slot] = rec[slot]! + v;
    rec[r] = rec[r]! + v;
  }
}
