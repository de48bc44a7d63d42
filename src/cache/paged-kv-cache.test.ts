// The cache's boundary behaviour: typed errors and refusals that leave it consistent, forks,
// snapshots, stats, flat memory under a sliding window, and quantized codecs' attention error.

import { describe, expect, it } from "vitest";
import {
  CacheExhaustedError,
  CacheOperationError,
  ContextWindowSizeExceededError,
  LayerOutOfRangeError,
  SequenceNotFoundError,
  SnapshotError,
} from "../errors.js";
import { resolveCacheConfig, uniformModelShape, type CacheConfigInput, type CacheModelShape } from "./config.js";
import { denseAttention } from "./dense-attention.js";
import { PagedKvCache } from "./paged-kv-cache.js";
import { appendTokens, makeTokenKv, retainedIds, rng, type TokenKv } from "../../test/cache-helpers.js";

const MODEL = uniformModelShape(2, 4, 2, 8, 8, { nRot: 8, freqBase: 10000, neox: false });

function make(input: CacheConfigInput, model: CacheModelShape = MODEL): PagedKvCache {
  return new PagedKvCache(resolveCacheConfig({ codec: "f32", ...input }), model);
}

function tokens(from: number, n: number, rand: () => number, model: CacheModelShape = MODEL): TokenKv[] {
  const out: TokenKv[] = [];
  for (let i = 0; i < n; i++) out.push(makeTokenKv(model, from + i, rand));
  return out;
}

