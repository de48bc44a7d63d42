// The forward pass on WebGPU for pre-norm decoders (the Llama family, Qwen2's Q/K/V biases, Gemma's
// per-head QK norms, post-norms, GeGLU, embedding scale, soft-caps and model-local sliding windows
// in cache groups of their own): weights uploaded once as stored, activations and the cache's pages on the GPU,
// every layer of a step encoded into one compute pass, logits read back for sampling. The cache
// (src/cache/) keeps its page table, policy and stats on the CPU: per step it says where each new
// token goes (pendingSlot) and which runs attention reads (attentionRuns), and this file uploads
// those few integers and the RoPE cos/sin rows they need. A score-based policy (H2O, TOVA) gets the
// attention weights it reads reduced on the GPU to one row of held slots per step (or one per query
// of a windowed H2O), read back with the logits and folded in by the cache (observeSummed). GPU
// errors come back typed (kernels.ts guard / check); releaseCache and dispose destroy the buffers.
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
import { checkGpuCodec, GpuPageStore, gpuStoreFactory, type BufferRange } from "./gpu-page-store.js";

/** Default tokens per forwardBatch step (activation rows allocated for it). */
const DEFAULT_MAX_BATCH = 64;

/**
 * One RoPE and cache group (layers with the same spec, head dim and sliding window share it: the
 * cache groups layers by sliding window) and its per-step tables.
 */
interface RopeSlot {
  /** A layer of the group: the cache's per-layer calls (pendingSlot, attentionRuns) take it. */
  readonly layer: number;
  readonly slots: Uint32Array; // [maxBatch][2] page, slot in this group
  readonly rotPos: Int32Array; // [maxBatch] rotation position of each new token
  readonly slotsBuf: GPUBuffer;
  /** The step's sizes as this group sees them (tokens held, runs): its K/V write and attention read it. */
  readonly step: GpuStep;
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
function checkPlan(plan: TransformerPlan): void {
  const fix = "use --backend cpu";
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

/**
 * A score-based policy's attention statistic for one cache group, reduced on the GPU (wgsl.ts
 * ATTENTION_STATS_WGSL): per step the group's layers add their head-averaged weights into
 * `buffer`, which is read back with the logits and handed to the cache (observeSummed).
 */
interface StatsSlot {
  /** A layer of the group (the cache's per-layer calls take it). */
  readonly layer: number;
  readonly group: number;
  readonly buffer: GPUBuffer; // [rows][window] f32
  /** Every query of the step summed into row 0 (unbounded H2O), else the last `rows` queries each in its own row. */
  readonly sumAll: boolean;
  readonly rows: number;
}

/** What one cache holds on the GPU besides its page stores' contents. */
interface CacheState {
  /** Every buffer made for the cache (page stores, statistics, the ops' uniforms): released with it. */
  readonly buffers: GPUBuffer[];
  /** Per cache group: its statistics, or null when its policy reads no weights. */
  readonly stats: (StatsSlot | null)[];
  /** Per layer: its group's statistics. */
  readonly layerStats: (StatsSlot | null)[];
  program: { layers: GpuOp[]; logits: GpuOp[] } | null;
}

/** Rows of a cache group's statistics buffer for a policy's observedQueries and the batch size. */
export function attentionStatsRows(observed: "sum" | number, maxBatchTokens: number): number {
  return observed === "sum" ? 1 : Math.min(observed, maxBatchTokens);
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
  private readonly ropes: RopeSlot[] = [];
  private readonly layerRope: number[] = [];
  private readonly buf: Record<"x" | "xb" | "xn" | "q" | "k" | "kRaw" | "v" | "att" | "hb" | "hb2" | "logits" | "scores" | "dummy", GPUBuffer>;
  private readonly weights: { attnNorm: GPUBuffer; ffnNorm: GPUBuffer; qNorm: GPUBuffer | null; kNorm: GPUBuffer | null; qBias: GPUBuffer | null; kBias: GPUBuffer | null; vBias: GPUBuffer | null; attnPostNorm: GPUBuffer | null; ffnPostNorm: GPUBuffer | null; wq: GpuMatrix; wk: GpuMatrix; wv: GpuMatrix; wo: GpuMatrix; wGate: GpuMatrix; wUp: GpuMatrix; wDown: GpuMatrix }[] = [];
  private readonly outNorm: GPUBuffer;
  private readonly output: GpuMatrix;
  /** Per cache: its buffers, statistics and ops (built on first use with that cache: they bind its page buffers). */
  private readonly states = new WeakMap<PagedKvCache, CacheState>();
  /** Caches released (releaseCache): a step on one is a typed error, not a GPU validation error. */
  private readonly released = new WeakSet<PagedKvCache>();
  private disposed = false;
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
    checkPlan(plan);
    const gpu = new GpuKernels(ctx, options.maxBindingBytes);
    this.gpu = gpu;
    this.step = gpu.step();
    this.stepOne = gpu.step();
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
        qNorm: t.qNorm !== null && w.has(t.qNorm) ? vec(t.qNorm, hp.headDim) : null,
        kNorm: t.kNorm !== null && w.has(t.kNorm) ? vec(t.kNorm, hp.headDim) : null,
        qBias: t.qBias !== null && w.has(t.qBias) ? vec(t.qBias, qDim) : null,
        kBias: t.kBias !== null && w.has(t.kBias) ? vec(t.kBias, kvDim) : null,
        vBias: t.vBias !== null && w.has(t.vBias) ? vec(t.vBias, kvDim) : null,
        attnPostNorm: t.attnPostNorm === null ? null : vec(t.attnPostNorm, hp.nEmbd),
        ffnPostNorm: t.ffnPostNorm === null ? null : vec(t.ffnPostNorm, hp.nEmbd),
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
      x: f(B * hp.nEmbd, "x"), xb: f(B * hp.nEmbd, "xb"), xn: f(B * hp.nEmbd, "xn"), q: f(B * qDim, "q"), k: f(B * kvDim, "k"), kRaw: f(B * kvDim, "k before norm"), v: f(B * kvDim, "v"),
      att: f(B * qDim, "att"), hb: f(B * hp.nFf, "hb"), hb2: f(B * hp.nFf, "hb2"), logits: f(hp.nVocab, "logits"),
      scores: f(B * hp.nHead * this.window, "scores"), dummy: f(4, "dummy"),
    };
    this.xHost = new Float32Array(B * hp.nEmbd);
    // One table set per distinct RoPE and sliding window: the cache shares one Rope per spec and
    // head dim, and keeps layers of each sliding window in a group (page table) of their own.
    const byKey = new Map<string, number>();
    plan.attention.forEach((a, l) => {
      const key = `${a.slidingWindow}/` + (a.rope === null ? "none" : `${a.headDimK}/${JSON.stringify(a.rope)}`);
      let i = byKey.get(key);
      if (i === undefined) {
        i = this.ropes.length;
        byKey.set(key, i);
        this.ropes.push(this.ropeSlot(a.rope, a.headDimK, l));
      }
      this.layerRope.push(i);
    });
  }

