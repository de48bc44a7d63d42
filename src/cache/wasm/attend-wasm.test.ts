// The wasm attention kernels (attention.as through attendRunsWasm) against the JS kernels over the
// same cache operations, and f32 against the dense reference: every codec with wasm kernels, the
// window policies (re-assigned positions give several RoPE ranges per step), page sizes 1/4/16,
// GQA groups 1/3/4/8, query chunks of 1..5 tokens (blocks of four queries and shorter tails; the
// 2 GiB case's large window takes blocks of two).

import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { resolveCacheConfig, uniformModelShape, type CacheConfigInput, type CacheModelShape } from "../config.js";
import { cacheKernelLayout, cacheScratchBytes, PagedKvCache } from "../paged-kv-cache.js";
import type { CodecKind } from "../codecs/types.js";
import { appendTokens, denseOverRetained, makeTokenKv, maxRelErr, retainedIds, rng, type TokenKv } from "../../../test/cache-helpers.js";
import { cacheMemoryBytes, wasmAttentionAvailable } from "./store-memory.js";
import { queryBlock, QUERY_BLOCK_MAX, QUERY_BLOCK_MIN } from "../attention.js";
import { roundToF16 } from "../codecs/half.js";

const MODELS: Record<string, CacheModelShape> = {
  "groups 4/1/8": {
    nHead: 8,
    layers: [
      { nHeadKv: 2, headDimK: 16, headDimV: 8 },
      { nHeadKv: 8, headDimK: 8, headDimV: 16 },
      { nHeadKv: 1, headDimK: 32, headDimV: 32 },
    ],
    rope: { nRot: 8, freqBase: 10000, neox: false },
  },
  "group 3, neox": {
    nHead: 6,
    layers: [{ nHeadKv: 2, headDimK: 8, headDimV: 8 }],
    rope: { nRot: 8, freqBase: 500000, neox: true },
  },
};

/** Streams tokens through a wasm cache and a JS cache; returns the worst relative differences. */
function compare(model: CacheModelShape, codec: CodecKind, input: CacheConfigInput, total: number, seed: number) {
  const config = resolveCacheConfig({ ...input, codec });
  const wasm = new PagedKvCache(config, model);
  const js = new PagedKvCache(config, model, { kernels: "js" });
  expect(wasm.kernels).toBe("wasm");
  expect(js.kernels).toBe("js");
  wasm.add(0);
  js.add(0);
  const rand = rng(seed);
  const kvById: TokenKv[] = [];
  const pos = new Int32Array(config.windowTokens);
  let worstJs = 0;
  let worstDense = 0;
  let steps = 0;
  let id = 0;
  while (id < total) {
    const n = Math.min(total - id, 1 + Math.floor(rand() * 5));
    const batch: TokenKv[] = [];
    for (let i = 0; i < n; i++) {
      const kv = makeTokenKv(model, id, rand);
      kvById[id++] = kv;
      batch.push(kv);
    }
    expect(appendTokens(wasm, 0, batch)).toBe(true);
    expect(appendTokens(js, 0, batch)).toBe(true);
    const held = wasm.positions(0, pos);
    const ids = retainedIds(wasm, 0);
    for (let l = 0; l < model.layers.length; l++) {
      const shape = model.layers[l]!;
      const q = new Float32Array(n * model.nHead * shape.headDimK);
      for (let i = 0; i < q.length; i++) q[i] = rand() * 2 - 1;
      const a = new Float32Array(n * model.nHead * shape.headDimV);
      const b = new Float32Array(a.length);
      wasm.attend(l, 0, q, 0, n, a, 0);
      js.attend(l, 0, q, 0, n, b, 0);
      worstJs = Math.max(worstJs, maxRelErr(a, b));
      if (codec === "f32") {
        const want = denseOverRetained(model, l, kvById, ids, Array.from(pos.subarray(0, held)), q, n);
        worstDense = Math.max(worstDense, maxRelErr(a, want));
      }
    }
    steps++;
  }
  return { steps, worstJs, worstDense };
}

const POLICIES: CacheConfigInput[] = [
  { contextWindowSize: 120, policy: { kind: "context" } },
  { slidingWindowSize: 40, attentionSinkSize: 3 },
  { slidingWindowSize: 40, attentionSinkSize: 3, policy: { kind: "sliding", positions: "original" } },
  { slidingWindowSize: 36, policy: { kind: "fifo" } },
  { slidingWindowSize: 38, policy: { kind: "prefix-recent", prefix: 9 } },
];

