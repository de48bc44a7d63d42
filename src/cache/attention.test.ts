// attend() over the paged cache equals the naive dense reference over the retained tokens at the
// positions the cache reports: every policy, both position modes, GQA, several page sizes,
// prefill chunks and single-token decoding, with RoPE (keys rotated once at write time).

import { describe, expect, it } from "vitest";
import { resolveCacheConfig, type CacheConfigInput, type CacheModelShape } from "./config.js";
import { PagedKvCache } from "./paged-kv-cache.js";
import { appendTokens, denseOverRetained, makeTokenKv, maxRelErr, retainedIds, rng, type TokenKv } from "../../test/cache-helpers.js";

const MODEL: CacheModelShape = {
  nHead: 4,
  // Layer 0: GQA groups of 2; layer 1: one KV head per query head, a different V width.
  layers: [
    { nHeadKv: 2, headDimK: 8, headDimV: 6 },
    { nHeadKv: 4, headDimK: 8, headDimV: 4 },
  ],
  rope: { nRot: 6, freqBase: 10000, neox: false },
};

/** Streams `total` tokens in random chunks; after every step compares attend with dense attention. */
function runAgainstDense(input: CacheConfigInput, total: number, seed: number): { steps: number; worst: number } {
  const config = resolveCacheConfig({ codec: "f32", ...input });
  const cache = new PagedKvCache(config, MODEL);
  cache.add(0);
  const rand = rng(seed);
  const kvById: TokenKv[] = [];
  const pos = new Int32Array(config.windowTokens);
  let steps = 0;
  let worst = 0;
  let id = 0;
  while (id < total) {
    const n = Math.min(total - id, 1 + Math.floor(rand() * Math.min(config.prefillChunkSize, 5)));
    const batch: TokenKv[] = [];
    for (let i = 0; i < n; i++) {
      const kv = makeTokenKv(MODEL, id, rand);
      kvById[id++] = kv;
      batch.push(kv);
    }
    expect(appendTokens(cache, 0, batch)).toBe(true);
    const ids = retainedIds(cache, 0);
    const held = cache.positions(0, pos);
    expect(held).toBe(ids.length);
    const positions = Array.from(pos.subarray(0, held));
    for (let l = 0; l < MODEL.layers.length; l++) {
      const shape = MODEL.layers[l]!;
      const q = new Float32Array(n * MODEL.nHead * shape.headDimK);
      for (let i = 0; i < q.length; i++) q[i] = rand() * 2 - 1;
      const out = new Float32Array(n * MODEL.nHead * shape.headDimV);
      cache.attend(l, 0, q, 0, n, out, 0);
      const want = denseOverRetained(MODEL, l, kvById, ids, positions, q, n);
      worst = Math.max(worst, maxRelErr(out, want));
    }
    steps++;
  }
  return { steps, worst };
}

const POLICIES: CacheConfigInput[] = [
  { contextWindowSize: 200, policy: { kind: "context" } },
  { slidingWindowSize: 24, attentionSinkSize: 3 },
  { slidingWindowSize: 24, attentionSinkSize: 3, policy: { kind: "sliding", positions: "original" } },
  { slidingWindowSize: 20, policy: { kind: "fifo" } },
  { slidingWindowSize: 20, policy: { kind: "fifo", positions: "original" } },
  { slidingWindowSize: 26, policy: { kind: "prefix-recent", prefix: 9 } },
  { slidingWindowSize: 24, attentionSinkSize: 2, policy: { kind: "h2o", recent: 8 } },
  { slidingWindowSize: 24, attentionSinkSize: 2, policy: { kind: "h2o", recent: 8, positions: "reassigned" } },
  { slidingWindowSize: 22, policy: { kind: "tova" } },
  { slidingWindowSize: 22, policy: { kind: "tova", sinks: 1, positions: "reassigned" } },
];

