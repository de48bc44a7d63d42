// ModelSpec from a GGUF header's key/value metadata, with llama.cpp's defaults for missing keys
// (src/llama-model.cpp `load_hparams`, src/llama-hparams.cpp) and its per-arch layer rules
// (./arch-rules.ts). Values may be numbers, bigints, strings, booleans or arrays, as
// @huggingface/gguf returns them; anything else is a ModelConfigError naming the key.

import { ModelConfigError, UnsupportedArchitectureError } from "../errors.js";
import { ARCH_RULES, UNSUPPORTED_ARCHS, isSwaByPattern, type ArchRule } from "./arch-rules.js";
import type { LayerSpec, ModelSpec, SwaType, WeightsSpec } from "./model-spec.js";

/** llama.cpp's LLAMA_MAX_LAYERS (src/llama-hparams.h): it refuses more blocks than its fixed arrays hold. */
export const MAX_LAYERS = 512;
/** Largest dimension accepted for a size key (embedding, head size, FFN, window, state): far above any
 *  published model (2^24 = 16M), low enough that products of two stay exact in a double. */
export const MAX_DIM = 1 << 24;
/** Largest head count accepted: no published model has more than a few hundred heads. */
export const MAX_HEADS = 1 << 16;
/** Largest context / vocab value accepted (2^31): beyond it a value is a corrupt header, not a model. */
export const MAX_CTX = 2 ** 31;

export interface GgufSpecOptions {
  /** Where the metadata was read (file path, URL, registry citation). */
  source: string;
  /** Display name; default `general.name`, else the architecture. */
  name?: string;
  weights?: WeightsSpec | null;
  params?: number | null;
}

type Meta = Readonly<Record<string, unknown>>;

/** Reads typed values out of the metadata, naming the key in every error. */
class MetaReader {
  constructor(
    private readonly meta: Meta,
    readonly source: string,
  ) {}

  has(key: string): boolean {
    return this.raw(key) !== undefined;
  }

  /** The stored value; `{type, value}` wrappers (typed metadata) are unwrapped. */
  raw(key: string): unknown {
    if (!Object.prototype.hasOwnProperty.call(this.meta, key)) return undefined;
    const v = this.meta[key];
    if (v !== null && typeof v === "object" && !Array.isArray(v) && "value" in v) return (v as { value: unknown }).value;
    return v === null ? undefined : v;
  }

  fail(key: string, message: string, extra: Record<string, unknown> = {}): never {
    throw new ModelConfigError(`${this.source}: ${key}${message.startsWith("[") ? "" : " "}${message}`, { field: key, source: this.source, ...extra });
  }

  private toUint(key: string, v: unknown, max: number, where = ""): number {
    let n: number;
    if (typeof v === "bigint") {
      if (v < 0n || v > BigInt(Number.MAX_SAFE_INTEGER)) this.fail(key, `${where}is ${v}: expected an integer in 0..${max}`, { value: String(v) });
      n = Number(v);
    } else if (typeof v === "number") {
      n = v;
    } else {
      this.fail(key, `${where}has type ${Array.isArray(v) ? "array" : typeof v}: expected an unsigned integer`, { value: describe(v) });
    }
    if (!Number.isInteger(n) || n < 0) this.fail(key, `${where}is ${n}: expected a non-negative integer`, { value: n });
    if (n > max) this.fail(key, `${where}is ${n}, above the limit ${max}; the header is corrupt or not a model`, { value: n, max });
    return n;
  }

  uint(key: string, max: number): number | undefined {
    const v = this.raw(key);
    return v === undefined ? undefined : this.toUint(key, v, max);
  }

  requireUint(key: string, max: number, why: string): number {
    const v = this.uint(key, max);
    if (v === undefined) this.fail(key, `is missing; ${why}`);
    return v;
  }

  string(key: string): string | undefined {
    const v = this.raw(key);
    if (v === undefined) return undefined;
    if (typeof v !== "string") this.fail(key, `has type ${typeof v}: expected a string`, { value: describe(v) });
    return v;
  }

