// What an architecture file produces: a TransformerPlan, the tensors and numbers of a pre-norm
// decoder that src/model/transformer.ts computes. Each architecture reads its GGUF metadata into
// one; nothing after this point switches on the architecture's name.

import type { GgufHeader } from "../../gguf/header.js";
import { ModelConfigError } from "../../errors.js";
import type { RopeSpec } from "../../cache/rope.js";
import type { LayerAttention, LongRopeChoice, ModelHParams } from "../causal-lm.js";
import { llamaCppNCtxSeq, readRopeHParams, readRopeScaling, ropeSpecFromScaling } from "../rope-scaling.js";

/** Rows [row0, row0 + rows) of a tensor: the whole matrix, or one part of a fused one (phi3's attn_qkv). */
export interface MatrixRef {
  readonly tensor: string;
  readonly row0: number;
  readonly rows: number;
  /** Rows of the whole fused tensor (its shape is checked against this); absent for a whole tensor. */
  readonly fusedRows?: number;
}

/** One layer's tensors. Optional ones are null when the architecture has none. */
export interface LayerTensors {
  readonly attnNorm: string;
  readonly q: MatrixRef;
  readonly k: MatrixRef;
  readonly v: MatrixRef;
  readonly o: string;
  /** Optional biases (qwen2): used when the file has them. */
  readonly qBias: string;
  readonly kBias: string;
  readonly vBias: string;
  /** Per-head RMSNorm of Q and K before RoPE (qwen3, gemma3): used when the file has them. */
  readonly qNorm: string;
  readonly kNorm: string;
  /** RMSNorm of the attention output before the residual add (gemma2/3). */
  readonly attnPostNorm: string | null;
  readonly ffnNorm: string;
  readonly gate: MatrixRef;
  readonly up: MatrixRef;
  readonly down: string;
  /** RMSNorm of the FFN output before the residual add (gemma2/3). */
  readonly ffnPostNorm: string | null;
}

export interface TransformerPlan {
  readonly hp: ModelHParams;
  readonly attention: readonly LayerAttention[];
  readonly layers: readonly LayerTensors[];
  /** The token embedding is multiplied by this (gemma: sqrt(n_embd)); 1 for most. */
  readonly embedScale: number;
  /** GLU activation of the gate: SiLU (SwiGLU) or GELU with tanh (GeGLU, as ggml computes it). */
  readonly activation: "silu" | "gelu";
  /** The output matrix (token_embd.weight when tied). */
  readonly output: string;
  /** Final logit soft-capping (gemma2); 0 for none. */
  readonly finalSoftcap: number;
  /** Set when the file has LongRoPE factors (readRope records the choice). */
  readonly longRope?: LongRopeChoice | null;
}

/** What an architecture reads: the header, which tensors exist (and their F32 values), and the run's context. */
export interface ArchContext {
  readonly header: GgufHeader;
  readonly meta: GgufHeader["metadata"];
  readonly arch: string;
  /** The context the model runs with (tokens): LongRoPE picks its factors by it, as llama.cpp does by n_ctx_per_seq. */
  readonly nCtx: number;
  has(tensor: string): boolean;
  /** An F32 tensor's values (rope_freqs, rope_factors_*). */
  f32(tensor: string, n: number): Float32Array;
}

/** One architecture family: the general.architecture names it reads and how. */
export interface Architecture {
  readonly names: readonly string[];
  plan(ctx: ArchContext): TransformerPlan;
}

export function num(meta: GgufHeader["metadata"], key: string, fallback?: number): number {
  const v = meta[key];
  if (typeof v === "number") return v;
  if (typeof v === "bigint" && v <= BigInt(Number.MAX_SAFE_INTEGER)) return Number(v);
  if (v === undefined && fallback !== undefined) return fallback;
  throw new ModelConfigError(`GGUF metadata ${key} is ${v === undefined ? "missing" : "not a number"}`, { field: key });
}

/** The sizes most architectures read the same way ({arch}.embedding_length, ...). */
export function readSizes(ctx: ArchContext): Omit<ModelHParams, "rope"> {
  const { meta, arch } = ctx;
  const nEmbd = num(meta, `${arch}.embedding_length`);
  const nHead = num(meta, `${arch}.attention.head_count`);
  const nHeadKv = num(meta, `${arch}.attention.head_count_kv`, nHead);
  const headDim = num(meta, `${arch}.attention.key_length`, nEmbd / nHead);
  const headDimV = num(meta, `${arch}.attention.value_length`, headDim);
  if (headDimV !== headDim) {
    throw new ModelConfigError(`${arch}.attention.value_length ${headDimV} differs from key_length ${headDim}; kvbound runs equal K and V head sizes`, { field: `${arch}.attention.value_length` });
  }
  if (!Number.isInteger(headDim) || headDim <= 0 || nHeadKv <= 0 || nHead % nHeadKv !== 0) {
    throw new ModelConfigError(`head_count ${nHead}, head_count_kv ${nHeadKv}, head dim ${headDim} do not form a GQA layout`, { field: `${arch}.attention.head_count_kv` });
  }
  const tokens = meta["tokenizer.ggml.tokens"];
  return {
    arch,
    nLayer: num(meta, `${arch}.block_count`),
    nEmbd,
    nHead,
    nHeadKv,
    headDim,
    nFf: num(meta, `${arch}.feed_forward_length`),
    nVocab: num(meta, `${arch}.vocab_size`, Array.isArray(tokens) ? tokens.length : undefined),
    nCtxTrain: num(meta, `${arch}.context_length`, 2048),
    normEps: num(meta, `${arch}.attention.layer_norm_rms_epsilon`, 1e-5),
  };
}

