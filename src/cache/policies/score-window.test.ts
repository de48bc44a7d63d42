import { describe, expect, it } from "vitest";

import { CacheConfigError } from "../../errors.js";
import { cacheScratchBytes, PagedKvCache } from "../paged-kv-cache.js";
import { resolveCacheConfig, type CacheConfigInput, type CacheModelShape } from "../config.js";
import { createPolicy } from "./index.js";
import { observeScoreWindow, scoreWindowStride } from "./score-window.js";
import { seededRandom } from "../codecs/synthetic-kv.js";

describe("H2O score window (score-window.ts)", () => {
  it("each token's score is the sum of its last N queries' weights over every layer, through prefill chunks and decode steps", () => {
    for (const n of [1, 3, 8]) {
      const rand = seededRandom(17 + n);
      const nLayer = 3;
      const cap = 64;
      const stride = scoreWindowStride(n);
      const rec = new Float64Array(cap * stride);
      // history[t]: token t's per-query contributions (summed over layers), in query order.
      const history: number[][] = [];
      const w = new Float32Array(cap);
      let held = 0;
      while (held < cap) {
        // A chunk of 1..12 new tokens (a prompt chunk, or one decoded token), each attending causally.
        const nQuery = Math.min(cap - held, rand() < 0.5 ? 1 : 1 + Math.floor(rand() * 12));
        for (let i = 0; i < nQuery; i++) {
          rec.fill(0, (held + i) * stride, (held + i + 1) * stride); // what the cache does on append
          history.push([]);
        }
        held += nQuery;
        const first = held - nQuery; // retained index of the chunk's first new token
        const before = history.map((h) => h.length); // each token's queries before this chunk
        for (let layer = 0; layer < nLayer; layer++) {
          for (let qi = 0; qi < nQuery; qi++) {
            const nVis = first + qi + 1;
            for (let t = 0; t < nVis; t++) w[t] = Math.fround(rand());
            observeScoreWindow(rec, n, layer, qi, nQuery, w, nVis);
            for (let t = 0; t < nVis; t++) {
              // Query qi is the (qi - firstSeen)-th query of this chunk that token t sees.
              const idx = before[t]! + qi - Math.max(0, t - first);
              const h = history[t]!;
              if (layer === 0) h.push(0);
              h[idx] = h[idx]! + w[t]!;
            }
          }
        }
        for (let t = 0; t < held; t++) {
          const h = history[t]!;
          let want = 0;
          for (let i = Math.max(0, h.length - n); i < h.length; i++) want += h[i]!;
          expect(Math.abs(rec[t * stride]! - want)).toBeLessThan(1e-12 * Math.max(1, want));
          expect(rec[t * stride + 1]).toBe(h.length);
        }
      }
    }
  });

  // One head of dim 4, no RoPE: a key along e0 is what a query along e0 attends to; a query along
  // -e0 gives it weight e^-32 and spreads the rest evenly over the zero keys.
  const MODEL: CacheModelShape = { nHead: 1, layers: [{ nHeadKv: 1, headDimK: 4, headDimV: 4 }] };
  const HEAVY = 2;
  /** Streams `nTokens` tokens one at a time; queries point at token HEAVY until `switchAt`, then away. Returns the kept text positions. */
  function stream(policy: CacheConfigInput["policy"], nTokens: number, switchAt: number): number[] {
    const cache = new PagedKvCache(resolveCacheConfig({ slidingWindowSize: 16, codec: "f32", policy }), MODEL);
    cache.add(0);
    const k = new Float32Array(4);
    const v = new Float32Array(4);
    const q = new Float32Array(4);
    const out = new Float32Array(4);
    for (let t = 0; t < nTokens; t++) {
      expect(cache.reserve(0, 1).ok).toBe(true);
      k.fill(0);
      if (t === HEAVY) k[0] = 8;
      v[3] = t;
      cache.write(0, 0, 0, k, 0, v, 0);
      q.fill(0);
      q[0] = t < switchAt ? 8 : -8;
      cache.attend(0, 0, q, 0, 1, out, 0);
    }
    const pos = new Int32Array(16);
    return Array.from(pos.subarray(0, cache.originalPositions(0, pos)));
  }

  it("evicts an early heavy hitter once it stops being attended; plain H2O keeps it", () => {
    // Window 16: 0 sinks, 4 recent, 12 heavy. Token 2 takes nearly all attention for 12 steps, then none.
    const plain = stream({ kind: "h2o", sinks: 0, recent: 4 }, 40, 12);
    const windowed = stream({ kind: "h2o", sinks: 0, recent: 4, scoreWindow: 4 }, 40, 12);
    expect(plain).toContain(HEAVY);
    expect(windowed).not.toContain(HEAVY);
    // With a window longer than the whole stream the two agree.
    expect(stream({ kind: "h2o", sinks: 0, recent: 4, scoreWindow: 64 }, 40, 12)).toEqual(plain);
  });

  it("a snapshot keeps the rings (the restored sequence evicts as the original), and a plain h2o one is refused by name", () => {
    const make = (scoreWindow?: number): PagedKvCache =>
      new PagedKvCache(resolveCacheConfig({ slidingWindowSize: 16, codec: "f32", maxSequences: 2, policy: { kind: "h2o", sinks: 0, recent: 4, ...(scoreWindow ? { scoreWindow } : {}) } }), MODEL);
    const cache = make(8);
    cache.add(0);
    const k = new Float32Array(4);
    const v = new Float32Array(4);
    const q = new Float32Array(4);
    const out = new Float32Array(4);
    const step = (seq: number, t: number): void => {
      cache.reserve(seq, 1);
      k.fill(0);
      if (t === HEAVY) k[0] = 8;
      v[3] = t;
      cache.write(0, seq, 0, k, 0, v, 0);
      q.fill(0);
      q[0] = t < 12 ? 8 : -8;
      cache.attend(0, seq, q, 0, 1, out, 0);
    };
    const pos = (seq: number): number[] => {
      const p = new Int32Array(16);
      return Array.from(p.subarray(0, cache.originalPositions(seq, p)));
    };
    for (let t = 0; t < 15; t++) step(0, t);
    cache.restore(1, cache.snapshot(0));
    // The first eviction (token 16) reads scores over queries 8..15: the heavy hitter's weight from
    // queries 8..11 came through the snapshot (zeroed rings would evict it here).
    for (let t = 15; t < 17; t++) {
      step(0, t);
      step(1, t);
    }
    expect(pos(0)).toContain(HEAVY);
    expect(pos(1)).toEqual(pos(0));
    for (let t = 17; t < 30; t++) {
      step(0, t);
      step(1, t);
    }
    expect(pos(1)).toEqual(pos(0));
    expect(pos(0)).not.toContain(HEAVY);
    const plain = make();
    plain.add(0);
    cache.remove(1);
    expect(() => cache.restore(1, plain.snapshot(0))).toThrow(/snapshot policy "h2o" does not match this cache's "h2o\/scoreWindow=8"/);
  });

  it("costs scoreWindow + 2 f64 per token and sequence, counted in the cache's scratch bytes", () => {
    const input = (scoreWindow?: number): CacheConfigInput => ({
      slidingWindowSize: 300,
      maxSequences: 3,
      codec: "f32",
      policy: { kind: "h2o", recent: 64, ...(scoreWindow !== undefined ? { scoreWindow } : {}) },
    });
    const plain = resolveCacheConfig(input());
    const windowed = resolveCacheConfig(input(32));
    expect(createPolicy(plain.policy).scoresPerToken).toBe(1);
    expect(createPolicy(windowed.policy).scoresPerToken).toBe(34);
    const model = { nHead: 4, layers: [{ nHeadKv: 2, headDimK: 8, headDimV: 8 }] };
    expect(cacheScratchBytes(windowed, model) - cacheScratchBytes(plain, model)).toBe(3 * 300 * (34 - 1) * 8);
    expect(new PagedKvCache(windowed, model).scratchBytes).toBe(cacheScratchBytes(windowed, model));
    // Scores are allocated up front for every sequence; past 2 GiB the config is refused, typed.
    const huge = resolveCacheConfig({ slidingWindowSize: 16384, maxSequences: 8, policy: { kind: "h2o", scoreWindow: 4096 } });
    expect(() => cacheScratchBytes(huge, model)).toThrow(CacheConfigError);
    expect(() => new PagedKvCache(huge, model)).toThrow(/lower the score window/);
  });
});
