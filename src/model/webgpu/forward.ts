// The forward pass on WebGPU for pre-norm decoders without biases, QK norms or post-norms (the
// Llama family): weights uploaded once as stored, activations and the cache's pages on the GPU,
// every layer of a step encoded into one compute pass, logits read back for sampling. The cache
// (src/cache/) keeps its page table, policy and stats on the CPU: per step it says where each new
// token goes (pendingSlot) and which runs attention reads (attentionRuns), and this file uploads
// those few integers and the RoPE cos/sin rows they need.
/// <reference types="@webgpu/types" />

import type { GgufHeader } from "../../gguf/header.js";
import { ModelConfigError, WebGpuUnsupportedError } from "../../errors.js";
import { resolveCacheConfig, type CacheConfig } from "../../cache/config.js";
import { PagedKvCache } from "../../cache/paged-kv-cache.js";
import { Rope, type RopeSpec } from "../../cache/rope.js";
import type { LayerAttention, ModelHParams } from "../causal-lm.js";
import type { MatrixRef, TransformerPlan } from "../archs/plan.js";
import { modelCacheShape } from "../cache-kv.js";
import type { WeightMatrix } from "../kernels/matvec.js";
import { dequantizeRow } from "../kernels/quant-rows.js";
import { WeightSet } from "../weights.js";
import { AttentionMeta } from "./attention-meta.js";
import type { GpuContext } from "./device.js";
import { GpuKernels, GpuStep, type GpuMatrix, type GpuOp } from "./kernels.js";
import { GpuPageStore, gpuStoreFactory } from "./gpu-page-store.js";

/** Default tokens per forwardBatch step (activation rows allocated for it). */
const DEFAULT_MAX_BATCH = 64;

/** One RoPE (layers with the same spec and head dim share it) and its per-step tables. */
interface RopeSlot {
  readonly rope: Rope | null;
  readonly half: number;
  readonly meta: AttentionMeta;
  readonly kcs: Float32Array; // [maxBatch][half][2] cos/sin of the new tokens' rotation positions
  readonly kcsBuf: GPUBuffer;
  readonly metaBuf: GPUBuffer;
  readonly csBuf: GPUBuffer;
}

function rowsOf(m: WeightMatrix, ref: MatrixRef): WeightMatrix {
  if (ref.fusedRows === undefined) return m;
  const u8 = m.u8.subarray(ref.row0 * m.rowBytes, (ref.row0 + ref.rows) * m.rowBytes);
  return { ...m, name: `${m.name}[${ref.row0}:${ref.row0 + ref.rows}]`, rows: ref.rows, u8, i8: new Int8Array(u8.buffer, u8.byteOffset, u8.byteLength), f32: null };
}

/** Refuses what this forward pass does not compute, naming it. */
function checkPlan(plan: TransformerPlan, w: WeightSet): void {
  const fix = "use --backend cpu";
  for (const t of plan.layers) {
    for (const name of [t.qBias, t.kBias, t.vBias]) if (name !== null && w.has(name)) throw new WebGpuUnsupportedError("architecture", `${plan.hp.arch} (attention biases, ${name})`, fix);
    for (const name of [t.qNorm, t.kNorm]) if (name !== null && w.has(name)) throw new WebGpuUnsupportedError("architecture", `${plan.hp.arch} (per-head QK norm, ${name})`, fix);
    if (t.attnPostNorm !== null || t.ffnPostNorm !== null) throw new WebGpuUnsupportedError("architecture", `${plan.hp.arch} (post-norms)`, fix);
  }
  for (const a of plan.attention) {
    if (a.headDimK !== a.headDimV) throw new WebGpuUnsupportedError("architecture", `${plan.hp.arch} (K head dim ${a.headDimK} != V head dim ${a.headDimV})`, fix);
  }
}

