// Every architecture through the paged cache (batched prefill, then decode) against the
// token-by-token dense reference (DenseKv: float64 attention, the masks and soft-caps written out
// plainly), past the sliding windows; and the cache's layer groups: a local group stays flat at its
// window while the global group grows with the text, and reserved bytes equal the planner's.

import { describe, expect, it } from "vitest";
import { resolveCacheConfig } from "../src/cache/config.js";
import { cacheReservedBytes } from "../src/cache/paged-kv-cache.js";
import { readGgufHeader } from "../src/gguf/header.js";
import { createModel } from "../src/model/architectures.js";
import { CacheKv, createModelCache, modelCacheShape } from "../src/model/cache-kv.js";
import type { CausalLM } from "../src/model/causal-lm.js";
import { DenseKv } from "../src/model/dense-kv.js";
import { loadModel } from "../src/engine/load-model.js";
import { ModelConfigError } from "../src/errors.js";
import { Session } from "../src/engine/session.js";
import { ARCH_NAMES, buildArchModel, xorshift32, type ArchName } from "./fixtures/arch-models.js";

async function load(arch: ArchName, kernels: "wasm" | "js", nLayer?: number): Promise<CausalLM> {
  const m = buildArchModel({ arch, seed: 7, ...(nLayer !== undefined ? { nLayer } : {}) });
  const header = await readGgufHeader(m.bytes);
  // Exact GELU: ggml's f16 GELU table would turn float noise between the two paths into f16 steps.
  return createModel(header, m.bytes.subarray(header.dataOffset), { kernels, activations: "f32", gelu: "exact", nCtx: 1024 });
}

