// specFromGgufMetadata against hand-computed layer tables. Metadata objects are written as
// llama.cpp's convert_hf_to_gguf.py writes them for the published models (keys per
// src/llama-arch.cpp); every expected figure is computed by hand in the comments.

import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { ModelConfigError, UnsupportedArchitectureError } from "../errors.js";
import { kvLayers, type LayerSpec, type ModelSpec } from "./model-spec.js";
import { specFromGgufMetadata } from "./from-gguf-metadata.js";

const spec = (meta: Record<string, unknown>): ModelSpec => specFromGgufMetadata(meta, { source: "test" });
const attn = (s: ModelSpec) => s.layers.filter((l): l is Extract<LayerSpec, { kind: "attention" }> => l.kind === "attention");
const swaIdx = (s: ModelSpec): number[] => s.layers.flatMap((l, i) => (l.kind === "attention" && l.swa ? [i] : []));
const recIdx = (s: ModelSpec): number[] => s.layers.flatMap((l, i) => (l.kind === "recurrent" ? [i] : []));
const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);
// GGUF metadata as convert_hf_to_gguf.py writes it for the config.json beside it (test/fixtures/configs)
const loadMeta = (name: string): Record<string, unknown> =>
  JSON.parse(readFileSync(new URL(`../../test/fixtures/configs/${name}.gguf-metadata.json`, import.meta.url), "utf8")) as Record<string, unknown>;

const LLAMA_3_2_1B_GGUF = loadMeta("llama-3.2-1b");

const GEMMA_3_27B_GGUF = loadMeta("gemma-3-27b-it");

const GPT_OSS_20B_GGUF = loadMeta("gpt-oss-20b");

// convert_hf_to_gguf.py DeepseekV2Model (MLA): head_count_kv 1, key_length = kv_lora_rank + rope
// = 512 + 64 = 576, value_length = kv_lora_rank = 512, *_mla = the decompressed MHA head sizes
// (qk_nope 128 + qk_rope 64 = 192, v_head_dim 128).
const DEEPSEEK_V3_GGUF = loadMeta("deepseek-v3");

// Qwen3-Next-80B-A3B: ssm.inner_size = linear_value_head_dim 128 * linear_num_value_heads 32 = 4096,
// ssm.state_size = linear_key_head_dim 128, ssm.group_count = linear_num_key_heads 16,
// rope.dimension_count = 256 * partial_rotary_factor 0.25 = 64.
const QWEN3_NEXT_GGUF = loadMeta("qwen3-next-80b-a3b-instruct");

