import { describe, expect, it } from "vitest";

import { LLAMA_31_8B } from "../../test/helpers/spec.js";
import { cheapestFor, fitContexts, largestFitting } from "./fit.js";
import { ENGINE_RULES, planMemory } from "./plan.js";

const GIB = 1024 ** 3;

// Llama 3.1 8B (config.json) with Q4_K_M weight bytes from the registry.
const llama8b = LLAMA_31_8B;

// Hand figures for llama.cpp, one sequence, flash attention on (default), ubatch 512:
const WEIGHTS = 4_912_913_832;
const COMPUTE = 271_056_896; // max(512 x 128256 x 4 + 512 x 4096 x 4, 2 x 512 x 14336 x 4 + 3 x 512 x 4096 x 4)
const PER_TOKEN = {
  f16: 32 * 2 * 1024 * 2, // 131,072 B: 32 layers x (K + V) x 1024 values x 2 B
  q8_0: 32 * 2 * (1024 / 32) * 34, // 69,632 B
  q8q4: 32 * ((1024 / 32) * 34 + (1024 / 32) * 18), // 53,248 B
  q4_0: 32 * 2 * (1024 / 32) * 18, // 36,864 B
};

describe("largestFitting", () => {
  it("finds the boundary on a step grid, and the cap", () => {
    expect(largestFitting(256, 131072, (n) => n <= 1000)).toBe(768);
    expect(largestFitting(256, 131072, (n) => n <= 131072)).toBe(131072);
    expect(largestFitting(256, 131072, () => false)).toBeNull();
    expect(largestFitting(256, 1000, (n) => n <= 900)).toBe(768);
    expect(largestFitting(16, 8, () => true)).toBe(8);
  });
});

describe("fitContexts (llama.cpp, 8 GiB)", () => {
  const budget = 8 * GIB;
  const fit = fitContexts(llama8b, { engine: "llama.cpp", budgetBytes: budget }, ENGINE_RULES);
  const free = budget - WEIGHTS - COMPUTE; // 3,405,963,864 B for KV

  it("matches the hand computation: floor(free / bytes per token) rounded down to 256", () => {
    const byLabel = Object.fromEntries(fit.options.map((o) => [o.label, o.maxCtx]));
    expect(byLabel["f16 K+V"]).toBe(Math.floor(free / PER_TOKEN.f16 / 256) * 256); // 25,856
    expect(byLabel["f16 K+V"]).toBe(25856);
    expect(byLabel["q8_0 K+V"]).toBe(48896);
    expect(byLabel["q4_0 K+V"]).toBe(92160);
    expect(fit.granularity).toBe(256);
  });

  it("is exact at the boundary: the found ctx fits and the next step does not", () => {
    for (const o of fit.options.filter((x) => !x.bounded)) {
      expect(o.maxCtx).not.toBeNull();
      const at = planMemory(llama8b, { ...o.settings, ctx: o.maxCtx! }, ENGINE_RULES);
      const next = planMemory(llama8b, { ...o.settings, ctx: o.maxCtx! + 256 }, ENGINE_RULES);
      expect(at.totalBytes).toBeLessThanOrEqual(budget);
      expect(next.totalBytes).toBeGreaterThan(budget);
      expect(o.bytesAtMax).toBe(at.totalBytes);
    }
  });

  it("is monotone: cheaper KV types hold longer contexts, bigger budgets longer ones too", () => {
    const ctxs = fit.options.filter((o) => !o.bounded).map((o) => o.maxCtx!);
    expect(ctxs).toEqual([...ctxs].sort((a, b) => a - b));
    let prev = 0;
    for (const gib of [6, 7, 8, 10, 12]) {
      const f = fitContexts(llama8b, { engine: "llama.cpp", budgetBytes: gib * GIB }, ENGINE_RULES).options[0]!;
      const v = f.maxCtx ?? 0;
      expect(v).toBeGreaterThanOrEqual(prev);
      prev = v;
    }
  });

  it("caps at the training context", () => {
    const f = fitContexts(llama8b, { engine: "llama.cpp", budgetBytes: 64 * GIB }, ENGINE_RULES);
    expect(f.options[0]?.maxCtx).toBe(131072);
    expect(f.options[0]?.limitedBy).toBe("nCtxTrain");
  });

  it("explains context shift as llama.cpp's bounded option", () => {
    const shift = fit.options.find((o) => o.bounded)!;
    expect(shift.label).toMatch(/context shift/);
    expect(shift.maxCtx).toBe(92160);
  });

  it("says when the weights alone exceed the budget", () => {
    const f = fitContexts(llama8b, { engine: "llama.cpp", budgetBytes: 4 * GIB }, ENGINE_RULES);
    expect(f.options.every((o) => o.maxCtx === null)).toBe(true);
    expect(f.notes.join(" ")).toMatch(/weights alone/);
  });
});

