// Per-architecture rules llama.cpp applies when it turns GGUF metadata into hyperparameters:
// which layers use a sliding window, which are recurrent, which reuse another layer's cache.
// Data, not code: each entry mirrors one `case LLM_ARCH_...` of llama.cpp's `load_hparams`
// (src/llama-model.cpp, and src/models/<arch>.cpp `load_arch_hparams` in newer trees) and the
// layer helpers in src/llama-hparams.cpp. GGUF architecture names as in src/llama-arch.cpp.

import type { SwaType } from "./model-spec.js";

/**
 * How llama.cpp marks sliding-window layers.
 * - `none`: no SWA. phi3 reads `sliding_window` but llama.cpp disables Phi SWA (PR #13676), so
 *   phi3 is `none` too.
 * - `period`: `set_swa_pattern(period, denseFirst)`: layer il is SWA iff `il % p < p - 1`
 *   (dense first: `il % p != 0`); p = 0 makes every layer SWA.
 *   `window`: "required" when llama.cpp reads `sliding_window` as a required key, a number when
 *   it has a default, "gate" when the pattern applies only if `sliding_window` is present and > 0
 *   (olmo2, gemma3 in current trees, smallthinker). `forcedWindow`: llama.cpp overwrites the
 *   window with a constant (smallthinker 4096). `readsPatternKey`: newer llama.cpp reads
 *   `<arch>.attention.sliding_window_pattern` (`get_key_or_arr`, default = `period`).
 *   `onlyLayerCount`: exaone4 applies the pattern only to its 64-layer (32B) model.
 * - `per-layer-key`: gemma4: `sliding_window_pattern` is read straight into the per-layer array
 *   (`get_key_or_arr(..., swa_layers, n_layer)`, required); a scalar fills every layer.
 * - `llama4`: chunked attention, 3 chunked : 1 full (`set_swa_pattern(4)`), chunk 8192, unless
 *   `sliding_window` is present and 0 (then no SWA).
 */
export type SwaRule =
  | { readonly kind: "none" }
  | {
      readonly kind: "period";
      readonly period: number;
      readonly swaType: Exclude<SwaType, "none">;
      readonly window: "required" | "gate" | number;
      readonly forcedWindow?: number;
      readonly denseFirst?: boolean;
      readonly readsPatternKey?: boolean;
      readonly onlyLayerCount?: number;
    }
  | { readonly kind: "per-layer-key" }
  | { readonly kind: "llama4" };

/**
 * Which layers are recurrent (`recurrent_layer_arr` in load_hparams).
 * - `all`: `llm_arch_is_recurrent(arch)` (mamba, mamba2, rwkv*).
 * - `kv-zero`: layer il is recurrent iff `head_count_kv[il] == 0` (jamba, granitehybrid, lfm2...).
 * - `kv-and-ff-zero`: nemotron_h: recurrent iff `head_count_kv[il] == 0 && feed_forward_length[il] == 0`
 *   (a layer with neither is a mamba layer; one with only an FFN is an MLP layer without cache).
 * - `interval`: qwen3next / qwen35: `attention.recurrent_layers` (per-layer bools) when present,
 *   else recurrent iff `(il + 1) % full_attention_interval != 0`, interval default 4.
 */
export type RecurrentRule =
  | { readonly kind: "none" }
  | { readonly kind: "all" }
  | { readonly kind: "kv-zero" }
  | { readonly kind: "kv-and-ff-zero" }
  | { readonly kind: "interval"; readonly defaultInterval: number };

/**
 * Layers at or past `n_layer_kv_from_start` allocate no cache (`llama_hparams::has_kv`).
 * - `none`: all layers have KV (unless `nextn_predict_layers` marks trailing MTP layers, which is
 *   handled for every arch: glm4moe, bailingmoe2, qwen35... set n_layer_kv_from_start = n_layer - nextn).
 * - `shared-fixed`: gemma3n: n_layer_kv_from_start = 20 (hard-coded in llama.cpp; the GGUF's
 *   `shared_kv_layers` is not read).
 * - `shared-key`: gemma4: n_layer_kv_from_start = n_layer - `attention.shared_kv_layers` (default 0).
 * Shared layers read the cache of layer `n_layer_kv_from_start - (is_swa(il) ? 2 : 1)`: the last
 * full / SWA layer before the boundary (gemma3n / gemma4 `create_memory` reuse callback).
 */