describe("specFromGgufMetadata: dense", () => {
  it("Llama-3.2-1B: 16 layers x 8 KV heads x head 64 (2048 / 32)", () => {
    const s = spec(LLAMA_3_2_1B_GGUF);
    expect(s.arch).toBe("llama");
    expect(s.name).toBe("Llama 3.2 1B");
    expect(s.nLayer).toBe(16);
    expect(s.layers).toHaveLength(16);
    for (const l of s.layers) expect(l).toEqual({ kind: "attention", nHeadKv: 8, headDimK: 64, headDimV: 64, swa: false });
    expect(s.nSwa).toBe(0);
    expect(s.swaType).toBe("none");
    expect(s.mla).toBeNull();
    expect(s.experts).toBeNull();
    expect(s.nFf).toBe(8192);
    expect(s.nVocab).toBe(128256);
    expect(s.nCtxTrain).toBe(131072);
    // K+V values per token over all layers: 16 * 8 * (64 + 64) = 16384
    let perToken = 0;
    for (const { layer } of kvLayers(s)) perToken += layer.nHeadKv * (layer.headDimK + layer.headDimV);
    expect(perToken).toBe(16384);
  });

  it("head_count_kv defaults to head_count; vocab from the tokenizer tokens when vocab_size is missing", () => {
    const s = spec({
      "general.architecture": "qwen2",
      "qwen2.block_count": 2,
      "qwen2.embedding_length": 64,
      "qwen2.attention.head_count": 4,
      "tokenizer.ggml.tokens": ["a", "b", "c"],
    });
    expect(attn(s).map((l) => [l.nHeadKv, l.headDimK])).toEqual([
      [4, 16],
      [4, 16],
    ]);
    expect(s.nVocab).toBe(3);
    expect(s.name).toBe("qwen2");
    expect(s.nCtxTrain).toBeNull();
  });

  it("accepts bigint values and typed {type, value} wrappers", () => {
    const s = spec({
      "general.architecture": "llama",
      "llama.block_count": 2n,
      "llama.embedding_length": { type: 4, value: 256 },
      "llama.attention.head_count": 4n,
      "llama.attention.head_count_kv": 2,
    });
    expect(attn(s).map((l) => [l.nHeadKv, l.headDimK])).toEqual([
      [2, 64],
      [2, 64],
    ]);
  });

  it("per-layer head_count_kv arrays: 0 = a layer without attention (deci)", () => {
    const s = spec({
      "general.architecture": "deci",
      "deci.block_count": 4,
      "deci.embedding_length": 1024,
      "deci.attention.head_count": [8, 8, 8, 8],
      "deci.attention.head_count_kv": [2, 0, 8, 4],
      "deci.feed_forward_length": [4096, 2048, 4096, 1024],
    });
    expect(attn(s).map((l) => l.nHeadKv)).toEqual([2, 0, 8, 4]);
    expect(recIdx(s)).toEqual([]);
    // head 1024 / 8 = 128; kvLayers skips the layer with 0 KV heads
    expect(kvLayers(s).map((x) => x.index)).toEqual([0, 2, 3]);
    expect(s.nFf).toBe(4096);
  });

  it("phi3 with sliding_window set: llama.cpp disables Phi SWA", () => {
    const s = spec({
      "general.architecture": "phi3",
      "phi3.block_count": 32,
      "phi3.embedding_length": 3072,
      "phi3.attention.head_count": 32,
      "phi3.attention.sliding_window": 2047,
    });
    expect(swaIdx(s)).toEqual([]);
    expect(s.nSwa).toBe(0);
  });

  it("an unknown arch with the generic keys is a dense attention model", () => {
    const s = spec({
      "general.architecture": "newarch",
      "newarch.block_count": 3,
      "newarch.embedding_length": 512,
      "newarch.attention.head_count": 8,
      "newarch.attention.head_count_kv": 2,
    });
    expect(attn(s)).toHaveLength(3);
    expect(attn(s)[0]).toEqual({ kind: "attention", nHeadKv: 2, headDimK: 64, headDimV: 64, swa: false });
  });
});

