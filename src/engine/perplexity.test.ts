// Perplexity against numbers nobody on this project computed: the llama2.c golden per-token NLLs of
// stories260K (../shared/golden/README.md), a brute-force recompute oracle over the dense reference
// backend, and hand-computed log-softmax values; plus the text stream's document rules.

import { readFileSync } from "node:fs";
import { beforeAll, describe, expect, it } from "vitest";
import { resolveCacheConfig } from "../cache/config.js";
import { AbortError, ContextWindowSizeExceededError, InvalidSettingError } from "../errors.js";
import { DenseKv } from "../model/dense-kv.js";
import { createModelCache } from "../model/cache-kv.js";
import { createModel } from "../model/architectures.js";
import type { Tokenizer } from "../model/tokenizer/index.js";
import { requireShared, sharedPath } from "../../test/helpers/shared.js";
import { loadModel, type LoadedModel } from "./load-model.js";
import { feedBatchSize, nllOf, perplexity, rangePerplexity, type PerplexityOptions } from "./perplexity.js";
import { encodeTextStream, splitDocuments } from "./text-stream.js";

describe("nllOf", () => {
  it("is -log softmax, by hand", () => {
    // softmax of 4 equal logits is 1/4 each: NLL = ln 4.
    expect(nllOf(new Float32Array([3, 3, 3, 3]), 2)).toBeCloseTo(Math.log(4), 12);
    // logits [0, ln 3]: p(1) = 3/4, p(0) = 1/4.
    expect(nllOf(new Float32Array([0, Math.fround(Math.log(3))]), 1)).toBeCloseTo(-Math.log(0.75), 6);
    expect(nllOf(new Float32Array([0, Math.fround(Math.log(3))]), 0)).toBeCloseTo(Math.log(4), 6);
  });
  it("does not overflow on large logits", () => {
    // exp(1000) is Infinity in float64; the shifted form gives 1000 + ln(1 + e^-1000) = 1000.
    expect(nllOf(new Float32Array([1000, 0]), 1)).toBeCloseTo(1000, 9);
    expect(nllOf(new Float32Array([1000, 0]), 0)).toBeCloseTo(0, 12);
  });
  it("rangePerplexity is exp of the mean", () => {
    expect(rangePerplexity(new Float32Array([1, 2, 3, 4]), 1, 3)).toBeCloseTo(Math.exp(2.5), 6);
  });
});

/** Characters as ids (a..z = 10..35, space 5); BOS 1. Records the options it was called with. */
function charTokenizer(calls: unknown[] = []): Tokenizer {
  return {
    encode(input, opts?: unknown) {
      calls.push(opts);
      const out: number[] = [];
      const text = typeof input === "string" ? input : input.map((s) => s.text).join("");
      for (const ch of text) out.push(ch === " " ? 5 : ch.charCodeAt(0) - 87);
      return out;
    },
    hasSpecial: () => false,
    decode: () => "",
    tokenBytes: () => new Uint8Array(),
    vocab: { tokens: [], types: [], bosId: 1, eosId: 2 },
  };
}

describe("text stream", () => {
  it("splits on lines that are exactly <|endoftext|>, trims, drops empty documents", () => {
    const text = "  ab c \n<|endoftext|>\r\n\n<|endoftext|>\nd<|endoftext|>e\n <|endoftext|>\nf\n<|endoftext|>";
    expect(splitDocuments(text)).toEqual(["ab c", "d<|endoftext|>e\n <|endoftext|>\nf"]);
  });
  it("encodes BOS + tokens per document as plain text, with skipDocs and maxTokens", () => {
    const calls: unknown[] = [];
    const tok = charTokenizer(calls);
    const text = "ab\n<|endoftext|>\nc d\n<|endoftext|>\nef\n";
    expect(encodeTextStream(tok, text)).toEqual([1, 10, 11, 1, 12, 5, 13, 1, 14, 15]);
    expect(encodeTextStream(tok, text, { skipDocs: 1 })).toEqual([1, 12, 5, 13, 1, 14, 15]);
    expect(encodeTextStream(tok, text, { skipDocs: 1, maxTokens: 5 })).toEqual([1, 12, 5, 13, 1]);
    expect(encodeTextStream(tok, text, { skipDocs: 3 })).toEqual([]);
    for (const c of calls) expect(c).toEqual({ parseSpecial: false });
    expect(() => encodeTextStream(tok, text, { skipDocs: -1 })).toThrow(/skipDocs/);
  });
});

