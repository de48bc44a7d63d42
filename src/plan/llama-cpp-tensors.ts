// A model's weight bytes by llama.cpp layer slot: the input layer (token embeddings, which
// llama.cpp always keeps on the CPU), each repeating layer (`blk.N.*`) and the output layer
// (output_norm + output), as src/llama-model.cpp `load_tensors` hands each tensor to
// `dev_input`, `dev_layer[N]` or `dev_output` by its LLM_TENSOR_LAYER_* class
// (`llm_tensor_info_for`, src/llama-arch.cpp). Exact from a GGUF's tensor table; for a registry
// model (quant-level bytes only) derived from the tensor types llama.cpp's quantizer gives each
// tensor of that mix (src/llama-quant.cpp `llama_tensor_get_type_impl`), and labelled as derived.

import { ggmlRowBytes, ggmlTypeByName, type GgmlType } from "../gguf/ggml-types.js";
import type { ModelSpec } from "../spec/model-spec.js";

export interface LayerWeights {
  /** Input layer bytes: token_embd and the other input tensors (always on the CPU). */
  readonly input: number;
  /** Each repeating layer's bytes (`blk.N.*`), indexed like `spec.layers`. */
  readonly layers: readonly number[];
  /** Output layer bytes: output_norm (+ bias) and output.weight; for a tied model only the norm. */
  readonly output: number;
  /** No output.weight: the output layer re-uses token_embd, which load_tensors creates again with
   *  TENSOR_DUPLICATED in the output layer's buffer, a second copy wherever that buffer is not the
   *  input's (`create_tensor`: "if duplicated, check if the original tensor was allocated in the
   *  same buffer type context"). */
  readonly outputTied: boolean;
  /** Bytes of that copy: token_embd's size when tied, else 0. */
  readonly tiedBytes: number;
  /** Tensors every layer references by one name (rope_freqs / rope_factors_*: created per layer
   *  with TENSOR_DUPLICATED for il != 0): one copy in each buffer that holds a layer. */
  readonly shared: number;
  /** The output projection's bytes (output.weight, or token_embd when tied). */
  readonly outputMatrix: number;
  /** Each layer's largest matrix: what a GPU copies in when it runs a CPU layer's matmul. */
  readonly layerMatrix: readonly number[];
  readonly source: "gguf-tensors" | "quant-mix" | "even-split";
  /** How the figures were obtained, for the plan's notes. */
  readonly note: string;
}

const LAYER_NAME = /^blk\.(\d+)\./;
/** Input-layer tensors (LLM_TENSOR_LAYER_INPUT in src/llama-arch.cpp). */
const INPUT_NAMES = /^(token_embd|token_embd_norm|token_types|position_embd|per_layer_token_embd)\./;
/** Output-layer tensors (LLM_TENSOR_LAYER_OUTPUT). */
const OUTPUT_NAMES = /^(output|output_norm|cls|cls\.output|cls_out)\./;
/** Per-layer tensors stored once under one name (LLM_TENSOR_ROPE_FREQS, ROPE_FACTORS_LONG/SHORT). */
const SHARED_NAMES = /^(rope_freqs|rope_factors_long|rope_factors_short)\./;

/**
 * The layer split of `spec`'s weights, or null when the spec has no weight bytes at all.
 * Order of preference: the GGUF tensor table; the quant mix derived for a registry model of a
 * dense llama-like architecture; the registry bytes spread evenly over the layers (an estimate).
 */
export function llamaCppLayerWeights(spec: ModelSpec): LayerWeights | null {
  if (spec.tensorBytes !== undefined) return fromTensorTable(spec, spec.tensorBytes);
  if (spec.weights === null) return null;
  return derivedQuantMix(spec) ?? evenSplit(spec);
}

