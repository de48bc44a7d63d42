// specFromHfConfig on published config.json files (test/fixtures/configs, each copied from the
// Hugging Face repo named in FIXTURES) with hand-computed layer tables, and a cross-check that
// the config path and the GGUF-metadata path give the same KV-relevant layers for each model.

import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { ModelConfigError, UnsupportedArchitectureError } from "../errors.js";
import { specFromGgufMetadata } from "./from-gguf-metadata.js";
import { specFromHfConfig } from "./from-hf-config.js";
import { kvLayers, type ModelSpec } from "./model-spec.js";

const FIXTURES = {
  "llama-3.2-1b": "https://huggingface.co/meta-llama/Llama-3.2-1B/blob/main/config.json",
  "gemma-3-27b-it": "https://huggingface.co/google/gemma-3-27b-it/blob/main/config.json",
  "qwen2.5-7b-instruct": "https://huggingface.co/Qwen/Qwen2.5-7B-Instruct/blob/main/config.json",
  "mistral-7b-v0.1": "https://huggingface.co/mistralai/Mistral-7B-v0.1/blob/main/config.json",
  "deepseek-v3": "https://huggingface.co/deepseek-ai/DeepSeek-V3/blob/main/config.json",
  "gpt-oss-20b": "https://huggingface.co/openai/gpt-oss-20b/blob/main/config.json",
  "qwen3-next-80b-a3b-instruct": "https://huggingface.co/Qwen/Qwen3-Next-80B-A3B-Instruct/blob/main/config.json",
} as const;
type FixtureName = keyof typeof FIXTURES;

const read = (file: string): Record<string, unknown> =>
  JSON.parse(readFileSync(new URL(`../../test/fixtures/configs/${file}`, import.meta.url), "utf8")) as Record<string, unknown>;
const fromConfig = (name: FixtureName, extra: Record<string, unknown> = {}): ModelSpec => specFromHfConfig({ ...read(`${name}.json`), ...extra }, { source: FIXTURES[name] });
const swaIdx = (s: ModelSpec): number[] => s.layers.flatMap((l, i) => (l.kind === "attention" && l.swa ? [i] : []));
const recIdx = (s: ModelSpec): number[] => s.layers.flatMap((l, i) => (l.kind === "recurrent" ? [i] : []));
const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