  /** llama.cpp `get_key_or_arr`: an array of exactly n values, or one value repeated n times. */
  uintOrArray(key: string, n: number, max: number): number[] | undefined {
    const v = this.raw(key);
    if (v === undefined) return undefined;
    if (Array.isArray(v)) {
      if (v.length !== n) this.fail(key, `has ${v.length} entries but block_count is ${n}; a per-layer array needs one entry per block`, { length: v.length, expected: n });
      const out = new Array<number>(n);
      for (let i = 0; i < n; i++) out[i] = this.toUint(key, v[i], max, `[${i}] `);
      return out;
    }
    return new Array<number>(n).fill(this.toUint(key, v, max));
  }

  /** A per-layer bool array (or one value for every layer), as `get_key_or_arr` into a bool array. */
  boolOrArray(key: string, n: number): boolean[] | undefined {
    const v = this.raw(key);
    if (v === undefined) return undefined;
    const one = (x: unknown, where: string): boolean => {
      if (typeof x === "boolean") return x;
      // GGUF writers store flags as bool, or (older files) as uint8 / int32
      if (typeof x === "number" || typeof x === "bigint") return this.toUint(key, x, MAX_DIM, where) !== 0;
      this.fail(key, `${where}has type ${typeof x}: expected a boolean`, { value: describe(x) });
    };
    if (Array.isArray(v)) {
      if (v.length !== n) this.fail(key, `has ${v.length} entries but block_count is ${n}; a per-layer array needs one entry per block`, { length: v.length, expected: n });
      const out = new Array<boolean>(n);
      for (let i = 0; i < n; i++) out[i] = one(v[i], `[${i}] `);
      return out;
    }
    return new Array<boolean>(n).fill(one(v, ""));
  }

  arrayLength(key: string): number | undefined {
    const v = this.raw(key);
    if (v === undefined) return undefined;
    if (!Array.isArray(v)) this.fail(key, `has type ${typeof v}: expected an array`, { value: describe(v) });
    return v.length;
  }
}

function describe(v: unknown): string {
  if (typeof v === "string") return v.length > 40 ? `${v.slice(0, 40)}...` : v;
  if (Array.isArray(v)) return `array(${v.length})`;
  return String(v);
}

/**
 * Builds the ModelSpec llama.cpp would see for this metadata: one LayerSpec per block with its
 * KV heads and head sizes, SWA flags, recurrent state sizes, shared-KV sources and MLA dims.
 * Throws UnsupportedArchitectureError for an unknown arch without the generic keys, and
 * ModelConfigError (naming the key and the fix) for wrong types, limits and contradictions.
 */