  private ropeSlot(spec: RopeSpec | null, headDim: number, layer: number): RopeSlot {
    const B = this.maxBatchTokens, gpu = this.gpu;
    const half = spec === null ? 1 : spec.nRot / 2;
    // Runs: at most one per page a sequence holds, plus one per hole; pages of a window of W tokens.
    const maxRuns = 2 * Math.ceil(this.window / 16) + 8;
    const meta = new AttentionMeta(maxRuns, B, half);
    return {
      layer,
      slots: new Uint32Array(2 * B),
      rotPos: new Int32Array(B),
      slotsBuf: gpu.storage(8 * B, "slots"),
      step: gpu.step(),
      rope: spec === null ? null : new Rope(spec, headDim),
      half,
      meta,
      kcs: new Float32Array(B * half * 2),
      kcsBuf: gpu.storage(B * half * 8, "k cos/sin"),
      metaBuf: gpu.storage(meta.meta.byteLength, "runs"),
      csBuf: gpu.storage(meta.cs.byteLength, "q cos/sin"),
    };
  }

  /**
   * A paged cache for this model whose pages are GPU buffers (f32, f16, int8 or int4). Score-based
   * policies (H2O, TOVA) get their attention statistic reduced on the GPU, one small array per
   * cache group and step (StatsSlot).
   */
  createCache(config: CacheConfig): GpuCache {
    this.checkLive();
    for (const a of this.attention) checkGpuCodec(config.codec, a.headDimK);
    const kind = config.policy.kind;
    // Score-based policies compact their pages (moving tokens between pages): int4 pages keep
    // per-page parameters a moved token would have to be re-encoded under.
    if ((kind === "h2o" || kind === "tova") && config.codec === "int4") throw new WebGpuUnsupportedError(`the score-based policy ${kind} with`, "int4 pages", "use codec f32, f16 or int8 with H2O / TOVA on the GPU");
    if (config.pageSize < 16) throw new WebGpuUnsupportedError("a page size of", config.pageSize, "the attention tables hold the runs of 16-token pages; use pageSize 16 or more");
    if (config.windowTokens > this.window) throw new WebGpuUnsupportedError("a cache window of", `${config.windowTokens} tokens`, `this model was built for at most ${this.window}`);
    const created: GpuPageStore[] = [];
    const buffers: GPUBuffer[] = [];
    const made = this.gpu.collect(buffers, () => {
      const cache = new PagedKvCache(config, modelCacheShape(this), { createStore: gpuStoreFactory(this.gpu, created, { openPages: config.maxSequences }) });
      const stats = cache.groupPlans.map((g, gi): StatsSlot | null => {
        const policy = cache.groups[gi]!.policy;
        if (!policy.usesScores) return null;
        const rows = attentionStatsRows(policy.observedQueries, this.maxBatchTokens);
        return { layer: g.layers[0]!, group: gi, buffer: this.gpu.storage(rows * this.window * 4, "attention stats"), sumAll: policy.observedQueries === "sum", rows };
      });
      return { cache, stats };
    }, () => this.gpu.release(buffers));
    const { cache, stats } = made;
    for (const g of cache.groups) {
      if (g.config.windowTokens > this.window) {
        this.gpu.release(buffers);
        throw new WebGpuUnsupportedError("a cache group window of", `${g.config.windowTokens} tokens`, `this model was built for at most ${this.window}`);
      }
    }
    // The cache creates each group's stores in turn, per layer of the group: K, then V.
    const stores: [GpuPageStore, GpuPageStore][] = new Array(this.hp.nLayer);
    const layerStats: (StatsSlot | null)[] = new Array(this.hp.nLayer);
    let i = 0;
    cache.groupPlans.forEach((g, gi) => {
      for (const l of g.layers) {
        stores[l] = [created[i++]!, created[i++]!];
        layerStats[l] = stats[gi]!;
      }
    });
    this.states.set(cache, { buffers, stats, layerStats, program: null });
    return { cache, stores };
  }