describe("fitContexts (WebLLM, sliding window)", () => {
  it("offers a bounded sliding window with 4 sinks that fits", () => {
    const f = fitContexts(llama8b, { engine: "webllm", budgetBytes: 6 * GIB }, ENGINE_RULES);
    expect(f.granularity).toBe(16);
    const f16 = f.options.find((o) => o.label === "f16")!;
    const sliding = f.options.find((o) => o.bounded)!;
    expect(f16.maxCtx).not.toBeNull();
    // f16 window pages: ceil(w/16) + 1 + 2 for sliding vs ceil(c/16) + 1: two more pages, so a
    // sliding window fits 32 tokens fewer at most.
    expect(sliding.maxCtx).not.toBeNull();
    expect(f16.maxCtx! - sliding.maxCtx!).toBeLessThanOrEqual(32);
    const at = planMemory(llama8b, { engine: "webllm", ...sliding.settings, slidingWindowSize: sliding.maxCtx! }, ENGINE_RULES);
    expect(at.totalBytes).toBeLessThanOrEqual(6 * GIB);
    expect(planMemory(llama8b, { engine: "webllm", ...sliding.settings, slidingWindowSize: sliding.maxCtx! + 16 }, ENGINE_RULES).totalBytes).toBeGreaterThan(6 * GIB);
  });
});

describe("cheapestFor (llama.cpp, 8 GiB)", () => {
  const req = { engine: "llama.cpp" as const, budgetBytes: 8 * GIB };

  it("climbs f16 -> q8_0 -> q8_0 K + q4_0 V -> q4_0", () => {
    const a = cheapestFor(llama8b, 16384, req, ENGINE_RULES);
    expect(a.fits && a.label).toBe("f16 K+V"); // 16384 x 131,072 = 2 GiB KV
    const b = cheapestFor(llama8b, 32768, req, ENGINE_RULES);
    expect(b.fits && b.label).toBe("q8_0 K+V"); // f16 would need 4 GiB of KV: 9.46 GB > 8 GiB
    const c = cheapestFor(llama8b, 60000, req, ENGINE_RULES);
    // q8_0: 60160 x 69,632 = 4.19 GB -> too much; q8_0 K + q4_0 V: 60160 x 53,248 = 3.20 GB + 5.18 GB = 8.39 GB <= 8.59 GB
    expect(c.fits && c.label).toBe("q8_0 K + q4_0 V");
    const d = cheapestFor(llama8b, 65536, req, ENGINE_RULES);
    expect(d.fits && d.label).toBe("q4_0 K+V");
  });

  it("says by how much the cheapest setting misses", () => {
    const r = cheapestFor(llama8b, 131072, req, ENGINE_RULES);
    expect(r.fits).toBe(false);
    if (r.fits) return;
    expect(r.cheapestLabel).toBe("q4_0 K+V");
    // q4_0 KV 131072 x 36,864 = 4,831,838,208 + weights + compute = 10,015,808,936 B
    expect(r.bytes).toBe(131072 * PER_TOKEN.q4_0 + WEIGHTS + COMPUTE);
    expect(r.shortfallBytes).toBe(10_015_808_936 - 8 * GIB);
    expect(r.reason).toMatch(/does not fit even with q4_0 K\+V/);
  });

  it("says when the weights alone exceed the budget", () => {
    const r = cheapestFor(llama8b, 4096, { engine: "llama.cpp", budgetBytes: 4 * GIB }, ENGINE_RULES);
    expect(r.fits).toBe(false);
    if (!r.fits) expect(r.reason).toMatch(/weights alone/);
  });

  it("WebLLM falls back to a sliding window when the full context cannot fit", () => {
    const r = cheapestFor(llama8b, 131072, { engine: "webllm", budgetBytes: 8 * GIB }, ENGINE_RULES);
    expect(r.fits).toBe(true);
    if (r.fits) {
      expect(r.bounded).toBe(true);
      expect(r.settings.slidingWindowSize).toBeGreaterThan(0);
      expect(r.settings.attentionSinkSize).toBe(4);
      expect(r.bytes).toBeLessThanOrEqual(8 * GIB);
    }
  });

  it("vLLM: auto, then fp8", () => {
    // 24 GiB GPU, 0.92 x 24 GiB - 4.58 GiB weights - ~0.42 GiB activations leaves ~17.1 GiB; one 131072-token
    // request needs 16 GiB of bf16 KV (131072 x 131,072 B), so auto fits; at 0.8 utilization only fp8 does.
    const auto = cheapestFor(llama8b, 131072, { engine: "vllm", budgetBytes: 24 * GIB }, ENGINE_RULES);
    expect(auto.fits && auto.label).toBe("auto (model dtype)");
    const fp8 = cheapestFor(llama8b, 131072, { engine: "vllm", budgetBytes: 24 * GIB, gpuMemoryUtilization: 0.8 }, ENGINE_RULES);
    expect(fp8.fits && fp8.label).toBe("fp8");
    const none = cheapestFor(llama8b, 131072, { engine: "vllm", budgetBytes: 12 * GIB }, ENGINE_RULES);
    expect(none.fits).toBe(false);
  });
});