export type KvShareRule =
  | { readonly kind: "none" }
  | { readonly kind: "shared-fixed"; readonly kvFromStart: number }
  | { readonly kind: "shared-key" };

export interface ArchRule {
  readonly swa: SwaRule;
  readonly recurrent: RecurrentRule;
  readonly kvShare: KvShareRule;
  /** Per-layer head sizes for SWA layers come from `key_length_swa` / `value_length_swa` (gemma4). */
  readonly swaHeadDims?: boolean;
}

const DENSE: ArchRule = { swa: { kind: "none" }, recurrent: { kind: "none" }, kvShare: { kind: "none" } };
const period = (
  p: number,
  window: "required" | "gate" | number,
  extra: { readsPatternKey?: boolean; forcedWindow?: number; denseFirst?: boolean; onlyLayerCount?: number } = {},
): ArchRule => ({
  swa: { kind: "period", period: p, swaType: "standard", window, ...extra },
  recurrent: { kind: "none" },
  kvShare: { kind: "none" },
});
const recurrent = (rule: RecurrentRule): ArchRule => ({ swa: { kind: "none" }, recurrent: rule, kvShare: { kind: "none" } });

/**
 * Architectures kvbound has rules for, by GGUF `general.architecture`. Dense archs (attention on
 * every layer, no window) share one rule; the KV-relevant facts then come from the generic keys
 * (`head_count_kv`, `key_length`, `value_length`, MLA keys) exactly as llama.cpp's common
 * load_hparams prologue reads them.
 */