export function specFromGgufMetadata(metadata: Readonly<Record<string, unknown>>, opts: GgufSpecOptions): ModelSpec {
  if (metadata === null || typeof metadata !== "object" || Array.isArray(metadata)) {
    throw new ModelConfigError(`${opts.source}: GGUF metadata must be an object of key/value pairs`, { field: "(metadata)" });
  }
  const r: MetaReader = new MetaReader(metadata, opts.source);
  const arch = r.string("general.architecture");
  if (arch === undefined || arch === "") r.fail("general.architecture", "is missing; every GGUF model names its architecture");

  const unsupported = UNSUPPORTED_ARCHS[arch];
  if (unsupported !== undefined) {
    throw new UnsupportedArchitectureError(`${opts.source}: ${unsupported}`, { arch, source: opts.source });
  }
  const k = (suffix: string): string => `${arch}.${suffix}`;
  let rule: ArchRule | undefined = ARCH_RULES[arch];
  if (rule === undefined) {
    // An arch kvbound has no rule for: accept it as a dense attention model when the generic
    // keys are there (a new llama-like arch), since those alone fix its KV rows.
    if (!r.has(k("block_count")) || !r.has(k("embedding_length")) || !r.has(k("attention.head_count"))) {
      throw new UnsupportedArchitectureError(
        `${opts.source}: architecture "${arch}" is not one kvbound has rules for, and its metadata lacks ` +
          `${k("block_count")} / ${k("embedding_length")} / ${k("attention.head_count")}; ` +
          `describe the model with a config.json or a registry entry instead`,
        { arch, source: opts.source },
      );
    }
    rule = { swa: { kind: "none" }, recurrent: { kind: "none" }, kvShare: { kind: "none" } };
  }

  // ---- the common prologue of load_hparams
  const nLayer = r.requireUint(k("block_count"), MAX_LAYERS, "it gives the number of blocks");
  if (nLayer === 0) r.fail(k("block_count"), "is 0: a model needs at least one block");
  const nEmbd = r.requireUint(k("embedding_length"), MAX_DIM, "it gives the hidden size");
  if (nEmbd === 0) r.fail(k("embedding_length"), "is 0: the hidden size must be positive");
  const nCtxTrain = r.uint(k("context_length"), MAX_CTX) ?? null;

  const zeros = (): number[] => new Array<number>(nLayer).fill(0);
  const nHeadArr = r.uintOrArray(k("attention.head_count"), nLayer, MAX_HEADS) ?? zeros();
  // n_head_kv is optional and defaults to n_head, per layer
  const nHeadKvArr = r.uintOrArray(k("attention.head_count_kv"), nLayer, MAX_HEADS) ?? nHeadArr.slice();
  const nFfArr = r.uintOrArray(k("feed_forward_length"), nLayer, MAX_DIM) ?? zeros();
  for (let il = 0; il < nLayer; il++) {
    const h = nHeadArr[il]!;
    const hkv = nHeadKvArr[il]!;
    if (hkv > 0 && h > 0 && h % hkv !== 0) {
      r.fail(k("attention.head_count_kv"), `at layer ${il} is ${hkv}, which does not divide head_count ${h}; ` + `grouped-query attention needs head_count to be a multiple of head_count_kv`, { layer: il });
    }
    if (hkv > 0 && h === 0 && rule.recurrent.kind === "none") {
      r.fail(k("attention.head_count"), `at layer ${il} is 0 while head_count_kv is ${hkv}; a layer with K/V heads needs query heads`, { layer: il });
    }
  }

  // head sizes: n_embd / n_head(0) unless key_length / value_length say otherwise; 0 without heads
  const nHead0 = nHeadArr[0]!;
  let headK = 0;
  let headV = 0;
  if (nHead0 > 0) {
    const kl = r.uint(k("attention.key_length"), MAX_DIM);
    const vl = r.uint(k("attention.value_length"), MAX_DIM);
    if ((kl === undefined || vl === undefined) && nEmbd % nHead0 !== 0) {
      r.fail(
        kl === undefined ? k("attention.key_length") : k("attention.value_length"),
        `is missing and embedding_length ${nEmbd} is not a multiple of head_count ${nHead0}; ` + `add the key (the per-head size) to the metadata`,
      );
    }
    headK = kl ?? nEmbd / nHead0;
    headV = vl ?? nEmbd / nHead0;
    if (headK === 0 || headV === 0) r.fail(kl === 0 ? k("attention.key_length") : k("attention.value_length"), "is 0: a layer with heads needs a positive head size");
  }
  const nRot = nHead0 > 0 ? (r.uint(k("rope.dimension_count"), MAX_DIM) ?? headK) : 0;

  // ---- MLA (deepseek2 family): llama.cpp's `is_mla()` is true iff key_length_mla and
  // value_length_mla are both non-zero (src/llama-hparams.cpp). Such GGUFs (convert_hf_to_gguf
  // since the MLA rewrite) store head_count_kv = 1, key_length = kv_lora_rank + n_rot and
  // value_length = kv_lora_rank: the cache holds the compressed latent plus the RoPE part of K
  // as one "head" (src/models/deepseek2.cpp builds Kcur = concat(kv_cmpr, k_pe) and
  // Vcur = kv_cmpr, with `build_attn_inp_k`), and current llama-kv-cache.cpp allocates no V
  // tensor for MLA (`has_v = !is_mla`): V is a view of the first kv_lora_rank values of K.
  // The spec keeps headDimV = kv_lora_rank so each engine rule decides how V is stored.
  // Older deepseek2 GGUFs without the *_mla keys run as plain MHA with head_count_kv heads of
  // key_length / value_length, and get `mla: null`.
  let mla: ModelSpec["mla"] = null;
  const kMla = r.uint(k("attention.key_length_mla"), MAX_DIM) ?? 0;
  const vMla = r.uint(k("attention.value_length_mla"), MAX_DIM) ?? 0;
  if ((kMla === 0) !== (vMla === 0)) {
    r.fail(kMla === 0 ? k("attention.key_length_mla") : k("attention.value_length_mla"), "is missing or 0 while its K/V partner is set; MLA needs both key_length_mla and value_length_mla");
  }
  if (kMla !== 0) {
    const kvLoraRank = r.requireUint(k("attention.kv_lora_rank"), MAX_DIM, "MLA (key_length_mla set) needs the latent size");
    if (headK !== kvLoraRank + nRot || headV !== kvLoraRank) {
      r.fail(
        k("attention.key_length"),
        `is ${headK} with value_length ${headV}, but an MLA cache row is kv_lora_rank + rope.dimension_count = ` +
          `${kvLoraRank} + ${nRot} for K and kv_lora_rank = ${kvLoraRank} for V; re-convert the model with a current convert_hf_to_gguf.py`,
        { kvLoraRank, nRot },
      );
    }
    mla = { kvLoraRank, ropeDim: nRot };
  }

  // ---- sliding window
  const swaLayers = new Array<boolean>(nLayer).fill(false);
  let nSwa = 0;
  let swaType: SwaType = "none";
  const swaRule = rule.swa;
  switch (swaRule.kind) {
    case "none":
      break;
    case "period": {
      const windowKey = k("attention.sliding_window");
      let window: number | undefined;
      let active = true;
      if (swaRule.window === "required") {
        window = r.requireUint(windowKey, MAX_CTX, `llama.cpp requires it for ${arch}`);
      } else if (swaRule.window === "gate") {
        window = r.uint(windowKey, MAX_CTX);
        active = window !== undefined && window > 0;
      } else {
        window = r.uint(windowKey, MAX_CTX) ?? swaRule.window;
      }
      if (swaRule.onlyLayerCount !== undefined && nLayer !== swaRule.onlyLayerCount) active = false;
      if (!active) break;
      if (swaRule.forcedWindow !== undefined) window = swaRule.forcedWindow;
      if (window === undefined || window === 0) r.fail(windowKey, `is 0 for ${arch}, whose layers alternate sliding-window and full attention; set the model's window size`);
      let perLayer: boolean[] | null = null;
      let p = swaRule.period;
      if (swaRule.readsPatternKey) {
        const pk = k("attention.sliding_window_pattern");
        const v = r.raw(pk);
        // A number is the period; a per-layer bool array (as convert_hf_to_gguf writes from
        // layer_types) marks SWA layers directly.
        if (Array.isArray(v)) perLayer = r.boolOrArray(pk, nLayer)!;
        else if (v !== undefined) p = r.requireUint(pk, MAX_LAYERS, "");
      }
      for (let il = 0; il < nLayer; il++) swaLayers[il] = perLayer !== null ? perLayer[il]! : isSwaByPattern(il, p, swaRule.denseFirst === true);
      nSwa = window;
      swaType = swaRule.swaType;
      break;
    }
    case "per-layer-key": {
      const pk = k("attention.sliding_window_pattern");
      const flags = r.boolOrArray(pk, nLayer);
      if (flags === undefined) r.fail(pk, `is missing; llama.cpp requires the per-layer sliding-window flags for ${arch}`);
      for (let il = 0; il < nLayer; il++) swaLayers[il] = flags[il]!;
      nSwa = r.requireUint(k("attention.sliding_window"), MAX_CTX, `llama.cpp requires it for ${arch}`);
      swaType = "standard";
      break;
    }
    case "llama4": {
      // llama.cpp ignores the key's value unless it is 0: the chunk is always 8192.
      const w = r.uint(k("attention.sliding_window"), MAX_CTX);
      if (w === 0) break;
      for (let il = 0; il < nLayer; il++) swaLayers[il] = isSwaByPattern(il, 4, false);
      nSwa = 8192;
      swaType = "chunked";
      break;
    }
    default:
      swaRule satisfies never;
  }
  let anySwa = false;
  for (let il = 0; il < nLayer; il++) if (swaLayers[il]) anySwa = true;
  if (!anySwa) {
    nSwa = 0;
    swaType = "none";
  }

  // per-layer head sizes (gemma4: SWA layers use key_length_swa / value_length_swa)
  let headKSwa = headK;
  let headVSwa = headV;
  if (rule.swaHeadDims === true) {
    headKSwa = r.requireUint(k("attention.key_length_swa"), MAX_DIM, `llama.cpp requires it for ${arch}`);
    headVSwa = r.requireUint(k("attention.value_length_swa"), MAX_DIM, `llama.cpp requires it for ${arch}`);
  }

  // ---- recurrent layers
  const recurrentLayers = new Array<boolean>(nLayer).fill(false);
  const recRule = rule.recurrent;
  switch (recRule.kind) {
    case "none":
      break;
    case "all":
      recurrentLayers.fill(true);
      break;
    case "kv-zero":
      for (let il = 0; il < nLayer; il++) recurrentLayers[il] = nHeadKvArr[il] === 0;
      break;
    case "kv-and-ff-zero":
      for (let il = 0; il < nLayer; il++) recurrentLayers[il] = nHeadKvArr[il] === 0 && nFfArr[il] === 0;
      break;
    case "interval": {
      const flags = r.boolOrArray(k("attention.recurrent_layers"), nLayer);
      if (flags !== undefined) {
        for (let il = 0; il < nLayer; il++) recurrentLayers[il] = flags[il]!;
      } else {
        const interval = r.uint(k("full_attention_interval"), MAX_LAYERS) ?? recRule.defaultInterval;
        if (interval === 0) r.fail(k("full_attention_interval"), "is 0: it must be a positive number of layers");
        for (let il = 0; il < nLayer; il++) recurrentLayers[il] = (il + 1) % interval !== 0;
      }
      break;
    }
    default:
      recRule satisfies never;
  }
  let rElems = 0;
  let sElems = 0;
  if (recRule.kind !== "none") ({ rElems, sElems } = recurrentStateSizes(r, arch, nEmbd));

  // ---- layers without their own cache: shared KV (gemma3n / gemma4) and trailing MTP layers
  let kvFromStart = nLayer;
  const shareRule = rule.kvShare;
  switch (shareRule.kind) {
    case "none":
      break;
    case "shared-fixed":
      kvFromStart = Math.min(nLayer, shareRule.kvFromStart);
      break;
    case "shared-key": {
      const shared = r.uint(k("attention.shared_kv_layers"), MAX_LAYERS) ?? 0;
      if (shared >= nLayer) r.fail(k("attention.shared_kv_layers"), `is ${shared} but the model has ${nLayer} blocks; at least one layer must own a cache`);
      kvFromStart = nLayer - shared;
      break;
    }
    default:
      shareRule satisfies never;
  }
  const nextn = r.uint(k("nextn_predict_layers"), MAX_LAYERS) ?? 0;
  if (nextn >= nLayer) r.fail(k("nextn_predict_layers"), `is ${nextn} but the model has ${nLayer} blocks; MTP layers are a suffix of the stack`);
  const mtpFrom = nLayer - nextn;

  const layers: LayerSpec[] = new Array<LayerSpec>(nLayer);
  for (let il = 0; il < nLayer; il++) {
    if (recurrentLayers[il] && il < mtpFrom) {
      layers[il] = { kind: "recurrent", rElems, sElems };
      continue;
    }
    const swa = swaLayers[il]!;
    const base = {
      kind: "attention" as const,
      nHeadKv: il >= mtpFrom ? 0 : nHeadKvArr[il]!, // MTP (nextn) layers: has_kv() is false
      headDimK: swa ? headKSwa : headK,
      headDimV: swa ? headVSwa : headV,
      swa,
    };
    if (il >= kvFromStart && il < mtpFrom) {
      const from = kvFromStart - (swa ? 2 : 1);
      if (from < 0 || swaLayers[from] !== swa) {
        r.fail(k("attention.shared_kv_layers"), `leaves layer ${il} (${swa ? "SWA" : "full"}) without an earlier ${swa ? "SWA" : "full"} layer to share a cache with`, { layer: il });
      }
      layers[il] = { ...base, kvFrom: from };
    } else {
      layers[il] = base;
    }
  }

  // ---- experts, FFN, vocab, name
  const nExpert = r.uint(k("expert_count"), MAX_HEADS) ?? 0;
  const nExpertUsed = r.uint(k("expert_used_count"), MAX_HEADS) ?? 0;
  let experts: ModelSpec["experts"] = null;
  if (nExpert > 0) {
    if (nExpertUsed === 0 || nExpertUsed > nExpert) {
      r.fail(k("expert_used_count"), `is ${nExpertUsed} with expert_count ${nExpert}; it must be between 1 and expert_count`);
    }
    experts = { count: nExpert, used: nExpertUsed };
  } else if (nExpertUsed > 0) {
    r.fail(k("expert_used_count"), `is ${nExpertUsed} but expert_count is 0 or missing; a dense model uses no experts`);
  }
  const nFfExp = nExpert > 0 ? r.uint(k("expert_feed_forward_length"), MAX_DIM) : undefined;
  const nFf0 = nFfExp ?? nFfArr[0]!;
  const nVocab = r.uint(k("vocab_size"), MAX_CTX) ?? r.arrayLength("tokenizer.ggml.tokens") ?? null;

  return Object.freeze({
    name: opts.name ?? r.string("general.name") ?? arch,
    arch,
    source: opts.source,
    nLayer,
    nEmbd,
    nHead: nHead0,
    nFf: nFf0 > 0 ? nFf0 : null,
    nVocab,
    nCtxTrain,
    nSwa,
    swaType,
    layers: Object.freeze(layers.map((l) => Object.freeze(l))),
    mla,
    experts,
    params: opts.params ?? null,
    weights: opts.weights ?? null,
  });
}

