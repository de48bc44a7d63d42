import { describe, expect, it } from "vitest";

import { InvalidSettingError } from "../errors.js";
import { LLAMA_31_8B } from "../../test/helpers/spec.js";
import { exportPlan } from "./export.js";
import { ENGINE_RULES, planMemory, type EngineRules } from "./plan.js";
import type { EngineKvResult, EngineName } from "./types.js";

const GIB = 1024 ** 3;

const llama8b = LLAMA_31_8B;

function stubRules(calls: EngineName[]): EngineRules {
  const rule =
    (engine: EngineName) =>
    (): EngineKvResult => {
      calls.push(engine);
      return { settings: { engine }, kv: { totalBytes: 1000, kBytes: 500, vBytes: 500, caches: [] }, notes: [] };
    };
  return { "llama.cpp": rule("llama.cpp"), vllm: rule("vllm"), webllm: rule("webllm"), kvbound: rule("kvbound"), ollama: rule("ollama"), mlx: rule("mlx") };
}

describe("planMemory", () => {
  it("dispatches to the engine's rule, llama.cpp by default", () => {
    const calls: EngineName[] = [];
    const rules = stubRules(calls);
    planMemory(llama8b, {}, rules);
    planMemory(llama8b, { engine: "vllm" }, rules);
    planMemory(llama8b, { engine: "webllm" }, rules);
    planMemory(llama8b, { engine: "kvbound" }, rules);
    expect(calls).toEqual(["llama.cpp", "vllm", "webllm", "kvbound"]);
  });

  it("refuses an unknown engine", () => {
    expect(() => planMemory(llama8b, { engine: "tgi" as EngineName })).toThrow(InvalidSettingError);
  });

  it("total = kv + weights + compute (llama.cpp, f16, 4096 tokens)", () => {
    const p = planMemory(llama8b, { ctx: 4096 }, ENGINE_RULES);
    // 4096 cells x 32 layers x (1024 K + 1024 V values) x 2 B = 536,870,912 B
    expect(p.kv.totalBytes).toBe(536_870_912);
    expect(p.weights?.bytes).toBe(4_912_913_832);
    // Compute estimate, flash attention on, ubatch 512: max(logits 512 x 128256 x 4 + 512 x 4096 x 4,
    // FFN 2 x 512 x 14336 x 4 + 3 x 512 x 4096 x 4) = max(271,056,896, 83,886,080)
    expect(p.compute?.bytes).toBe(271_056_896);
    expect(p.totalBytes).toBe(536_870_912 + 4_912_913_832 + 271_056_896);
    expect(p.engine).toBe("llama.cpp");
  });

  it("without flash attention the estimate adds the KQ scores", () => {
    const p = planMemory(llama8b, { ctx: 4096, flashAttn: false }, ENGINE_RULES);
    // KQ 512 x 4096 x 32 x 4 = 268,435,456 + FFN/hidden 83,886,080 = 352,321,536 > logits
    expect(p.compute?.bytes).toBe(352_321_536);
  });

  it("falls back to params x 2 bytes when the spec has no weight bytes", () => {
    const p = planMemory({ ...llama8b, weights: null }, { ctx: 4096 }, ENGINE_RULES);
    expect(p.weights).toEqual({ bytes: 16_060_522_496, quant: "BF16", source: "params" });
  });

  it("vLLM plans are per GPU: weights / tp, the KV pool from budgetBytes", () => {
    const p = planMemory(llama8b, { engine: "vllm", ctx: 8192, budgetBytes: 24 * GIB, tensorParallel: 2 }, ENGINE_RULES);
    expect(p.weights?.bytes).toBe(Math.ceil(4_912_913_832 / 2));
    expect(p.extra?.weightsBytesPerGpu).toBe(p.weights?.bytes);
    expect(p.extra?.activationBytes).toBe(p.compute?.bytes);
    expect(typeof p.extra?.numBlocks).toBe("number");
    // What vLLM takes is at most budget x utilization.
    expect(p.totalBytes).toBeLessThanOrEqual(Math.floor(24 * GIB * 0.92));
  });
});

describe("exportPlan", () => {
  it("llama.cpp flags", () => {
    const p = planMemory(llama8b, { ctx: 32768, typeK: "q8_0", typeV: "q8_0" }, ENGINE_RULES);
    expect(exportPlan(p, "llama.cpp")).toBe("-c 32768 -np 1 -ub 512 -ctk q8_0 -ctv q8_0 -fa on");
    const q = planMemory(llama8b, { ctx: 8192, seqs: 4, kvUnified: true, flashAttn: false }, ENGINE_RULES);
    expect(exportPlan(q, "llama.cpp")).toBe("-c 8192 -np 4 -ub 512 -ctk f16 -ctv f16 -fa off --kv-unified");
  });

  it("node-llama-cpp createContext options", () => {
    const p = planMemory(llama8b, { ctx: 32768, typeK: "q8_0", typeV: "q4_0" }, ENGINE_RULES);
    expect(JSON.parse(exportPlan(p, "node-llama-cpp"))).toEqual({
      contextSize: 32768,
      sequences: 1,
      batchSize: 512,
      flashAttention: true,
      experimentalKvCacheKeyType: "Q8_0",
      experimentalKvCacheValueType: "Q4_0",
    });
  });

  it("vllm serve args", () => {
    const p = planMemory(llama8b, { engine: "vllm", ctx: 32768, kvCacheDtype: "fp8", tensorParallel: 2, gpuMemoryUtilization: 0.9 }, ENGINE_RULES);
    expect(exportPlan(p, "vllm")).toBe(
      "--max-model-len 32768 --kv-cache-dtype fp8 --gpu-memory-utilization 0.9 --tensor-parallel-size 2 --max-num-batched-tokens 2048",
    );
  });

  it("WebLLM ModelRecord.overrides", () => {
    const p = planMemory(llama8b, { engine: "webllm", contextWindowSize: -1, slidingWindowSize: 4096, attentionSinkSize: 4 }, ENGINE_RULES);
    expect(JSON.parse(exportPlan(p, "webllm"))).toEqual({ context_window_size: -1, sliding_window_size: 4096, attention_sink_size: 4 });
  });

  it("refuses a plan made for another engine", () => {
    const p = planMemory(llama8b, { engine: "vllm", ctx: 4096 }, ENGINE_RULES);
    expect(() => exportPlan(p, "llama.cpp")).toThrow(InvalidSettingError);
  });
});