describe("specFromGgufMetadata: sliding window", () => {
  it("Gemma-3-27B: pattern 6 -> il % 6 == 5 is full: 10 full + 52 SWA, window 1024", () => {
    const s = spec(GEMMA_3_27B_GGUF);
    // full layers 5, 11, ..., 59 (10 of them); the other 52 slide
    const full = [5, 11, 17, 23, 29, 35, 41, 47, 53, 59];
    expect(swaIdx(s)).toEqual(range(62).filter((i) => !full.includes(i)));
    expect(swaIdx(s)).toHaveLength(52);
    expect(s.nSwa).toBe(1024);
    expect(s.swaType).toBe("standard");
    for (const l of attn(s)) expect([l.nHeadKv, l.headDimK, l.headDimV]).toEqual([16, 128, 128]);
  });

  it("gemma3 1B (26 layers): same rule, full at 5, 11, 17, 23", () => {
    const s = spec({ ...GEMMA_3_27B_GGUF, "gemma3.block_count": 26, "gemma3.attention.sliding_window": 512 });
    expect(range(26).filter((i) => !swaIdx(s).includes(i))).toEqual([5, 11, 17, 23]);
  });

  it("gemma3: sliding_window_pattern as a number or as per-layer bools", () => {
    const asNumber = spec({ ...GEMMA_3_27B_GGUF, "gemma3.block_count": 8, "gemma3.attention.sliding_window_pattern": 4 });
    expect(swaIdx(asNumber)).toEqual([0, 1, 2, 4, 5, 6]); // il % 4 < 3
    const flags = [true, false, true, true, false, false, true, true];
    const asArray = spec({ ...GEMMA_3_27B_GGUF, "gemma3.block_count": 8, "gemma3.attention.sliding_window_pattern": flags });
    expect(swaIdx(asArray)).toEqual([0, 2, 3, 6, 7]);
  });

  it("gemma3 without sliding_window: no SWA (current llama.cpp gates the pattern on the key)", () => {
    const { "gemma3.attention.sliding_window": _w, ...rest } = GEMMA_3_27B_GGUF;
    expect(swaIdx(spec(rest))).toEqual([]);
  });

  it("gpt-oss-20b: pattern 2 -> even layers SWA (window 128): 12 SWA + 12 full; 32 experts, 4 used", () => {
    const s = spec(GPT_OSS_20B_GGUF);
    expect(swaIdx(s)).toEqual(range(24).filter((i) => i % 2 === 0));
    expect(s.nSwa).toBe(128);
    for (const l of attn(s)) expect([l.nHeadKv, l.headDimK]).toEqual([8, 64]);
    expect(s.experts).toEqual({ count: 32, used: 4 });
    expect(s.nFf).toBe(2880);
  });

  it("gemma2 defaults the window to 4096 and alternates", () => {
    const s = spec({ "general.architecture": "gemma2", "gemma2.block_count": 4, "gemma2.embedding_length": 2304, "gemma2.attention.head_count": 8, "gemma2.attention.head_count_kv": 4, "gemma2.attention.key_length": 256, "gemma2.attention.value_length": 256 });
    expect(swaIdx(s)).toEqual([0, 2]);
    expect(s.nSwa).toBe(4096);
  });

  it("cohere2: pattern 4 (3 SWA : 1 full); the window is required", () => {
    const base = { "general.architecture": "cohere2", "cohere2.block_count": 8, "cohere2.embedding_length": 4096, "cohere2.attention.head_count": 32, "cohere2.attention.head_count_kv": 8 };
    expect(swaIdx(spec({ ...base, "cohere2.attention.sliding_window": 4096 }))).toEqual([0, 1, 2, 4, 5, 6]);
    expect(() => spec(base)).toThrow(ModelConfigError);
    expect(() => spec(base)).toThrow(/cohere2\.attention\.sliding_window/);
  });

  it("llama4: chunked attention, 3 chunked : 1 full, chunk 8192; sliding_window 0 disables it", () => {
    const base = { "general.architecture": "llama4", "llama4.block_count": 48, "llama4.embedding_length": 5120, "llama4.attention.head_count": 40, "llama4.attention.head_count_kv": 8, "llama4.attention.key_length": 128, "llama4.attention.value_length": 128, "llama4.expert_count": 16, "llama4.expert_used_count": 1 };
    const s = spec(base);
    // il % 4 == 3 is full: 12 full, 36 chunked
    expect(swaIdx(s)).toHaveLength(36);
    expect(swaIdx(s).includes(3)).toBe(false);
    expect(s.swaType).toBe("chunked");
    expect(s.nSwa).toBe(8192);
    const off = spec({ ...base, "llama4.attention.sliding_window": 0 });
    expect(swaIdx(off)).toEqual([]);
    expect(off.swaType).toBe("none");
  });

  it("smallthinker: dense-first pattern 4 with the window forced to 4096", () => {
    const s = spec({ "general.architecture": "smallthinker", "smallthinker.block_count": 8, "smallthinker.embedding_length": 2560, "smallthinker.attention.head_count": 32, "smallthinker.attention.head_count_kv": 4, "smallthinker.attention.sliding_window": 1000 });
    expect(swaIdx(s)).toEqual([1, 2, 3, 5, 6, 7]); // il % 4 != 0
    expect(s.nSwa).toBe(4096);
  });
});

