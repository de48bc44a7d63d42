// ModelSpec from a Hugging Face transformers config.json (and optionally the
// model.safetensors.index.json), giving the same KV-relevant layers llama.cpp would build from
// the GGUF that convert_hf_to_gguf.py writes for the model. Field names and defaults follow
// transformers' configuration_<model>.py; the arch name is the GGUF one (src/llama-arch.cpp).

import { ModelConfigError, UnsupportedArchitectureError } from "../errors.js";
import { isSwaByPattern } from "./arch-rules.js";
import { MAX_CTX, MAX_DIM, MAX_HEADS, MAX_LAYERS } from "./from-gguf-metadata.js";
import type { LayerSpec, ModelSpec, SwaType, WeightsSpec } from "./model-spec.js";

export interface HfSpecOptions {
  source: string;
  name?: string;
  /** Parsed model.safetensors.index.json: `metadata.total_size` gives the weight bytes. */
  safetensorsIndex?: unknown;
}

/** transformers `model_type` -> GGUF `general.architecture` (convert_hf_to_gguf.py's choice). */
export const HF_MODEL_TYPE_TO_ARCH: Readonly<Record<string, string>> = {
  llama: "llama",
  mistral: "llama", // MistralForCausalLM converts as llama (no SWA, see below)
  mixtral: "llama",
  mistral3: "mistral3",
  llama4: "llama4",
  llama4_text: "llama4",
  qwen2: "qwen2",
  qwen2_moe: "qwen2moe",
  qwen2_vl: "qwen2vl",
  qwen2_5_vl: "qwen2vl",
  qwen3: "qwen3",
  qwen3_moe: "qwen3moe",
  qwen3_next: "qwen3next",
  // Qwen3.5 / Qwen3.6 (dense and MoE): gated-delta-net hybrids like Qwen3-Next; the published
  // configs wrap the text model in text_config (model_type qwen3_5_text / qwen3_5_moe_text).
  qwen3_5: "qwen35",
  qwen3_5_text: "qwen35",
  qwen3_5_moe: "qwen35moe",
  qwen3_5_moe_text: "qwen35moe",
  phi3: "phi3",
  gemma: "gemma",
  gemma2: "gemma2",
  gemma3: "gemma3",
  gemma3_text: "gemma3",
  gemma3n: "gemma3n",
  gemma3n_text: "gemma3n",
  starcoder2: "starcoder2",
  cohere: "command-r",
  cohere2: "cohere2",
  olmo2: "olmo2",
  granite: "granite",
  granitemoe: "granitemoe",
  granitemoehybrid: "granitehybrid",
  smollm3: "smollm3",
  deepseek: "deepseek",
  deepseek_v2: "deepseek2",
  deepseek_v3: "deepseek2",
  kimi_k2: "deepseek2",
  gpt_oss: "gpt-oss",
  mamba: "mamba",
  mamba2: "mamba2",
  jamba: "jamba",
  nemotron_h: "nemotron_h",
  lfm2: "lfm2",
  glm4_moe: "glm4moe",
};

type Obj = Readonly<Record<string, unknown>>;

class ConfigReader {
  constructor(
    /** Fields looked up here first (text_config when nested) ... */
    private readonly primary: Obj,
    /** ... then here (the top level). */
    private readonly fallback: Obj,
    readonly source: string,
  ) {}

  raw(key: string): unknown {
    const a = this.primary[key];
    if (a !== undefined && a !== null) return a;
    const b = this.fallback[key];
    return b === null ? undefined : b;
  }

  fail(key: string, message: string, extra: Record<string, unknown> = {}): never {
    throw new ModelConfigError(`${this.source}: config.json ${key}${message.startsWith("[") ? "" : " "}${message}`, { field: key, source: this.source, ...extra });
  }

  uint(key: string, max: number): number | undefined {
    const v = this.raw(key);
    if (v === undefined) return undefined;
    if (typeof v !== "number") this.fail(key, `has type ${Array.isArray(v) ? "array" : typeof v}: expected a non-negative integer`, { value: String(v) });
    if (!Number.isInteger(v) || v < 0) this.fail(key, `is ${v}: expected a non-negative integer`, { value: v });
    if (v > max) this.fail(key, `is ${v}, above the limit ${max}; the config is corrupt or not a model`, { value: v, max });
    return v;
  }