export const ARCH_RULES: Readonly<Record<string, ArchRule>> = {
  // ---- dense attention (llama-model.cpp load_hparams: no SWA / recurrent handling)
  llama: DENSE, // also Mistral 7B and Mixtral: convert_hf_to_gguf writes them as "llama"
  mistral3: DENSE,
  deci: DENSE, // per-layer head_count_kv arrays, 0 = a layer without attention
  arcee: DENSE,
  baichuan: DENSE,
  bitnet: DENSE,
  bloom: DENSE,
  chatglm: DENSE,
  codeshell: DENSE,
  "command-r": DENSE,
  dbrx: DENSE,
  deepseek: DENSE,
  deepseek2: DENSE, // MLA from key_length_mla / value_length_mla, see from-gguf-metadata.ts
  dots1: DENSE,
  ernie4_5: DENSE,
  "ernie4_5-moe": DENSE,
  exaone: DENSE,
  falcon: DENSE,
  gemma: DENSE,
  glm4: DENSE,
  glm4moe: DENSE,
  gpt2: DENSE,
  gptneox: DENSE,
  granite: DENSE,
  granitemoe: DENSE,
  grok: DENSE,
  "hunyuan-moe": DENSE,
  "hunyuan-dense": DENSE,
  internlm2: DENSE,
  minicpm: DENSE,
  minicpm3: DENSE, // kv_lora_rank but no *_mla keys: a plain MHA cache
  mpt: DENSE,
  nemotron: DENSE,
  olmo: DENSE,
  olmoe: DENSE,
  openelm: DENSE, // per-layer head counts
  orion: DENSE,
  phi2: DENSE,
  phi3: DENSE, // sliding_window present in Phi-3 GGUFs, but llama.cpp disables Phi SWA (PR #13676)
  phimoe: DENSE,
  qwen: DENSE,
  qwen2: DENSE, // Qwen2 use_sliding_window is not converted; llama.cpp runs full attention
  qwen2moe: DENSE,
  qwen2vl: DENSE,
  qwen3: DENSE,
  qwen3moe: DENSE,
  qwen3vl: DENSE,
  qwen3vlmoe: DENSE,
  seed_oss: DENSE,
  smollm3: DENSE, // no-RoPE every 4th layer, but every layer has a full KV cache
  stablelm: DENSE,
  starcoder: DENSE,
  starcoder2: DENSE,
  xverse: DENSE,
  bailingmoe: DENSE,
  bailingmoe2: DENSE, // trailing nextn (MTP) layers have no KV
  apertus: DENSE,
  grovemoe: DENSE,
  "minimax-m2": DENSE,

  // ---- interleaved sliding window
  gemma2: period(2, 4096), // n_swa default 4096, key optional
  gemma3: period(6, "gate", { readsPatternKey: true }), // gemma3 1b/270m use the same rule
  cohere2: period(4, "required"),
  "gpt-oss": period(2, "required"),
  olmo2: period(4, "gate"),
  exaone4: period(4, 4096, { onlyLayerCount: 64 }),
  smallthinker: period(4, "gate", { forcedWindow: 4096, denseFirst: true }),
  llama4: { swa: { kind: "llama4" }, recurrent: { kind: "none" }, kvShare: { kind: "none" } },
  gemma3n: {
    swa: { kind: "period", period: 5, swaType: "standard", window: "required", readsPatternKey: true },
    recurrent: { kind: "none" },
    kvShare: { kind: "shared-fixed", kvFromStart: 20 },
  },
  gemma4: {
    swa: { kind: "per-layer-key" },
    recurrent: { kind: "none" },
    kvShare: { kind: "shared-key" },
    swaHeadDims: true,
  },

  // ---- recurrent and hybrid
  mamba: recurrent({ kind: "all" }),
  mamba2: recurrent({ kind: "all" }),
  rwkv6: recurrent({ kind: "all" }),
  rwkv6qwen2: recurrent({ kind: "all" }),
  rwkv7: recurrent({ kind: "all" }),
  arwkv7: recurrent({ kind: "all" }),
  jamba: recurrent({ kind: "kv-zero" }),
  granitehybrid: recurrent({ kind: "kv-zero" }),
  plamo2: recurrent({ kind: "kv-zero" }),
  lfm2: recurrent({ kind: "kv-zero" }),
  lfm2moe: recurrent({ kind: "kv-zero" }),
  nemotron_h: recurrent({ kind: "kv-and-ff-zero" }),
  nemotron_h_moe: recurrent({ kind: "kv-and-ff-zero" }),
  qwen3next: recurrent({ kind: "interval", defaultInterval: 4 }),
  qwen35: recurrent({ kind: "interval", defaultInterval: 4 }),
  qwen35moe: recurrent({ kind: "interval", defaultInterval: 4 }),
};

/**
 * Architectures llama.cpp knows but kvbound cannot describe with one LayerSpec per block, each
 * with the reason (raised as UnsupportedArchitectureError).
 */
export const UNSUPPORTED_ARCHS: Readonly<Record<string, string>> = {
  // llama-model.cpp create_memory: falcon-h1's hybrid memory filters are "true" for both caches, so
  // every layer holds an attention KV row AND an SSM state; a LayerSpec is one or the other.
  "falcon-h1": "every falcon-h1 layer holds both an attention KV cache and a Mamba2 state, which a LayerSpec cannot express yet",
  "gemma-embedding": "gemma-embedding is an embedding model; llama.cpp allocates no KV cache for it",
  bert: "bert is an encoder; llama.cpp allocates no KV cache for it",
  "nomic-bert": "nomic-bert is an encoder; llama.cpp allocates no KV cache for it",
  t5: "t5 is an encoder-decoder model; its cross-attention cache is not modelled",
};

/** Layer il is SWA under llama.cpp's `set_swa_pattern(n_pattern, dense_first)` (src/llama-hparams.cpp). */
export function isSwaByPattern(il: number, nPattern: number, denseFirst: boolean): boolean {
  if (nPattern === 0) return true;
  return denseFirst ? il % nPattern !== 0 : il % nPattern < nPattern - 1;
}