describe("specFromGgufMetadata: MLA", () => {
  it("DeepSeek-V3: 61 layers, one latent head of 512 + 64 for K and 512 for V", () => {
    const s = spec(DEEPSEEK_V3_GGUF);
    expect(s.mla).toEqual({ kvLoraRank: 512, ropeDim: 64 });
    expect(s.layers).toHaveLength(61);
    for (const l of s.layers) expect(l).toEqual({ kind: "attention", nHeadKv: 1, headDimK: 576, headDimV: 512, swa: false });
    expect(s.experts).toEqual({ count: 256, used: 8 });
    expect(s.nFf).toBe(2048); // expert FFN size for MoE
  });

  it("old deepseek2 GGUFs without *_mla keys are plain MHA (mla null)", () => {
    const { "deepseek2.attention.key_length_mla": _k, "deepseek2.attention.value_length_mla": _v, ...old } = DEEPSEEK_V3_GGUF;
    const s = spec({ ...old, "deepseek2.attention.head_count_kv": 128, "deepseek2.attention.key_length": 192, "deepseek2.attention.value_length": 128 });
    expect(s.mla).toBeNull();
    expect(attn(s)[0]).toEqual({ kind: "attention", nHeadKv: 128, headDimK: 192, headDimV: 128, swa: false });
  });

  it("an MLA key_length that is not kv_lora_rank + rope is a ModelConfigError naming key_length", () => {
    expect(() => spec({ ...DEEPSEEK_V3_GGUF, "deepseek2.attention.key_length": 192 })).toThrow(/deepseek2\.attention\.key_length .*512 \+ 64/);
  });
});

describe("specFromGgufMetadata: shared KV and MTP layers", () => {
  // Gemma-3n E2B: 30 layers, hidden 2048, 8 heads, 2 KV heads of 256, window 512, period 5,
  // llama.cpp n_layer_kv_from_start = 20: layers 20..29 read layer 19 (full) or 18 (SWA).
  const GEMMA_3N_E2B = {
    "general.architecture": "gemma3n",
    "gemma3n.block_count": 30,
    "gemma3n.embedding_length": 2048,
    "gemma3n.attention.head_count": 8,
    "gemma3n.attention.head_count_kv": 2,
    "gemma3n.attention.key_length": 256,
    "gemma3n.attention.value_length": 256,
    "gemma3n.attention.sliding_window": 512,
    "gemma3n.attention.sliding_window_pattern": range(30).map((i) => i % 5 !== 4),
    "gemma3n.attention.shared_kv_layers": 10,
  };

  it("Gemma-3n E2B: 20 layers own a cache, 10 share layer 18 (SWA) or 19 (full)", () => {
    const s = spec(GEMMA_3N_E2B);
    expect(range(30).filter((i) => !swaIdx(s).includes(i))).toEqual([4, 9, 14, 19, 24, 29]);
    expect(kvLayers(s).map((x) => x.index)).toEqual(range(20));
    const from = s.layers.map((l) => (l.kind === "attention" ? l.kvFrom : undefined));
    expect(from.slice(20)).toEqual([18, 18, 18, 18, 19, 18, 18, 18, 18, 19]);
    expect(from.slice(0, 20).every((f) => f === undefined)).toBe(true);
  });

  it("gemma4: per-layer pattern, shared_kv_layers and SWA head sizes", () => {
    // 10 layers, 4 SWA : 1 full (full at 4, 9); 5 shared -> n_layer_kv_from_start = 10 - 5 = 5;
    // shared SWA layers read 5 - 2 = 3 (SWA), the shared full layer 9 reads 5 - 1 = 4 (full).
    // Full layers have head 512, SWA layers head 256 (key_length_swa).
    const meta = {
      "general.architecture": "gemma4",
      "gemma4.block_count": 10,
      "gemma4.embedding_length": 1536,
      "gemma4.attention.head_count": 8,
      "gemma4.attention.head_count_kv": 1,
      "gemma4.attention.key_length": 512,
      "gemma4.attention.value_length": 512,
      "gemma4.attention.key_length_swa": 256,
      "gemma4.attention.value_length_swa": 256,
      "gemma4.attention.sliding_window": 512,
      "gemma4.attention.sliding_window_pattern": range(10).map((i) => i % 5 !== 4),
      "gemma4.attention.shared_kv_layers": 5,
    };
    const s = spec(meta);
    expect(attn(s).map((l) => l.headDimK)).toEqual([256, 256, 256, 256, 512, 256, 256, 256, 256, 512]);
    expect(s.layers.map((l) => (l.kind === "attention" ? l.kvFrom : undefined))).toEqual([undefined, undefined, undefined, undefined, undefined, 3, 3, 3, 3, 4]);
    expect(kvLayers(s).map((x) => x.index)).toEqual([0, 1, 2, 3, 4]);
    // 4 shared -> boundary 6: a shared SWA layer would read 6 - 2 = 4, a full layer: refused
    expect(() => spec({ ...meta, "gemma4.attention.shared_kv_layers": 4 })).toThrow(/shared_kv_layers leaves layer 6/);
    // the per-layer flags are required for gemma4
    const { "gemma4.attention.sliding_window_pattern": _p, ...noPattern } = meta;
    expect(() => spec(noPattern)).toThrow(/sliding_window_pattern is missing/);
  });

  it("trailing nextn (MTP) layers allocate no KV", () => {
    const s = spec({ "general.architecture": "glm4moe", "glm4moe.block_count": 4, "glm4moe.embedding_length": 1024, "glm4moe.attention.head_count": 8, "glm4moe.attention.head_count_kv": 2, "glm4moe.nextn_predict_layers": 1, "glm4moe.expert_count": 8, "glm4moe.expert_used_count": 2 });
    expect(attn(s).map((l) => l.nHeadKv)).toEqual([2, 2, 2, 0]);
    expect(kvLayers(s)).toHaveLength(3);
  });
});