/** Where a WebGPU model keeps a sequence's K/V: a PagedKvCache whose pages are GPU buffers. */
export interface GpuCache {
  readonly cache: PagedKvCache;
  /** Per layer: [K store, V store]. */
  readonly stores: readonly (readonly [GpuPageStore, GpuPageStore])[];
}

export class WebGpuTransformer {
  readonly hp: ModelHParams;
  readonly attention: readonly LayerAttention[];
  readonly maxBatchTokens: number;
  readonly gpu: GpuKernels;
  private readonly plan: TransformerPlan;
  private readonly tokEmbd: WeightMatrix;
  private readonly step: GpuStep;
  private readonly stepOne: GpuStep; // nTok = 1: the logits of the last token
  private readonly xHost: Float32Array; // [maxBatch][nEmbd]
  private readonly slot = new Int32Array(3);
  private readonly slots: Uint32Array; // [maxBatch][2] page, slot
  private readonly ropes: RopeSlot[] = [];
  private readonly layerRope: number[] = [];
  private readonly buf: Record<"x" | "xb" | "q" | "k" | "v" | "att" | "hb" | "hb2" | "logits" | "slots" | "scores" | "dummy", GPUBuffer>;
  private readonly weights: { attnNorm: GPUBuffer; ffnNorm: GPUBuffer; wq: GpuMatrix; wk: GpuMatrix; wv: GpuMatrix; wo: GpuMatrix; wGate: GpuMatrix; wUp: GpuMatrix; wDown: GpuMatrix }[] = [];
  private readonly outNorm: GPUBuffer;
  private readonly output: GpuMatrix;
  /** Ops per cache (built on first use with that cache: they bind its page buffers). */
  private readonly programs = new WeakMap<PagedKvCache, { layers: GpuOp[]; logits: GpuOp[] }>();
  private readonly window: number;

  /**
   * `window`: the most tokens a sequence's cache holds (the attention scores scratch is sized by
   * it): the cache config's windowTokens.
   */
  constructor(ctx: GpuContext, header: GgufHeader, data: Uint8Array, plan: TransformerPlan, options: { maxBatchTokens?: number; window: number; maxBindingBytes?: number }) {
    const hp = plan.hp;
    this.hp = hp;
    this.plan = plan;
    this.attention = plan.attention;
    this.window = options.window;
    const B = options.maxBatchTokens ?? DEFAULT_MAX_BATCH;
    if (!Number.isInteger(B) || B < 1) throw new ModelConfigError(`maxBatchTokens ${B} is invalid: use a positive integer`, { field: "maxBatchTokens" });
    this.maxBatchTokens = B;
    const w = new WeightSet(header, data);
    checkPlan(plan, w);
    const gpu = new GpuKernels(ctx, options.maxBindingBytes);
    this.gpu = gpu;
    this.step = new GpuStep(gpu.device);
    this.stepOne = new GpuStep(gpu.device);
    const qDim = hp.nHead * hp.headDim, kvDim = hp.nHeadKv * hp.headDim;
    this.tokEmbd = w.matrix("token_embd.weight", hp.nEmbd, hp.nVocab);
    const vec = (name: string, n: number) => {
      const f = w.vector(name, n);
      const b = gpu.storage(f.byteLength, name);
      gpu.write(b, 0, new Uint8Array(f.buffer, f.byteOffset, f.byteLength));
      return b;
    };
    const fused = new Map<string, WeightMatrix>();
    const mat = (ref: MatrixRef, cols: number): GpuMatrix => {
      if (ref.fusedRows === undefined) return gpu.uploadMatrix(w.matrix(ref.tensor, cols, ref.rows));
      let whole = fused.get(ref.tensor);
      if (whole === undefined) fused.set(ref.tensor, (whole = w.matrix(ref.tensor, cols, ref.fusedRows)));
      return gpu.uploadMatrix(rowsOf(whole, ref));
    };
    for (const t of plan.layers) {
      this.weights.push({
        attnNorm: vec(t.attnNorm, hp.nEmbd),
        ffnNorm: vec(t.ffnNorm, hp.nEmbd),
        wq: mat(t.q, hp.nEmbd), wk: mat(t.k, hp.nEmbd), wv: mat(t.v, hp.nEmbd),
        wo: gpu.uploadMatrix(w.matrix(t.o, qDim, hp.nEmbd)),
        wGate: mat(t.gate, hp.nEmbd), wUp: mat(t.up, hp.nEmbd),
        wDown: gpu.uploadMatrix(w.matrix(t.down, hp.nFf, hp.nEmbd)),
      });
    }
    this.outNorm = vec("output_norm.weight", hp.nEmbd);
    this.output = gpu.uploadMatrix(plan.output === "token_embd.weight" ? this.tokEmbd : w.matrix(plan.output, hp.nEmbd, hp.nVocab));
    const f = (n: number, label: string) => gpu.storage(n * 4, label);
    this.buf = {
      x: f(B * hp.nEmbd, "x"), xb: f(B * hp.nEmbd, "xb"), q: f(B * qDim, "q"), k: f(B * kvDim, "k"), v: f(B * kvDim, "v"),
      att: f(B * qDim, "att"), hb: f(B * hp.nFf, "hb"), hb2: f(B * hp.nFf, "hb2"), logits: f(hp.nVocab, "logits"),
      slots: f(2 * B, "slots"), scores: f(B * hp.nHead * this.window, "scores"), dummy: f(4, "dummy"),
    };
    this.xHost = new Float32Array(B * hp.nEmbd);
    this.slots = new Uint32Array(2 * B);
    // One table set per distinct RoPE, as the cache shares one Rope per spec and head dim.
    const byKey = new Map<string, number>();
    for (const a of plan.attention) {
      const key = a.rope === null ? "none" : `${a.headDimK}/${JSON.stringify(a.rope)}`;
      let i = byKey.get(key);
      if (i === undefined) {
        i = this.ropes.length;
        byKey.set(key, i);
        this.ropes.push(this.ropeSlot(a.rope, a.headDimK));
      }
      this.layerRope.push(i);
    }
  }