function tokens(n: number, nVocab: number, seed: number): number[] {
  const next = xorshift32(seed);
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(next() % nVocab);
  return out;
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

const PREFILL = 200;
const DECODE = 60;

describe("every architecture: paged cache (batched) == dense reference, past the sliding windows", () => {
  // The interleaved-SWA models run through both attention kernels (their masks and soft-caps are applied in each).
  // gemma3 with 2 layers has only local layers: its main group holds none (it still tracks positions).
  const runs: Array<[ArchName, "wasm" | "js", number | undefined]> = [];
  for (const arch of ARCH_NAMES) {
    runs.push([arch, "wasm", undefined]);
    if (arch === "gemma2" || arch === "gemma3") runs.push([arch, "js", undefined]);
  }
  runs.push(["gemma3", "wasm", 2]);
  for (const [arch, cacheKernels, nLayer] of runs) {
    it(`${arch}${nLayer !== undefined ? ` (${nLayer} layers)` : ""} (${cacheKernels} attention)`, async () => {
      const model = await load(arch, "wasm", nLayer);
      const ids = tokens(PREFILL + DECODE, model.hp.nVocab, 3);
      const dense = new DenseKv(model);
      const want: Float32Array[] = [];
      for (let p = 0; p < ids.length; p++) {
        const logits = new Float32Array(model.hp.nVocab);
        dense.setPosition(p);
        model.forward(ids[p]!, p, dense, logits);
        want.push(logits);
      }
      const cache = createModelCache(model, resolveCacheConfig({ contextWindowSize: 1024, codec: "f32", prefillChunkSize: 64 }), { kernels: cacheKernels });
      expect(cache.kernels).toBe(cacheKernels);
      cache.add(0);
      const kv = new CacheKv(cache, 0, model);
      const logits = new Float32Array(model.hp.nVocab);
      let worst = 0;
      let scale = 0;
      for (let p = 0; p < ids.length; ) {
        const n = p < PREFILL ? Math.min(64, PREFILL - p) : 1;
        cache.reserveOrThrow(0, n);
        model.forwardBatch(ids, p, n, kv, logits, p);
        p += n;
        worst = Math.max(worst, maxAbsDiff(logits, want[p - 1]!));
        for (const x of want[p - 1]!) scale = Math.max(scale, Math.abs(x));
      }
      expect(worst).toBeLessThan(2e-5 * Math.max(1, scale));
      cache.checkInvariants();
      const groups = cache.stats().groups;
      const swa = model.attention.some((a) => a.slidingWindow > 0);
      expect(groups.length).toBe(swa ? 2 : 1);
      if (swa) {
        // The local group holds its window (n_swa - 1 + chunk), not the text.
        const local = groups[1]!;
        expect(local.tokens).toBe(local.windowTokens);
        expect(local.tokens).toBeLessThan(ids.length);
        expect(groups[0]!.tokens).toBe(ids.length);
        expect(groups[0]!.layers.length).toBe(model.attention.filter((a) => a.slidingWindow === 0).length);
      }
    });
  }
});

describe("layer groups", () => {
  it("a local group's pages stop growing at its window; reserved bytes equal cacheReservedBytes (the planner's sum)", async () => {
    const model = await load("gemma3", "wasm");
    const config = resolveCacheConfig({ contextWindowSize: 1024, codec: "f16", prefillChunkSize: 32 });
    const cache = createModelCache(model, config);
    expect(cache.reservedBytes).toBe(cacheReservedBytes(config, modelCacheShape(model)));
    cache.add(0);
    const kv = new CacheKv(cache, 0, model);
    const ids = tokens(608, model.hp.nVocab, 5);
    const localPages: number[] = [];
    for (let p = 0; p < ids.length; p += 32) {
      cache.reserveOrThrow(0, 32);
      model.forwardBatch(ids, p, 32, kv, null, p);
      localPages.push(cache.stats().groups[1]!.pagesUsed);
    }
    const window = 128 - 1 + 32;
    const flatFrom = Math.ceil(window / 32);
    for (let i = flatFrom + 1; i < localPages.length; i++) expect(localPages[i]).toBeLessThanOrEqual(Math.ceil(window / 16) + 1);
    expect(cache.stats().groups[0]!.pagesUsed).toBe(Math.ceil(ids.length / 16));
  });

  it("truncate is refused once the local group no longer holds what the new end needs; snapshots restore every group", async () => {
    const model = await load("gemma2", "js");
    const config = resolveCacheConfig({ contextWindowSize: 512, codec: "f32", prefillChunkSize: 16, maxSequences: 2 });
    const cache = createModelCache(model, config);
    cache.add(0);
    const kv = new CacheKv(cache, 0, model);
    const ids = tokens(160, model.hp.nVocab, 9);
    for (let p = 0; p < ids.length; p += 16) {
      cache.reserveOrThrow(0, 16);
      model.forwardBatch(ids, p, 16, kv, null, p);
    }
    // gemma2's window is 64: the local group holds 64 - 1 + 16 = 79 tokens.
    expect(cache.canTruncate(0, 16)).toBe(true);
    expect(cache.canTruncate(0, 17)).toBe(false);
    expect(() => cache.truncate(0, 40)).toThrow(/sliding-window/);
    const snap = cache.snapshot(0);
    cache.add(1);
    expect(() => cache.restore(1, snap)).toThrow(); // id 1 exists
    cache.remove(1);
    expect(cache.restore(1, snap)).toBe(true);
    const a = new Float32Array(model.hp.nVocab);
    const b = new Float32Array(model.hp.nVocab);
    for (const seq of [0, 1]) {
      cache.reserveOrThrow(seq, 1);
      model.forward(ids[0]!, ids.length, new CacheKv(cache, seq, model), seq === 0 ? a : b);
    }
    expect(maxAbsDiff(a, b)).toBe(0);
    cache.checkInvariants();
  });
});

describe("a session over a sliding-window model", () => {
  it("reuses the cached prefix while the local layers still hold what it needs, and re-prefills (same logits) once they do not", async () => {
    const m = buildArchModel({ arch: "gemma2", seed: 11 });
    const loaded = await loadModel(m.bytes);
    const config = { contextWindowSize: 512, codec: "f32" as const, prefillChunkSize: 16 };
    const s = new Session(loaded, config);
    const ids = tokens(205, m.nVocab, 13);
    expect((await s.prefill(ids.slice(0, 200))).prefilled).toBe(200);
    // Appending: everything before is reused.
    expect(await s.prefill(ids)).toMatchObject({ reused: 200, prefilled: 5 });
    // Dropping 3 tokens: the local group (64 - 1 + 16 = 79 tokens) still holds the 63 before the new end.
    expect(await s.prefill(ids.slice(0, 202))).toMatchObject({ reused: 201, prefilled: 1 });
    // Going back 60 tokens: it does not, so the whole prompt is prefilled again.
    const back = ids.slice(0, 142);
    expect(await s.prefill(back)).toMatchObject({ reused: 0, prefilled: 142 });
    const fresh = new Session(loaded, config);
    await fresh.prefill(back);
    expect(maxAbsDiff(s.logits, fresh.logits)).toBe(0);
  });
});

describe("LongRoPE (phi3): the factors follow the context, as llama.cpp picks them by n_ctx", () => {
  it("a model built for one side of the original context refuses a session on the other side; each side computes differently", async () => {
    const m = buildArchModel({ arch: "phi3", seed: 2 }); // original context 256, context_length 1024
    const long = await loadModel(m.bytes); // default context min(1024, 4096): long factors
    expect(long.model.longRope).toMatchObject({ nCtxOrig: 256, long: true });
    expect(() => new Session(long, { contextWindowSize: 256 })).toThrow(ModelConfigError);
    const short = await loadModel(m.bytes, { nCtx: 256 });
    expect(short.model.longRope).toMatchObject({ long: false });
    const ids = tokens(40, m.nVocab, 4);
    const a = new Session(long, { contextWindowSize: 1024, codec: "f32" });
    const b = new Session(short, { contextWindowSize: 256, codec: "f32" });
    await a.prefill(ids);
    await b.prefill(ids);
    expect(maxAbsDiff(a.logits, b.logits)).toBeGreaterThan(1e-3);
  });
});