  /**
   * Reads sequence `seqId`'s pages back (every layer's K and V, through staging buffers of at most
   * the binding size) and hands them to its stores, so that `c.cache.snapshot(seqId)` runs on the
   * CPU until the returned function drops them. Run it between forward passes, and snapshot before
   * the next one.
   */
  async readPages(c: GpuCache, seqId: number): Promise<() => void> {
    this.state(c);
    const reads: { store: GpuPageStore; page: number; ranges: BufferRange[] }[] = [];
    const pagesOf = c.cache.sequencePages(seqId);
    c.cache.groupPlans.forEach((g, gi) => {
      for (const l of g.layers) {
        for (const store of c.stores[l]!) for (const page of pagesOf[gi]!) reads.push({ store, page, ranges: store.exportRanges(page) });
      }
    });
    const held = new Map<GpuPageStore, Map<number, Uint8Array>>();
    // readMany lays each range out rounded up to 4 bytes; one map per batch of whole pages within the binding size.
    const padded = (r: BufferRange) => Math.ceil(r.bytes / 4) * 4;
    const sizes = reads.map((r) => r.ranges.reduce((n, x) => n + padded(x), 0));
    for (let i = 0; i < reads.length; ) {
      let j = i + 1, size = sizes[i]!;
      while (j < reads.length && size + sizes[j]! <= this.gpu.maxBindingBytes) size += sizes[j++]!;
      const batch = reads.slice(i, j);
      const ranges = batch.flatMap((r) => r.ranges.filter((x) => x.bytes > 0).map((x) => ({ buffer: r.store.buffer, bytes: x.bytes, offset: x.offset })));
      const got = size === 0 ? new Uint8Array(0) : new Uint8Array((await this.gpu.readMany(ranges)).buffer);
      let at = 0;
      for (const r of batch) {
        const body = new Uint8Array(r.ranges.reduce((n, x) => n + x.bytes, 0));
        let o = 0;
        for (const x of r.ranges) {
          body.set(got.subarray(at, at + x.bytes), o);
          o += x.bytes;
          at += padded(x);
        }
        let m = held.get(r.store);
        if (m === undefined) held.set(r.store, (m = new Map()));
        m.set(r.page, body);
      }
      i = j;
    }
    for (const [store, pages] of held) store.holdExports(pages);
    return () => {
      for (const store of held.keys()) store.holdExports(null);
    };
  }