describe("specFromHfConfig: published configs", () => {
  it("Llama-3.2-1B: 16 layers x 8 KV heads x head 64", () => {
    const s = fromConfig("llama-3.2-1b");
    expect(s.arch).toBe("llama");
    expect(s.layers).toHaveLength(16);
    for (const l of s.layers) expect(l).toEqual({ kind: "attention", nHeadKv: 8, headDimK: 64, headDimV: 64, swa: false });
    expect([s.nEmbd, s.nHead, s.nFf, s.nVocab, s.nCtxTrain]).toEqual([2048, 32, 8192, 128256, 131072]);
    expect(s.weights).toBeNull();
  });

  it("Gemma-3-27B (text_config): 62 layers, 16 KV heads x 128, pattern 6 -> 52 SWA + 10 full, window 1024", () => {
    const s = fromConfig("gemma-3-27b-it");
    expect(s.arch).toBe("gemma3");
    expect(s.nLayer).toBe(62);
    const full = [5, 11, 17, 23, 29, 35, 41, 47, 53, 59];
    expect(swaIdx(s)).toEqual(range(62).filter((i) => !full.includes(i)));
    expect(s.nSwa).toBe(1024);
    expect(s.swaType).toBe("standard");
    expect(s.layers[0]).toEqual({ kind: "attention", nHeadKv: 16, headDimK: 128, headDimV: 128, swa: true });
  });

  it("Qwen2.5-7B: use_sliding_window false -> no SWA despite sliding_window 131072; head 3584 / 28 = 128", () => {
    const s = fromConfig("qwen2.5-7b-instruct");
    expect(swaIdx(s)).toEqual([]);
    expect(s.layers[0]).toEqual({ kind: "attention", nHeadKv: 4, headDimK: 128, headDimV: 128, swa: false });
    // with use_sliding_window true, transformers slides layers >= max_window_layers
    const on = fromConfig("qwen2.5-7b-instruct", { use_sliding_window: true, max_window_layers: 20, sliding_window: 4096 });
    expect(swaIdx(on)).toEqual(range(28).filter((i) => i >= 20));
    expect(on.nSwa).toBe(4096);
  });

  it("Mistral-7B-v0.1: sliding_window 4096 is ignored (llama.cpp converts it as plain llama)", () => {
    const s = fromConfig("mistral-7b-v0.1");
    expect(s.arch).toBe("llama");
    expect(swaIdx(s)).toEqual([]);
    expect(s.nSwa).toBe(0);
    expect(s.layers[0]).toEqual({ kind: "attention", nHeadKv: 8, headDimK: 128, headDimV: 128, swa: false });
  });

  it("DeepSeek-V3: MLA, one head of 512 + 64 for K and 512 for V; 256 experts, 8 used", () => {
    const s = fromConfig("deepseek-v3");
    expect(s.arch).toBe("deepseek2");
    expect(s.mla).toEqual({ kvLoraRank: 512, ropeDim: 64 });
    for (const l of s.layers) expect(l).toEqual({ kind: "attention", nHeadKv: 1, headDimK: 576, headDimV: 512, swa: false });
    expect(s.experts).toEqual({ count: 256, used: 8 });
    expect(s.nFf).toBe(2048);
  });

  it("gpt-oss-20b: layer_types -> 12 SWA (even) + 12 full, window 128", () => {
    const s = fromConfig("gpt-oss-20b");
    expect(s.arch).toBe("gpt-oss");
    expect(swaIdx(s)).toEqual(range(24).filter((i) => i % 2 === 0));
    expect(s.nSwa).toBe(128);
    expect(s.experts).toEqual({ count: 32, used: 4 });
  });

  it("Qwen3-Next-80B-A3B: full_attention_interval 4 -> 12 attention + 36 recurrent; r = 3*(4096 + 2*16*128) = 24576, s = 128*4096 = 524288", () => {
    const s = fromConfig("qwen3-next-80b-a3b-instruct");
    expect(range(48).filter((i) => !recIdx(s).includes(i))).toEqual([3, 7, 11, 15, 19, 23, 27, 31, 35, 39, 43, 47]);
    expect(s.layers[0]).toEqual({ kind: "recurrent", rElems: 24576, sElems: 524288 });
    expect(s.layers[3]).toEqual({ kind: "attention", nHeadKv: 2, headDimK: 256, headDimV: 256, swa: false });
    expect(s.experts).toEqual({ count: 512, used: 10 });
  });

  it("weights from model.safetensors.index.json total_size, quant from torch_dtype or quant_method", () => {
    const s = specFromHfConfig(read("llama-3.2-1b.json"), { source: "x", safetensorsIndex: { metadata: { total_size: 2471645184 }, weight_map: {} } });
    expect(s.weights).toEqual({ bytes: 2471645184, quant: "BF16", source: "safetensors-index" });
    const g = specFromHfConfig(read("gpt-oss-20b.json"), { source: "x", safetensorsIndex: { metadata: { total_size: 13761264768 } } });
    expect(g.weights?.quant).toBe("MXFP4");
    expect(() => specFromHfConfig(read("llama-3.2-1b.json"), { source: "x", safetensorsIndex: { metadata: {} } })).toThrow(/total_size/);
  });
});

describe("specFromHfConfig: the two paths agree", () => {
  // The KV-relevant view of a spec: per layer, what it allocates.
  const kvView = (s: ModelSpec) => ({
    nLayer: s.nLayer,
    layers: s.layers,
    nSwa: s.nSwa,
    swaType: s.swaType,
    mla: s.mla,
    kv: kvLayers(s).map((x) => x.index),
  });
  for (const name of Object.keys(FIXTURES) as FixtureName[]) {
    it(`${name}: config.json and GGUF metadata give the same layers`, () => {
      const fromHf = fromConfig(name);
      const fromGguf = specFromGgufMetadata(read(`${name}.gguf-metadata.json`), { source: name });
      expect(kvView(fromHf)).toEqual(kvView(fromGguf));
      expect(fromHf.arch).toBe(fromGguf.arch);
      expect(fromHf.experts).toEqual(fromGguf.experts);
    });
  }
});

