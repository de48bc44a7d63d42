// writeRows (a batch of tokens stored by attention.as storeRows in the kernel memory) against
// write() token by token in JS: the same bits in every slot, for f16 and f32 pages, keys rotated
// (interleaved, neox, a partial rotation) or not, runs that start mid-page and cross pages, and
// values at the edges of f16 (subnormals, ties, overflow, inf, NaN, signed zero).

import { describe, expect, it } from "vitest";
import { CacheOperationError, SequenceNotFoundError } from "../errors.js";
import { resolveCacheConfig, uniformModelShape, type CacheModelShape } from "./config.js";
import { PagedKvCache } from "./paged-kv-cache.js";
import { rng } from "../../test/cache-helpers.js";

const EDGES = [
  0, -0, 1, -1, 65504, 65519, 65520, -70000, 1e10, Infinity, -Infinity, NaN,
  2 ** -14, 2 ** -15, 2 ** -24, 2 ** -25, 3 * 2 ** -25, -5 * 2 ** -26, 1e-9, 2 ** -14 - 2 ** -25,
  1 + 2 ** -11, 1 + 3 * 2 ** -11, -(2 + 2 ** -10), 0.1, 1 / 3,
];

function rows(n: number, width: number, rand: () => number): Float32Array {
  const a = new Float32Array(n * width);
  for (let i = 0; i < a.length; i++) a[i] = i % 7 === 3 ? EDGES[(i / 7) % EDGES.length | 0]! : (rand() * 2 - 1) * 4 ** Math.floor(rand() * 8 - 6);
  return a;
}

const SHAPES: [string, CacheModelShape][] = [
  ["interleaved rope", uniformModelShape(2, 4, 2, 16, 16, { nRot: 16, freqBase: 10000, neox: false })],
  ["neox, partial rope", uniformModelShape(2, 6, 3, 16, 8, { nRot: 8, freqBase: 500000, neox: true })],
  ["no rope", uniformModelShape(1, 2, 2, 8, 24)],
];

describe("writeRows", () => {
  for (const codec of ["f16", "f32"] as const) {
    for (const [name, model] of SHAPES) {
      it(`${codec}, ${name}: the bits write() stores, token by token`, () => {
        const config = resolveCacheConfig({ codec, contextWindowSize: 96, pageSize: 16 });
        const batch = new PagedKvCache(config, model);
        const single = new PagedKvCache(config, model, { kernels: "js" });
        expect(batch.kernels).toBe("wasm");
        const rand = rng(7);
        for (const c of [batch, single]) c.add(0);
        // Chunks of 5, 30 and 21 tokens: runs start mid-page and cross pages; the last chunk is
        // written in two calls (i0 > 0).
        let held = 0;
        for (const n of [5, 30, 21]) {
          for (const c of [batch, single]) expect(c.reserve(0, n).ok).toBe(true);
          for (let l = 0; l < model.layers.length; l++) {
            const L = model.layers[l]!;
            const kRow = L.nHeadKv * L.headDimK, vRow = L.nHeadKv * L.headDimV;
            const k = rows(n, kRow, rand), v = rows(n, vRow, rand);
            const first = n > 20 ? 9 : n;
            batch.writeRows(l, 0, 0, first, k, 0, v, 0);
            if (first < n) batch.writeRows(l, 0, first, n - first, k, first * kRow, v, first * vRow);
            for (let i = 0; i < n; i++) single.write(l, 0, i, k, i * kRow, v, i * vRow);
          }
          held += n;
        }
        expect(batch.length(0)).toBe(held);
        for (let l = 0; l < model.layers.length; l++) {
          const L = model.layers[l]!;
          const kb = new Float32Array(L.nHeadKv * L.headDimK), vb = new Float32Array(L.nHeadKv * L.headDimV);
          const ks = new Float32Array(kb.length), vs = new Float32Array(vb.length);
          let differ = 0;
          for (let i = 0; i < held; i++) {
            batch.readToken(l, 0, i, kb, vb);
            single.readToken(l, 0, i, ks, vs);
            for (let j = 0; j < kb.length; j++) if (!Object.is(kb[j], ks[j])) differ++;
            for (let j = 0; j < vb.length; j++) if (!Object.is(vb[j], vs[j])) differ++;
          }
          expect(differ).toBe(0);
        }
      });
    }
  }

  it("refuses tokens that were not reserved, and an unknown sequence, typed, before it stores anything", () => {
    const model = SHAPES[0]![1];
    const cache = new PagedKvCache(resolveCacheConfig({ codec: "f16", contextWindowSize: 32, pageSize: 16 }), model);
    cache.add(0);
    expect(cache.reserve(0, 4).ok).toBe(true);
    const k = new Float32Array(5 * 32).fill(1), v = new Float32Array(5 * 32).fill(1);
    const kOut = new Float32Array(32), vOut = new Float32Array(32);
    const stored = () => {
      cache.readToken(0, 0, 0, kOut, vOut);
      return vOut.some((x) => x !== 0);
    };
    expect(() => cache.writeRows(0, 0, 0, 5, k, 0, v, 0)).toThrow(CacheOperationError);
    expect(() => cache.writeRows(0, 0, 3, 2, k, 0, v, 0)).toThrow(CacheOperationError);
    expect(() => cache.writeRows(0, 7, 0, 1, k, 0, v, 0)).toThrow(SequenceNotFoundError);
    expect(stored()).toBe(false);
    cache.writeRows(0, 0, 0, 4, k, 0, v, 0);
    expect(stored()).toBe(true);
  });
});