describe("specFromGgufMetadata: recurrent and hybrid", () => {
  it("Qwen3-Next-80B-A3B: 12 attention + 36 gated-delta-net layers; r = 3 * (4096 + 2*16*128) = 24576, s = 128 * 4096 = 524288", () => {
    const s = spec(QWEN3_NEXT_GGUF);
    expect(range(48).filter((i) => !recIdx(s).includes(i))).toEqual([3, 7, 11, 15, 19, 23, 27, 31, 35, 39, 43, 47]);
    for (const l of s.layers) {
      if (l.kind === "recurrent") expect(l).toEqual({ kind: "recurrent", rElems: 24576, sElems: 524288 });
      else expect(l).toEqual({ kind: "attention", nHeadKv: 2, headDimK: 256, headDimV: 256, swa: false });
    }
    expect(s.experts).toEqual({ count: 512, used: 10 });
  });

  it("qwen35: attention.recurrent_layers overrides the interval", () => {
    const s = spec({ ...renameArch(QWEN3_NEXT_GGUF, "qwen3next", "qwen35"), "qwen35.block_count": 4, "qwen35.attention.recurrent_layers": [true, false, true, false] });
    expect(recIdx(s)).toEqual([0, 2]);
  });

  it("Mamba-130m: d_inner 1536, d_state 16, d_conv 4: r = 3 * 1536 = 4608, s = 16 * 1536 = 24576", () => {
    const s = spec({ "general.architecture": "mamba", "mamba.block_count": 24, "mamba.embedding_length": 768, "mamba.context_length": 1048576, "mamba.ssm.conv_kernel": 4, "mamba.ssm.inner_size": 1536, "mamba.ssm.state_size": 16, "mamba.ssm.time_step_rank": 48 });
    expect(s.layers).toHaveLength(24);
    for (const l of s.layers) expect(l).toEqual({ kind: "recurrent", rElems: 4608, sElems: 24576 });
    expect(s.nHead).toBe(0);
    expect(s.nFf).toBeNull();
  });

  it("Mamba2 groups: r = (4 - 1) * (4096 + 2 * 8 * 128) = 18432, s = 128 * 4096 = 524288", () => {
    const s = spec({ "general.architecture": "mamba2", "mamba2.block_count": 2, "mamba2.embedding_length": 2048, "mamba2.ssm.conv_kernel": 4, "mamba2.ssm.inner_size": 4096, "mamba2.ssm.state_size": 128, "mamba2.ssm.group_count": 8, "mamba2.ssm.time_step_rank": 64 });
    expect(s.layers[0]).toEqual({ kind: "recurrent", rElems: 18432, sElems: 524288 });
  });

  it("Jamba-v0.1: attention where head_count_kv > 0 (layers 4, 12, 20, 28); r = 3 * 8192 = 24576, s = 16 * 8192 = 131072", () => {
    const kv = range(32).map((i) => (i % 8 === 4 ? 8 : 0));
    const s = spec({ "general.architecture": "jamba", "jamba.block_count": 32, "jamba.embedding_length": 4096, "jamba.attention.head_count": 32, "jamba.attention.head_count_kv": kv, "jamba.ssm.conv_kernel": 4, "jamba.ssm.inner_size": 8192, "jamba.ssm.state_size": 16, "jamba.ssm.time_step_rank": 256, "jamba.expert_count": 16, "jamba.expert_used_count": 2 });
    expect(kvLayers(s).map((x) => x.index)).toEqual([4, 12, 20, 28]);
    expect(recIdx(s)).toHaveLength(28);
    expect(s.layers[0]).toEqual({ kind: "recurrent", rElems: 24576, sElems: 131072 });
    expect(s.layers[4]).toEqual({ kind: "attention", nHeadKv: 8, headDimK: 128, headDimV: 128, swa: false });
  });

  it("nemotron_h: recurrent iff head_count_kv and feed_forward_length are both 0", () => {
    const s = spec({ "general.architecture": "nemotron_h", "nemotron_h.block_count": 4, "nemotron_h.embedding_length": 4480, "nemotron_h.attention.head_count": 40, "nemotron_h.attention.head_count_kv": [0, 0, 8, 0], "nemotron_h.feed_forward_length": [0, 15680, 0, 0], "nemotron_h.attention.key_length": 128, "nemotron_h.attention.value_length": 128, "nemotron_h.ssm.conv_kernel": 4, "nemotron_h.ssm.inner_size": 8960, "nemotron_h.ssm.state_size": 128, "nemotron_h.ssm.group_count": 8, "nemotron_h.ssm.time_step_rank": 112 });
    expect(recIdx(s)).toEqual([0, 3]);
    expect(s.layers[1]).toEqual({ kind: "attention", nHeadKv: 0, headDimK: 128, headDimV: 128, swa: false }); // MLP-only
    // r = 3 * (8960 + 2*8*128) = 3 * 11008 = 33024; s = 128 * 8960 = 1146880
    expect(s.layers[0]).toEqual({ kind: "recurrent", rElems: 33024, sElems: 1146880 });
  });

  it("RWKV6 1.6B: r = 2 (default token shifts) * 2048 = 4096, s = 2048 * 64 = 131072", () => {
    const s = spec({ "general.architecture": "rwkv6", "rwkv6.block_count": 24, "rwkv6.embedding_length": 2048, "rwkv6.wkv.head_size": 64, "rwkv6.time_mix_extra_dim": 32, "rwkv6.time_decay_extra_dim": 64 });
    expect(s.layers[0]).toEqual({ kind: "recurrent", rElems: 4096, sElems: 131072 });
  });

  it("LFM2: short-conv layers r = 1024 * (3 - 1) = 2048, s = 0", () => {
    const s = spec({ "general.architecture": "lfm2", "lfm2.block_count": 3, "lfm2.embedding_length": 1024, "lfm2.attention.head_count": 16, "lfm2.attention.head_count_kv": [0, 8, 0], "lfm2.shortconv.l_cache": 3 });
    expect(s.layers[0]).toEqual({ kind: "recurrent", rElems: 2048, sElems: 0 });
    expect(s.layers[1]).toEqual({ kind: "attention", nHeadKv: 8, headDimK: 64, headDimV: 64, swa: false });
  });
});

