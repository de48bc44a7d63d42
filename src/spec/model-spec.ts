// ModelSpec: everything the planners need to know about a model, whatever it was read from
// (a GGUF header, a GGUF metadata JSON dump, a Hugging Face config.json, or the built-in
// registry). Sizes are in elements (values) unless a name says bytes.

/**
 * One block of the model as a KV planner sees it.
 *
 * - `attention`: a layer with its own K and V rows of `nHeadKv * headDimK` and `nHeadKv * headDimV`
 *   values per token. `swa` marks a sliding-window layer (window `ModelSpec.nSwa`).
 *   `kvFrom` is set on layers that reuse another layer's cache (gemma3n / gemma4 "shared KV"
 *   layers): they allocate nothing.
 *   MLA models (deepseek2 family) store one "head" holding the compressed latent plus the RoPE
 *   part: `nHeadKv = 1`, `headDimK = kvLoraRank + ropeDim`, `headDimV = kvLoraRank`.
 * - `recurrent`: a layer with fixed-size state per sequence (Mamba, RWKV, gated delta net,
 *   short conv): `rElems` values of R (conv / token-shift) state and `sElems` of S (SSM / WKV)
 *   state, as llama.cpp's `n_embd_r()` / `n_embd_s()` (src/llama-hparams.cpp).
 */
export type LayerSpec =
  | {
      readonly kind: "attention";
      readonly nHeadKv: number;
      readonly headDimK: number;
      readonly headDimV: number;
      readonly swa: boolean;
      readonly kvFrom?: number;
    }
  | {
      readonly kind: "recurrent";
      readonly rElems: number;
      readonly sElems: number;
    };

/** How a sliding-window layer's window is applied (llama.cpp `llama_swa_type`). */
export type SwaType = "none" | "standard" | "chunked" | "symmetric";

/** Weight bytes and where the figure comes from. */
export interface WeightsSpec {
  /** Bytes of all tensors (exact for a GGUF file; see `source`). */
  readonly bytes: number;
  /** The quantization these bytes are for: "Q4_K_M", "F16", "BF16", "mixed"... */
  readonly quant: string;
  /** "gguf-tensors": sum of the file's tensor sizes; "registry": published file facts;
   *  "safetensors-index": total_size of model.safetensors.index.json; "params": params x dtype. */
  readonly source: "gguf-tensors" | "registry" | "safetensors-index" | "params";
}

export interface ModelSpec {
  /** Human name, e.g. "Llama 3.2 1B Instruct". */
  readonly name: string;
  /** GGUF `general.architecture` (llama, qwen2, gemma3, gpt-oss, deepseek2, mamba...). */
  readonly arch: string;
  /** Where these facts were read: a file path, a URL, or the registry entry's cited source. */
  readonly source: string;
  readonly nLayer: number;
  /** Hidden size (n_embd). */
  readonly nEmbd: number;
  /** Query heads (the first layer's when it varies). */
  readonly nHead: number;
  /** Feed-forward size (the first layer's when it varies; the expert FFN size for MoE), null if unknown. */
  readonly nFf: number | null;
  readonly nVocab: number | null;
  /** Training context (`context_length` / `max_position_embeddings`), null if unknown. */
  readonly nCtxTrain: number | null;
  /** Sliding window in tokens for layers with `swa: true`; 0 when the model has none. */
  readonly nSwa: number;
  readonly swaType: SwaType;
  /** One entry per block, length `nLayer`. */
  readonly layers: readonly LayerSpec[];
  /** Multi-head latent attention dims (deepseek2 family), null otherwise. */
  readonly mla: { readonly kvLoraRank: number; readonly ropeDim: number } | null;
  /** Mixture of experts: total and active experts per token, null for dense models. */
  readonly experts: { readonly count: number; readonly used: number } | null;
  /** Parameter count when known. */
  readonly params: number | null;
  readonly weights: WeightsSpec | null;
  /** GGUF sources only: each tensor's ggml type name by tensor name, so a planner can replay an
   *  engine's per-tensor rules (kvbound's wasm weight copies, src/plan/kvbound.ts). */
  readonly tensorTypes?: Readonly<Record<string, string>>;
  /** GGUF sources only: each tensor's bytes by tensor name (all shards), so a planner can place
   *  every layer's weights on the device llama.cpp loads it to (src/plan/llama-cpp-offload.ts). */
  readonly tensorBytes?: Readonly<Record<string, number>>;
}

/** Layers that allocate their own attention K/V (not recurrent, not sharing another's cache). */
export function kvLayers(spec: ModelSpec): Array<{ index: number; layer: Extract<LayerSpec, { kind: "attention" }> }> {
  const out: Array<{ index: number; layer: Extract<LayerSpec, { kind: "attention" }> }> = [];
  for (let i = 0; i < spec.layers.length; i++) {
    const layer = spec.layers[i]!;
    if (layer.kind === "attention" && layer.kvFrom === undefined && layer.nHeadKv > 0) out.push({ index: i, layer });
  }
  return out;
}

/** A short summary for tables and the JSON contract's `model` field. */
export function summarizeSpec(spec: ModelSpec): Record<string, unknown> {
  const attn = kvLayers(spec);
  const first = attn[0]?.layer;
  return {
    name: spec.name,
    arch: spec.arch,
    source: spec.source,
    nLayer: spec.nLayer,
    nEmbd: spec.nEmbd,
    nHead: spec.nHead,
    nHeadKv: first?.nHeadKv ?? 0,
    headDimK: first?.headDimK ?? 0,
    headDimV: first?.headDimV ?? 0,
    nKvLayers: attn.length,
    nSwaLayers: attn.filter((l) => l.layer.swa).length,
    nRecurrentLayers: spec.layers.filter((l) => l.kind === "recurrent").length,
    nSwa: spec.nSwa,
    nCtxTrain: spec.nCtxTrain,
    mla: spec.mla,
    experts: spec.experts,
    params: spec.params,
  };
}
