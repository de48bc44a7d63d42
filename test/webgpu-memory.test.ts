// The WebGPU backend's memory plan against the GPU: every GPUBuffer the device creates is counted
// (device.ts trackGpuMemory) and the bytes a model + cache allocate must equal the plan's
// (src/plan/webgpu.ts, `kvbound plan --engine kvbound --backend webgpu`) to the byte. A sliding
// window (4 sinks, 256 tokens) then generates past many evictions with the bytes flat.
// Synthetic qwen3 / gemma2 / gemma3 / smollm3 (test/fixtures/arch-models.ts) cover QK norms, post-norms,
// soft-caps, SWA cache groups and NoPE layers. SwiftShader takes 60-300 ms a stories260K step (load): the window test generates
// KVBOUND_WEBGPU_WINDOW_TOKENS tokens (default 2000, about 2-6 minutes on SwiftShader); bench/webgpu.ts --window-tokens 20000 runs the acceptance length.

import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { resolveCacheConfig, type CacheConfig, type CacheConfigInput } from "../src/cache/config.js";
import { readGgufHeader, type GgufHeader } from "../src/gguf/header.js";
import { transformerPlan } from "../src/model/architectures.js";
import { gpuForTests, type GpuContext } from "../src/model/webgpu/device.js";
import { WebGpuTransformer } from "../src/model/webgpu/forward.js";
import { planMemory } from "../src/plan/plan.js";
import { collect } from "../src/engine/generate.js";
import { loadModel } from "../src/engine/load-model.js";
import { Session } from "../src/engine/session.js";
import { asyncForwardOf, createSessionCache } from "../src/model/async-forward.js";
import { SequenceNotFoundError, WebGpuDeviceError } from "../src/errors.js";
import { webgpuMemory } from "../src/plan/webgpu.js";
import { loadModelSpec } from "../src/spec/load.js";
import type { ModelSpec } from "../src/spec/model-spec.js";
import { buildArchModel } from "./fixtures/arch-models.js";
import { requireShared, sharedPath } from "./helpers/shared.js";

const have = requireShared("models/stories260K.gguf") && requireShared("models/stories260K-q8_0.gguf");
const ctx = have ? await gpuForTests() : null;
const WINDOW_TOKENS = Number(process.env.KVBOUND_WEBGPU_WINDOW_TOKENS ?? 2000);

async function load(rel = "models/stories260K.gguf") {
  const path = sharedPath(rel);
  const header = await readGgufHeader(path);
  const file = readFileSync(path);
  const data = new Uint8Array(file.buffer, file.byteOffset + header.dataOffset, file.length - header.dataOffset);
  return { header, data, spec: await loadModelSpec(path) };
}

function argmax(a: Float32Array): number {
  let best = 0;
  for (let i = 1; i < a.length; i++) if (a[i]! > a[best]!) best = i;
  return best;
}

/** Bytes the device created (and has not destroyed) since `before`, and the peak above it. */
/**
 * The plan for `config`, a byte counter started before the model, the model, and a cache of
 * `config` holding sequence 0: every plan-vs-device case starts this way.
 */
function plannedModel(header: GgufHeader, data: Uint8Array, spec: ModelSpec, config: CacheConfig, batch: number, maxBindingBytes = ctx!.maxBindingBytes) {
  const plan = webgpuMemory(spec, config, { maxBatchTokens: batch, maxBindingBytes });
  const n = counter(ctx!);
  const model = new WebGpuTransformer(ctx!, header, data, transformerPlan(header, data), { window: config.windowTokens, maxBatchTokens: batch, maxBindingBytes });
  const gc = model.createCache(config);
  gc.cache.add(0);
  return { plan, n, model, gc };
}

function counter(c: GpuContext) {
  const mem = c.memory!;
  const before = mem.liveBytes;
  mem.resetPeak();
  return { live: () => mem.liveBytes - before, peak: () => mem.peakBytes - before };
}