describe("wasm attention kernels", () => {
  it("are available in this runtime (Node 20 has WebAssembly SIMD)", () => {
    expect(wasmAttentionAvailable()).toBe(true);
  });

  for (const [modelName, model] of Object.entries(MODELS)) {
    for (const codec of ["f32", "f16", "int8", "fp8", "int4"] as const) {
      for (const input of POLICIES) {
        for (const pageSize of [1, 4, 16]) {
          const name = `${modelName} ${codec} ${JSON.stringify(input)} page ${pageSize}`;
          it(`equal the JS kernels${codec === "f32" ? " and dense attention" : ""}: ${name}`, () => {
            const { steps, worstJs, worstDense } = compare(model, codec, { ...input, pageSize }, 110, 3 + pageSize);
            expect(steps).toBeGreaterThan(20);
            // Same decoded values; only the summation order and the exp (Cephes polynomial vs
            // fast-exp.ts's table) differ. int8 and int4 also round the query rows (times the
            // channel scales, int4) and the weights to int16 for their integer dots (2^-16 of a
            // row's / a chunk's largest each): measured <= 3.5e-5 (int8) and 5.4e-5 (int4), two
            // orders below their own error against f32 (4.6e-3 / 7.7e-2, codecs/accuracy.test.ts).
            expect(worstJs).toBeLessThan(codec === "int8" || codec === "int4" ? 1e-4 : 2e-5);
            if (codec === "f32") expect(worstDense).toBeLessThan(1e-5);
          });
        }
      }
    }
  }

  it("f16 pages give the f32 kernels' bits over the same values: keys and values decoded once for many rows (GQA 7 and 8, blocks of 1..5 queries) read as f32 pages are", () => {
    // No RoPE: the cache would rotate the keys before rounding them to f16.
    const { rope: _, ...groups } = MODELS["groups 4/1/8"]!;
    for (const model of [groups, uniformModelShape(1, 14, 2, 64, 64)]) {
      for (const input of [{ contextWindowSize: 200 }, { slidingWindowSize: 48, attentionSinkSize: 4 }]) {
        const f16 = new PagedKvCache(resolveCacheConfig({ ...input, codec: "f16" }), model);
        const f32 = new PagedKvCache(resolveCacheConfig({ ...input, codec: "f32" }), model);
        f16.add(0);
        f32.add(0);
        const rand = rng(9);
        let id = 0, rows = 0;
        for (let step = 0; step < 40; step++) {
          const n = 1 + (step % 5);
          const batch: TokenKv[] = [];
          for (let i = 0; i < n; i++) {
            const kv = makeTokenKv(model, id++, rand);
            for (const a of [...kv.k, ...kv.v]) for (let j = 0; j < a.length; j++) a[j] = roundToF16(a[j]!);
            batch.push(kv);
          }
          expect(appendTokens(f16, 0, batch)).toBe(true);
          expect(appendTokens(f32, 0, batch)).toBe(true);
          for (let l = 0; l < model.layers.length; l++) {
            const shape = model.layers[l]!;
            const q = new Float32Array(n * model.nHead * shape.headDimK).map(() => rand() * 2 - 1);
            const a = new Float32Array(n * model.nHead * shape.headDimV);
            const b = new Float32Array(a.length);
            f16.attend(l, 0, q, 0, n, a, 0);
            f32.attend(l, 0, q, 0, n, b, 0);
            expect(Array.from(new Uint32Array(a.buffer)), `layer ${l}, step ${step}`).toEqual(Array.from(new Uint32Array(b.buffer)));
            rows += a.length;
          }
        }
        expect(rows).toBeGreaterThan(1000);
      }
    }
  });

  it("int8 gives the same results over runs longer than its 256-token integer chunks (page size 1024)", () => {
    const { steps, worstJs } = compare(MODELS["group 3, neox"]!, "int8", { contextWindowSize: 1100, pageSize: 1024 }, 700, 5);
    expect(steps).toBeGreaterThan(100);
    expect(worstJs).toBeLessThan(1e-4);
  });

  it("cacheScratchBytes predicts what a cache allocates besides its stores, wasm or JS", () => {
    const odd: CacheModelShape = { nHead: 4, layers: [{ nHeadKv: 2, headDimK: 6, headDimV: 6 }] };
    const cases: [CacheModelShape, CacheConfigInput][] = [
      [MODELS["groups 4/1/8"]!, { contextWindowSize: 4096, codec: "f16" }],
      [MODELS["groups 4/1/8"]!, { slidingWindowSize: 1024, attentionSinkSize: 4, codec: "int4", maxSequences: 3 }],
      [MODELS["group 3, neox"]!, { slidingWindowSize: 300, policy: { kind: "h2o", recent: 64 }, codec: "int8" }],
      [MODELS["group 3, neox"]!, { contextWindowSize: 2048, codec: "fp8", pageSize: 64, budgetBytes: 200_000 }],
      [odd, { contextWindowSize: 500, codec: "f32" }],
    ];
    const kernels: string[] = [];
    for (const [model, input] of cases) {
      const config = resolveCacheConfig(input);
      const cache = new PagedKvCache(config, model);
      kernels.push(cache.kernels);
      expect(cacheScratchBytes(config, model)).toBe(cache.scratchBytes);
      expect(cache.scratchBytes).toBeGreaterThan(4 * model.nHead * config.windowTokens); // at least the scores of one query
    }
    expect(kernels).toEqual(["wasm", "wasm", "js", "wasm", "js"]);
  });

  it("address stores past 2 GiB of their memory (unsigned 32-bit offsets end to end)", () => {
    // 5 layers of 65536-token pools at 8 KiB per token and layer: the last layer's stores start past
    // 2^31. Nothing touches the untouched pages, so this reserves address space, not RAM.
    for (const [codec, nHeadKv] of [["f32", 8], ["int8", 32], ["int4", 32]] as const) {
      const model = uniformModelShape(codec === "int4" ? 8 : 5, 32, nHeadKv, 128, 128, { nRot: 128, freqBase: 500000, neox: false });
      // 4 queries' scores over this window would pass QUERY_BLOCK_SCORES_BYTES: blocks of 2 here.
      expect(queryBlock(32, 65536)).toBe(QUERY_BLOCK_MIN);
      const config = resolveCacheConfig({ contextWindowSize: 65536, codec });
      const wasm = new PagedKvCache(config, model);
      expect(wasm.kernels).toBe("wasm");
      expect(wasm.kernelMemoryBytes).toBeGreaterThan(2 ** 31 + 2 ** 28);
      const js = new PagedKvCache(config, model, { kernels: "js" });
      wasm.add(0);
      js.add(0);
      const rand = rng(11);
      for (let step = 0; step < 6; step++) {
        const batch: TokenKv[] = [];
        for (let i = 0; i < 7; i++) batch.push(makeTokenKv(model, step * 7 + i, rand));
        expect(appendTokens(wasm, 0, batch)).toBe(true);
        expect(appendTokens(js, 0, batch)).toBe(true);
      }
      const last = model.layers.length - 1;
      for (const n of [1, 3]) {
        const q = new Float32Array(n * 32 * 128).map(() => rand() * 2 - 1);
        const a = new Float32Array(n * 32 * 128);
        const b = new Float32Array(a.length);
        wasm.attend(last, 0, q, 0, n, a, 0);
        js.attend(last, 0, q, 0, n, b, 0);
        expect(maxRelErr(a, b), `${codec}, ${n} queries`).toBeLessThan(codec === "f32" ? 2e-5 : 1e-4);
      }
    }
  }, 30_000);

  it("fall back to JS where the head dims do not suit them, with the same results", () => {
    const model: CacheModelShape = { nHead: 4, layers: [{ nHeadKv: 2, headDimK: 6, headDimV: 6 }] };
    const cache = new PagedKvCache(resolveCacheConfig({ contextWindowSize: 64, codec: "f32" }), model);
    expect(cache.kernels).toBe("js");
    expect(cache.kernelMemoryBytes).toBe(0);
  });

  it("keep the cache's stores, run table and scratch in one memory of whole 64 KiB pages", () => {
    const model = MODELS["groups 4/1/8"]!;
    const config = resolveCacheConfig({ contextWindowSize: 4096, codec: "f16" });
    const cache = new PagedKvCache(config, model);
    expect(cache.kernels).toBe("wasm");
    expect(cache.kernelMemoryBytes % 65536).toBe(0);
    // What the planner predicts (cacheKernelLayout, without creating a cache) is what the cache reserved.
    expect(cacheMemoryBytes(cacheKernelLayout(config, model)!)).toBe(cache.kernelMemoryBytes);
    expect(cacheKernelLayout(resolveCacheConfig({ slidingWindowSize: 64, policy: { kind: "h2o", recent: 16 } }), model)).toBeNull();
    // Llama-3-8B's 32 layers x 8 KV heads x 128 at 65536 tokens, f32: 16 GiB, past one wasm memory.
    const big = uniformModelShape(32, 32, 8, 128, 128);
    expect(cacheKernelLayout(resolveCacheConfig({ contextWindowSize: 65536, codec: "f32" }), big)).toBeNull();
    expect(cacheKernelLayout(resolveCacheConfig({ contextWindowSize: 4096, codec: "f16" }), big)!.bytes).toBeGreaterThan(512 * 2 ** 20);
    expect(cache.kernelMemoryBytes).toBeGreaterThanOrEqual(cache.reservedBytes);
    // Scratch: 4 queries x 8 heads x 4096 scores dominate what the stores do not count.
    expect(queryBlock(8, 4096)).toBe(QUERY_BLOCK_MAX);
    expect(cache.kernelMemoryBytes - cache.reservedBytes).toBeLessThan(cache.reservedBytes);
  });
});

describe("the embedded attention module", () => {
  it("attention-wasm.ts is what build.mjs makes from attention.as and its siblings (run npm run build:wasm after editing them)", async () => {
    // @ts-expect-error build.mjs is plain JS without types
    const build = (await import("../../wasm/build.mjs")) as {
      compileKernels(name: string): Promise<Uint8Array>;
      generatedModule(w: Uint8Array, name: string): string;
    };
    const want = build.generatedModule(await build.compileKernels("attention"), "attention");
    const have = readFileSync(new URL("./attention-wasm.ts", import.meta.url), "utf8");
    expect(have === want).toBe(true);
  }, 30_000);
});