const have =
  requireShared("models/stories260K.gguf") &&
  requireShared("golden/stories260K-stream-ids-4096.json") &&
  requireShared("golden/stories260K-stream-dense-nll-4096.f32") &&
  requireShared("text/tinystories-valid-excerpt.txt");


describe.skipIf(!have)("perplexity of stories260K", () => {
  let loaded: LoadedModel;
  let ids: number[];
  let golden: Float32Array; // [4095] llama2.c dense NLL of ids[i+1]
  beforeAll(async () => {
    loaded = await loadModel(sharedPath("models/stories260K.gguf"));
    ids = JSON.parse(readFileSync(sharedPath("golden/stories260K-stream-ids-4096.json"), "utf8")).ids;
    const b = readFileSync(sharedPath("golden/stories260K-stream-dense-nll-4096.f32"));
    golden = new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.length));
  });
  const dense = resolveCacheConfig({ contextWindowSize: 4096, codec: "f32" });

  it("the text stream of the excerpt (first story skipped) is the golden 4096 ids", () => {
    const text = readFileSync(sharedPath("text/tinystories-valid-excerpt.txt"), "utf8");
    expect(encodeTextStream(loaded.tokenizer, text, { skipDocs: 1, maxTokens: 4096 })).toEqual(ids);
  });

  it("dense, first 1024 tokens: every NLL within 1e-4 of llama2.c; README 0..510 = 3.747, 511..1023 = 4.689", async () => {
    const progress: number[] = [];
    const r = await perplexity(loaded.model, ids.slice(0, 1025), { cacheConfig: dense, onProgress: (p) => progress.push(p.done) });
    expect(r.nlls.length).toBe(1024);
    let maxDiff = 0;
    for (let i = 0; i < 1024; i++) maxDiff = Math.max(maxDiff, Math.abs(r.nlls[i]! - golden[i]!));
    expect(maxDiff).toBeLessThan(1e-4);
    expect(rangePerplexity(r.nlls, 0, 511).toFixed(3)).toBe("3.747");
    expect(rangePerplexity(r.nlls, 511, 1024).toFixed(3)).toBe("4.689");
    expect(r.ppl).toBeCloseTo(Math.exp(r.nll), 10);
    expect(r.segments.map((s) => [s.start, s.end])).toEqual([[0, 512], [512, 1024]]);
    expect(r.cache.evictedTokens).toBe(0);
    expect(r.peakCacheBytes).toBe(r.cache.bytesUsed);
    expect(progress.at(-1)).toBe(1024);
  }, 30_000);

  it("dense, all 4096 tokens with llama2.c's f32 RoPE angles: NLLs match llama2.c's; the README segment figures", async () => {
    // llama2.c's run.c computes the RoPE angle `pos * freq` in float32; kvbound's default is
    // float64 (exact at any position, which the cache's per-run query rotation relies on). With the
    // reference's rounding (angleF32) every value matches; with f64 they drift apart by up to
    // ~2e-3 past 1.5k positions, where this model (trained at 512) is already collapsing.
    const model = createModel(loaded.header, new Uint8Array(readFileSync(sharedPath("models/stories260K.gguf"))).subarray(loaded.header.dataOffset), { rope: { angleF32: true } });
    const r = await perplexity(model, ids, { cacheConfig: dense });
    // Measured: 4 of the 4095 values differ by more than 1e-4 (the largest 1.8e-4 at position 3405,
    // NLL 8.68, deep in the collapse where logits are chaotic); all of positions 0..2047 are within
    // 1e-4. The rest of the gap is f32 summation order, which run.c and this code do differently.
    let maxDiff = 0;
    let over = 0;
    for (let i = 0; i < 4095; i++) {
      const d = Math.abs(r.nlls[i]! - golden[i]!);
      if (i < 2048) expect(d).toBeLessThan(1e-4);
      if (d > 1e-4) over++;
      maxDiff = Math.max(maxDiff, d);
    }
    expect(over).toBeLessThanOrEqual(8);
    expect(maxDiff).toBeLessThan(2.5e-4);
    expect(rangePerplexity(r.nlls, 0, 511).toFixed(3)).toBe("3.747");
    expect(rangePerplexity(r.nlls, 511, 1024).toFixed(3)).toBe("4.689");
    expect(rangePerplexity(r.nlls, 1024, 2048).toFixed(3)).toBe("5.389");
    expect(rangePerplexity(r.nlls, 2048, 4095).toFixed(1)).toBe("181.9");
  }, 180_000);

  it("sliding 256 + 4 sinks with reassigned positions stays far below dense once dense collapses past 2k", async () => {
    // Measured over the 4096 ids (f32 pages): dense 29.39 overall, 181.9 on 2048..4094; sliding
    // 256+4 reassigned 3.312 overall (segments 3.746 3.578 2.919 3.335 3.322 3.297 3.331 3.045);
    // the same window keeping original positions 22.36. Golden dense perplexity per 256 tokens
    // climbs 6.2 (2048..2303), 30.6, 142.6 (2560..2815): 2900 tokens reach the collapse and keep
    // the test short. Dense comes from the golden file (llama2.c), not from this code.
    const n = 2900;
    const cfg = resolveCacheConfig({ slidingWindowSize: 256, attentionSinkSize: 4, codec: "f32", policy: { kind: "sliding", positions: "reassigned" } });
    const r = await perplexity(loaded.model, ids.slice(0, n), { cacheConfig: cfg });
    const slidingTail = rangePerplexity(r.nlls, 2304, n - 1);
    const denseTail = rangePerplexity(golden, 2304, n - 1);
    expect(denseTail).toBeGreaterThan(50);
    expect(slidingTail).toBeLessThan(6);
    expect(slidingTail * 4).toBeLessThan(denseTail);
    // Inside the window the two are the same computation.
    for (let i = 0; i < 255; i++) expect(Math.abs(r.nlls[i]! - golden[i]!)).toBeLessThan(1e-4);
    expect(r.cache.tokens).toBe(256);
    expect(r.cache.evictedTokens).toBe(n - 1 - 256);
    expect(r.peakCacheBytes).toBeLessThanOrEqual(r.cache.bytesReserved);
  }, 30_000);

  it("recompute W=64 equals a brute-force fresh dense pass over the previous 64 tokens at positions 0..63", async () => {
    const W = 64;
    const stream = ids.slice(0, 81);
    const r = await perplexity(loaded.model, stream, { cacheConfig: resolveCacheConfig({ contextWindowSize: 8, codec: "f32" }), recompute: W });
    const model = loaded.model;
    const logits = new Float32Array(model.hp.nVocab);
    // Every windowed prediction, and a sample of the ones the incremental prefix pass computes.
    const checked = [0, 1, 17, 40, 62, 63];
    for (let i = W; i < stream.length - 1; i++) checked.push(i);
    for (const i of checked) {
      const kv = new DenseKv(model);
      const first = Math.max(0, i - W + 1);
      for (let p = 0; p <= i - first; p++) {
        kv.setPosition(p);
        model.forward(stream[first + p]!, p, kv, logits);
      }
      let m = -Infinity;
      for (let v = 0; v < logits.length; v++) m = Math.max(m, logits[v]!);
      let s = 0;
      for (let v = 0; v < logits.length; v++) s += Math.exp(logits[v]! - m);
      const expected = Math.log(s) + m - logits[stream[i + 1]!]!;
      expect(Math.abs(r.nlls[i]! - expected), `prediction ${i}`).toBeLessThan(1e-4);
    }
    // Up to W predictions come from one incremental pass, the rest cost W passes each.
    expect(r.forwardPasses).toBe(W + (stream.length - 1 - W) * W);
    // Sampling every 4th prediction: the same values at i % 4 = 0, NaN elsewhere, means over the sample.
    const sampled = await perplexity(loaded.model, stream, { cacheConfig: resolveCacheConfig({ contextWindowSize: 8, codec: "f32" }), recompute: W, recomputeEvery: 4 });
    let sum = 0;
    let n = 0;
    for (let i = 0; i < stream.length - 1; i++) {
      if (i % 4 === 0) {
        expect(sampled.nlls[i]).toBe(r.nlls[i]);
        sum += r.nlls[i]!;
        n++;
      } else expect(sampled.nlls[i]).toBeNaN();
    }
    expect(sampled.nll).toBeCloseTo(sum / n, 12);
    expect(sampled.forwardPasses).toBe(W + 4 * W); // windowed predictions at 64, 68, 72, 76
  }, 30_000);

  it("a context window shorter than the stream is refused before any compute", async () => {
    let calls = 0;
    await expect(
      perplexity(loaded.model, ids.slice(0, 300), {
        cacheConfig: resolveCacheConfig({ contextWindowSize: 256, codec: "f32" }),
        onProgress: () => calls++,
      }),
    ).rejects.toThrow(ContextWindowSizeExceededError);
    expect(calls).toBe(0);
  });

  it("an aborted run throws AbortError", async () => {
    const ac = new AbortController();
    ac.abort();
    await expect(perplexity(loaded.model, ids.slice(0, 50), { cacheConfig: dense, signal: ac.signal })).rejects.toThrow(AbortError);
  });
});