describe.skipIf(!have || ctx === null)("WebGPU memory plan = the GPU buffers created (stories260K)", () => {
  const cases: { name: string; input: CacheConfigInput; batch: number; binding?: number; file?: string }[] = [
    { name: "512-token context, defaults", input: { contextWindowSize: 512, codec: "f32" }, batch: 64 },
    { name: "4 sinks + 256-token window, 16-token batches", input: { slidingWindowSize: 256, attentionSinkSize: 4, codec: "f32" }, batch: 16 },
    // A 16 KiB binding splits every matrix into row chunks (each with its own buffer and uniform).
    { name: "64-token context, a 16 KiB binding, 2 sequences", input: { contextWindowSize: 64, codec: "f32", maxSequences: 2 }, batch: 8, binding: 16384 },
    // Q8_0 matrices (34-byte blocks: rows of 68 bytes, uploaded as stored).
    { name: "Q8_0 weights (stories260K-q8_0), 128-token context", input: { contextWindowSize: 128, codec: "f32" }, batch: 32, file: "models/stories260K-q8_0.gguf" },
    // Every codec the GPU stores (gpu-page-store.ts): the plan takes the codec.
    ...(["f16", "int8", "int4"] as const).map((codec) => ({ name: `${codec} pages, 4 sinks + 256-token window, 2 sequences`, input: { slidingWindowSize: 256, attentionSinkSize: 4, codec, maxSequences: 2 }, batch: 16 })),
    // Score-based policies: an attention statistics buffer per cache, read back with the logits;
    // a 32-token window evicts (and compacts) within the 60 tokens.
    { name: "H2O, 4 sinks + 32-token window", input: { slidingWindowSize: 32, attentionSinkSize: 4, codec: "f32", policy: { kind: "h2o", recent: 8 } }, batch: 16 },
    { name: "TOVA on int8 pages, 4 sinks + 32-token window, 2 sequences", input: { slidingWindowSize: 32, attentionSinkSize: 4, codec: "int8", maxSequences: 2, policy: { kind: "tova" } }, batch: 16 },
  ];
  for (const c of cases) {
    it(`${c.name}: live and peak bytes equal the plan to the byte`, async () => {
      const { header, data, spec } = await load(c.file);
      const config = resolveCacheConfig(c.input);
      const maxBindingBytes = Math.min(c.binding ?? ctx!.maxBindingBytes, ctx!.maxBindingBytes);
      const { plan, n, model, gc } = plannedModel(header, data, spec, config, c.batch, maxBindingBytes);
      const logits = new Float32Array(model.hp.nVocab);
      // A prompt over two pages, then 20 single steps (int4 seals and reopens pages on the way).
      const prompt = Array.from({ length: 40 }, (_, i) => 1 + ((i * 37) % 500));
      for (let p = 0; p < prompt.length; p += c.batch) {
        const n = Math.min(c.batch, prompt.length - p);
        gc.cache.reserveOrThrow(0, n);
        await model.forwardBatch(prompt, p, n, gc, 0, logits);
      }
      for (let i = 0; i < 20; i++) {
        gc.cache.reserveOrThrow(0, 1);
        await model.forward(argmax(logits), gc, 0, logits);
      }
      if (n.live() !== plan.steadyBytes) console.log("by label:", [...ctx!.memory!.byLabel()].slice(-20));
      expect(n.live()).toBe(plan.steadyBytes);
      expect(n.peak()).toBe(plan.peakBytes);
      if (c.input.policy !== undefined) {
        expect(plan.statsBytes).toBeGreaterThan(0);
        expect(gc.cache.stats().evictedTokens).toBeGreaterThan(0);
        return; // the CLI plan takes no policy
      }
      // The CLI/library plan: the same bytes as MemoryPlan.totalBytes.
      const mp = planMemory(spec, {
        engine: "kvbound", backend: "webgpu", maxBatchTokens: c.batch, maxBindingBytes,
        contextWindowSize: c.input.contextWindowSize, slidingWindowSize: c.input.slidingWindowSize,
        attentionSinkSize: c.input.attentionSinkSize, seqs: c.input.maxSequences, codec: c.input.codec,
      });
      expect(mp.totalBytes).toBe(plan.peakBytes);
      expect(mp.kv.totalBytes).toBe(plan.kBytes + plan.vBytes);
      expect(mp.weights?.bytes).toBe(plan.weightsBytes);
    }, 120_000);
  }

  it(`4 sinks + 256-token sliding window over ${WINDOW_TOKENS} generated tokens: bytes = plan and flat from the first eviction on`, async () => {
    const { header, data, spec } = await load();
    const config = resolveCacheConfig({ slidingWindowSize: 256, attentionSinkSize: 4, codec: "f32" });
    const { plan, n, model, gc } = plannedModel(header, data, spec, config, 16);
    const logits = new Float32Array(model.hp.nVocab);
    gc.cache.reserveOrThrow(0, 1);
    await model.forward(1, gc, 0, logits);
    let firstEviction = -1;
    const seen = new Set<number>();
    for (let t = 1; t < WINDOW_TOKENS; t++) {
      gc.cache.reserveOrThrow(0, 1);
      // Greedy, but stories260K loops: every 64th token is forced to keep the text moving.
      const next = t % 64 === 0 ? 1 + (t % 500) : argmax(logits);
      await model.forward(next, gc, 0, logits);
      const evicted = gc.cache.stats().evictedTokens;
      if (firstEviction < 0 && evicted > 0) firstEviction = t;
      if (firstEviction >= 0) seen.add(n.live());
    }
    const stats = gc.cache.stats();
    expect(firstEviction).toBeGreaterThan(0);
    expect(stats.evictedTokens).toBe(WINDOW_TOKENS - gc.cache.length(0));
    expect(gc.cache.length(0)).toBeLessThanOrEqual(config.windowTokens);
    expect([...seen]).toEqual([plan.steadyBytes]);
    expect(n.peak()).toBe(plan.peakBytes);
    expect(Number.isFinite(logits[0]!)).toBe(true);
  }, 600_000);
});