  private ropeSlot(spec: RopeSpec | null, headDim: number): RopeSlot {
    const B = this.maxBatchTokens, gpu = this.gpu;
    const half = spec === null ? 1 : spec.nRot / 2;
    // Runs: at most one per page a sequence holds, plus one per hole; pages of a window of W tokens.
    const maxRuns = 2 * Math.ceil(this.window / 16) + 8;
    const meta = new AttentionMeta(maxRuns, B, half);
    return {
      rope: spec === null ? null : new Rope(spec, headDim),
      half,
      meta,
      kcs: new Float32Array(B * half * 2),
      kcsBuf: gpu.storage(B * half * 8, "k cos/sin"),
      metaBuf: gpu.storage(meta.meta.byteLength, "runs"),
      csBuf: gpu.storage(meta.cs.byteLength, "q cos/sin"),
    };
  }

  /** A paged cache for this model whose pages are GPU buffers (f32; no score-based policies, no SWA groups). */
  createCache(config: CacheConfig): GpuCache {
    if (config.codec !== "f32") throw new WebGpuUnsupportedError("cache pages of codec", config.codec, "use codec f32 with the WebGPU backend");
    const kind = config.policy.kind;
    if (kind === "h2o" || kind === "tova") throw new WebGpuUnsupportedError("the score-based policy", kind, "its attention statistics are not computed on the GPU yet; use --backend cpu");
    if (config.pageSize < 16) throw new WebGpuUnsupportedError("a page size of", config.pageSize, "the attention tables hold the runs of 16-token pages; use pageSize 16 or more");
    if (config.windowTokens > this.window) throw new WebGpuUnsupportedError("a cache window of", `${config.windowTokens} tokens`, `this model was built for at most ${this.window}`);
    const created: GpuPageStore[] = [];
    const cache = new PagedKvCache(config, modelCacheShape(this), { createStore: gpuStoreFactory(this.gpu, created) });
    if (cache.groups.length > 1) throw new WebGpuUnsupportedError("layers with their own sliding window", this.hp.arch, "use --backend cpu");
    const stores: [GpuPageStore, GpuPageStore][] = [];
    for (let l = 0; l < this.hp.nLayer; l++) stores.push([created[2 * l]!, created[2 * l + 1]!]);
    return { cache, stores };
  }

