import { describe, expect, it } from "vitest";

import { UnknownModelError } from "../errors.js";
import type { LayerSpec, ModelSpec } from "../spec/model-spec.js";
import { ENGINE_RULES } from "./plan.js";
import { compareRanked, rankModels, type RankRegistry } from "./rank.js";

const GIB = 1024 ** 3;

function spec(name: string, nLayer: number, params: number, weightBytes: number): ModelSpec {
  const layers: LayerSpec[] = Array.from({ length: nLayer }, () => ({ kind: "attention", nHeadKv: 8, headDimK: 128, headDimV: 128, swa: false }) as const);
  return {
    name,
    arch: "llama",
    source: "test",
    nLayer,
    nEmbd: 4096,
    nHead: 32,
    nFf: 14336,
    nVocab: 128256,
    nCtxTrain: 131072,
    nSwa: 0,
    swaType: "none",
    layers,
    mla: null,
    experts: null,
    params,
    weights: { bytes: weightBytes, quant: "Q4_K_M", source: "registry" },
  };
}

// Three made-up models: KV per token at f16 = nLayer x 2 x 1024 x 2 B.
const SPECS: Record<string, ModelSpec> = {
  small: spec("Small", 16, 1e9, 1 * GIB),
  medium: spec("Medium", 32, 8e9, 4.5 * GIB),
  large: spec("Large", 80, 70e9, 40 * GIB),
};

const registry: RankRegistry = {
  list: () => [
    { id: "small", name: "Small", weights: { Q4_K_M: 1 }, defaultQuant: "Q4_K_M" },
    { id: "large", name: "Large", weights: { Q4_K_M: 1 }, defaultQuant: "Q4_K_M" },
    { id: "broken", name: "Broken", weights: { Q4_K_M: 1 }, defaultQuant: "Q4_K_M" },
    { id: "medium", name: "Medium", weights: { Q4_K_M: 1 }, defaultQuant: "Q4_K_M" },
  ],
  spec: (id) => {
    const s = SPECS[id];
    if (!s) throw new UnknownModelError(`no model ${id}`, { model: id });
    return s;
  },
};

describe("rankModels", () => {
  it("puts the largest model that fits first, demotes the rest with reasons, hides none", () => {
    const r = rankModels({ engine: "llama.cpp", budgetBytes: 8 * GIB, ctx: 8192 }, registry, ENGINE_RULES);
    expect(r.models.map((m) => m.id)).toEqual(["medium", "small", "large", "broken"]);
    expect(r.models[0]?.fits).toBe(true);
    expect(r.models[0]?.kvSetting).toBe("f16 K+V"); // 8192 x 131,072 B = 1 GiB KV + 4.5 GiB weights
    expect(r.models[2]?.fits).toBe(false);
    expect(r.models[2]?.reason).toMatch(/weights alone/);
    expect(r.models[3]?.reason).toMatch(/UnknownModelError/);
    expect(r.models[3]?.headroomBytes).toBeNull();
  });

  it("a model that needs a quantized cache still fits, with the setting named", () => {
    // medium at 32768: f16 KV 4 GiB + 4.5 GiB weights > 8 GiB, q8_0 KV 2.125 GiB fits.
    const r = rankModels({ engine: "llama.cpp", budgetBytes: 8 * GIB, ctx: 32768 }, registry, ENGINE_RULES);
    const medium = r.models.find((m) => m.id === "medium")!;
    expect(medium.fits).toBe(true);
    expect(medium.kvSetting).toBe("q8_0 K+V");
    expect(r.models[0]?.id).toBe("medium");
  });

  it("demotes a model whose memory fits but whose training context is shorter than ctx", () => {
    const short = { ...spec("Short", 16, 1e9, 1 * GIB), nCtxTrain: 2048 };
    const reg: RankRegistry = { list: () => [{ id: "short", name: "Short", weights: { Q4_K_M: 1 }, defaultQuant: "Q4_K_M" }], spec: () => short };
    const r = rankModels({ engine: "llama.cpp", budgetBytes: 8 * GIB, ctx: 8192 }, reg, ENGINE_RULES);
    expect(r.models[0]?.fits).toBe(false);
    expect(r.models[0]?.reason).toMatch(/trained at 2048 tokens/);
    // 16 layers x 8192 cells x 2 x 1024 x 2 B = 512 MiB KV + 1 GiB weights (+ compute): the memory itself fits
    expect(r.models[0]?.headroomBytes).toBeGreaterThan(0);
  });

  it("orders misses by smallest shortfall and full fits before sliding fits", () => {
    const base = { id: "a", name: "a", quant: "q", params: 1, kvSetting: "", bytes: 0, reason: "" };
    const fullSmall = { ...base, id: "full-small", fits: true, bounded: false, headroomBytes: 1, params: 1 };
    const slidingBig = { ...base, id: "sliding-big", fits: true, bounded: true, headroomBytes: 5, params: 100 };
    const missNear = { ...base, id: "miss-near", fits: false, bounded: false, headroomBytes: -1 };
    const missFar = { ...base, id: "miss-far", fits: false, bounded: false, headroomBytes: -100 };
    const sorted = [missFar, slidingBig, missNear, fullSmall].sort(compareRanked).map((m) => m.id);
    expect(sorted).toEqual(["full-small", "sliding-big", "miss-near", "miss-far"]);
  });

  it("ranks the built-in registry without throwing", () => {
    const r = rankModels({ engine: "llama.cpp", budgetBytes: 16 * GIB, ctx: 16384 });
    expect(r.models.length).toBeGreaterThan(5);
    const firstMiss = r.models.findIndex((m) => !m.fits);
    if (firstMiss >= 0) expect(r.models.slice(firstMiss).every((m) => !m.fits)).toBe(true);
  });
});