describe.skipIf(!have || ctx === null)("WebGPU buffers are destroyed with their session and model; GPU errors are typed (stories260K)", () => {
  it("Session.dispose releases its cache's buffers (pages, statistics, op uniforms): live bytes return to the model's; model.dispose returns them to 0", async () => {
    const n = counter(ctx!);
    const loaded = await loadModel(sharedPath("models/stories260K.gguf"), { backend: "webgpu", gpuContext: ctx!, nCtx: 128 });
    const modelOnly = n.live();
    expect(modelOnly).toBeGreaterThan(0);
    for (const policy of [undefined, { kind: "h2o" as const, recent: 8 }]) {
      const session = new Session(loaded, { slidingWindowSize: 32, attentionSinkSize: 4, ...(policy ? { policy } : {}) });
      const out = await collect(session.generate("Once upon a time", { maxTokens: 40, temperature: 0, ignoreEos: true }));
      expect(out.ids).toHaveLength(40);
      expect(n.live()).toBeGreaterThan(modelOnly);
      session.dispose();
      expect(n.live()).toBe(modelOnly);
      // A session used after dispose is a typed error, not a GPU validation error.
      await expect(collect(session.generate("Once", { maxTokens: 2 }))).rejects.toThrow(SequenceNotFoundError);
      await expect(asyncForwardOf(loaded.model)!.forwardAsync([1], 0, 1, session.cache, session.seqId, null)).rejects.toThrow(/cache used after its release/);
    }
    // A server-style shared cache is not the session's to release.
    const shared = createSessionCache(loaded.model, resolveCacheConfig({ contextWindowSize: 64, codec: "f32", maxSequences: 2 }));
    const withShared = n.live();
    new Session(loaded, {}, { shared: { cache: shared, seqId: 1 } }).dispose();
    expect(n.live()).toBe(withShared);
    loaded.model.dispose();
    expect(n.live()).toBe(0);
  }, 300_000);

  it("a GPU error in an allocation is thrown, typed and naming it, by the next forward step (once: the step after runs)", async () => {
    const { header, data } = await load();
    const n = counter(ctx!);
    const model = new WebGpuTransformer(ctx!, header, data, transformerPlan(header, data), { window: 64, maxBatchTokens: 4 });
    const gc = model.createCache(resolveCacheConfig({ contextWindowSize: 64, codec: "f32" }));
    gc.cache.add(0);
    const logits = new Float32Array(model.hp.nVocab);
    model.gpu.storage(ctx!.device.limits.maxBufferSize + 4, "oversized scratch");
    gc.cache.reserveOrThrow(0, 1);
    const err = await model.forward(1, gc, 0, logits).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WebGpuDeviceError);
    expect((err as Error).message).toMatch(/validation error while allocating buffer "oversized scratch"/);
    await model.forward(1, gc, 0, logits);
    expect(Number.isFinite(logits[0]!)).toBe(true);
    model.dispose();
    expect(n.live()).toBe(0);
    await expect(model.forward(1, gc, 0, logits)).rejects.toThrow(/model used after dispose/);
  }, 120_000);
});

// The other architectures the GPU runs (test/fixtures/arch-models.ts): QK norms (qwen3, gemma3), Q/K/V biases (qwen2),
// post-norms and a final soft-cap (gemma2), gemma3's sliding layers in a cache group of their own.
describe.skipIf(ctx === null)("WebGPU memory plan = the GPU buffers created (synthetic architectures)", () => {
  for (const arch of ["qwen3", "qwen2", "gemma2", "gemma3", "smollm3"] as const) {
    it(`${arch}: live and peak bytes equal the plan to the byte`, async () => {
      const m = buildArchModel({ arch, seed: 7 });
      const dir = mkdtempSync(join(tmpdir(), "kvbound-webgpu-mem-"));
      try {
        const path = join(dir, `${arch}.gguf`);
        writeFileSync(path, m.bytes);
        const spec = await loadModelSpec(path);
        const header = await readGgufHeader(m.bytes);
        const data = m.bytes.subarray(header.dataOffset);
        const config = resolveCacheConfig({ contextWindowSize: 512, codec: "f32" });
        const { plan, n, model, gc } = plannedModel(header, data, spec, config, 16);
        const logits = new Float32Array(model.hp.nVocab);
        gc.cache.reserveOrThrow(0, 16);
        await model.forwardBatch(Array.from({ length: 16 }, (_, i) => 1 + i), 0, 16, gc, 0, logits);
        gc.cache.reserveOrThrow(0, 1);
        await model.forward(argmax(logits), gc, 0, logits);
        if (n.live() !== plan.steadyBytes) console.log(arch, "live", n.live(), "plan", plan.steadyBytes, [...ctx!.memory!.byLabel()].slice(-12));
        expect(n.live()).toBe(plan.steadyBytes);
        expect(n.peak()).toBe(plan.peakBytes);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    }, 120_000);
  }
});