describe("specFromGgufMetadata: errors", () => {
  const base = LLAMA_3_2_1B_GGUF;
  const err = (meta: Record<string, unknown>): unknown => {
    try {
      spec(meta);
    } catch (e) {
      return e;
    }
    throw new Error("expected an error");
  };

  it("wrong types, negatives, fractions and limits name the key", () => {
    for (const [key, value, re] of [
      ["llama.block_count", "16", /llama\.block_count has type string/],
      ["llama.block_count", -1, /llama\.block_count is -1/],
      ["llama.embedding_length", 20.5, /llama\.embedding_length is 20\.5/],
      ["llama.block_count", 100000, /above the limit 512/],
      ["llama.attention.head_count_kv", [8, 8], /head_count_kv has 2 entries but block_count is 16/],
      ["llama.attention.head_count_kv", 5, /does not divide head_count 32/],
      ["llama.block_count", 0, /block_count is 0/],
      ["llama.vocab_size", true, /vocab_size has type boolean/],
    ] as const) {
      const e = err({ ...base, [key]: value });
      expect(e).toBeInstanceOf(ModelConfigError);
      expect((e as ModelConfigError).message).toMatch(re);
      expect((e as ModelConfigError).details["field"]).toBe(key);
    }
  });

  it("missing key_length with an embedding not divisible by head_count says what to add", () => {
    const e = err({ ...base, "llama.embedding_length": 2050 });
    expect(e).toBeInstanceOf(ModelConfigError);
    expect((e as ModelConfigError).message).toMatch(/key_length is missing and embedding_length 2050 is not a multiple of head_count 32/);
  });

  it("expert_used_count above expert_count", () => {
    expect(() => spec({ ...GPT_OSS_20B_GGUF, "gpt-oss.expert_used_count": 64 })).toThrow(/expert_used_count is 64 with expert_count 32/);
  });

  it("unknown architecture without generic keys, encoders and falcon-h1 are UnsupportedArchitectureError", () => {
    const e = err({ "general.architecture": "mystery", "mystery.block_count": 2 });
    expect(e).toBeInstanceOf(UnsupportedArchitectureError);
    expect((e as UnsupportedArchitectureError).details["arch"]).toBe("mystery");
    expect(err({ "general.architecture": "falcon-h1" })).toBeInstanceOf(UnsupportedArchitectureError);
    expect(err({ "general.architecture": "bert" })).toBeInstanceOf(UnsupportedArchitectureError);
  });

  it("missing architecture, non-object metadata", () => {
    expect(err({})).toBeInstanceOf(ModelConfigError);
    expect(() => specFromGgufMetadata(null as unknown as Record<string, unknown>, { source: "x" })).toThrow(ModelConfigError);
  });

  it("recurrent archs need their SSM keys", () => {
    expect(() => spec({ "general.architecture": "mamba", "mamba.block_count": 2, "mamba.embedding_length": 768 })).toThrow(/mamba\.ssm\.conv_kernel is missing/);
  });

  it("the result is frozen", () => {
    const s = spec(base);
    expect(Object.isFrozen(s)).toBe(true);
    expect(Object.isFrozen(s.layers)).toBe(true);
  });
});

function renameArch(meta: Record<string, unknown>, from: string, to: string): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(meta)) out[k.startsWith(`${from}.`) ? `${to}.${k.slice(from.length + 1)}` : k] = k === "general.architecture" ? to : v;
  return out;
}
