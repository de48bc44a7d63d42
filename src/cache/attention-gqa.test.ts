// attend() with every GQA group size 1..8 against the naive dense reference over the retained
// tokens' original K/V: f32, and f16 / int8 within their rounding. headDimV 6 keeps these caches on
// the JS kernels; wasm/attend-wasm.test.ts holds the wasm kernels to them for groups 1, 3, 4, 8.
// Group sizes of real models: stories260K 2 (8 / 4), SmolLM2-135M 3 (9 / 3), Llama-3-8B 4 (32 / 8).
import { describe, expect, it } from "vitest";
import type { CodecKind } from "./codecs/types.js";
import { resolveCacheConfig, type CacheModelShape } from "./config.js";
import { PagedKvCache } from "./paged-kv-cache.js";
import { appendTokens, denseOverRetained, makeTokenKv, maxRelErr, retainedIds, rng, type TokenKv } from "../../test/cache-helpers.js";


/** Prefills in chunks, then decodes; after each step compares attend with dense attention over the decoded K/V. */
function worstErr(G: number, codec: CodecKind): number {
  const model: CacheModelShape = {
    nHead: 2 * G,
    layers: [{ nHeadKv: 2, headDimK: 8, headDimV: 6 }],
    rope: { nRot: 8, freqBase: 10000, neox: true },
  };
  const config = resolveCacheConfig({ codec, slidingWindowSize: 40, attentionSinkSize: 2, pageSize: 4 });
  const cache = new PagedKvCache(config, model);
  cache.add(0);
  const rand = rng(11 + G);
  const kvById: TokenKv[] = [];
  const pos = new Int32Array(config.windowTokens);
  const shape = model.layers[0]!;
  let worst = 0;
  let id = 0;
  for (const n of [7, 5, 1, 1, 9, 1, 1, 1, 6, 1, 1]) {
    const batch: TokenKv[] = [];
    for (let i = 0; i < n; i++) batch.push((kvById[id] = makeTokenKv(model, id++, rand)));
    expect(appendTokens(cache, 0, batch)).toBe(true);
    const ids = retainedIds(cache, 0);
    const held = cache.positions(0, pos);
    const positions = Array.from(pos.subarray(0, held));
    const q = new Float32Array(n * model.nHead * shape.headDimK);
    for (let i = 0; i < q.length; i++) q[i] = rand() * 2 - 1;
    const out = new Float32Array(n * model.nHead * shape.headDimV);
    cache.attend(0, 0, q, 0, n, out, 0);
    const want = denseOverRetained(model, 0, kvById, ids, positions, q, n);
    worst = Math.max(worst, maxRelErr(out, want));
  }
  return worst;
}

describe("attend with any GQA group size equals dense attention", () => {
  for (let G = 1; G <= 8; G++) {
    it(`group of ${G} (f32): within 1e-5`, () => {
      expect(worstErr(G, "f32")).toBeLessThan(1e-5);
    });
    // Lossy codecs: bounds are loose multiples of each codec's rounding (f16 2^-11, int8 1/254).
    for (const [codec, bound] of [["f16", 5e-3], ["int8", 5e-2]] as [CodecKind, number][]) {
      it(`group of ${G} (${codec}): within ${bound}`, () => {
        expect(worstErr(G, codec)).toBeLessThan(bound);
      });
    }
  }
});