describe("attend over the paged cache equals dense attention (f32)", () => {
  for (const input of POLICIES) {
    for (const pageSize of [1, 4, 16]) {
      const name = `${input.policy?.kind ?? (input.contextWindowSize ? "context" : "sliding")} ${JSON.stringify(input.policy ?? {})} page ${pageSize}`;
      it(name, () => {
        const { steps, worst } = runAgainstDense({ ...input, pageSize }, 150, 7 + pageSize);
        expect(steps).toBeGreaterThan(30);
        expect(worst).toBeLessThan(1e-5);
      });
    }
  }
});

describe("positions", () => {
  it("sliding re-assigns positions 0..held-1 and keeps sinks + the most recent tokens", () => {
    const config = resolveCacheConfig({ codec: "f32", slidingWindowSize: 8, attentionSinkSize: 2, pageSize: 4 });
    const cache = new PagedKvCache(config, MODEL);
    cache.add(0);
    const rand = rng(1);
    for (let id = 0; id < 30; id++) appendTokens(cache, 0, [makeTokenKv(MODEL, id, rand)]);
    // Hand-derived: sinks 0,1 and the 6 newest of 0..29.
    expect(retainedIds(cache, 0)).toEqual([0, 1, 24, 25, 26, 27, 28, 29]);
    const pos = new Int32Array(8);
    cache.positions(0, pos);
    expect(Array.from(pos)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    cache.originalPositions(0, pos);
    expect(Array.from(pos)).toEqual([0, 1, 24, 25, 26, 27, 28, 29]);
  });

  it("tova evicts the token the last query attended to least (head- and layer-averaged)", () => {
    const config = resolveCacheConfig({ codec: "f32", slidingWindowSize: 6, pageSize: 2, policy: { kind: "tova" } });
    const model: CacheModelShape = { nHead: 2, layers: [{ nHeadKv: 1, headDimK: 2, headDimV: 2 }] };
    const cache = new PagedKvCache(config, model);
    cache.add(0);
    // Keys chosen so the hand-computed weights are ordered: query (1,0) scores k.x.
    const keysX = [3, 1, 2, -2, 0.5, 4];
    for (let id = 0; id < 6; id++) {
      appendTokens(cache, 0, [{ k: [Float32Array.of(keysX[id]!, 0)], v: [Float32Array.of(0, id)] }]);
    }
    const out = new Float32Array(4);
    cache.attend(0, 0, Float32Array.of(1, 0, 1, 0), 0, 1, out, 0);
    // Lowest weight goes to the smallest logit: id 3 (k.x = -2).
    appendTokens(cache, 0, [{ k: [Float32Array.of(0, 0)], v: [Float32Array.of(0, 6)] }]);
    expect(retainedIds(cache, 0)).toEqual([0, 1, 2, 4, 5, 6]);
  });

  it("h2o keeps sinks and recent, evicts the lowest accumulated attention among the rest", () => {
    const config = resolveCacheConfig({ codec: "f32", slidingWindowSize: 6, attentionSinkSize: 1, pageSize: 2, policy: { kind: "h2o", recent: 2 } });
    const model: CacheModelShape = { nHead: 1, layers: [{ nHeadKv: 1, headDimK: 2, headDimV: 2 }] };
    const cache = new PagedKvCache(config, model);
    cache.add(0);
    const keysX = [0, 5, -3, 4, 1, 2];
    const out = new Float32Array(2);
    for (let id = 0; id < 6; id++) {
      appendTokens(cache, 0, [{ k: [Float32Array.of(keysX[id]!, 0)], v: [Float32Array.of(0, id)] }]);
      cache.attend(0, 0, Float32Array.of(1, 0), 0, 1, out, 0);
    }
    appendTokens(cache, 0, [{ k: [Float32Array.of(0, 0)], v: [Float32Array.of(0, 6)] }]);
    // Candidates are ids 1..4 minus the newest max(0, 2 - 1) = 1 old token (id 5): 1,2,3,4.
    // id 2 has the smallest key (-3) so the least weight from every query that saw it.
    expect(retainedIds(cache, 0)).toEqual([0, 1, 3, 4, 5, 6]);
  });
});