describe("specFromHfConfig: other architectures", () => {
  const base = { hidden_size: 1024, num_attention_heads: 16, num_key_value_heads: 4, vocab_size: 1000 };

  it("Mamba-130m: all layers recurrent; d_inner = intermediate_size 1536: r = 3 * 1536 = 4608, s = 16 * 1536 = 24576", () => {
    const s = specFromHfConfig({ model_type: "mamba", hidden_size: 768, num_hidden_layers: 24, state_size: 16, conv_kernel: 4, expand: 2, intermediate_size: 1536, vocab_size: 50280 }, { source: "state-spaces/mamba-130m-hf" });
    expect(recIdx(s)).toEqual(range(24));
    expect(s.layers[0]).toEqual({ kind: "recurrent", rElems: 4608, sElems: 24576 });
  });

  it("Jamba: attention at il % 8 == 4; d_inner = 2 * 4096 = 8192: r = 3 * 8192 = 24576, s = 16 * 8192 = 131072", () => {
    const s = specFromHfConfig({ model_type: "jamba", hidden_size: 4096, num_hidden_layers: 32, num_attention_heads: 32, num_key_value_heads: 8, attn_layer_period: 8, attn_layer_offset: 4, mamba_d_state: 16, mamba_d_conv: 4, mamba_expand: 2, num_experts: 16, num_experts_per_tok: 2 }, { source: "ai21labs/Jamba-v0.1" });
    expect(kvLayers(s).map((x) => x.index)).toEqual([4, 12, 20, 28]);
    expect(s.layers[0]).toEqual({ kind: "recurrent", rElems: 24576, sElems: 131072 });
  });

  it("layer_types with linear_attention / conv marks recurrent layers (lfm2: r = 1024 * (3 - 1) = 2048)", () => {
    const s = specFromHfConfig({ ...base, model_type: "lfm2", num_hidden_layers: 3, conv_L_cache: 3, layer_types: ["conv", "full_attention", "conv"] }, { source: "x" });
    expect(recIdx(s)).toEqual([0, 2]);
    expect(s.layers[0]).toEqual({ kind: "recurrent", rElems: 2048, sElems: 0 });
  });

  it("gemma2 alternates with its window; cohere2 reads sliding_window_pattern", () => {
    const g2 = specFromHfConfig({ ...base, model_type: "gemma2", num_hidden_layers: 4, head_dim: 256, sliding_window: 4096 }, { source: "x" });
    expect(swaIdx(g2)).toEqual([0, 2]);
    const c2 = specFromHfConfig({ ...base, model_type: "cohere2", num_hidden_layers: 8, sliding_window: 4096, sliding_window_pattern: 4 }, { source: "x" });
    expect(swaIdx(c2)).toEqual([0, 1, 2, 4, 5, 6]);
  });

  it("gemma3n: layers from 20 on share layer 18 (SWA) or 19 (full)", () => {
    const types = range(30).map((i) => (i % 5 === 4 ? "full_attention" : "sliding_attention"));
    const s = specFromHfConfig({ ...base, model_type: "gemma3n_text", num_hidden_layers: 30, head_dim: 256, num_key_value_heads: 2, num_attention_heads: 8, hidden_size: 2048, sliding_window: 512, layer_types: types, num_kv_shared_layers: 10 }, { source: "google/gemma-3n-E2B" });
    expect(kvLayers(s)).toHaveLength(20);
    expect(s.layers.slice(20).map((l) => (l.kind === "attention" ? l.kvFrom : -1))).toEqual([18, 18, 18, 18, 19, 18, 18, 18, 18, 19]);
  });

  it("llama4: chunked attention every 3 of 4 layers with attention_chunk_size", () => {
    const s = specFromHfConfig({ model_type: "llama4", text_config: { ...base, model_type: "llama4_text", num_hidden_layers: 8, attention_chunk_size: 8192, head_dim: 128, num_local_experts: 16, num_experts_per_tok: 1 } }, { source: "x" });
    expect(swaIdx(s)).toEqual([0, 1, 2, 4, 5, 6]);
    expect(s.swaType).toBe("chunked");
    expect(s.nSwa).toBe(8192);
  });
});

