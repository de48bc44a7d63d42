// Hand-built ModelSpecs for tests that must not depend on the GGUF/config converters.

import type { LayerSpec, ModelSpec, WeightsSpec } from "../../src/spec/model-spec.js";

export interface TestShape {
  name: string;
  arch?: string;
  nLayer: number;
  nHeadKv: number;
  headDim: number;
  headDimV?: number;
  nEmbd?: number;
  nHead?: number;
  nFf?: number | null;
  nVocab?: number | null;
  nCtxTrain?: number | null;
  /** SWA window and which layers slide (pattern p: layer il slides iff il % p < p - 1). */
  swa?: { window: number; pattern: number };
  mla?: { kvLoraRank: number; ropeDim: number };
  /** Replaces the uniform layers built from the fields above. */
  layers?: LayerSpec[];
  params?: number | null;
  weights?: WeightsSpec | null;
}

export function testSpec(s: TestShape): ModelSpec {
  const layers: LayerSpec[] = [];
  if (s.layers) {
    layers.push(...s.layers);
  } else {
    for (let il = 0; il < s.nLayer; il++) {
      const swa = s.swa !== undefined && il % s.swa.pattern < s.swa.pattern - 1;
      layers.push({ kind: "attention", nHeadKv: s.nHeadKv, headDimK: s.headDim, headDimV: s.headDimV ?? s.headDim, swa });
    }
  }
  return {
    name: s.name,
    arch: s.arch ?? "llama",
    source: "test",
    nLayer: layers.length,
    nEmbd: s.nEmbd ?? 0,
    nHead: s.nHead ?? 0,
    nFf: s.nFf ?? null,
    nVocab: s.nVocab ?? null,
    nCtxTrain: s.nCtxTrain ?? null,
    nSwa: s.swa?.window ?? 0,
    swaType: s.swa ? "standard" : "none",
    layers,
    mla: s.mla ?? null,
    experts: null,
    params: s.params ?? null,
    weights: s.weights ?? null,
  };
}

/** Llama 3.1 8B (meta-llama/Llama-3.1-8B config.json) with the registry's Q4_K_M weight bytes. */
export const LLAMA_31_8B: ModelSpec = testSpec({
  name: "Llama 3.1 8B",
  nLayer: 32,
  nHeadKv: 8,
  headDim: 128,
  nEmbd: 4096,
  nHead: 32,
  nFf: 14336,
  nVocab: 128256,
  nCtxTrain: 131072,
  params: 8_030_261_248,
  weights: { bytes: 4_912_913_832, quant: "Q4_K_M", source: "registry" },
});