function fromTensorTable(spec: ModelSpec, table: Readonly<Record<string, number>>): LayerWeights {
  const n = spec.layers.length;
  const layers = new Array<number>(n).fill(0);
  const layerMatrix = new Array<number>(n).fill(0);
  let input = 0;
  let output = 0;
  let shared = 0;
  let tokenEmbd = 0;
  let outputWeight: number | null = null;
  const unplaced: string[] = [];
  for (const name of Object.keys(table)) {
    const bytes = table[name]!;
    const m = LAYER_NAME.exec(name);
    if (m !== null) {
      const il = Number(m[1]);
      if (il < n) {
        layers[il] = layers[il]! + bytes;
        layerMatrix[il] = Math.max(layerMatrix[il]!, bytes);
        continue;
      }
      unplaced.push(name);
      output += bytes;
      continue;
    }
    if (name === "output.weight") outputWeight = bytes;
    if (name === "token_embd.weight") tokenEmbd = bytes;
    if (OUTPUT_NAMES.test(name)) output += bytes;
    else if (SHARED_NAMES.test(name)) shared += bytes;
    else if (INPUT_NAMES.test(name)) input += bytes;
    else {
      // Anything else outside the blocks (vision/audio projector stubs, odd extras) is counted with
      // the input layer, which stays in host memory.
      unplaced.push(name);
      input += bytes;
    }
  }
  const outputTied = outputWeight === null;
  let note = "per-device weights from the GGUF's tensor table (exact)";
  if (unplaced.length > 0) note += `; ${unplaced.length} tensor(s) outside the known layer slots counted on the CPU or with the output layer (${unplaced.slice(0, 3).join(", ")}${unplaced.length > 3 ? ", ..." : ""})`;
  return {
    input,
    layers,
    output,
    outputTied,
    tiedBytes: outputTied ? tokenEmbd : 0,
    shared,
    outputMatrix: outputTied ? tokenEmbd : outputWeight!,
    layerMatrix,
    source: "gguf-tensors",
    note,
  };
}

// ---------------------------------------------------------------------------------------------
// Registry models: the tensor types of llama.cpp's quant mixes

/** Architectures whose blocks are the plain llama layout (q, k, v, o, gate, up, down, two norms),
 *  with qwen2's q/k/v biases and qwen3's q/k norms (src/llama-model.cpp load_tensors). */
const DENSE_ARCHS: ReadonlySet<string> = new Set(["llama", "qwen2", "qwen3", "granite"]);

/** The default tensor type of each mix (src/llama-quant.cpp: `default_type` of the ftype). */
const MIX_DEFAULT: Readonly<Record<string, string>> = {
  Q4_K_M: "Q4_K",
  Q5_K_M: "Q5_K",
  Q6_K: "Q6_K",
  Q8_0: "Q8_0",
  F16: "F16",
  BF16: "BF16",
};

/** llama-quant.cpp `use_more_bits`: the first and last eighth of the layers and every third between. */
function useMoreBits(i: number, n: number): boolean {
  return i < Math.floor(n / 8) || i >= Math.floor((7 * n) / 8) || (i - Math.floor(n / 8)) % 3 === 2;
}

interface Tensor {
  readonly role: "token_embd" | "output" | "attn_v" | "ffn_down" | "matrix" | "vector";
  /** Row length (GGUF ne0) and rows. */
  readonly ne0: number;
  readonly rows: number;
}

function typeNamed(name: string): GgmlType {
  const t = ggmlTypeByName(name);
  if (t === undefined) throw new Error(`unknown ggml type ${name}`);
  return t;
}

/** tensor_type_fallback: a k-quant whose block does not divide the row falls back to a 32-block
 *  type, and to F16 when even that does not divide it. */
function fallback(type: GgmlType, ne0: number): GgmlType {
  if (ne0 % type.blockSize === 0) return type;
  const to = type.name === "Q4_K" ? "Q5_0" : type.name === "Q5_K" ? "Q5_1" : type.name === "Q6_K" ? "Q8_0" : "F16";
  const t = typeNamed(to);
  return ne0 % t.blockSize === 0 ? t : typeNamed("F16");
}

/** The type llama_tensor_get_type_impl gives a tensor of this role in layer `il` of `nLayer`,
 *  for the mixes in MIX_DEFAULT (quantized mixes only; F16/BF16 keep every matrix as is). */
