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
import { cpuBesideGpu } from "./helpers/webgpu-pair.js";

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
    const config = resolveCacheConfig({ contextWindowSize: 256, codec: "f32" });
    const { cpu, cache, kv, gpu, gc } = cpuBesideGpu(ctx!, header, data, config, { threads: 1 }, { window: 256, maxBatchTokens: 16 });
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

  // int4: the shared tail page is open (f32 in a residual buffer), so the copy takes a residual of its own.
  for (const codec of ["f32", "int4"] as const) it(`a forked sequence shares ${codec} pages and copies the shared tail page on the GPU (copy-on-write)`, async () => {
    const { header, data } = await load();
    const gpu = new WebGpuTransformer(ctx!, header, data, transformerPlan(header, data), { window: 64 });
    const gc = gpu.createCache(resolveCacheConfig({ contextWindowSize: 64, codec, maxSequences: 2 }));
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
      const fresh = gpu.createCache(resolveCacheConfig({ contextWindowSize: 64, codec }));
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

  for (const codec of ["f16", "int8", "int4"] as const) {
    it(`${codec} pages on the GPU: logits against the CPU's ${codec} pages, and the golden greedy ids`, async () => {
      const { header, data } = await load();
      const golden = JSON.parse(readFileSync(sharedPath("golden/stories260K-greedy.json"), "utf8"));
      const prompt: number[] = golden.promptIds;
      const config = resolveCacheConfig({ contextWindowSize: 512, codec });
      const gpu = new WebGpuTransformer(ctx!, header, data, transformerPlan(header, data), { window: 512 });
      // Greedy from the prompt on GPU pages of this codec.
      const gc = gpu.createCache(config);
      gc.cache.add(0);
      const logits = new Float32Array(gpu.hp.nVocab);
      gc.cache.reserveOrThrow(0, prompt.length);
      await gpu.forwardBatch(prompt, 0, prompt.length, gc, 0, logits);
      const out: number[] = [];
      while (out.length < golden.greedyIds.length) {
        const next = argmax(logits);
        out.push(next);
        gc.cache.reserveOrThrow(0, 1);
        await gpu.forward(next, gc, 0, logits);
      }
      const same = out.filter((id, i) => id === golden.greedyIds[i]).length;
      let prefix = 0;
      while (prefix < out.length && out[prefix] === golden.greedyIds[prefix]) prefix++;
      // The CPU on pages of the same codec, teacher-forced on the GPU's ids: logits agree closely.
      const cpu = createModel(header, data, { threads: 1 });
      const cache = createModelCache(cpu, config);
      cache.add(0);
      const kv = new CacheKv(cache, 0, cpu);
      const ref = new Float32Array(cpu.hp.nVocab), got = new Float32Array(cpu.hp.nVocab);
      const g2 = gpu.createCache(config);
      g2.cache.add(0);
      const ids = [...prompt, ...out].slice(0, 96);
      let maxDiff = 0;
      for (let p = 0; p < ids.length; p++) {
        cache.reserveOrThrow(0, 1);
        cpu.forward(ids[p]!, p, kv, ref);
        g2.cache.reserveOrThrow(0, 1);
        await gpu.forward(ids[p]!, g2, 0, got);
        for (let i = 0; i < ref.length; i++) maxDiff = Math.max(maxDiff, Math.abs(ref[i]! - got[i]!));
      }
      console.log(`stories260K, GPU ${codec} pages: ${same}/256 golden greedy ids agree (first ${prefix} in a row); logits vs CPU ${codec} pages over ${ids.length} positions: max |diff| ${maxDiff.toExponential(2)}`);
      // A K value next to a rounding boundary (RoPE in f32 on the GPU, f64 on the CPU) may take the
      // neighbouring f16 / int8 code; measured 4.0e-3 (f16) and 1.3e-1 (int8), against what the
      // codec itself costs: CPU f16 vs CPU f32 pages 1.9e-2, CPU int8 vs f32 9.1e-1 (same positions).
      // int4: CPU int4 vs f32 1.2. Greedy: the CPU gets 256/256 golden ids on f16 pages, 114/256 on
      // int8 and 97/256 on int4 (the GPU: 256, 115, see the log).
      expect(maxDiff).toBeLessThan(codec === "f16" ? 1e-2 : 3e-1);
      expect(same).toBeGreaterThanOrEqual(codec === "f16" ? 250 : 80);
    }, 300_000);
  }

  it("int4 pages: a sealed page truncated and written again is reopened from its codes, as on the CPU", async () => {
    const { header, data } = await load();
    const ids: number[] = JSON.parse(readFileSync(sharedPath("golden/stories260K-stream-ids-4096.json"), "utf8")).ids.slice(0, 40);
    const config = resolveCacheConfig({ contextWindowSize: 64, codec: "int4" });
    const { cpu, cache, kv, gpu, gc } = cpuBesideGpu(ctx!, header, data, config, { threads: 1 }, { window: 64, maxBatchTokens: 32 });
    const a = new Float32Array(cpu.hp.nVocab), b = new Float32Array(cpu.hp.nVocab);
    // A batch writes before it attends: page 0 is sealed when the batch's first tokens attend, on
    // the CPU as in the GPU's page-by-page passes. 20 tokens as one batch on both:
    const cb = createModelCache(cpu, config);
    cb.add(0);
    cb.reserveOrThrow(0, 20);
    cpu.forwardBatch(ids, 0, 20, new CacheKv(cb, 0, cpu), a);
    const gb = gpu.createCache(config);
    gb.cache.add(0);
    gb.cache.reserveOrThrow(0, 20);
    await gpu.forwardBatch(ids, 0, 20, gb, 0, b);
    let prefillDiff = 0;
    for (let i = 0; i < a.length; i++) prefillDiff = Math.max(prefillDiff, Math.abs(a[i]! - b[i]!));
    // 20 tokens one at a time (page 0 sealed, page 1 open), back to 10 (page 0 sealed with 10
    // valid, page 1 given back), then on: page 0 reopens from its codes and is sealed again.
    for (let p = 0; p < 20; p++) {
      cache.reserveOrThrow(0, 1);
      cpu.forward(ids[p]!, p, kv, a);
      gc.cache.reserveOrThrow(0, 1);
      await gpu.forward(ids[p]!, gc, 0, b);
    }
    cache.truncate(0, 10);
    gc.cache.truncate(0, 10);
    let maxDiff = 0;
    for (let p = 10; p < 30; p++) {
      cache.reserveOrThrow(0, 1);
      cpu.forward(ids[p + 10]!, p, kv, a);
      gc.cache.reserveOrThrow(0, 1);
      await gpu.forward(ids[p + 10]!, gc, 0, b);
      for (let i = 0; i < a.length; i++) maxDiff = Math.max(maxDiff, Math.abs(a[i]! - b[i]!));
    }
    console.log(`int4 vs CPU int4: batched prefill of 20 ${prefillDiff.toExponential(2)}, reopened after truncate ${maxDiff.toExponential(2)}`);
    // Measured 1.3e-2 and 1.0e-2: an int4 code next to a rounding boundary (RoPE in f32 on the GPU)
    // moves a logit by that much; a wrong page state (open vs sealed) moves them by 0.3 to 2.
    expect(prefillDiff).toBeLessThan(5e-2);
    expect(maxDiff).toBeLessThan(5e-2);
  }, 120_000);

  it("refuses what it does not compute on the GPU (fp8 pages, H2O/TOVA on int4 pages) with a typed error", async () => {
    const { header, data } = await load();
    const gpu = new WebGpuTransformer(ctx!, header, data, transformerPlan(header, data), { window: 64 });
    expect(() => gpu.createCache(resolveCacheConfig({ contextWindowSize: 64, codec: "fp8" }))).toThrow(WebGpuUnsupportedError);
    // H2O / TOVA run on the GPU (test/webgpu-score-policies.test.ts), except on int4 pages, whose compaction would re-encode tokens.
    expect(() => gpu.createCache(resolveCacheConfig({ slidingWindowSize: 64, attentionSinkSize: 4, codec: "f32", policy: { kind: "h2o", recent: 16 } }))).not.toThrow();
    expect(() => gpu.createCache(resolveCacheConfig({ slidingWindowSize: 64, attentionSinkSize: 4, codec: "int4", policy: { kind: "tova" } }))).toThrow(WebGpuUnsupportedError);
    gpu.dispose();
  });
});
