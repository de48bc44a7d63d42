// The kvbound plan's weights + cache + compute equal what the runtime really holds: a constructed
// CausalLM's wasm memory (`model.wasmBytes`), the file's tensor bytes, the PagedKvCache's
// reservedBytes and the Session's logits row; with hand-computed figures for stories260K.

import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { resolveCacheConfig } from "../src/cache/config.js";
import { createModelCache } from "../src/model/cache-kv.js";
import { loadModelWeights } from "../src/engine/load-model.js";
import type { CausalLM } from "../src/model/causal-lm.js";
import { DenseKv } from "../src/model/dense-kv.js";
import { wasmKernelsAvailable } from "../src/model/wasm/wasm-kernels.js";
import { loadModelSpec } from "../src/spec/load.js";
import type { ModelSpec } from "../src/spec/model-spec.js";
import { requireShared, sharedPath } from "./helpers/shared.js";
import { writeSyntheticModel, type SyntheticShape } from "./fixtures/synthetic-model.js";
import { ARCH_NAMES, buildArchModel } from "./fixtures/arch-models.js";
import { KVBOUND_ARCHS, kvboundCacheInput, kvboundModelMemory } from "../src/plan/kvbound.js";
import { SUPPORTED_ARCHS } from "../src/model/architectures.js";
import { planMemory } from "../src/plan/plan.js";
import type { PlanSettings } from "../src/plan/types.js";