describe("specFromHfConfig: errors", () => {
  const llama = read("llama-3.2-1b.json");
  it("wrong types and contradictions name the field", () => {
    for (const [key, value, re] of [
      ["num_hidden_layers", "16", /num_hidden_layers has type string/],
      ["num_hidden_layers", 0, /num_hidden_layers is 0/],
      ["num_key_value_heads", 5, /num_key_value_heads is 5, which does not divide num_attention_heads 32/],
      ["hidden_size", -4, /hidden_size is -4/],
      ["head_dim", 1.5, /head_dim is 1\.5/],
      ["num_hidden_layers", 4096, /above the limit 512/],
    ] as const) {
      let caught: unknown;
      try {
        specFromHfConfig({ ...llama, [key]: value }, { source: "x" });
      } catch (e) {
        caught = e;
      }
      expect(caught).toBeInstanceOf(ModelConfigError);
      expect((caught as ModelConfigError).message).toMatch(re);
      expect((caught as ModelConfigError).details["field"]).toBe(key);
    }
  });

  it("missing head_dim with an indivisible hidden_size says to add head_dim", () => {
    const { head_dim: _h, ...rest } = llama;
    expect(() => specFromHfConfig({ ...rest, hidden_size: 2050 }, { source: "x" })).toThrow(/head_dim is missing and hidden_size 2050/);
  });

  it("layer_types of the wrong length or with an unknown kind", () => {
    expect(() => specFromHfConfig({ ...llama, layer_types: ["full_attention"] }, { source: "x" })).toThrow(/layer_types has 1 entries but num_hidden_layers is 16/);
    expect(() => specFromHfConfig({ ...llama, layer_types: new Array(16).fill("weird") }, { source: "x" })).toThrow(/layer_types\[0\] is "weird"/);
  });

  it("unknown model_type is UnsupportedArchitectureError; non-objects are ModelConfigError", () => {
    expect(() => specFromHfConfig({ ...llama, model_type: "t5" }, { source: "x" })).toThrow(UnsupportedArchitectureError);
    expect(() => specFromHfConfig([], { source: "x" })).toThrow(ModelConfigError);
    expect(() => specFromHfConfig({ ...llama, text_config: 3 }, { source: "x" })).toThrow(/text_config must be an object/);
  });
});

