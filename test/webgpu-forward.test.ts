// stories260K through the WebGPU forward pass (SwiftShader here) against the llama2.c golden ids
// and the CPU backend's logits: pages on the GPU, page table / policy / stats in src/cache.

import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { resolveCacheConfig } from "../src/cache/config.js";
import { WebGpuUnsupportedError } from "../src/errors.js";
import { readGgufHeader } from "../src/gguf/header.js";
import { createModel, transformerPlan } from "../src/model/architectures.js";
import { CacheKv, createModelCache } from "../src/model/cache-kv.js";
import { gpuForTests } from "../src/model/webgpu/device.js";
import { WebGpuTransformer } from "../src/model/webgpu/forward.js";
import { requireShared, sharedPath } from "./helpers/shared.js";

const have = requireShared("models/stories260K.gguf") && requireShared("golden/stories260K-greedy.json") && requireShared("golden/stories260K-stream-ids-4096.json");
const ctx = have ? await gpuForTests() : null;

async function load() {
  const path = sharedPath("models/stories260K.gguf");
  const header = await readGgufHeader(path);
  const file = readFileSync(path);
  const data = new Uint8Array(file.buffer, file.byteOffset + header.dataOffset, file.length - header.dataOffset);
  return { header, data };
}

function argmax(a: Float32Array): number {
  let best = 0;
  for (let i = 1; i < a.length; i++) if (a[i]! > a[best]!) best = i;
  return best;
}

