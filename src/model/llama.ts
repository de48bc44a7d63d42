// The Llama-family forward pass (llama, mistral, qwen2 with QKV bias, qwen3 with QK norm):
// RMSNorm, RoPE, GQA attention through a KV backend, SwiGLU. One token at a time; every buffer is
// allocated once in the constructor, so decoding allocates nothing.

import type { GgufHeader } from "../gguf/header.js";
import { ModelConfigError, UnsupportedArchitectureError } from "../errors.js";
import type { RopeSpec } from "../cache/rope.js";
import { matvec, type WeightMatrix } from "./kernels/matvec.js";
import { dequantizeRow } from "./kernels/quant-rows.js";
import { WeightSet } from "./weights.js";

export const SUPPORTED_ARCHS = ["llama", "mistral", "qwen2", "qwen3"] as const;

export interface LlamaHParams {
  readonly arch: string;
  readonly nLayer: number;
  readonly nEmbd: number;
  readonly nHead: number;
  readonly nHeadKv: number;
  readonly headDim: number;
  readonly nFf: number;
  readonly nVocab: number;
  readonly nCtxTrain: number;
  readonly normEps: number;
  readonly rope: RopeSpec;
}

/** Where attention reads and writes K/V: the paged cache in a session, a dense array in references. */
export interface KvBackend {
  /** Stores layer `layer`'s K (pre-RoPE) and V for the token being processed. */
  write(layer: number, k: Float32Array, v: Float32Array): void;
  /** out[nHead*headDim] = attention of the (pre-RoPE) query `q` at position `pos` over the cached tokens. */
  attend(layer: number, q: Float32Array, pos: number, out: Float32Array): void;
}

interface LayerWeights {
  attnNorm: Float32Array;
  wq: WeightMatrix; wk: WeightMatrix; wv: WeightMatrix; wo: WeightMatrix;
  bq: Float32Array | null; bk: Float32Array | null; bv: Float32Array | null;
  qNorm: Float32Array | null; kNorm: Float32Array | null;
  ffnNorm: Float32Array;
  wGate: WeightMatrix; wUp: WeightMatrix; wDown: WeightMatrix;
}

function num(meta: GgufHeader["metadata"], key: string, fallback?: number): number {
  const v = meta[key];
  if (typeof v === "number") return v;
  if (typeof v === "bigint" && v <= BigInt(Number.MAX_SAFE_INTEGER)) return Number(v);
  if (v === undefined && fallback !== undefined) return fallback;
  throw new ModelConfigError(`GGUF metadata ${key} is ${v === undefined ? "missing" : "not a number"}`, { field: key });
}

export function llamaHParams(header: GgufHeader): LlamaHParams {
  const meta = header.metadata;
  const arch = String(meta["general.architecture"] ?? "");
  if (!(SUPPORTED_ARCHS as readonly string[]).includes(arch)) {
    throw new UnsupportedArchitectureError(`architecture "${arch}" has no forward pass in kvbound yet; supported: ${SUPPORTED_ARCHS.join(", ")}`, { arch });
  }
  const nEmbd = num(meta, `${arch}.embedding_length`);
  const nHead = num(meta, `${arch}.attention.head_count`);
  const nHeadKv = num(meta, `${arch}.attention.head_count_kv`, nHead);
  const headDim = num(meta, `${arch}.attention.key_length`, nEmbd / nHead);
  const tokens = meta["tokenizer.ggml.tokens"];
  const nVocab = num(meta, `${arch}.vocab_size`, Array.isArray(tokens) ? tokens.length : undefined);
  const nRot = num(meta, `${arch}.rope.dimension_count`, headDim);
  if (!Number.isInteger(headDim) || nHead % nHeadKv !== 0) {
    throw new ModelConfigError(`head_count ${nHead}, head_count_kv ${nHeadKv}, head dim ${headDim} do not form a GQA layout`, { field: `${arch}.attention.head_count_kv` });
  }
  const rope: RopeSpec = {
    nRot,
    freqBase: num(meta, `${arch}.rope.freq_base`, 10000),
    // llama.cpp's rope type per arch (llama_model_rope_type): llama/mistral NORM, qwen2/qwen3 NEOX.
    neox: arch === "qwen2" || arch === "qwen3",
  };
  return {
    arch,
    nLayer: num(meta, `${arch}.block_count`),
    nEmbd,
    nHead,
    nHeadKv,
    headDim,
    nFf: num(meta, `${arch}.feed_forward_length`),
    nVocab,
    nCtxTrain: num(meta, `${arch}.context_length`, 2048),
    normEps: num(meta, `${arch}.attention.layer_norm_rms_epsilon`, 1e-5),
    rope,
  };
}