/**
 * R (conv / token-shift) and S (SSM / WKV) state values per recurrent layer, as
 * `llama_hparams::n_embd_r()` / `n_embd_s()` (src/llama-hparams.cpp):
 * - RWKV (`wkv.head_size` set): r = token_shift_count * n_embd (count default 2), s = n_embd * head_size;
 * - LFM2 short conv (`shortconv.l_cache` set): r = n_embd * (l_cache - 1), s = d_state * d_inner = 0;
 * - Mamba / Mamba2 / gated delta net: r = (d_conv - 1) * (d_inner + 2 * n_group * d_state),
 *   s = d_state * d_inner (n_group 0 for Mamba1, which has no group_count key).
 */
function recurrentStateSizes(r: MetaReader, arch: string, nEmbd: number): { rElems: number; sElems: number } {
  const k = (suffix: string): string => `${arch}.${suffix}`;
  const wkvHeadSize = r.uint(k("wkv.head_size"), MAX_DIM) ?? 0;
  if (wkvHeadSize !== 0) {
    const tokenShift = r.uint(k("token_shift_count"), 16) ?? 2;
    return { rElems: tokenShift * nEmbd, sElems: nEmbd * wkvHeadSize };
  }
  const lCache = r.uint(k("shortconv.l_cache"), MAX_DIM) ?? 0;
  const dState = r.uint(k("ssm.state_size"), MAX_DIM) ?? 0;
  const dInner = r.uint(k("ssm.inner_size"), MAX_DIM) ?? 0;
  if (lCache !== 0) return { rElems: nEmbd * (lCache - 1), sElems: dState * dInner };
  const why = `llama.cpp requires it for the recurrent layers of ${arch}`;
  const dConv = r.requireUint(k("ssm.conv_kernel"), MAX_DIM, why);
  r.requireUint(k("ssm.inner_size"), MAX_DIM, why);
  r.requireUint(k("ssm.state_size"), MAX_DIM, why);
  const nGroup = r.uint(k("ssm.group_count"), MAX_HEADS) ?? 0;
  return { rElems: (dConv > 0 ? dConv - 1 : 0) * (dInner + 2 * nGroup * dState), sElems: dState * dInner };
}