describe.skipIf(!have || ctx === null)("stories260K on the WebGPU backend", () => {
  it("the 256 golden greedy ids (prompt as one batch, then one token per step)", async () => {
    const { header, data } = await load();
    const model = new WebGpuTransformer(ctx!, header, data, transformerPlan(header, data), { window: 512 });
    const golden = JSON.parse(readFileSync(sharedPath("golden/stories260K-greedy.json"), "utf8"));
    const gc = model.createCache(resolveCacheConfig({ contextWindowSize: 512, codec: "f32" }));
    gc.cache.add(0);
    const logits = new Float32Array(model.hp.nVocab);
    const prompt: number[] = golden.promptIds;
    expect(gc.cache.reserve(0, prompt.length).ok).toBe(true);
    await model.forwardBatch(prompt, 0, prompt.length, gc, 0, logits);
    const out: number[] = [];
    while (out.length < golden.greedyIds.length) {
      const next = argmax(logits);
      out.push(next);
      expect(gc.cache.reserve(0, 1).ok).toBe(true);
      await model.forward(next, gc, 0, logits);
    }
    expect(out).toEqual(golden.greedyIds);
    expect(gc.cache.stats().tokens).toBe(prompt.length + 256);
  }, 300_000);

  it("logits of the first 128 stream positions within 1e-3 of the CPU backend (one token per step and in batches)", async () => {
    const { header, data } = await load();
    const ids: number[] = JSON.parse(readFileSync(sharedPath("golden/stories260K-stream-ids-4096.json"), "utf8")).ids.slice(0, 128);
    const cpu = createModel(header, data, { threads: 1 });
    const config = resolveCacheConfig({ contextWindowSize: 256, codec: "f32" });
    const cache = createModelCache(cpu, config);
    cache.add(0);
    const kv = new CacheKv(cache, 0, cpu);
    const gpu = new WebGpuTransformer(ctx!, header, data, transformerPlan(header, data), { window: 256, maxBatchTokens: 16 });
    const gc = gpu.createCache(config);
    gc.cache.add(0);
    const a = new Float32Array(cpu.hp.nVocab), b = new Float32Array(cpu.hp.nVocab);
    const cpuRows: Float32Array[] = [];
    let maxDiff = 0;
    for (let p = 0; p < ids.length; p++) {
      cache.reserveOrThrow(0, 1);
      cpu.forward(ids[p]!, p, kv, a);
      cpuRows.push(a.slice());
      gc.cache.reserveOrThrow(0, 1);
      await gpu.forward(ids[p]!, gc, 0, b);
      for (let i = 0; i < a.length; i++) maxDiff = Math.max(maxDiff, Math.abs(a[i]! - b[i]!));
    }
    console.log(`WebGPU vs CPU, 128 positions one at a time: max |logit diff| ${maxDiff.toExponential(2)}`);
    expect(maxDiff).toBeLessThan(1e-3);
    // The same stream in batches of 16 (causal within each batch): the last logits of each batch.
    const gb = gpu.createCache(config);
    gb.cache.add(0);
    let batchDiff = 0;
    for (let s = 0; s < ids.length; s += 16) {
      gb.cache.reserveOrThrow(0, 16);
      await gpu.forwardBatch(ids, s, 16, gb, 0, b);
      const ref = cpuRows[s + 15]!;
      for (let i = 0; i < b.length; i++) batchDiff = Math.max(batchDiff, Math.abs(ref[i]! - b[i]!));
    }
    console.log(`WebGPU batches of 16 vs CPU one at a time: max |logit diff| ${batchDiff.toExponential(2)}`);
    expect(batchDiff).toBeLessThan(1e-3);
  }, 300_000);

  it("a forked sequence shares pages and copies the shared tail page on the GPU (copy-on-write)", async () => {
    const { header, data } = await load();
    const gpu = new WebGpuTransformer(ctx!, header, data, transformerPlan(header, data), { window: 64 });
    const gc = gpu.createCache(resolveCacheConfig({ contextWindowSize: 64, codec: "f32", maxSequences: 2 }));
    gc.cache.add(0);
    const prompt = [1, 403, 407, 261, 378];
    const a = new Float32Array(gpu.hp.nVocab), b = new Float32Array(gpu.hp.nVocab);
    gc.cache.reserveOrThrow(0, prompt.length);
    await gpu.forwardBatch(prompt, 0, prompt.length, gc, 0, a);
    gc.cache.fork(0, 1);
    // Different next tokens: each append writes into its own copy of the shared tail page.
    gc.cache.reserveOrThrow(1, 1);
    await gpu.forward(300, gc, 1, b);
    gc.cache.reserveOrThrow(0, 1);
    await gpu.forward(301, gc, 0, a);
    expect(gc.cache.stats().copyOnWritePages).toBeGreaterThan(0);
    // Both continue with the same token; each must match a fresh sequence that took its path.
    const check = async (path: number[], got: Float32Array) => {
      const fresh = gpu.createCache(resolveCacheConfig({ contextWindowSize: 64, codec: "f32" }));
      fresh.cache.add(0);
      fresh.cache.reserveOrThrow(0, path.length);
      const ref = new Float32Array(gpu.hp.nVocab);
      await gpu.forwardBatch(path, 0, path.length, fresh, 0, ref);
      let d = 0;
      for (let i = 0; i < ref.length; i++) d = Math.max(d, Math.abs(ref[i]! - got[i]!));
      expect(d).toBeLessThan(1e-4);
    };
    gc.cache.reserveOrThrow(0, 1);
    await gpu.forward(262, gc, 0, a);
    gc.cache.reserveOrThrow(1, 1);
    await gpu.forward(262, gc, 1, b);
    await check([...prompt, 301, 262], a);
    await check([...prompt, 300, 262], b);
  }, 120_000);

  it("refuses what it does not compute on the GPU (quantized pages, H2O/TOVA) with a typed error", async () => {
    const { header, data } = await load();
    const gpu = new WebGpuTransformer(ctx!, header, data, transformerPlan(header, data), { window: 64 });
    expect(() => gpu.createCache(resolveCacheConfig({ contextWindowSize: 64, codec: "int8" }))).toThrow(WebGpuUnsupportedError);
    expect(() => gpu.createCache(resolveCacheConfig({ slidingWindowSize: 64, attentionSinkSize: 4, codec: "f32", policy: { kind: "h2o", heavyRatio: 0.5 } as never }))).toThrow(WebGpuUnsupportedError);
  });
});