describe("feedBatchSize: batches end where the window would evict", () => {
  const model = { hp: { nHead: 2 } as never, attention: [{ nHeadKv: 1, headDimK: 4, headDimV: 4, rope: null, slidingWindow: 0, scale: 0.5, softcap: 0 }] };
  it("sliding window 16 + 4 sinks: the room left in the window, then one token at a time", () => {
    const cache = createModelCache(model, resolveCacheConfig({ slidingWindowSize: 16, attentionSinkSize: 4, codec: "f32", pageSize: 4 }));
    cache.add(0);
    expect(feedBatchSize(cache, 0, 64)).toBe(12); // window - sinks: reserve's own limit
    expect(feedBatchSize(cache, 0, 5)).toBe(5);
    cache.reserveOrThrow(0, 10);
    expect(feedBatchSize(cache, 0, 64)).toBe(6);
    cache.reserveOrThrow(0, 6);
    expect(feedBatchSize(cache, 0, 64)).toBe(1); // full: every further token evicts one
    cache.reserveOrThrow(0, 1);
    expect(cache.stats().evictedTokens).toBe(1);
    expect(feedBatchSize(cache, 0, 64)).toBe(1);
  });
  it("int4 pages: a batch writes a page's last slot only as its first token; the prefill chunk caps it", () => {
    const cache = createModelCache(model, resolveCacheConfig({ contextWindowSize: 64, codec: "int4", pageSize: 4 }));
    cache.add(0);
    expect(feedBatchSize(cache, 0, 64)).toBe(3); // slots 0..2: slot 3 seals the page
    cache.reserveOrThrow(0, 3);
    expect(feedBatchSize(cache, 0, 64)).toBe(4); // slot 3 (seals) then 0..2 of the next page
    const chunked = createModelCache(model, resolveCacheConfig({ contextWindowSize: 64, codec: "f32", prefillChunkSize: 8 }));
    chunked.add(0);
    expect(feedBatchSize(chunked, 0, 64)).toBe(8);
  });
});