export class LlamaModel {
  readonly hp: LlamaHParams;
  private readonly tokEmbd: WeightMatrix;
  private readonly outNorm: Float32Array;
  private readonly output: WeightMatrix;
  private readonly layers: LayerWeights[] = [];
  // Activations, allocated once.
  private readonly x: Float32Array; // [nEmbd] residual stream
  private readonly xb: Float32Array; // [nEmbd] normed input
  private readonly q: Float32Array; // [nHead*headDim]
  private readonly k: Float32Array; // [nHeadKv*headDim]
  private readonly v: Float32Array; // [nHeadKv*headDim]
  private readonly att: Float32Array; // [nHead*headDim]
  private readonly hb: Float32Array; // [nFf]
  private readonly hb2: Float32Array; // [nFf]
  private readonly embdRow: Float32Array; // [nEmbd]

  /** `options.rope` overrides RoPE settings read from the metadata (e.g. `angleF32` to reproduce an f32 reference). */
  constructor(readonly header: GgufHeader, data: Uint8Array, options: { rope?: Partial<RopeSpec> } = {}) {
    const read = llamaHParams(header);
    const hp: LlamaHParams = options.rope ? { ...read, rope: { ...read.rope, ...options.rope } } : read;
    this.hp = hp;
    const w = new WeightSet(header, data);
    const qDim = hp.nHead * hp.headDim;
    const kvDim = hp.nHeadKv * hp.headDim;
    this.tokEmbd = w.matrix("token_embd.weight", hp.nEmbd, hp.nVocab);
    this.outNorm = w.vector("output_norm.weight", hp.nEmbd);
    this.output = w.has("output.weight") ? w.matrix("output.weight", hp.nEmbd, hp.nVocab) : this.tokEmbd;
    const opt = (name: string, n: number) => (w.has(name) ? w.vector(name, n) : null);
    for (let l = 0; l < hp.nLayer; l++) {
      const p = `blk.${l}.`;
      this.layers.push({
        attnNorm: w.vector(p + "attn_norm.weight", hp.nEmbd),
        wq: w.matrix(p + "attn_q.weight", hp.nEmbd, qDim),
        wk: w.matrix(p + "attn_k.weight", hp.nEmbd, kvDim),
        wv: w.matrix(p + "attn_v.weight", hp.nEmbd, kvDim),
        wo: w.matrix(p + "attn_output.weight", qDim, hp.nEmbd),
        bq: opt(p + "attn_q.bias", qDim),
        bk: opt(p + "attn_k.bias", kvDim),
        bv: opt(p + "attn_v.bias", kvDim),
        qNorm: opt(p + "attn_q_norm.weight", hp.headDim),
        kNorm: opt(p + "attn_k_norm.weight", hp.headDim),
        ffnNorm: w.vector(p + "ffn_norm.weight", hp.nEmbd),
        wGate: w.matrix(p + "ffn_gate.weight", hp.nEmbd, hp.nFf),
        wUp: w.matrix(p + "ffn_up.weight", hp.nEmbd, hp.nFf),
        wDown: w.matrix(p + "ffn_down.weight", hp.nFf, hp.nEmbd),
      });
    }
    this.x = new Float32Array(hp.nEmbd);
    this.xb = new Float32Array(hp.nEmbd);
    this.q = new Float32Array(qDim);
    this.k = new Float32Array(kvDim);
    this.v = new Float32Array(kvDim);
    this.att = new Float32Array(qDim);
    this.hb = new Float32Array(hp.nFf);
    this.hb2 = new Float32Array(hp.nFf);
    this.embdRow = new Float32Array(hp.nEmbd);
  }