  private program(c: GpuCache): { layers: GpuOp[]; logits: GpuOp[] } {
    let p = this.programs.get(c.cache);
    if (p !== undefined) return p;
    const { gpu, hp, buf, step } = this;
    const eps = hp.normEps;
    const qDim = hp.nHead * hp.headDim, kvDim = hp.nHeadKv * hp.headDim;
    const pageSize = c.cache.config.pageSize;
    const layers: GpuOp[] = [];
    for (let l = 0; l < hp.nLayer; l++) {
      const W = this.weights[l]!, a = this.attention[l]!, r = this.ropes[this.layerRope[l]!]!;
      const [kStore, vStore] = c.stores[l]!;
      const nRot = a.rope === null ? 0 : a.rope.nRot;
      const neox = a.rope?.neox ?? false;
      layers.push(
        gpu.rmsNorm(buf.xb, buf.x, W.attnNorm, hp.nEmbd, eps, step),
        gpu.matmul(buf.q, buf.xb, W.wq, hp.nEmbd, qDim, step),
        gpu.matmul(buf.k, buf.xb, W.wk, hp.nEmbd, kvDim, step),
        gpu.matmul(buf.v, buf.xb, W.wv, hp.nEmbd, kvDim, step),
        gpu.kvWrite(kStore.buffer, vStore.buffer, buf.k, buf.v, buf.slots, r.kcsBuf, { nHeadKv: a.nHeadKv, headDim: a.headDimK, nRot, neox, pageSize }, step),
        gpu.attention(buf.att, buf.q, kStore.buffer, vStore.buffer, r.metaBuf, r.csBuf, buf.scores, {
          nHead: hp.nHead, nHeadKv: a.nHeadKv, headDim: a.headDimK, nRot, neox, pageSize, window: this.window, maxRuns: r.meta.maxRuns,
          slidingWindow: a.slidingWindow, scale: a.scale, softcap: a.softcap,
        }, step),
        gpu.matmul(buf.xb, buf.att, W.wo, qDim, hp.nEmbd, step),
        gpu.elementwise("add", buf.x, buf.xb, hp.nEmbd, step),
        gpu.rmsNorm(buf.xb, buf.x, W.ffnNorm, hp.nEmbd, eps, step),
        gpu.matmul(buf.hb, buf.xb, W.wGate, hp.nEmbd, hp.nFf, step),
        gpu.matmul(buf.hb2, buf.xb, W.wUp, hp.nEmbd, hp.nFf, step),
        gpu.elementwise(this.plan.activation === "gelu" ? "geglu" : "swiglu", buf.hb, buf.hb2, hp.nFf, step),
        gpu.matmul(buf.xb, buf.hb, W.wDown, hp.nFf, hp.nEmbd, step),
        gpu.elementwise("add", buf.x, buf.xb, hp.nEmbd, step),
      );
    }
    const logits: GpuOp[] = [
      gpu.rmsNorm(buf.xb, buf.x, this.outNorm, hp.nEmbd, eps, step, { lastOnly: true }),
      gpu.matmul(buf.logits, buf.xb, this.output, hp.nEmbd, hp.nVocab, this.stepOne),
    ];
    if (this.plan.finalSoftcap > 0) logits.push(gpu.elementwise("softcap", buf.logits, buf.dummy, hp.nVocab, this.stepOne, { cap: this.plan.finalSoftcap, perStep: true }));
    p = { layers, logits };
    this.programs.set(c.cache, p);
    return p;
  }