  /** Destroys the cache's GPU buffers (its pages, statistics and ops); the cache cannot run afterwards. */
  releaseCache(c: GpuCache): void {
    const st = this.states.get(c.cache);
    if (st === undefined) return;
    this.gpu.release(st.buffers);
    this.states.delete(c.cache);
    this.released.add(c.cache);
  }

  /** Destroys every GPU buffer of the model and of its caches; nothing runs afterwards. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.gpu.destroy();
  }

  private checkLive(): void {
    if (this.disposed) throw new WebGpuUnsupportedError("a model used after", "dispose()", "load the model again");
  }

  private state(c: GpuCache): CacheState {
    this.checkLive();
    const st = this.states.get(c.cache);
    if (st === undefined) {
      if (this.released.has(c.cache)) throw new WebGpuUnsupportedError("a cache used after", "its release (Session.dispose)", "create a new session");
      throw new WebGpuUnsupportedError("a cache it did not make:", "a CPU paged cache", "create the cache with createCache (Session does)");
    }
    return st;
  }

  private program(c: GpuCache, st: CacheState): { layers: GpuOp[]; logits: GpuOp[] } {
    // Op uniforms bind the cache's buffers: they are the cache's, released with it.
    return (st.program ??= this.gpu.collect(st.buffers, () => this.buildProgram(c, st)));
  }

  private buildProgram(c: GpuCache, st: CacheState): { layers: GpuOp[]; logits: GpuOp[] } {
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
      const layouts = { k: kStore.layout, v: vStore.layout };
      const hd = a.headDimK;
      layers.push(gpu.rmsNorm(buf.xb, buf.x, W.attnNorm, hp.nEmbd, eps, step));
      // A projection, plus its bias (qwen2) where the file has one.
      const project = (out: GPUBuffer, m: GpuMatrix, bias: GPUBuffer | null, n: number): GpuOp[] =>
        bias === null ? [gpu.matmul(out, buf.xb, m, hp.nEmbd, n, step)] : [gpu.matmul(out, buf.xb, m, hp.nEmbd, n, step), gpu.elementwise("bias", out, bias, n, step)];
      // Per-head QK norm (qwen3, gemma3): the projection into a scratch row, normed into q / k.
      if (W.qNorm !== null) layers.push(...project(buf.att, W.wq, W.qBias, qDim), gpu.rmsNorm(buf.q, buf.att, W.qNorm, hd, eps, step, { perTok: hp.nHead }));
      else layers.push(...project(buf.q, W.wq, W.qBias, qDim));
      if (W.kNorm !== null) layers.push(...project(buf.kRaw, W.wk, W.kBias, kvDim), gpu.rmsNorm(buf.k, buf.kRaw, W.kNorm, hd, eps, step, { perTok: a.nHeadKv }));
      else layers.push(...project(buf.k, W.wk, W.kBias, kvDim));
      layers.push(
        ...project(buf.v, W.wv, W.vBias, kvDim),
        gpu.int4Jobs(kStore, "pre"), gpu.int4Jobs(vStore, "pre"),
        gpu.kvWrite(kStore.buffer, vStore.buffer, buf.k, buf.v, r.slotsBuf, r.kcsBuf, { nHeadKv: a.nHeadKv, headDim: hd, nRot, neox, pageSize, layouts }, r.step),
        gpu.int4Jobs(kStore, "post"), gpu.int4Jobs(vStore, "post"),
        gpu.attention(buf.att, buf.q, kStore.buffer, vStore.buffer, r.metaBuf, r.csBuf, buf.scores, {
          nHead: hp.nHead, nHeadKv: a.nHeadKv, headDim: hd, nRot, neox, pageSize, window: this.window, maxRuns: r.meta.maxRuns,
          slidingWindow: a.slidingWindow, scale: a.scale, softcap: a.softcap, layouts, normalize: st.layerStats[l] !== null,
        }, r.step),
      );
      const ls = st.layerStats[l]!;
      if (ls !== null) layers.push(gpu.attentionStats(ls.buffer, buf.scores, { nHead: hp.nHead, window: this.window, sumAll: ls.sumAll }, r.step));
      // Post-norms (gemma2/3): the branch's output normed before the residual add.
      const branch = (out: GPUBuffer, postNorm: GPUBuffer | null) => {
        if (postNorm === null) return gpu.elementwise("add", buf.x, out, hp.nEmbd, step);
        return [gpu.rmsNorm(buf.xn, out, postNorm, hp.nEmbd, eps, step), gpu.elementwise("add", buf.x, buf.xn, hp.nEmbd, step)];
      };
      layers.push(
        gpu.matmul(buf.xb, buf.att, W.wo, qDim, hp.nEmbd, step),
        ...[branch(buf.xb, W.attnPostNorm)].flat(),
        gpu.rmsNorm(buf.xb, buf.x, W.ffnNorm, hp.nEmbd, eps, step),
        gpu.matmul(buf.hb, buf.xb, W.wGate, hp.nEmbd, hp.nFf, step),
        gpu.matmul(buf.hb2, buf.xb, W.wUp, hp.nEmbd, hp.nFf, step),
        gpu.elementwise(this.plan.activation === "gelu" ? "geglu" : "swiglu", buf.hb, buf.hb2, hp.nFf, step),
        gpu.matmul(buf.xb, buf.hb, W.wDown, hp.nFf, hp.nEmbd, step),
        ...[branch(buf.xb, W.ffnPostNorm)].flat(),
      );
    }
    const logits: GpuOp[] = [
      gpu.rmsNorm(buf.xb, buf.x, this.outNorm, hp.nEmbd, eps, step, { lastOnly: true }),
      gpu.matmul(buf.logits, buf.xb, this.output, hp.nEmbd, hp.nVocab, this.stepOne),
    ];
    if (this.plan.finalSoftcap > 0) logits.push(gpu.elementwise("softcap", buf.logits, buf.dummy, hp.nVocab, this.stepOne, { cap: this.plan.finalSoftcap, perStep: true }));
    return { layers, logits };
  }

  /**
   * tokens[start .. start+n) of sequence `seqId`, whose n slots the caller reserved in c.cache
   * (n <= maxBatchTokens), through every layer; `logits` ([nVocab]) receives the last token's.
   */
  async forwardBatch(tokens: ArrayLike<number>, start: number, n: number, c: GpuCache, seqId: number, logits: Float32Array | null): Promise<void> {
    const hp = this.hp, gpu = this.gpu, cache = c.cache;
    const st = this.state(c);
    // A GPU error since the last step (an allocation, a pipeline, uncaptured) is thrown here, typed.
    await gpu.check();
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
    // Where the batch goes and what attention reads, per cache group (and RoPE).
    const runsOf = this.ropes.map((r) => {
      for (let i = 0; i < n; i++) {
        cache.pendingSlot(r.layer, seqId, i, this.slot);
        r.slots[2 * i] = this.slot[0]!;
        r.slots[2 * i + 1] = this.slot[1]!;
        r.rotPos[i] = this.slot[2]!;
      }
      const g = cache.groupPlans.findIndex((gp) => gp.layers.includes(r.layer));
      return { runs: cache.attentionRuns(r.layer, seqId), held: cache.groups[g]!.length(seqId) };
    });
    const p = this.program(c, st);
    const int4 = cache.config.codec === "int4";
    const pageSize = cache.config.pageSize;
    // int4 pages are sealed after the pass that writes their last slot (gpu-page-store.ts): such a
    // cache runs the batch as consecutive passes that each write one page per group (causal, so
    // the same result).
    const cut = (i: number) => this.ropes.some((r) => r.slots[2 * i] !== r.slots[2 * i - 2] || r.slots[2 * i - 1]! + 1 >= pageSize);
    for (let c0 = 0; c0 < n; ) {
      let c1 = c0 + 1;
      if (int4) while (c1 < n && !cut(c1)) c1++;
      else c1 = n;
      const m = c1 - c0;
      gpu.write(this.buf.x, 0, new Uint8Array(x.buffer, c0 * hp.nEmbd * 4, m * hp.nEmbd * 4));
      this.ropes.forEach((r, ri) => {
        const { runs, held } = runsOf[ri]!;
        gpu.write(r.slotsBuf, 0, new Uint8Array(r.slots.buffer, c0 * 8, m * 8));
        for (let i = 0; i < m; i++) r.rope?.cosSin(r.rotPos[c0 + i]!, r.kcs, i * r.half * 2);
        r.meta.fill(runs, held - (n - c1), m, r.rope);
        gpu.write(r.kcsBuf, 0, new Uint8Array(r.kcs.buffer, 0, m * r.half * 8));
        gpu.write(r.metaBuf, 0, new Uint8Array(r.meta.meta.buffer));
        if (r.meta.nRows > 0) gpu.write(r.csBuf, 0, new Uint8Array(r.meta.cs.buffer, 0, r.meta.nRows * r.half * 8));
      });
      if (int4) {
        c.stores.forEach(([k, v], l) => {
          const sl = this.ropes[this.layerRope[l]!]!.slots.subarray(2 * c0, 2 * c1);
          k.prepareWrites(sl, m);
          v.prepareWrites(sl, m);
        });
      }
      this.step.write(m);
      this.ropes.forEach((r, ri) => {
        // The statistics' row offset: the pass's query i is the batch's c0 + i, whose row is that minus n - rows.
        const ls = st.layerStats[r.layer]!;
        const pad = ls === null || ls.sumAll ? 0 : n - ls.rows - c0;
        r.step.write(m, runsOf[ri]!.held - (n - c1), runsOf[ri]!.runs.n, pad);
      });
      this.stepOne.write(1);
      const last = c1 === n;
      const first = c0 === 0;
      gpu.guard(`running a forward step of ${m} tokens`, () => {
        const enc = gpu.device.createCommandEncoder();
        if (first) for (const s of st.stats) if (s !== null) enc.clearBuffer(s.buffer);
        const pass = enc.beginComputePass();
        for (const op of p.layers) op.encode(pass, m);
        if (last && logits !== null) for (const op of p.logits) op.encode(pass, 1);
        pass.end();
        gpu.device.queue.submit([enc.finish()]);
      });
      c0 = c1;
    }
    await this.readBack(c, st, n, seqId, logits);
    await gpu.check();
  }