function mixType(mix: string, role: Tensor["role"], il: number, nLayer: number, tied: boolean, is70b: boolean, ne0: number): GgmlType {
  if (role === "vector") return typeNamed("F32"); // 1-D tensors are never quantized
  const base = typeNamed(MIX_DEFAULT[mix]!);
  if (base.blockSize === 1) return base; // F16 / BF16: ggml_is_quantized(default_type) is false
  let name = base.name;
  if (role === "output" || (tied && role === "token_embd")) {
    // The output tensor (or the tied embeddings): Q8_0 when the row does not fit the block, else
    // Q6_K unless the mix is Q8_0.
    if (ne0 % base.blockSize !== 0) name = "Q8_0";
    else if (name !== "Q8_0") name = "Q6_K";
  } else if (role === "attn_v") {
    if ((mix === "Q4_K_M" || mix === "Q5_K_M") && useMoreBits(il, nLayer)) name = "Q6_K";
    // "In the 70B model we have 8 heads sharing the same attn_v weights": Q3_K/Q4_K -> Q5_K.
    if (is70b && (name === "Q3_K" || name === "Q4_K")) name = "Q5_K";
  } else if (role === "ffn_down") {
    if ((mix === "Q4_K_M" || mix === "Q5_K_M") && useMoreBits(il, nLayer)) name = "Q6_K";
  }
  return fallback(typeNamed(name), ne0);
}

function tensorBytes(type: GgmlType, t: Tensor): number {
  const row = ggmlRowBytes(type, t.ne0);
  if (row === null) throw new Error(`row of ${t.ne0} values is not whole ${type.name} blocks`);
  return row * t.rows;
}

function num(meta: unknown): number | undefined {
  return typeof meta === "number" ? meta : undefined;
}

/** The quant mix of a registry model of a dense llama-like architecture, or null when the spec is
 *  not one (MoE, MLA, recurrent, SWA-tied archs, unknown mixes, tied-ness not decidable). */
function derivedQuantMix(spec: ModelSpec): LayerWeights | null {
  const w = spec.weights;
  if (w === null || w.source !== "registry" || MIX_DEFAULT[w.quant] === undefined) return null;
  if (!DENSE_ARCHS.has(spec.arch) || spec.experts !== null || spec.mla !== null) return null;
  if (spec.nVocab === null || spec.nFf === null || spec.params === null) return null;
  const e = spec.nEmbd;
  const v = spec.nVocab;
  const ff = spec.nFf;
  const n = spec.layers.length;
  const perLayer: Tensor[][] = [];
  let layerParams = 0;
  for (let il = 0; il < n; il++) {
    const l = spec.layers[il]!;
    if (l.kind !== "attention" || l.kvFrom !== undefined) return null;
    const qDim = spec.nHead * l.headDimK;
    const kDim = l.nHeadKv * l.headDimK;
    const vDim = l.nHeadKv * l.headDimV;
    const oDim = spec.nHead * l.headDimV;
    const ts: Tensor[] = [
      { role: "vector", ne0: e, rows: 1 }, // attn_norm
      { role: "matrix", ne0: e, rows: qDim }, // attn_q
      { role: "matrix", ne0: e, rows: kDim }, // attn_k
      { role: "attn_v", ne0: e, rows: vDim },
      { role: "matrix", ne0: oDim, rows: e }, // attn_output
      { role: "vector", ne0: e, rows: 1 }, // ffn_norm
      { role: "matrix", ne0: e, rows: ff }, // ffn_gate
      { role: "matrix", ne0: e, rows: ff }, // ffn_up
      { role: "ffn_down", ne0: ff, rows: e },
    ];
    if (spec.arch === "qwen2") ts.push({ role: "vector", ne0: qDim, rows: 1 }, { role: "vector", ne0: kDim, rows: 1 }, { role: "vector", ne0: vDim, rows: 1 });
    if (spec.arch === "qwen3") ts.push({ role: "vector", ne0: l.headDimK, rows: 1 }, { role: "vector", ne0: l.headDimK, rows: 1 });
    for (const t of ts) layerParams += t.ne0 * t.rows;
    perLayer.push(ts);
  }
  // Tied embeddings are decided by the published parameter count, which counts lm_head only when
  // it is a tensor of its own; neither count matching means the layout is not the one assumed.
  const untied = layerParams + 2 * v * e + e;
  const tied = layerParams + v * e + e;
  let isTied: boolean;
  if (spec.params === untied) isTied = false;
  else if (spec.params === tied) isTied = true;
  else return null;

  const mix = w.quant;
  // llama-model.cpp load_hparams: llama and qwen2 with 80 layers are LLM_TYPE_70B.
  const is70b = n === 80 && (spec.arch === "llama" || spec.arch === "qwen2");
  const layers = new Array<number>(n).fill(0);
  const layerMatrix = new Array<number>(n).fill(0);
  for (let il = 0; il < n; il++) {
    for (const t of perLayer[il]!) {
      const b = tensorBytes(mixType(mix, t.role, il, n, isTied, is70b, t.ne0), t);
      layers[il] = layers[il]! + b;
      if (t.role !== "vector") layerMatrix[il] = Math.max(layerMatrix[il]!, b);
    }
  }
  const embd: Tensor = { role: "token_embd", ne0: e, rows: v };
  const embdBytes = tensorBytes(mixType(mix, "token_embd", 0, n, isTied, is70b, e), embd);
  const outNorm = tensorBytes(typeNamed("F32"), { role: "vector", ne0: e, rows: 1 });
  const outBytes = isTied ? 0 : tensorBytes(mixType(mix, "output", 0, n, isTied, is70b, e), { role: "output", ne0: e, rows: v });
  let total = embdBytes + outNorm + outBytes;
  for (let il = 0; il < n; il++) total += layers[il]!;
  const types =
    mix === "Q4_K_M" || mix === "Q5_K_M"
      ? `${MIX_DEFAULT[mix]} except attn_v and ffn_down in use_more_bits layers (Q6_K)${is70b ? ", other attn_v Q5_K (70B rule)" : ""}, ${isTied ? "tied token_embd" : "output"} Q6_K, norms F32`
      : `${MIX_DEFAULT[mix]} matrices, norms F32`;
  return {
    input: embdBytes,
    layers,
    output: outNorm + outBytes,
    outputTied: isTied,
    tiedBytes: isTied ? embdBytes : 0,
    shared: 0,
    outputMatrix: isTied ? embdBytes : outBytes,
    layerMatrix,
    source: "quant-mix",
    note:
      `per-device weights derived (no tensor table: a registry model): tensor shapes from the config, types of llama.cpp's ${mix} mix ` +
      `(src/llama-quant.cpp llama_tensor_get_type_impl: ${types}); they add up to ${total} B against the registry's ${w.bytes} B ` +
      `(params x bits per weight); a GGUF file gives the exact table`,
  };
}

