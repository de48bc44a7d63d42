// forwardBatch over the paged cache against the token-by-token forward over DenseKv, and the wasm
// kernels against the JS kernels, on stories260K (F32) and on a small synthetic Q8_0 model.

import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { resolveCacheConfig } from "../cache/config.js";
import { CacheKv, createModelCache } from "../engine/cache-kv.js";
import { readGgufHeader } from "../gguf/header.js";
import { requireShared, sharedPath } from "../../test/helpers/shared.js";
import { writeSyntheticModel, type SyntheticShape } from "../../test/fixtures/synthetic-model.js";
import { DenseKv } from "./dense-kv.js";
import { LlamaModel, type LlamaModelOptions } from "./llama.js";
import { wasmKernelsAvailable } from "./wasm/wasm-kernels.js";

const MODEL = "models/stories260K.gguf";
const have = requireShared(MODEL) && requireShared("golden/stories260K-stream-ids-4096.json");

async function loadBytes(bytes: Uint8Array, opts: LlamaModelOptions = {}) {
  const header = await readGgufHeader(bytes);
  return new LlamaModel(header, bytes.subarray(header.dataOffset), opts);
}

/** Logits after each of `ids`, one forward per token over DenseKv. */
function denseLogits(model: LlamaModel, ids: number[]): Float32Array[] {
  const kv = new DenseKv(model.hp);
  const out: Float32Array[] = [];
  for (let p = 0; p < ids.length; p++) {
    const logits = new Float32Array(model.hp.nVocab);
    kv.setPosition(p);
    model.forward(ids[p]!, p, kv, logits);
    out.push(logits);
  }
  return out;
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

describe.skipIf(!have)("stories260K: batched prefill and kernel choice", () => {
  const ids: number[] = have ? JSON.parse(readFileSync(sharedPath("golden/stories260K-stream-ids-4096.json"), "utf8")).ids.slice(0, 45) : [];

  it("forwardBatch over the paged cache (f32 pages, pieces of 16) equals per-token dense logits within 1e-4", async () => {
    const model = await loadBytes(readFileSync(sharedPath(MODEL)), { maxBatchTokens: 16 });
    const want = denseLogits(model, ids);
    const cache = createModelCache(model.hp, resolveCacheConfig({ contextWindowSize: 512, codec: "f32" }));
    cache.add(0);
    const kv = new CacheKv(cache, 0);
    const logits = new Float32Array(model.hp.nVocab);
    let checked = 0;
    for (let p = 0; p < ids.length; p += 16) {
      const n = Math.min(16, ids.length - p);
      cache.reserveOrThrow(0, n);
      model.forwardBatch(ids, p, n, kv, logits, p);
      expect(maxAbsDiff(logits, want[p + n - 1]!)).toBeLessThan(1e-4);
      checked++;
    }
    expect(checked).toBe(3); // 16 + 16 + 13: a short last piece too
  });

  it("forwardBatch refuses more tokens than maxBatchTokens", async () => {
    const model = await loadBytes(readFileSync(sharedPath(MODEL)), { maxBatchTokens: 4 });
    const kv = new DenseKv(model.hp);
    expect(() => model.forwardBatch(ids, 0, 5, kv, null)).toThrow(/forwardBatch of 5 tokens/);
  });

  it.skipIf(!wasmKernelsAvailable())("wasm kernels equal the JS kernels within 1e-4 (F32 weights)", async () => {
    const bytes = readFileSync(sharedPath(MODEL));
    const wasm = await loadBytes(bytes, { kernels: "wasm" });
    const js = await loadBytes(bytes, { kernels: "js" });
    expect(wasm.kernels).toBe("wasm");
    expect(js.kernels).toBe("js");
    expect(js.wasmBytes).toBe(0);
    const a = denseLogits(wasm, ids.slice(0, 20));
    const b = denseLogits(js, ids.slice(0, 20));
    for (let p = 0; p < a.length; p++) expect(maxAbsDiff(a[p]!, b[p]!)).toBeLessThan(1e-4);
  });
});

// Small enough to build in milliseconds; Q8_0 needs dims that are multiples of 32.
const TINY: SyntheticShape = { arch: "llama", nLayer: 2, nEmbd: 128, nHead: 4, nHeadKv: 2, nFf: 256, nVocab: 512, nCtxTrain: 256 };

describe.skipIf(!wasmKernelsAvailable())("a small synthetic Q8_0 model on the wasm kernels", () => {
  const bytes = writeSyntheticModel(TINY, "Q8_0", 3);
  const ids = [1, 17, 300, 42, 99, 7, 511, 256, 3, 64];

  it("f32 activations keep quantized matrices on the JS kernels: equal to kernels: js within 1e-4 relative", async () => {
    const wasm = await loadBytes(bytes, { activations: "f32" });
    const js = await loadBytes(bytes, { kernels: "js" });
    expect(wasm.kernels).toBe("wasm");
    expect(wasm.activations).toBe("f32");
    const a = denseLogits(wasm, ids), b = denseLogits(js, ids);
    for (let p = 0; p < ids.length; p++) {
      let scale = 0;
      for (let i = 0; i < b[p]!.length; i++) scale = Math.max(scale, Math.abs(b[p]![i]!));
      expect(maxAbsDiff(a[p]!, b[p]!)).toBeLessThan(1e-4 * scale);
    }
  });

  for (const type of ["Q4_K", "Q6_K", "Q4_0", "Q5_0"]) {
    it(`${type} on the wasm kernels (q8 activations) stays within 2% of the JS kernels' logits`, async () => {
      const shape: SyntheticShape = { ...TINY, nEmbd: 256, nFf: 512 }; // K-type rows need 256-value multiples
      const k4 = writeSyntheticModel(shape, type, 5);
      const wasm = await loadBytes(k4);
      const js = await loadBytes(k4, { kernels: "js" });
      expect(wasm.wasmBytes).toBeGreaterThan(0);
      const a = denseLogits(wasm, ids), b = denseLogits(js, ids);
      for (let p = 0; p < ids.length; p++) {
        let scale = 0;
        for (let i = 0; i < b[p]!.length; i++) scale = Math.max(scale, Math.abs(b[p]![i]!));
        expect(maxAbsDiff(a[p]!, b[p]!)).toBeLessThan(0.02 * scale);
      }
    });
  }

  it("q8 activations (the default) stay within 2% of the f32-activation logits, and batched equals per-token", async () => {
    const q8 = await loadBytes(bytes);
    expect(q8.activations).toBe("q8");
    const ref = denseLogits(await loadBytes(bytes, { kernels: "js" }), ids);
    const a = denseLogits(q8, ids);
    for (let p = 0; p < ids.length; p++) {
      let scale = 0;
      for (let i = 0; i < ref[p]!.length; i++) scale = Math.max(scale, Math.abs(ref[p]![i]!));
      expect(maxAbsDiff(a[p]!, ref[p]!)).toBeLessThan(0.02 * scale);
    }
    // The batch path quantizes the same rows the same way: equal to per-token within float noise.
    const cache = createModelCache(q8.hp, resolveCacheConfig({ contextWindowSize: 64, codec: "f32" }));
    cache.add(0);
    const logits = new Float32Array(q8.hp.nVocab);
    cache.reserveOrThrow(0, ids.length);
    q8.forwardBatch(ids, 0, ids.length, new CacheKv(cache, 0), logits);
    expect(maxAbsDiff(logits, a[ids.length - 1]!)).toBeLessThan(1e-4);
  });
});