  /**
   * tokens[start .. start+n) of sequence `seqId`, whose n slots the caller reserved in c.cache
   * (n <= maxBatchTokens), through every layer; `logits` ([nVocab]) receives the last token's.
   */
  async forwardBatch(tokens: ArrayLike<number>, start: number, n: number, c: GpuCache, seqId: number, logits: Float32Array | null): Promise<void> {
    const hp = this.hp, gpu = this.gpu, cache = c.cache;
    if (!Number.isInteger(n) || n < 1 || n > this.maxBatchTokens || start < 0 || start + n > tokens.length) {
      throw new ModelConfigError(`forwardBatch of ${n} tokens from ${start} is invalid: use 1..${this.maxBatchTokens} tokens inside the ${tokens.length} given`, { field: "n" });
    }
    const x = this.xHost;
    for (let i = 0; i < n; i++) {
      const token = tokens[start + i]!;
      if (!Number.isInteger(token) || token < 0 || token >= hp.nVocab) {
        throw new ModelConfigError(`token id ${token} is outside the vocabulary (0..${hp.nVocab - 1})`, { field: "token" });
      }
      const m = this.tokEmbd;
      if (m.f32 !== null) for (let j = 0; j < hp.nEmbd; j++) x[i * hp.nEmbd + j] = m.f32[token * hp.nEmbd + j]!;
      else dequantizeRow(m.type, m.u8, token * m.rowBytes, x, i * hp.nEmbd, hp.nEmbd);
      const s = this.plan.embedScale;
      if (s !== 1) for (let j = 0; j < hp.nEmbd; j++) x[i * hp.nEmbd + j] = x[i * hp.nEmbd + j]! * s;
    }
    gpu.write(this.buf.x, 0, new Uint8Array(x.buffer, 0, n * hp.nEmbd * 4));
    // Where the batch goes and what attention reads: one cache group, so the same for every layer.
    for (let i = 0; i < n; i++) {
      cache.pendingSlot(0, seqId, i, this.slot);
      this.slots[2 * i] = this.slot[0]!;
      this.slots[2 * i + 1] = this.slot[1]!;
      for (const r of this.ropes) r.rope?.cosSin(this.slot[2]!, r.kcs, i * r.half * 2);
    }
    gpu.write(this.buf.slots, 0, new Uint8Array(this.slots.buffer, 0, n * 8));
    const runs = cache.attentionRuns(0, seqId);
    const held = cache.length(seqId);
    for (const r of this.ropes) {
      r.meta.fill(runs, held, n, r.rope);
      gpu.write(r.kcsBuf, 0, new Uint8Array(r.kcs.buffer, 0, n * r.half * 8));
      gpu.write(r.metaBuf, 0, new Uint8Array(r.meta.meta.buffer));
      if (r.meta.nRows > 0) gpu.write(r.csBuf, 0, new Uint8Array(r.meta.cs.buffer, 0, r.meta.nRows * r.half * 8));
    }
    this.step.write(n, held, runs.n);
    this.stepOne.write(1);
    const p = this.program(c);
    const enc = gpu.device.createCommandEncoder();
    const pass = enc.beginComputePass();
    for (const op of p.layers) op.encode(pass, n);
    if (logits !== null) for (const op of p.logits) op.encode(pass, 1);
    pass.end();
    gpu.device.queue.submit([enc.finish()]);
    if (logits !== null) logits.set(await gpu.read(this.buf.logits, hp.nVocab * 4));
  }

  /** One token (its slot reserved in c.cache). */
  forward(token: number, c: GpuCache, seqId: number, logits: Float32Array | null): Promise<void> {
    return this.forwardBatch([token], 0, 1, c, seqId, logits);
  }
}

/** A cache config for the GPU model's defaults (tests, quick use): a context window of `tokens`. */
export function gpuContextConfig(tokens: number): CacheConfig {
  return resolveCacheConfig({ contextWindowSize: tokens, codec: "f32" });
}