describe.skipIf(!have)("perplexity in batches equals one token at a time (stories260K)", () => {
  let loaded: LoadedModel;
  let ids: number[];
  beforeAll(async () => {
    loaded = await loadModel(sharedPath("models/stories260K.gguf"));
    ids = JSON.parse(readFileSync(sharedPath("golden/stories260K-stream-ids-4096.json"), "utf8")).ids;
  });
  const both = async (n: number, opts: PerplexityOptions) => {
    const one = await perplexity(loaded.model, ids.slice(0, n), { ...opts, batchTokens: 1 });
    const batched = await perplexity(loaded.model, ids.slice(0, n), opts);
    let maxDiff = 0;
    for (let i = 0; i < one.nlls.length; i++) {
      // recomputeEvery leaves NaN where no prediction is made: in both runs, at the same places.
      expect(Number.isNaN(batched.nlls[i]!)).toBe(Number.isNaN(one.nlls[i]!));
      if (!Number.isNaN(one.nlls[i]!)) maxDiff = Math.max(maxDiff, Math.abs(one.nlls[i]! - batched.nlls[i]!));
    }
    // Same tokens through the model, same evictions, same pages at peak.
    expect(batched.forwardPasses).toBe(one.forwardPasses);
    expect(batched.cache.evictedTokens).toBe(one.cache.evictedTokens);
    expect(batched.peakCacheBytes).toBe(one.peakCacheBytes);
    return { one, batched, maxDiff };
  };
  const sliding = { slidingWindowSize: 128, attentionSinkSize: 4 } as const;

  it("JS cache kernels: bit for bit, for a plain window, a sliding window that evicts, H2O (both score modes), TOVA, and int4 / f16 pages", async () => {
    // The JS attention kernels sum a batch's queries in the order they sum one query, so any
    // difference would be a token seeing other K/V than one-at-a-time feeding showed it.
    const configs = [
      { contextWindowSize: 512, codec: "f32" },
      { ...sliding, codec: "f32" },
      { ...sliding, codec: "f16", policy: { kind: "h2o" } },
      { ...sliding, codec: "f16", policy: { kind: "h2o", scoreWindow: 16 } },
      { ...sliding, codec: "f16", policy: { kind: "tova" } },
      { ...sliding, codec: "int4" },
      { contextWindowSize: 512, codec: "int4" },
    ] as const;
    for (const input of configs) {
      const { one, batched, maxDiff } = await both(400, { cacheConfig: resolveCacheConfig(input), cacheKernels: "js" });
      expect(maxDiff, JSON.stringify(input)).toBe(0);
      expect(batched.nll).toBe(one.nll);
      if ("slidingWindowSize" in input) expect(batched.cache.evictedTokens).toBe(399 - 128);
    }
  }, 120_000);

  it("default (wasm) kernels on f32 pages: within 1e-4 (measured 1.7e-5 dense over 2048, 6e-6 sliding)", async () => {
    // The wasm attention kernel sums q.k lanes in another order for four query rows at once than
    // for one (codecs.as): float summation order, nothing else.
    const dense = await both(1025, { cacheConfig: resolveCacheConfig({ contextWindowSize: 1024, codec: "f32" }) });
    expect(dense.maxDiff).toBeLessThan(1e-4);
    const slide = await both(700, { cacheConfig: resolveCacheConfig({ ...sliding, codec: "f32" }) });
    expect(slide.maxDiff).toBeLessThan(1e-4);
    expect(slide.batched.cache.evictedTokens).toBe(699 - 128);
    const h2o = await both(700, { cacheConfig: resolveCacheConfig({ ...sliding, codec: "f32", policy: { kind: "h2o" } }) });
    expect(h2o.maxDiff).toBe(0); // score-based policies always take the JS kernels
    expect(h2o.batched.cache.evictedTokens).toBe(699 - 128);
  }, 120_000);

  it("recompute: the W-token windows in batches give the one-at-a-time NLLs (bit for bit on the JS kernels)", async () => {
    const cacheConfig = resolveCacheConfig({ contextWindowSize: 8, codec: "f32" });
    const js = await both(100, { cacheConfig, recompute: 64, cacheKernels: "js" });
    expect(js.maxDiff).toBe(0);
    expect(js.batched.forwardPasses).toBe(64 + (99 - 64) * 64);
    const wasm = await both(150, { cacheConfig, recompute: 64, recomputeEvery: 3 });
    expect(wasm.maxDiff).toBeLessThan(1e-4);
  }, 60_000);

  it("batchTokens outside 1..maxBatchTokens is refused", async () => {
    const cacheConfig = resolveCacheConfig({ contextWindowSize: 64, codec: "f32" });
    for (const b of [0, 1.5, loaded.model.maxBatchTokens + 1]) {
      await expect(perplexity(loaded.model, ids.slice(0, 20), { cacheConfig, batchTokens: b })).rejects.toThrow(InvalidSettingError);
    }
  });
});