const dir = mkdtempSync(join(tmpdir(), "kvbound-runtime-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const SLIDING: PlanSettings = { slidingWindowSize: 256, attentionSinkSize: 4, codec: "f16" };

/**
 * The runtime's own figures for a file loaded as `kvbound run` loads it (streamed: each tensor held
 * once): the resident JS-side tensor bytes and staging buffer, model.wasmBytes, cache bytes.
 */
async function runtime(path: string, spec: ModelSpec, settings: PlanSettings) {
  const loaded = await loadModelWeights(path);
  const model = loaded.model;
  const cache = createModelCache(model, resolveCacheConfig(kvboundCacheInput(spec, settings)));
  // The WebAssembly.Memory really allocated (not the layout's own counter): whole 64 KiB pages.
  const memoryBytes = model["arena"]?.k.memory.buffer.byteLength ?? 0;
  // Weights held besides the arena: the packed resident tensors (file rows are staged in the arena).
  return { tensorBytes: loaded.weights.residentBytes, wasmBytes: model.wasmBytes, memoryBytes, kernels: model.kernels, cacheBytes: cache.reservedBytes, cacheScratchBytes: cache.scratchBytes, logitsBytes: model.hp.nVocab * 4 };
}

function expectPlanEqualsRuntime(spec: ModelSpec, settings: PlanSettings, rt: Awaited<ReturnType<typeof runtime>>): void {
  const plan = planMemory(spec, { ...settings, engine: "kvbound" });
  expect(plan.kv.totalBytes).toBe(rt.cacheBytes);
  // weights + compute = file tensors + the whole wasm arena + the Session's f32 logits row + the
  // cache's attention scratch.
  expect(plan.weights!.bytes + plan.compute!.bytes).toBe(rt.tensorBytes + rt.wasmBytes + rt.logitsBytes + rt.cacheScratchBytes);
  expect(plan.totalBytes).toBe(rt.cacheBytes + rt.tensorBytes + rt.wasmBytes + rt.logitsBytes + rt.cacheScratchBytes);
  const mem = kvboundModelMemory(spec)!;
  expect(mem.wasmBytes).toBe(rt.wasmBytes);
  // The memory the engine grew holds the planned bytes and at most the rest of its last 64 KiB
  // page, which nothing writes (so RSS never sees it): the plan counts the bytes in use.
  expect(rt.memoryBytes).toBe(Math.ceil(mem.wasmBytes / 65536) * 65536);
  expect(plan.weights!.bytes).toBe(rt.tensorBytes + mem.wasmWeightBytes);
  // Each tensor once: the resident part is the file's tensor bytes less those only in wasm memory.
  expect(rt.tensorBytes).toBe(spec.weights!.bytes - mem.wasmTensorFileBytes);
}

describe.skipIf(!wasmKernelsAvailable())("kvbound plan == runtime bytes", () => {
  const haveStories = requireShared("models/stories260K.gguf");

  it.skipIf(!haveStories)("stories260K (F32, untied output): hand-computed wasm layout", async () => {
    const path = sharedPath("models/stories260K.gguf");
    const spec = await loadModelSpec(path);
    const rt = await runtime(path, spec, SLIDING);
    expect(rt.kernels).toBe("wasm");
    // stories260K: 5 layers, n_embd 64, 8 heads, 4 KV heads of 8 dims, n_ff 172, vocab 512, all F32.
    // Copies (F32, 4 B/value, each a multiple of 64 B): per layer q 64x64, k 64x32, v 64x32,
    // o 64x64, gate/up/down 64x172 -> (2*4096 + 2*2048 + 3*11008) * 4 = 181,248; x5 + output 64x512x4.
    const copies = 5 * ((2 * 4096 + 2 * 2048 + 3 * 11008) * 4) + 64 * 512 * 4;
    expect(copies).toBe(1_037_312);
    // Activations, batch 64, f32: x, xb, q, att 64 wide; k, v 32; hb, hb2 172; one logits row 512;
    // one norm-weight row of n_embd 64 (staged for the elementwise rmsNorm).
    const acts = 64 * 4 * (4 * 64 + 2 * 32 + 2 * 172) + 512 * 4 + 64 * 4;
    // q8 scratch for 64 rows x max width 172: qs 11008, d 1376 -> 1408 (64-B aligned), x16 22016,
    // dT 1376 -> 1408, sx 1376 -> 1408, s16 (Q2_K's per-16 sums) 2752; the arena's unused first 64 bytes.
    const scratch = 11008 + 1408 + 22016 + 1408 + 1408 + 2752;
    expect(rt.wasmBytes).toBe(64 + copies + acts + scratch);
    expectPlanEqualsRuntime(spec, SLIDING, rt);
    const plan = planMemory(spec, { ...SLIDING, engine: "kvbound" });
    expect(plan.weights!.bytes).toBe(rt.tensorBytes + 1_037_312);
    // Only token_embd (untied, read by row) and the F32 norms stay JS-side.
    expect(rt.tensorBytes).toBe(spec.weights!.bytes - 1_037_312);
    // + the cache's attention scratch (equal to what the cache allocates: src/cache/wasm/attend-wasm.test.ts).
    expect(plan.compute!.bytes).toBe(64 + acts + scratch + 512 * 4 + rt.cacheScratchBytes);
  });

  const shapes: Array<[string, SyntheticShape, string]> = [
    ["Q8_0 tied embeddings", { arch: "llama", nLayer: 2, nEmbd: 128, nHead: 4, nHeadKv: 2, nFf: 320, nVocab: 600, nCtxTrain: 2048 }, "Q8_0"],
    // n_ff 320 is not a multiple of 256: ffn_down falls back to Q5_0 (per-tensor types matter).
    ["Q4_K with Q5_0 fallbacks", { arch: "llama", nLayer: 2, nEmbd: 256, nHead: 4, nHeadKv: 1, nFf: 320, nVocab: 512, nCtxTrain: 2048 }, "Q4_K"],
    ["F16 (no wasm copies)", { arch: "qwen2", nLayer: 1, nEmbd: 64, nHead: 2, nHeadKv: 1, nFf: 96, nVocab: 300, nCtxTrain: 2048, qkvBias: true }, "F16"],
  ];
  for (const [label, shape, type] of shapes) {
    it(`synthetic ${label}`, async () => {
      const path = join(dir, `${label.replace(/\W+/g, "_")}.gguf`);
      writeFileSync(path, writeSyntheticModel(shape, type));
      const spec = await loadModelSpec(path);
      for (const settings of [SLIDING, { contextWindowSize: 512, codec: "int8" } satisfies PlanSettings]) {
        expectPlanEqualsRuntime(spec, settings, await runtime(path, spec, settings));
      }
    });
  }

  // Every architecture (fused phi3 tensors, gemma's sliding-window groups, tied and untied outputs):
  // the planner's layer groups and weight copies equal the runtime's, at a context past the windows.
  for (const arch of ARCH_NAMES) {
    it(`synthetic ${arch} (Q8_0): layer groups and copies`, async () => {
      const path = join(dir, `${arch}.gguf`);
      writeFileSync(path, buildArchModel({ arch, weights: "Q8_0" }).bytes);
      const spec = await loadModelSpec(path);
      for (const settings of [{ contextWindowSize: 1024, codec: "f16" } satisfies PlanSettings, SLIDING]) {
        const rt = await runtime(path, spec, settings);
        expectPlanEqualsRuntime(spec, settings, rt);
        const plan = planMemory(spec, { ...settings, engine: "kvbound" });
        expect(plan.kv.caches.length).toBe(arch.startsWith("gemma") ? 2 : 1);
      }
    });
  }

  it("synthetic Q8_0: the copies are 34 B per 32 values (the file's own size), by hand", async () => {
    const shape: SyntheticShape = { arch: "llama", nLayer: 1, nEmbd: 128, nHead: 4, nHeadKv: 2, nFf: 256, nVocab: 512, nCtxTrain: 2048 };
    const path = join(dir, "hand-q8.gguf");
    writeFileSync(path, writeSyntheticModel(shape, "Q8_0"));
    const spec = await loadModelSpec(path);
    // q 128x128, k/v 128x64, o 128x128, gate/up/down 128x256, tied output = token_embd 128x512;
    // every size is a multiple of 64 B after x 34/32.
    const values = 2 * 128 * 128 + 2 * 128 * 64 + 3 * 128 * 256 + 128 * 512;
    expect(kvboundModelMemory(spec)!.wasmWeightBytes).toBe((values * 34) / 32);
    expect(kvboundModelMemory(spec)!.wasmTensorFileBytes).toBe((values * 34) / 32);
  });

  it("without tensor types (registry-style spec) it assumes one type for every matrix", () => {
    const spec: ModelSpec = {
      name: "t", arch: "llama", source: "test", nLayer: 1, nEmbd: 128, nHead: 4, nFf: 256, nVocab: 512, nCtxTrain: 2048,
      nSwa: 0, swaType: "none", layers: [{ kind: "attention", nHeadKv: 2, headDimK: 32, headDimV: 32, swa: false }],
      mla: null, experts: null, params: null, weights: { bytes: 1000, quant: "Q8_0", source: "registry" },
    };
    const values = 2 * 128 * 128 + 2 * 128 * 64 + 3 * 128 * 256 + 128 * 512;
    const plan = planMemory(spec, { engine: "kvbound" });
    // Q8_0 matrices held only in wasm: their file bytes (34 per 32) leave, their copies (34) come.
    expect(plan.weights!.bytes).toBe(1000 - (values * 34) / 32 + (values * 34) / 32);
    expect(plan.compute!.note).toMatch(/assuming every matrix is Q8_0/);
  });
});

describe("the planner's list of runnable architectures", () => {
  it("is the model table's (rank --engine kvbound lists only what kvbound run accepts)", () => {
    expect([...KVBOUND_ARCHS].sort()).toEqual([...SUPPORTED_ARCHS].sort());
  });
});

describe.skipIf(!wasmKernelsAvailable())("a streamed load computes what a load from bytes does", () => {
  const cases: Array<[string, Uint8Array]> = [
    ["Q8_0 tied", writeSyntheticModel({ arch: "llama", nLayer: 2, nEmbd: 128, nHead: 4, nHeadKv: 2, nFf: 320, nVocab: 600, nCtxTrain: 2048 }, "Q8_0")],
    ["Q4_K", writeSyntheticModel({ arch: "llama", nLayer: 2, nEmbd: 256, nHead: 4, nHeadKv: 1, nFf: 320, nVocab: 512, nCtxTrain: 2048 }, "Q4_K")],
    ["phi3 fused", buildArchModel({ arch: "phi3", weights: "Q8_0" }).bytes],
  ];
  for (const [label, bytes] of cases) {
    it(label, async () => {
      const path = join(dir, `stream-${label.replace(/\W+/g, "_")}.gguf`);
      writeFileSync(path, bytes);
      const logits = async (m: CausalLM) => {
        const out = new Float32Array(m.hp.nVocab);
        const kv = new DenseKv(m);
        m.forward(1, 0, kv, null);
        m.forward(2, 1, kv, out);
        return out;
      };
      const streamed = await loadModelWeights(path);
      expect(streamed.weights.mode).toBe("stream");
      const ref = await logits((await loadModelWeights(new Uint8Array(bytes))).model);
      const got = await logits(streamed.model);
      let maxAbs = 0, maxDiff = 0;
      for (let i = 0; i < ref.length; i++) {
        maxAbs = Math.max(maxAbs, Math.abs(ref[i]!));
        maxDiff = Math.max(maxDiff, Math.abs(ref[i]! - got[i]!));
      }
      // Equal but for the tied embedding read back from its wasm copy (Q4_K's a*q+c rounding).
      expect(maxDiff).toBeLessThanOrEqual(1e-4 * maxAbs);
    });
  }
});