  requireUint(key: string, max: number, why: string): number {
    const v = this.uint(key, max);
    if (v === undefined) this.fail(key, `is missing; ${why}`);
    return v;
  }

  positive(key: string, max: number, why: string): number {
    const v = this.requireUint(key, max, why);
    if (v === 0) this.fail(key, `is 0; ${why}`);
    return v;
  }

  bool(key: string): boolean | undefined {
    const v = this.raw(key);
    if (v === undefined) return undefined;
    if (typeof v !== "boolean") this.fail(key, `has type ${typeof v}: expected true or false`, { value: String(v) });
    return v;
  }

  string(key: string): string | undefined {
    const v = this.raw(key);
    if (v === undefined) return undefined;
    if (typeof v !== "string") this.fail(key, `has type ${typeof v}: expected a string`, { value: String(v) });
    return v;
  }

  stringArray(key: string, n: number): string[] | undefined {
    const v = this.raw(key);
    if (v === undefined) return undefined;
    if (!Array.isArray(v)) this.fail(key, `has type ${typeof v}: expected an array of strings`);
    if (v.length !== n) this.fail(key, `has ${v.length} entries but num_hidden_layers is ${n}; it needs one entry per layer`, { length: v.length, expected: n });
    const out = new Array<string>(n);
    for (let i = 0; i < n; i++) {
      const s = v[i];
      if (typeof s !== "string") this.fail(key, `[${i}] has type ${typeof s}: expected a string`);
      out[i] = s;
    }
    return out;
  }
}