/** Architectures whose output layer is always the token embeddings (src/llama-model.cpp). */
const TIED_ARCHS: ReadonlySet<string> = new Set(["gemma", "gemma2", "gemma3", "gemma3n", "gemma-embedding"]);

/** Last resort: the registry bytes spread over input, layers and output by parameter share. */
function evenSplit(spec: ModelSpec): LayerWeights {
  const w = spec.weights!;
  const n = Math.max(1, spec.layers.length);
  const perParam = spec.params !== null && spec.params > 0 ? w.bytes / spec.params : 0;
  const embd = spec.nVocab !== null && perParam > 0 ? Math.round(spec.nVocab * spec.nEmbd * perParam) : 0;
  // Gemma models always use the token embeddings as the output (load_tensors creates `output` from
  // token_embd with TENSOR_DUPLICATED); elsewhere tied-ness is unknown here: assume a separate
  // output matrix (the larger plan).
  const tied = TIED_ARCHS.has(spec.arch);
  const out = tied ? 0 : embd;
  const rest = Math.max(0, w.bytes - embd - out);
  const per = Math.floor(rest / n);
  const layers = new Array<number>(spec.layers.length).fill(per);
  if (layers.length > 0) layers[layers.length - 1] = rest - per * (layers.length - 1);
  const layerMatrix = layers.map((b) => Math.round(b / 3));
  return {
    input: embd,
    layers,
    output: out,
    outputTied: tied,
    tiedBytes: tied ? embd : 0,
    shared: 0,
    outputMatrix: tied ? embd : out,
    layerMatrix,
    source: "even-split",
    note:
      `per-device weights are an ESTIMATE: ${spec.arch} ${w.quant} has no tensor table here, so the ${w.bytes} B (${w.source}) are split as ` +
      `token embeddings${tied ? " (tied: copied where the output layer goes)" : " and output"} ${spec.nVocab ?? "?"} x ${spec.nEmbd}${tied ? "" : " each"} at the model's average bytes per parameter, the rest evenly over ${n} layers; pass the GGUF file for exact figures`,
  };
}
