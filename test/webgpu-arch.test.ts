// The WebGPU forward pass on the acceptance shapes against the CPU backend: small synthetic models
// (test/fixtures/arch-models.ts, n_embd 256) of a Llama (SmolLM2's architecture), SmolLM3 (tied
// embeddings, a layer without RoPE), Qwen3 (per-head QK norm), Qwen2 (Q/K/V biases), Gemma 2 (post-norms, soft-caps,
// every other layer sliding) and Gemma 3 (post-norms, per-head QK norm, sliding windows on 5 of 6
// layers in a cache group of their own, GeGLU, embedding scale), teacher-forced over 256
// positions past the sliding windows: top-1 agreement >= 0.99 on peaked distributions (median
// top-1 probability >= 0.3, as bench/llama-cpp-diff requires), on SwiftShader under Node (Dawn).

import { describe, expect, it } from "vitest";
import { resolveCacheConfig } from "../src/cache/config.js";
import { readGgufHeader } from "../src/gguf/header.js";
import { gpuForTests } from "../src/model/webgpu/device.js";
import { buildArchModel, xorshift32, type ArchName } from "./fixtures/arch-models.js";
import { cpuBesideGpu } from "./helpers/webgpu-pair.js";

const ctx = await gpuForTests();
/** The acceptance shapes run 256 positions; the other architectures 96 (past gemma2's 64-token window), for SwiftShader's time. */
const POSITIONS = 256;
const SHORT = 96;

function argmax(a: Float32Array): number {
  let best = 0;
  for (let i = 1; i < a.length; i++) if (a[i]! > a[best]!) best = i;
  return best;
}

function top1Prob(a: Float32Array): number {
  const m = a[argmax(a)]!;
  let sum = 0;
  for (let i = 0; i < a.length; i++) sum += Math.exp(a[i]! - m);
  return 1 / sum;
}

describe.skipIf(ctx === null)("WebGPU forward vs CPU on synthetic architectures (teacher-forced)", () => {
  const cases: Array<[ArchName, number | undefined, number]> = [["llama", 2, POSITIONS], ["gemma3", undefined, POSITIONS], ["smollm3", undefined, SHORT], ["qwen3", 2, SHORT], ["qwen2", 2, SHORT], ["gemma2", undefined, SHORT]];
  for (const [arch, nLayer, positions] of cases) {
    it(`${arch}${nLayer !== undefined ? ` (${nLayer} layers)` : ""}: top-1 agreement >= 0.99 over ${positions} positions`, async () => {
      const m = buildArchModel({ arch, seed: 7, ...(nLayer !== undefined ? { nLayer } : {}) });
      const header = await readGgufHeader(m.bytes);
      const data = m.bytes.subarray(header.dataOffset);
      // Exact GELU on the CPU: the GPU computes GeGLU's tanh form in f32 (ggml's f16 table would differ by f16 steps).
      const config = resolveCacheConfig({ contextWindowSize: 512, codec: "f32" });
      const { cpu, cache, kv, gpu, gc } = cpuBesideGpu(ctx!, header, data, config, { kernels: "js", activations: "f32", gelu: "exact", nCtx: 1024 }, { window: 512, maxBatchTokens: 16 });
      if (arch === "gemma3") expect(gc.cache.groups.length).toBe(2);
      const next = xorshift32(11);
      const ids: number[] = [];
      for (let i = 0; i < positions; i++) ids.push(next() % m.nVocab);
      const a = new Float32Array(cpu.hp.nVocab), b = new Float32Array(cpu.hp.nVocab);
      let agree = 0, maxDiff = 0;
      const probs: number[] = [];
      const rows: Float32Array[] = [];
      for (let p = 0; p < positions; p++) {
        cache.reserveOrThrow(0, 1);
        cpu.forward(ids[p]!, p, kv, a);
        if (p < 64) rows.push(a.slice());
        gc.cache.reserveOrThrow(0, 1);
        await gpu.forward(ids[p]!, gc, 0, b);
        if (argmax(a) === argmax(b)) agree++;
        probs.push(top1Prob(a));
        for (let i = 0; i < a.length; i++) maxDiff = Math.max(maxDiff, Math.abs(a[i]! - b[i]!));
      }
      probs.sort((x, y) => x - y);
      const median = probs[positions >> 1]!;
      // The first 64 positions again in batches of 16 (every cache group written in one pass).
      const gb = gpu.createCache(config);
      gb.cache.add(0);
      let batchDiff = 0;
      for (let s = 0; s < 64; s += 16) {
        gb.cache.reserveOrThrow(0, 16);
        await gpu.forwardBatch(ids, s, 16, gb, 0, b);
        const ref = rows[s + 15]!;
        for (let i = 0; i < b.length; i++) batchDiff = Math.max(batchDiff, Math.abs(ref[i]! - b[i]!));
      }
      console.log(`${arch}: top-1 agreement ${agree}/${positions}, median CPU top-1 prob ${median.toFixed(3)}, max |logit diff| ${maxDiff.toExponential(2)} (batches of 16: ${batchDiff.toExponential(2)})`);
      expect(median).toBeGreaterThanOrEqual(0.3);
      expect(agree / positions).toBeGreaterThanOrEqual(0.99);
      expect(batchDiff).toBeLessThan(1e-2);
    }, 600_000);
  }
});