describe("PagedKvCache boundary", () => {
  it("context: a prompt that would overflow throws before anything is written; decoding past the end reports length", () => {
    const cache = make({ contextWindowSize: 8, pageSize: 4 });
    cache.add(0);
    const rand = rng(1);
    expect(() => cache.assertPromptFits(0, 9)).toThrow(ContextWindowSizeExceededError);
    expect(cache.length(0)).toBe(0);
    expect(appendTokens(cache, 0, tokens(0, 8, rand))).toBe(true);
    expect(cache.reserve(0, 1)).toEqual({ ok: false, reason: "length", held: 8, window: 8 });
    expect(() => cache.reserveOrThrow(0, 1)).toThrow(ContextWindowSizeExceededError);
    expect(retainedIds(cache, 0)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    cache.checkInvariants();
  });

  it("typed errors for unknown sequences, layers, unreserved slots, id reuse and maxSequences", () => {
    const cache = make({ slidingWindowSize: 8, attentionSinkSize: 2, maxSequences: 2 });
    const k = new Float32Array(16);
    expect(() => cache.reserve(3, 1)).toThrow(SequenceNotFoundError);
    cache.add(0);
    expect(() => cache.add(0)).toThrow(CacheOperationError);
    expect(() => cache.write(0, 0, 0, k, 0, k, 0)).toThrow(CacheOperationError);
    cache.reserve(0, 1);
    expect(() => cache.write(2, 0, 0, k, 0, k, 0)).toThrow(LayerOutOfRangeError);
    expect(() => cache.attend(-1, 0, k, 0, 1, k, 0)).toThrow(LayerOutOfRangeError);
    expect(() => cache.reserve(0, 7)).toThrow(CacheOperationError); // 8 - 2 sinks = 6 per call
    cache.add(1);
    expect(() => cache.fork(0, 2)).toThrow(CacheOperationError);
    cache.remove(1);
    expect(() => cache.write(0, 1, 0, k, 0, k, 0)).toThrow(SequenceNotFoundError);
    cache.checkInvariants();
  });

  it("fork shares pages; writing the fork after its parent was removed works (refcounts)", () => {
    const cache = make({ contextWindowSize: 32, pageSize: 4, maxSequences: 2 });
    const rand = rng(2);
    cache.add(0);
    appendTokens(cache, 0, tokens(0, 6, rand));
    const usedBefore = cache.stats().pagesUsed;
    cache.fork(0, 1);
    expect(cache.stats().pagesUsed).toBe(usedBefore); // shared, not copied
    cache.remove(0);
    cache.checkInvariants();
    appendTokens(cache, 1, tokens(100, 3, rand));
    expect(retainedIds(cache, 1)).toEqual([0, 1, 2, 3, 4, 5, 100, 101, 102]);
    expect(cache.stats().copyOnWritePages).toBe(0); // the parent is gone: its tail page is exclusive
    cache.checkInvariants();

    // And with the parent alive: appending to either side copies the shared tail page once.
    cache.fork(1, 2);
    appendTokens(cache, 2, tokens(200, 1, rand));
    appendTokens(cache, 1, tokens(300, 1, rand));
    expect(cache.stats().copyOnWritePages).toBe(1);
    expect(retainedIds(cache, 1)).toEqual([0, 1, 2, 3, 4, 5, 100, 101, 102, 300]);
    expect(retainedIds(cache, 2)).toEqual([0, 1, 2, 3, 4, 5, 100, 101, 102, 200]);
    cache.checkInvariants();
  });

  it("running out of budget in the middle of a chunked prefill refuses the chunk and leaves the cache consistent", () => {
    // 5 pages of 4 tokens: a 24-token prompt in chunks of 8 fails on the third chunk.
    const pageBytes = 4 * 2 * 8 * 4 * 2 * 2;
    // Slack of half a page covers the codec's fixed side buffers without room for a 6th page.
    const cache = make({ contextWindowSize: 64, pageSize: 4, budgetBytes: 5 * pageBytes + pageBytes / 2 });
    expect(cache.stats().pagesTotal).toBe(5);
    cache.add(0);
    const rand = rng(3);
    expect(appendTokens(cache, 0, tokens(0, 8, rand))).toBe(true);
    expect(appendTokens(cache, 0, tokens(8, 8, rand))).toBe(true);
    expect(appendTokens(cache, 0, tokens(16, 8, rand))).toBe(false);
    expect(cache.reserve(0, 8)).toEqual({ ok: false, reason: "exhausted", neededPages: 2, freePages: 1 });
    expect(() => cache.reserveOrThrow(0, 8)).toThrow(CacheExhaustedError);
    expect(cache.length(0)).toBe(16);
    expect(retainedIds(cache, 0)).toEqual(Array.from({ length: 16 }, (_, i) => i));
    cache.checkInvariants();
    expect(appendTokens(cache, 0, tokens(16, 4, rand))).toBe(true); // what fits still fits
  });

  it("truncate pops the newest tokens and the next token continues at their position", () => {
    const cache = make({ slidingWindowSize: 8, attentionSinkSize: 2, pageSize: 4 });
    cache.add(0);
    const rand = rng(4);
    for (let i = 0; i < 20; i++) appendTokens(cache, 0, tokens(i, 1, rand));
    cache.truncate(0, 3);
    expect(retainedIds(cache, 0)).toEqual([0, 1, 14, 15, 16]);
    expect(cache.sequenceStats(0).nextPosition).toBe(17);
    appendTokens(cache, 0, tokens(50, 1, rand));
    const pos = new Int32Array(8);
    const n = cache.originalPositions(0, pos);
    expect(Array.from(pos.subarray(0, n))).toEqual([0, 1, 14, 15, 16, 17]);
    cache.checkInvariants();
  });

  it("stats count evictions per sequence and overall", () => {
    const cache = make({ slidingWindowSize: 6, attentionSinkSize: 1, pageSize: 2, maxSequences: 2 });
    cache.add(0);
    cache.add(1);
    const rand = rng(5);
    for (let i = 0; i < 10; i++) appendTokens(cache, 0, tokens(i, 1, rand));
    appendTokens(cache, 1, tokens(0, 3, rand));
    // seq 0: 10 tokens into a window of 6: tokens 7..10 each evict one.
    expect(cache.sequenceStats(0)).toMatchObject({ tokens: 6, evictionEvents: 4, evictedTokens: 4 });
    expect(cache.sequenceStats(1)).toMatchObject({ tokens: 3, evictionEvents: 0 });
    const st = cache.stats();
    expect(st).toMatchObject({ policy: "sliding", tokens: 9, evictionEvents: 4, evictedTokens: 4, sequences: 2, windowTokens: 6 });
    expect(st.pagesUsed + st.pagesFree).toBe(st.pagesTotal);
    expect(st.bytesUsed).toBe(st.pagesUsed * (2 * 2 * 8 * 4 * 2 * 2));
  });

  it("a sliding window's pages stay flat however many tokens pass", () => {
    const model = uniformModelShape(1, 2, 1, 4);
    const cache = make({ slidingWindowSize: 64, attentionSinkSize: 4, pageSize: 16 }, model);
    cache.add(0);
    const rand = rng(6);
    const k = new Float32Array(4);
    const step = (): void => {
      cache.reserve(0, 1);
      k[0] = rand();
      cache.write(0, 0, 0, k, 0, k, 0);
    };
    for (let i = 0; i < 64; i++) step();
    const after64 = cache.stats();
    let maxUsed = 0;
    for (let i = 0; i < 20_000; i++) {
      step();
      maxUsed = Math.max(maxUsed, cache.stats().pagesUsed);
    }
    // Hand bound: ceil(4/16) + ceil(60/16) + 1 = 6 pages, the pool's whole size.
    expect(cache.stats().pagesTotal).toBe(6);
    expect(maxUsed).toBeLessThanOrEqual(6);
    expect(cache.stats().bytesReserved).toBe(after64.bytesReserved);
    expect(cache.length(0)).toBe(64);
    cache.checkInvariants();
  });
});

describe("snapshots", () => {
  for (const codec of ["f32", "f16", "int8", "int4", "fp8"] as const) {
    it(`${codec}: restore gives the same tokens, positions and attention output`, () => {
      const cache = new PagedKvCache(resolveCacheConfig({ codec, slidingWindowSize: 12, attentionSinkSize: 2, pageSize: 4, maxSequences: 2 }), MODEL);
      cache.add(0);
      const rand = rng(7);
      for (let i = 0; i < 30; i += 3) appendTokens(cache, 0, tokens(i, 3, rand));
      const bytes = cache.snapshot(0);
      const q = new Float32Array(4 * 8).map(() => rand());
      const before = new Float32Array(4 * 8);
      const after = new Float32Array(4 * 8);
      cache.attend(1, 0, q, 0, 1, before, 0);
      const ids = retainedIds(cache, 0);
      cache.remove(0);
      expect(cache.restore(5, bytes)).toBe(true);
      expect(retainedIds(cache, 5)).toEqual(ids);
      cache.attend(1, 5, q, 0, 1, after, 0);
      expect(Array.from(after)).toEqual(Array.from(before));
      cache.checkInvariants();
    });
  }

  it("mismatching config or model, and corrupt bytes, are SnapshotErrors naming the field", () => {
    const cache = make({ slidingWindowSize: 12, attentionSinkSize: 2, pageSize: 4 });
    cache.add(0);
    appendTokens(cache, 0, tokens(0, 5, rng(8)));
    const bytes = cache.snapshot(0);
    const field = (fn: () => unknown): unknown => {
      try {
        fn();
      } catch (err) {
        expect(err).toBeInstanceOf(SnapshotError);
        return (err as SnapshotError).details.field;
      }
      return "no error";
    };
    expect(field(() => make({ slidingWindowSize: 12, attentionSinkSize: 2, pageSize: 4, codec: "f16" }).restore(0, bytes))).toBe("codec");
    expect(field(() => make({ slidingWindowSize: 12, attentionSinkSize: 2, pageSize: 8 }).restore(0, bytes))).toBe("pageSize");
    expect(field(() => make({ slidingWindowSize: 16, attentionSinkSize: 2, pageSize: 4 }).restore(0, bytes))).toBe("windowTokens");
    expect(field(() => make({ slidingWindowSize: 12, attentionSinkSize: 2, pageSize: 4 }, uniformModelShape(3, 4, 2, 8, 8, MODEL.rope)).restore(0, bytes))).toBe("layers");
    const bad = bytes.slice();
    bad[bad.length - 10] = bad[bad.length - 10]! ^ 0xff;
    expect(field(() => cache.restore(1, bad))).toBe("checksum");
    expect(field(() => cache.restore(1, bytes.subarray(0, 20)))).toBe("length");
    cache.checkInvariants();
  });
});

describe("quantized codecs: attention error vs dense f32 (measured bounds)", () => {
  // Measured on K/V uniform in [-1, 1], head dim 64, 8 query heads over 2 KV heads, 200-token
  // sliding window after 300 tokens, queries uniform in [-2, 2]; max |error| / max |output|:
  // f16 2.5e-4, int8 4.6e-3, int4 (KIVI) 7.7e-2, fp8 e4m3 3.3e-2. Bounds below keep ~3x margin.
  const BOUNDS = { f16: 1e-3, int8: 1.5e-2, int4: 0.2, fp8: 0.1 } as const;
  const model: CacheModelShape = { nHead: 8, layers: [{ nHeadKv: 2, headDimK: 64, headDimV: 64 }], rope: { nRot: 64, freqBase: 10000, neox: true } };
  for (const codec of ["f16", "int8", "int4", "fp8"] as const) {
    it(`${codec} within ${BOUNDS[codec]}`, () => {
      const cache = new PagedKvCache(resolveCacheConfig({ codec, slidingWindowSize: 200, attentionSinkSize: 4 }), model);
      cache.add(0);
      const rand = rng(11);
      const all = tokens(0, 300, rand, model);
      for (const kv of all) appendTokens(cache, 0, [kv]);
      const held = cache.length(0);
      const pos = new Int32Array(held);
      cache.positions(0, pos);
      const ids = [0, 1, 2, 3];
      for (let i = 300 - (held - 4); i < 300; i++) ids.push(i);
      const k = new Float32Array(held * 128);
      const v = new Float32Array(held * 128);
      for (let t = 0; t < held; t++) {
        k.set(all[ids[t]!]!.k[0]!, t * 128);
        v.set(all[ids[t]!]!.v[0]!, t * 128);
      }
      const q = new Float32Array(8 * 64).map(() => (rand() * 2 - 1) * 2);
      const out = new Float32Array(8 * 64);
      cache.attend(0, 0, q, 0, 1, out, 0);
      const want = denseAttention({ nHead: 8, nHeadKv: 2, headDimK: 64, headDimV: 64, q, qPos: [pos[held - 1]!], k, v, kPos: Array.from(pos), rope: model.rope! });
      let maxAbs = 0;
      let err = 0;
      for (let i = 0; i < want.length; i++) {
        maxAbs = Math.max(maxAbs, Math.abs(want[i]!));
        err = Math.max(err, Math.abs(out[i]! - want[i]!));
      }
      expect(err / maxAbs).toBeLessThan(BOUNDS[codec]);
      expect(err).toBeGreaterThan(0); // it really went through the codec
    });
  }
});