  /**
   * Reads the step's logits (when asked) and its attention statistics (score-based policies) back
   * through one map, and hands the statistics to the cache as its CPU attention's hook would.
   */
  private async readBack(c: GpuCache, st: CacheState, n: number, seqId: number, logits: Float32Array | null): Promise<void> {
    const W = this.window;
    const ranges: { buffer: GPUBuffer; bytes: number; offset?: number }[] = [];
    if (logits !== null) ranges.push({ buffer: this.buf.logits, bytes: this.hp.nVocab * 4 });
    // Rows the policy reads: sumAll one; else the last min(rows, n) (rows of earlier queries stay zero).
    const firstRow = (s: StatsSlot) => (s.sumAll ? 0 : Math.max(0, s.rows - n));
    for (const s of st.stats) if (s !== null) ranges.push({ buffer: s.buffer, bytes: (s.rows - firstRow(s)) * W * 4, offset: firstRow(s) * W * 4 });
    if (ranges.length === 0) return;
    const out = await this.gpu.readMany(ranges);
    let at = 0;
    if (logits !== null) {
      logits.set(out.subarray(0, this.hp.nVocab));
      at = this.hp.nVocab;
    }
    const cache = c.cache;
    for (const s of st.stats) {
      if (s === null) continue;
      const held = cache.groups[s.group]!.length(seqId);
      const r0 = firstRow(s);
      if (s.sumAll) {
        cache.observeSummed(s.layer, seqId, n - 1, n, out.subarray(at, at + W), held);
      } else {
        // Query qi's row is qi - (n - rows); a query without one (before the policy's last
        // observedQueries) only advances the policy's clock, which reads no weights.
        for (let qi = 0; qi < n; qi++) {
          const row = Math.max(r0, qi - (n - s.rows));
          const off = at + (row - r0) * W;
          cache.observeSummed(s.layer, seqId, qi, n, out.subarray(off, off + W), held - n + qi + 1);
        }
      }
      at += (s.rows - r0) * W;
    }
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