  /**
   * Runs one token at position `pos` through every layer, writing its K/V to `kv`.
   * When `logits` is given ([nVocab]) it receives the output; skipping it saves the vocab matmul
   * for prompt tokens whose logits nobody reads.
   */
  forward(token: number, pos: number, kv: KvBackend, logits: Float32Array | null): void {
    const hp = this.hp;
    if (!Number.isInteger(token) || token < 0 || token >= hp.nVocab) {
      throw new ModelConfigError(`token id ${token} is outside the vocabulary (0..${hp.nVocab - 1})`, { field: "token" });
    }
    const x = this.x;
    embedRow(this.tokEmbd, token, this.embdRow);
    x.set(this.embdRow);
    for (let l = 0; l < hp.nLayer; l++) {
      const L = this.layers[l]!;
      rmsNorm(this.xb, x, L.attnNorm, hp.normEps, 0, hp.nEmbd);
      matvec(this.q, this.xb, L.wq);
      matvec(this.k, this.xb, L.wk);
      matvec(this.v, this.xb, L.wv);
      if (L.bq) addInPlace(this.q, L.bq);
      if (L.bk) addInPlace(this.k, L.bk);
      if (L.bv) addInPlace(this.v, L.bv);
      if (L.qNorm) for (let h = 0; h < hp.nHead; h++) rmsNorm(this.q, this.q, L.qNorm, hp.normEps, h * hp.headDim, hp.headDim);
      if (L.kNorm) for (let h = 0; h < hp.nHeadKv; h++) rmsNorm(this.k, this.k, L.kNorm, hp.normEps, h * hp.headDim, hp.headDim);
      kv.write(l, this.k, this.v);
      kv.attend(l, this.q, pos, this.att);
      matvec(this.xb, this.att, L.wo);
      addInPlace(x, this.xb);

      rmsNorm(this.xb, x, L.ffnNorm, hp.normEps, 0, hp.nEmbd);
      matvec(this.hb, this.xb, L.wGate);
      matvec(this.hb2, this.xb, L.wUp);
      const hb = this.hb, hb2 = this.hb2;
      for (let i = 0; i < hp.nFf; i++) {
        const g = hb[i]!;
        hb[i] = (g / (1 + Math.exp(-g))) * hb2[i]!;
      }
      matvec(this.xb, hb, L.wDown);
      addInPlace(x, this.xb);
    }
    if (logits) {
      rmsNorm(this.xb, x, this.outNorm, hp.normEps, 0, hp.nEmbd);
      matvec(logits, this.xb, this.output);
    }
  }
}

function embedRow(table: WeightMatrix, token: number, out: Float32Array): void {
  if (table.f32) out.set(table.f32.subarray(token * table.cols, (token + 1) * table.cols));
  else dequantizeRow(table.type, table.u8, token * table.rowBytes, out, 0, table.cols);
}

/** out[off..off+n) = x[off..off+n) / rms * w */
export function rmsNorm(out: Float32Array, x: Float32Array, w: Float32Array, eps: number, off: number, n: number): void {
  let ss = 0;
  for (let i = 0; i < n; i++) ss += x[off + i]! * x[off + i]!;
  const s = 1 / Math.sqrt(ss / n + eps);
  for (let i = 0; i < n; i++) out[off + i] = x[off + i]! * s * w[i]!;
}

function addInPlace(a: Float32Array, b: Float32Array): void {
  for (let i = 0; i < a.length; i++) a[i] = a[i]! + b[i]!;
}