function isObj(v: unknown): v is Obj {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

type LayerKind = "full" | "swa" | "recurrent" | "none";

/** Where multimodal wrappers nest their language model's config: text_config (transformers'
 *  convention: gemma3, llama4, mistral3, qwen2.5-vl, qwen3.5, llava...), llm_config (InternVL),
 *  language_config (DeepSeek-VL2). Its fields win over the top level. */
export const HF_TEXT_CONFIG_KEYS: readonly string[] = ["text_config", "llm_config", "language_config"];

/** Architectures whose GGUF appends the multi-token-prediction (nextn) layers to the block count
 *  (`nextn_predict_layers`: layers that hold no KV and no recurrent state, llama_hparams::has_kv and
 *  from-gguf-metadata.ts), with the config field that counts them. DeepSeek-V3's MTP layer is left
 *  out of its GGUF (block_count 61 = num_hidden_layers), so it is not listed. */
const MTP_LAYER_FIELDS: Readonly<Record<string, readonly string[]>> = {
  qwen35: ["mtp_num_hidden_layers"],
  qwen35moe: ["mtp_num_hidden_layers"],
  glm4moe: ["num_nextn_predict_layers"],
};

function archOf(modelType: string | undefined): string | undefined {
  if (modelType === undefined) return undefined;
  return HF_MODEL_TYPE_TO_ARCH[modelType] ?? (modelType === "ministral" ? "llama" : undefined);
}

/**
 * Builds a ModelSpec from a parsed config.json. Multimodal wrappers nest the language model in
 * `text_config` (or `llm_config` / `language_config`, HF_TEXT_CONFIG_KEYS): its fields win over the
 * top level, and the wrapper's own model_type is used only where kvbound maps it (gemma3, llama4,
 * qwen2.5-vl, qwen3.5 convert under their own GGUF arch); any other wrapper (llava, paligemma,
 * idefics3, internvl...) plans its language model by the nested model_type.
 */
export function specFromHfConfig(config: unknown, opts: HfSpecOptions): ModelSpec {
  if (!isObj(config)) throw new ModelConfigError(`${opts.source}: config.json must be a JSON object`, { field: "(config)" });
  let textKey: string | undefined;
  let textConfig: Obj | undefined;
  for (const key of HF_TEXT_CONFIG_KEYS) {
    const v = config[key];
    if (v === undefined || v === null) continue;
    if (!isObj(v)) throw new ModelConfigError(`${opts.source}: config.json ${key} must be an object`, { field: key });
    textKey = key;
    textConfig = v;
    break;
  }
  const c: ConfigReader = new ConfigReader(textConfig ?? config, config, opts.source);

  const topType = typeof config["model_type"] === "string" ? (config["model_type"] as string) : undefined;
  const textType = textConfig !== undefined && typeof textConfig["model_type"] === "string" ? (textConfig["model_type"] as string) : undefined;
  // mistral3's text model is "mistral"/"ministral" and converts like it; llama4 / gemma3 / qwen3.5
  // keep the top type; a wrapper kvbound does not map falls back to its language model's type.
  const modelType = topType === "mistral3" ? (textType ?? topType) : archOf(topType) !== undefined ? topType : (textType ?? topType);
  if (modelType === undefined) c.fail("model_type", "is missing; it names the architecture (llama, qwen2, gemma3...)");
  const arch = archOf(modelType);
  if (arch === undefined) {
    const both = topType !== undefined && textKey !== undefined && textType !== undefined && textType !== topType;
    const named = both ? `"${topType}" (its ${textKey}.model_type is "${textType}")` : `"${modelType}"`;
    throw new UnsupportedArchitectureError(
      `${opts.source}: config.json model_type ${named} is not one kvbound maps to a llama.cpp architecture; ` +
        `convert the model to GGUF and plan from its metadata`,
      { arch: modelType, source: opts.source },
    );
  }

  const nLayer = c.positive("num_hidden_layers", MAX_LAYERS, "it gives the number of blocks");
  const nEmbd = c.positive("hidden_size", MAX_DIM, "it gives the hidden size");
  const nCtxTrain = c.uint("max_position_embeddings", MAX_CTX) ?? null;
  const nVocab = c.uint("vocab_size", MAX_CTX) ?? null;

  const recurrentArch = arch === "mamba" || arch === "mamba2";
  const nHead = recurrentArch ? 0 : c.positive("num_attention_heads", MAX_HEADS, "attention layers need query heads");
  const nHeadKv = recurrentArch ? 0 : (c.uint("num_key_value_heads", MAX_HEADS) ?? nHead);
  if (nHeadKv === 0 && !recurrentArch) c.fail("num_key_value_heads", "is 0; attention layers need at least one K/V head");
  if (nHead > 0 && nHead % nHeadKv !== 0) {
    c.fail("num_key_value_heads", `is ${nHeadKv}, which does not divide num_attention_heads ${nHead}`);
  }
  let headDim = 0;
  if (nHead > 0) {
    const hd = c.uint("head_dim", MAX_DIM);
    if (hd === undefined && nEmbd % nHead !== 0) {
      c.fail("head_dim", `is missing and hidden_size ${nEmbd} is not a multiple of num_attention_heads ${nHead}; add head_dim`);
    }
    headDim = hd ?? nEmbd / nHead;
    if (headDim === 0) c.fail("head_dim", "is 0; heads need a positive size");
  }
  let headDimK = headDim;
  let headDimV = headDim;
  let kvHeads = nHeadKv;

  // ---- MLA: llama.cpp's GGUF stores one latent head of kv_lora_rank + qk_rope_head_dim for K
  // and kv_lora_rank for V (see from-gguf-metadata.ts)
  let mla: ModelSpec["mla"] = null;
  const kvLoraRank = arch === "deepseek2" ? c.uint("kv_lora_rank", MAX_DIM) : undefined;
  if (kvLoraRank !== undefined && kvLoraRank > 0) {
    const ropeDim = c.positive("qk_rope_head_dim", MAX_DIM, "MLA needs the RoPE part of the key");
    c.positive("qk_nope_head_dim", MAX_DIM, "MLA needs the non-RoPE part of the key");
    c.positive("v_head_dim", MAX_DIM, "MLA needs the value head size");
    mla = { kvLoraRank, ropeDim };
    kvHeads = 1;
    headDimK = kvLoraRank + ropeDim;
    headDimV = kvLoraRank;
  }

  // ---- layer kinds
  const kinds = new Array<LayerKind>(nLayer).fill("full");
  let nSwa = 0;
  let swaType: SwaType = "none";
  const window = c.uint("sliding_window", MAX_CTX);
  const layerTypes = c.stringArray("layer_types", nLayer);
  if (layerTypes !== undefined) {
    for (let il = 0; il < nLayer; il++) {
      const t = layerTypes[il]!;
      if (t === "sliding_attention" || t === "chunked_attention") kinds[il] = "swa";
      else if (t === "full_attention" || t === "attention") kinds[il] = "full";
      else if (t === "linear_attention" || t === "mamba" || t === "conv") kinds[il] = "recurrent";
      else c.fail("layer_types", `[${il}] is "${t}", which kvbound does not know; expected sliding_attention, full_attention, linear_attention, mamba or conv`);
    }
  } else {
    swaFromFields(c, arch, nLayer, kinds);
    recurrentFromFields(c, arch, nLayer, kinds);
  }
  if (kinds.includes("swa")) {
    if (arch === "llama4") {
      nSwa = c.uint("attention_chunk_size", MAX_CTX) ?? 8192;
      swaType = "chunked";
    } else {
      if (window === undefined || window === 0) c.fail("sliding_window", "is missing or 0 while some layers are sliding-window layers; set the window size");
      nSwa = window;
      swaType = "standard";
    }
  }

  // ---- recurrent state sizes, as llama.cpp's n_embd_r() / n_embd_s() on the converted GGUF
  let rElems = 0;
  let sElems = 0;
  if (kinds.includes("recurrent")) ({ rElems, sElems } = recurrentSizesFromConfig(c, arch, nEmbd));

  // ---- shared KV (gemma3n: llama.cpp hard-codes n_layer_kv_from_start = 20)
  let kvFromStart = nLayer;
  if (arch === "gemma3n") {
    kvFromStart = Math.min(nLayer, 20);
  }

  // ---- multi-token-prediction layers: appended after the stack as the GGUF does, with no KV and
  // no recurrent state (a Qwen3.5 MTP layer is a full-attention block, never a gated-delta-net one)
  let nMtp = 0;
  for (const field of MTP_LAYER_FIELDS[arch] ?? []) {
    const v = c.uint(field, MAX_LAYERS);
    if (v !== undefined) {
      nMtp = v;
      break;
    }
  }
  for (let i = 0; i < nMtp; i++) kinds.push("none");
  const nBlocks = nLayer + nMtp;

  const layers: LayerSpec[] = new Array<LayerSpec>(nBlocks);
  for (let il = 0; il < nBlocks; il++) {
    const kind = kinds[il]!;
    if (kind === "recurrent") {
      layers[il] = { kind: "recurrent", rElems, sElems };
      continue;
    }
    const swa = kind === "swa";
    const base = { kind: "attention" as const, nHeadKv: kind === "none" ? 0 : kvHeads, headDimK, headDimV, swa };
    if (il >= kvFromStart && il < nLayer) {
      const from = kvFromStart - (swa ? 2 : 1);
      if (from < 0 || (kinds[from] === "swa") !== swa) c.fail("num_kv_shared_layers", `leaves layer ${il} without an earlier layer of its kind to share a cache with`);
      layers[il] = { ...base, kvFrom: from };
    } else {
      layers[il] = base;
    }
  }

  // ---- experts and FFN
  const nExpert = c.uint("num_local_experts", MAX_HEADS) ?? c.uint("num_experts", MAX_HEADS) ?? c.uint("n_routed_experts", MAX_HEADS) ?? 0;
  const nUsed = c.uint("num_experts_per_tok", MAX_HEADS) ?? c.uint("moe_k", MAX_HEADS) ?? 0;
  let experts: ModelSpec["experts"] = null;
  if (nExpert > 0) {
    if (nUsed === 0 || nUsed > nExpert) c.fail("num_experts_per_tok", `is ${nUsed} with ${nExpert} experts; it must be between 1 and the expert count`);
    experts = { count: nExpert, used: nUsed };
  }
  const nFf = (nExpert > 0 ? c.uint("moe_intermediate_size", MAX_DIM) : undefined) ?? c.uint("intermediate_size", MAX_DIM) ?? null;

  return Object.freeze({
    name: opts.name ?? c.string("_name_or_path") ?? modelType,
    arch,
    source: opts.source,
    nLayer: nBlocks,
    nEmbd,
    nHead,
    nFf: nFf !== null && nFf > 0 ? nFf : null,
    nVocab,
    nCtxTrain,
    nSwa,
    swaType,
    layers: Object.freeze(layers.map((l) => Object.freeze(l))),
    mla,
    experts,
    params: null,
    weights: weightsFromIndex(c, config, opts),
  });
}

/** SWA layers for configs without `layer_types`. */
function swaFromFields(c: ConfigReader, arch: string, nLayer: number, kinds: LayerKind[]): void {
  const window = c.uint("sliding_window", MAX_CTX);
  const setPattern = (p: number, denseFirst = false): void => {
    for (let il = 0; il < nLayer; il++) if (isSwaByPattern(il, p, denseFirst)) kinds[il] = "swa";
  };
  switch (arch) {
    case "gemma2":
      setPattern(2); // Gemma2: alternate local / global (transformers: layer_idx % 2 == 0 is sliding)
      return;
    case "gemma3":
    case "gemma3n":
    case "cohere2": {
      if (window === undefined || window === 0) return;
      const p = c.uint("sliding_window_pattern", MAX_LAYERS) ?? (arch === "gemma3" ? 6 : arch === "gemma3n" ? 5 : 4);
      setPattern(p);
      return;
    }
    case "gpt-oss":
      setPattern(2); // gpt-oss: even layers sliding (its config also lists layer_types)
      return;
    case "llama4": {
      // transformers Llama4: layers with no_rope_layers[il] == 1 use chunked attention; llama.cpp:
      // 3 chunked : 1 full, unless attention_chunk_size is null.
      const chunk = c.raw("attention_chunk_size");
      if (chunk === undefined) return;
      setPattern(4);
      return;
    }
    case "qwen2":
    case "qwen2moe":
    case "qwen3":
    case "qwen3moe": {
      // transformers Qwen2: layer il slides iff use_sliding_window && il >= max_window_layers.
      // Every released Qwen2.5 / Qwen3 config has use_sliding_window: false.
      if (c.bool("use_sliding_window") !== true || window === undefined || window === 0) return;
      const maxWindowLayers = c.uint("max_window_layers", MAX_LAYERS) ?? nLayer;
      for (let il = maxWindowLayers; il < nLayer; il++) kinds[il] = "swa";
      return;
    }
    default:
      // A window without a pattern or layer_types is ignored, as llama.cpp does:
      // Mistral-7B-v0.1 advertises sliding_window 4096, but convert_hf_to_gguf.py writes it as plain
      // "llama" with no window key and llama.cpp attends over the whole context (Mistral's own
      // v0.2+ configs set sliding_window to null); phi3 configs carry a window llama.cpp disables
      // (PR #13676); starcoder2's window is not converted.
      return;
  }
}

/** Recurrent layers for hybrid configs without `layer_types`. */
function recurrentFromFields(c: ConfigReader, arch: string, nLayer: number, kinds: LayerKind[]): void {
  switch (arch) {
    case "mamba":
    case "mamba2":
      kinds.fill("recurrent");
      return;
    case "qwen3next":
    case "qwen35":
    case "qwen35moe": {
      const interval = c.uint("full_attention_interval", MAX_LAYERS) ?? 4;
      if (interval === 0) c.fail("full_attention_interval", "is 0: it must be a positive number of layers");
      for (let il = 0; il < nLayer; il++) if ((il + 1) % interval !== 0) kinds[il] = "recurrent";
      return;
    }
    case "jamba": {
      // transformers Jamba: attention iff il % attn_layer_period == attn_layer_offset
      const period = c.positive("attn_layer_period", MAX_LAYERS, "Jamba needs its attention period");
      const offset = c.requireUint("attn_layer_offset", MAX_LAYERS, "Jamba needs its attention offset");
      for (let il = 0; il < nLayer; il++) if (il % period !== offset) kinds[il] = "recurrent";
      return;
    }
    case "nemotron_h": {
      // hybrid_override_pattern: M = mamba2, * = attention, - = MLP (no cache)
      const pattern = c.string("hybrid_override_pattern");
      if (pattern === undefined || pattern.length !== nLayer) c.fail("hybrid_override_pattern", `must be a string of ${nLayer} characters (M, * or -)`);
      for (let il = 0; il < nLayer; il++) {
        const ch = pattern[il];
        if (ch === "M") kinds[il] = "recurrent";
        else if (ch === "-") kinds[il] = "none";
        else if (ch !== "*") c.fail("hybrid_override_pattern", `[${il}] is "${ch}"; expected M, * or -`);
      }
      return;
    }
    default:
      return;
  }
}

/** R / S state values per recurrent layer from the config's fields (llama.cpp n_embd_r / n_embd_s). */
function recurrentSizesFromConfig(c: ConfigReader, arch: string, nEmbd: number): { rElems: number; sElems: number } {
  switch (arch) {
    case "qwen3next":
    case "qwen35":
    case "qwen35moe": {
      // convert_hf_to_gguf: ssm.conv_kernel = linear_conv_kernel_dim, ssm.state_size = linear_key_head_dim,
      // ssm.group_count = linear_num_key_heads, ssm.inner_size = linear_value_head_dim * linear_num_value_heads
      const dConv = c.positive("linear_conv_kernel_dim", MAX_DIM, "the gated delta net needs its conv kernel size");
      const dState = c.positive("linear_key_head_dim", MAX_DIM, "the gated delta net needs its key head size");
      const nGroup = c.positive("linear_num_key_heads", MAX_HEADS, "the gated delta net needs its key head count");
      const dInner = c.positive("linear_value_head_dim", MAX_DIM, "the gated delta net needs its value head size") * c.positive("linear_num_value_heads", MAX_HEADS, "the gated delta net needs its value head count");
      return { rElems: (dConv - 1) * (dInner + 2 * nGroup * dState), sElems: dState * dInner };
    }
    case "lfm2": {
      const lCache = c.positive("conv_L_cache", MAX_DIM, "LFM2 short-conv layers need their cache length");
      return { rElems: nEmbd * (lCache - 1), sElems: 0 };
    }
    default: {
      // Mamba family: field names differ per model type
      const dState = c.uint("state_size", MAX_DIM) ?? c.uint("mamba_d_state", MAX_DIM) ?? c.uint("ssm_state_size", MAX_DIM);
      const dConv = c.uint("conv_kernel", MAX_DIM) ?? c.uint("mamba_d_conv", MAX_DIM);
      const nGroup = arch === "mamba" || arch === "jamba" ? 0 : (c.uint("n_groups", MAX_HEADS) ?? c.uint("mamba_n_groups", MAX_HEADS) ?? 1);
      const heads = c.uint("mamba_num_heads", MAX_HEADS) ?? c.uint("mamba_n_heads", MAX_HEADS);
      const headDim = c.uint("mamba_head_dim", MAX_DIM) ?? c.uint("mamba_d_head", MAX_DIM);
      const expand = c.uint("expand", 64) ?? c.uint("mamba_expand", 64) ?? 2;
      const dInner = heads !== undefined && headDim !== undefined ? heads * headDim : (arch === "mamba" ? c.uint("intermediate_size", MAX_DIM) : undefined) ?? expand * nEmbd;
      if (dState === undefined || dState === 0) c.fail("state_size", "is missing or 0; Mamba layers need their SSM state size");
      if (dConv === undefined || dConv === 0) c.fail("conv_kernel", "is missing or 0; Mamba layers need their conv kernel size");
      return { rElems: (dConv - 1) * (dInner + 2 * nGroup * dState), sElems: dState * dInner };
    }
  }
}

/** Weight bytes from model.safetensors.index.json `metadata.total_size`. */
function weightsFromIndex(c: ConfigReader, config: Obj, opts: HfSpecOptions): WeightsSpec | null {
  const index = opts.safetensorsIndex;
  if (index === undefined || index === null) return null;
  const meta = isObj(index) ? index["metadata"] : undefined;
  const total = isObj(meta) ? meta["total_size"] : undefined;
  if (typeof total !== "number" || !Number.isInteger(total) || total <= 0) {
    throw new ModelConfigError(`${opts.source}: model.safetensors.index.json metadata.total_size must be a positive integer (bytes)`, { field: "metadata.total_size" });
  }
  const qc = config["quantization_config"];
  const method = isObj(qc) && typeof qc["quant_method"] === "string" ? qc["quant_method"] : undefined;
  const dtype = c.string("torch_dtype") ?? c.string("dtype");
  const quant = method !== undefined ? method.toUpperCase() : dtype !== undefined ? torchDtypeName(dtype) : "unknown";
  return { bytes: total, quant, source: "safetensors-index" };
}

function torchDtypeName(dtype: string): string {
  switch (dtype) {
    case "bfloat16":
      return "BF16";
    case "float16":
      return "F16";
    case "float32":
      return "F32";
    default:
      return dtype.toUpperCase();
  }
}