describe("specFromHfConfig: Qwen3.5 / Qwen3.6 and multimodal wrappers", () => {
  // The shape of the published Qwen3.6-35B-A3B config.json (architectures
  // Qwen3_5MoeForConditionalGeneration): the text model nested in text_config (model_type
  // qwen3_5_moe_text), 40 blocks of 3 gated-delta-net layers + 1 full-attention layer, one MTP layer.
  const linear = { linear_conv_kernel_dim: 4, linear_key_head_dim: 128, linear_num_key_heads: 16, linear_value_head_dim: 128, linear_num_value_heads: 32 };
  const qwen36Moe = {
    architectures: ["Qwen3_5MoeForConditionalGeneration"],
    model_type: "qwen3_5_moe",
    image_token_id: 248056,
    text_config: {
      model_type: "qwen3_5_moe_text",
      hidden_size: 2048,
      num_hidden_layers: 40,
      num_attention_heads: 16,
      num_key_value_heads: 2,
      head_dim: 256,
      vocab_size: 248320,
      max_position_embeddings: 262144,
      num_experts: 256,
      num_experts_per_tok: 8,
      moe_intermediate_size: 512,
      shared_expert_intermediate_size: 512,
      full_attention_interval: 4,
      layer_types: Array.from({ length: 40 }, (_, i) => ((i + 1) % 4 === 0 ? "full_attention" : "linear_attention")),
      mtp_num_hidden_layers: 1,
      ...linear,
    },
    vision_config: { model_type: "qwen3_5_moe", depth: 27, hidden_size: 1152 },
  };
  // r = (4 - 1) x (128 x 32 + 2 x 16 x 128) = 24576, s = 128 x 4096 = 524288 (as Qwen3-Next).
  const REC = { kind: "recurrent", rElems: 24576, sElems: 524288 };
  const ATT = { kind: "attention", nHeadKv: 2, headDimK: 256, headDimV: 256, swa: false };
  const MTP = { kind: "attention", nHeadKv: 0, headDimK: 256, headDimV: 256, swa: false };

  it("Qwen3.6-35B-A3B (qwen3_5_moe): 30 recurrent + 10 attention layers, the MTP layer last with no KV and no state", () => {
    const s = specFromHfConfig(qwen36Moe, { source: "qwen3.6" });
    expect(s.arch).toBe("qwen35moe");
    expect(s.nLayer).toBe(41);
    expect(recIdx(s)).toEqual(range(40).filter((i) => (i + 1) % 4 !== 0));
    for (let i = 0; i < 40; i++) expect(s.layers[i]).toEqual((i + 1) % 4 === 0 ? ATT : REC);
    expect(s.layers[40]).toEqual(MTP);
    expect(kvLayers(s)).toHaveLength(10);
    expect(s.experts).toEqual({ count: 256, used: 8 });
    expect([s.nEmbd, s.nHead, s.nVocab, s.nCtxTrain]).toEqual([2048, 16, 248320, 262144]);
  });

  it("agrees with the GGUF metadata convert_hf_to_gguf.py writes for it (nextn layer appended, nextn_predict_layers 1)", () => {
    const gguf = specFromGgufMetadata(
      {
        "general.architecture": "qwen35moe",
        "qwen35moe.block_count": 41,
        "qwen35moe.nextn_predict_layers": 1,
        "qwen35moe.context_length": 262144,
        "qwen35moe.embedding_length": 2048,
        "qwen35moe.attention.head_count": 16,
        "qwen35moe.attention.head_count_kv": 2,
        "qwen35moe.attention.key_length": 256,
        "qwen35moe.attention.value_length": 256,
        "qwen35moe.expert_count": 256,
        "qwen35moe.expert_used_count": 8,
        "qwen35moe.full_attention_interval": 4,
        "qwen35moe.ssm.conv_kernel": 4,
        "qwen35moe.ssm.state_size": 128,
        "qwen35moe.ssm.group_count": 16,
        "qwen35moe.ssm.time_step_rank": 32,
        "qwen35moe.ssm.inner_size": 4096,
      },
      { source: "qwen3.6 gguf" },
    );
    const hf = specFromHfConfig(qwen36Moe, { source: "qwen3.6" });
    expect(hf.layers).toEqual(gguf.layers);
    // The interval rule alone would call block 40 recurrent ((40 + 1) % 4 != 0): the nextn layer is not.
    expect(gguf.layers[40]).toEqual(MTP);
  });

  it("Qwen3.5 dense (qwen3_5 / qwen3_5_text), without layer_types: full_attention_interval decides", () => {
    const dense = {
      architectures: ["Qwen3_5ForConditionalGeneration"],
      model_type: "qwen3_5",
      text_config: { model_type: "qwen3_5_text", hidden_size: 2560, num_hidden_layers: 32, num_attention_heads: 16, num_key_value_heads: 4, head_dim: 256, vocab_size: 248320, max_position_embeddings: 262144, full_attention_interval: 4, mtp_num_hidden_layers: 1, ...linear },
    };
    const s = specFromHfConfig(dense, { source: "qwen3.5" });
    expect(s.arch).toBe("qwen35");
    expect(s.nLayer).toBe(33);
    expect(recIdx(s)).toHaveLength(24);
    expect(kvLayers(s).map((k) => k.index)).toEqual([3, 7, 11, 15, 19, 23, 27, 31]);
    expect(s.experts).toBeNull();
  });

  it("wrappers kvbound does not map plan their language model from text_config / llm_config", () => {
    const llama = { model_type: "llama", hidden_size: 4096, num_hidden_layers: 32, num_attention_heads: 32, num_key_value_heads: 8, vocab_size: 32064, max_position_embeddings: 4096 };
    const llava = specFromHfConfig({ architectures: ["LlavaForConditionalGeneration"], model_type: "llava", text_config: llama, vision_config: { model_type: "clip_vision_model" } }, { source: "llava" });
    expect(llava.arch).toBe("llama");
    expect(llava.layers).toHaveLength(32);
    expect(llava.layers[0]).toEqual({ kind: "attention", nHeadKv: 8, headDimK: 128, headDimV: 128, swa: false });
    // InternVL nests it as llm_config.
    const internvl = specFromHfConfig(
      { model_type: "internvl_chat", llm_config: { model_type: "qwen2", hidden_size: 896, num_hidden_layers: 24, num_attention_heads: 14, num_key_value_heads: 2, vocab_size: 151674 } },
      { source: "internvl" },
    );
    expect(internvl.arch).toBe("qwen2");
    expect(internvl.layers[0]).toEqual({ kind: "attention", nHeadKv: 2, headDimK: 64, headDimV: 64, swa: false });
    // Neither the wrapper nor its language model known: the error names both.
    expect(() => specFromHfConfig({ model_type: "fancy_vlm", text_config: { ...llama, model_type: "fancy_lm" } }, { source: "x" })).toThrow(/"fancy_vlm" \(its text_config\.model_type is "fancy_lm"\)/);
  });
});