/** The whole tensor as a MatrixRef. */
export function whole(tensor: string, rows: number): MatrixRef {
  return { tensor, row0: 0, rows };
}

/** Layer l's tensors with llama.cpp's standard names (blk.N.attn_q.weight, ...); `extra` overrides. */
export function standardLayer(l: number, hp: Omit<ModelHParams, "rope">, extra: Partial<LayerTensors> = {}): LayerTensors {
  const p = `blk.${l}.`;
  const qDim = hp.nHead * hp.headDim;
  const kvDim = hp.nHeadKv * hp.headDim;
  return {
    attnNorm: p + "attn_norm.weight",
    q: whole(p + "attn_q.weight", qDim),
    k: whole(p + "attn_k.weight", kvDim),
    v: whole(p + "attn_v.weight", kvDim),
    o: p + "attn_output.weight",
    qBias: p + "attn_q.bias",
    kBias: p + "attn_k.bias",
    vBias: p + "attn_v.bias",
    qNorm: p + "attn_q_norm.weight",
    kNorm: p + "attn_k_norm.weight",
    attnPostNorm: null,
    ffnNorm: p + "ffn_norm.weight",
    gate: whole(p + "ffn_gate.weight", hp.nFf),
    up: whole(p + "ffn_up.weight", hp.nFf),
    down: p + "ffn_down.weight",
    ffnPostNorm: null,
    ...extra,
  };
}

/** output.weight, or the token embedding when the output is tied to it. */
export function outputTensor(ctx: ArchContext): string {
  return ctx.has("output.weight") ? "output.weight" : "token_embd.weight";
}

/** Which RoPE factor tensors an architecture's llama.cpp graph reads (others are not used by it). */
export interface RopeReading {
  /** NeoX pairs (i, i + n_rot/2) or the normal (2i, 2i+1) ones: llama.cpp's llama_model_rope_type per arch. */
  readonly neox: boolean;
  /** llama3-style rope_freqs.weight (llama family). */
  readonly freqs?: boolean;
  /** Phi-3 LongRoPE rope_factors_long/short.weight. */
  readonly longShort?: boolean;
  /** Overrides the metadata's base and scale (gemma3's local layers: base 10000, scale 1). */
  readonly freqBase?: number;
  readonly freqScale?: number;
}

/** The RoPE llama.cpp applies for this file, context and reading (src/model/rope-scaling.ts does the math). */
export function readRope(ctx: ArchContext, headDim: number, r: RopeReading): RopeSpec {
  const { meta, arch } = ctx;
  const nRot = num(meta, `${arch}.rope.dimension_count`, headDim);
  const half = nRot / 2;
  const tensor = (name: string, wanted: boolean | undefined) => (wanted && ctx.has(name) ? ctx.f32(name, half) : null);
  const scaling = readRopeScaling(meta, arch, {
    nCtx: ctx.nCtx,
    freqFactors: tensor("rope_freqs.weight", r.freqs),
    ropeFactorsLong: tensor("rope_factors_long.weight", r.longShort),
    ropeFactorsShort: tensor("rope_factors_short.weight", r.longShort),
  });
  const s = { ...scaling, ...(r.freqBase !== undefined ? { freqBase: r.freqBase } : {}), ...(r.freqScale !== undefined ? { freqScale: r.freqScale } : {}) };
  return ropeSpecFromScaling(nRot, r.neox, s);
}

/** The LongRoPE factor choice for this file and context, or null when it has no long/short factors. */
export function longRopeChoice(ctx: ArchContext): LongRopeChoice | null {
  if (!ctx.has("rope_factors_long.weight") && !ctx.has("rope_factors_short.weight")) return null;
  const hp = readRopeHParams(ctx.meta, ctx.arch);
  return { nCtxOrig: hp.nCtxOrigYarn, long: llamaCppNCtxSeq(ctx.nCtx, hp.nCtxTrain) > hp.nCtxOrigYarn, nCtx: ctx.nCtx };
}

/** Every layer attending over the full context with one RoPE and the standard 1/sqrt(headDim) scale. */
export function uniformAttention(hp: Omit<ModelHParams, "rope">, rope: RopeSpec | null, scale = 1 / Math.sqrt(hp.headDim)): LayerAttention[] {
  const out: LayerAttention[] = [];
  for (let l = 0; l < hp.nLayer; l++) out.push({ nHeadKv: hp.nHeadKv, headDimK: hp.headDim, headDimV: hp.headDim, rope, slidingWindow: 0, scale, softcap: 0 });
  return out;
}
