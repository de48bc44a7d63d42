// kvbound's WebGPU backend (src/model/webgpu/): every GPUBuffer its forward pass and its GPU page
// stores create, replayed from the model's shape and the cache config. Not an estimate: the test
// (test/webgpu-memory.test.ts) builds the model and a cache on an adapter, counts the bytes of
// every buffer the device created (device.ts trackGpuMemory) and holds them equal to this plan.
// What it replays, buffer by buffer (a change there must change this file):
//   forward.ts   weights: per layer attn/ffn norm vectors (f32), QK-norm vectors where the file
//                has them, gemma's post-norms, and the q k v o gate up down matrices as stored
//                (kernels.ts uploadMatrix: row chunks that fit one storage binding); output_norm;
//                the output matrix (the token embedding again when tied; token_embd itself stays
//                on the CPU, where the input rows are looked up).
//                activations: x xb xn q k kRaw v att hb hb2 [maxBatch rows], logits, scores
//                [maxBatch][nHead][window], dummy; per RoPE / sliding window the slots, a step
//                uniform, the k cos/sin, runs and q cos/sin tables; two step uniforms; per cache
//                used, the ops' parameter uniforms (kernels.ts int4Jobs included); per cache
//                group whose policy reads attention weights (H2O, TOVA) an attention stats
//                buffer [rows][window] and a stats op (16-byte uniform) per layer of the group.
//   gpu-page-store.ts  per layer K and V (per cache group): all pages in one buffer (its own
//                gpuPageStoreBytes), a one-page bounce buffer, int4's job lists.
//   kernels.ts   storage buffers rounded up to 4 bytes (16 at least), uniforms to 16; reading
//                the logits back maps a staging buffer of nVocab x 4 bytes (plus the stats rows,
//                read through the same buffer) for the step's length.

import { InvalidSettingError } from "../errors.js";
import type { CacheConfig } from "../cache/config.js";
import type { CodecKind, KvRole, PageShape } from "../cache/codecs/types.js";
import { GPU_CODECS, gpuPageBytes, gpuPageStoreBytes, INT4_MAX_JOBS, type GpuCodec } from "../cache/gpu-page-bytes.js";
import { planPoolLayout } from "../cache/page-pool.js";
import { planCacheGroups } from "../cache/paged-kv-cache.js";
import { createPolicy } from "../cache/policies/index.js";
import { ggmlRowBytes, ggmlTypeByName } from "../gguf/ggml-types.js";
import { kvLayers, type ModelSpec } from "../spec/model-spec.js";
import { cacheShapeFromSpec } from "./cache-shape.js";

/** Tokens per forwardBatch step the forward allocates activations for (forward.ts DEFAULT_MAX_BATCH). */
export const WEBGPU_DEFAULT_BATCH_TOKENS = 64;
/** WebGPU's default maxStorageBufferBindingSize (128 MiB): what an adapter offers at least. */
export const WEBGPU_DEFAULT_BINDING_BYTES = 128 * 1024 * 1024;

// kernels.ts: storage(bytes) and uniform(words) sizes.
const storage = (bytes: number): number => Math.max(16, Math.ceil(bytes / 4) * 4);
const uniform = (bytes: number): number => Math.max(16, Math.ceil(bytes / 16) * 16);
/** Parameter uniform bytes of each op (kernels.ts: 8 u32 words, attention 16). */
const OP_UNIFORM = uniform(32);
const ATTENTION_UNIFORM = uniform(64);
/** Runs the attention tables hold per sequence (forward.ts ropeSlot). */
const maxRunsFor = (window: number): number => 2 * Math.ceil(window / 16) + 8;

export interface WebGpuPlanOptions {
  /** Rows of every activation buffer: the forward's maxBatchTokens (default 64). */
  readonly maxBatchTokens?: number;
  /** The adapter's storage binding limit: matrices are split into row chunks under it (default 128 MiB). */
  readonly maxBindingBytes?: number;
  /** Caches built from the model that have run a step (each binds its own op uniforms); default 1. */
  readonly caches?: number;
}

/** One matrix as uploaded: the chunk buffers' sizes. */
export interface WebGpuMatrixPlan {
  readonly name: string;
  readonly type: string;
  readonly rows: number;
  readonly rowBytes: number;
  readonly chunks: readonly number[];
}

export interface WebGpuMemory {
  /** Norm vectors and matrices as uploaded. */
  readonly weightsBytes: number;
  /** Per layer K and V page stores (all pages, no bounce buffers). */
  readonly kBytes: number;
  readonly vBytes: number;
  /** One page per store, for copy-on-write page copies (int4: an f32 page, and its job lists). */
  readonly bounceBytes: number;
  /** x xb q k v att hb hb2 logits slots scores dummy. */
  readonly activationBytes: number;
  /** Per RoPE: the k cos/sin, runs and q cos/sin tables. */
  readonly ropeTableBytes: number;
  /** Two step uniforms plus each cache's op parameter uniforms. */
  readonly uniformBytes: number;
  /** Score-based policies (H2O, TOVA): each cache group's attention statistics, [rows][window] f32. */
  readonly statsBytes: number;
  /** The staging buffer a step's logits (and attention statistics) are read back through, alive while it is mapped. */
  readonly readbackBytes: number;
  /** Live between steps: everything but the readback buffer. */
  readonly steadyBytes: number;
  /** The most ever live: steadyBytes + readbackBytes. */
  readonly peakBytes: number;
  readonly nPages: number;
  readonly window: number;
  readonly maxBatchTokens: number;
  readonly maxBindingBytes: number;
  readonly matrices: readonly WebGpuMatrixPlan[];
  readonly notes: readonly string[];
}

/**
 * Bytes of the GPU buffers one layer's K or V store creates for `nPages` pages: the store itself
 * (gpu-page-store.ts gpuPageStoreBytes, the runtime's own sizing rule, codec by codec), its
 * one-page bounce buffer, and for int4 the job list (2 lists of INT4_MAX_JOBS 16-byte jobs).
 * Codecs the GPU does not store (fp8) are refused.
 */
export function webgpuStoreBuffers(codec: CodecKind, role: KvRole, shape: PageShape, openPages: number): { store: number; bounce: number; jobs: number } {
  if (!(GPU_CODECS as readonly string[]).includes(codec)) {
    throw new InvalidSettingError(`codec ${codec}: the WebGPU backend stores ${GPU_CODECS.join(", ")} pages`, { setting: "codec", value: codec });
  }
  const kind = codec as GpuCodec;
  const values = shape.pageSize * shape.nHeadKv * shape.headDim;
  const page = gpuPageBytes(kind, shape);
  return {
    store: storage(gpuPageStoreBytes(shape, kind, role, openPages)),
    // int4 pages go through an f32 page (a residual); int4 V pages are no larger than K pages.
    bounce: storage(Math.max(role === "v" && kind === "int4" ? values / 2 + 4 * shape.pageSize * shape.nHeadKv : page, kind === "int4" ? values * 4 : 0)),
    jobs: kind === "int4" ? storage(2 * INT4_MAX_JOBS * 16) : 0,
  };
}

function matrixPlan(name: string, type: string, rows: number, cols: number, maxBinding: number): WebGpuMatrixPlan {
  const t = ggmlTypeByName(type);
  const rowBytes = t === undefined ? null : ggmlRowBytes(t, cols);
  if (rowBytes === null) throw new InvalidSettingError(`${name}: type ${type} with ${cols} values a row has no row size the WebGPU backend uploads`, { setting: "backend", value: "webgpu" });
  const perChunk = Math.floor((maxBinding - 4) / rowBytes);
  if (perChunk < 1) throw new InvalidSettingError(`${name}: a ${rowBytes}-byte row exceeds the ${maxBinding}-byte storage binding`, { setting: "maxBindingBytes", value: maxBinding });
  const chunks: number[] = [];
  for (let row0 = 0; row0 < rows; row0 += perChunk) chunks.push(storage(Math.min(perChunk, rows - row0) * rowBytes));
  return { name, type, rows, rowBytes, chunks };
}

/** Matrix type of a GGUF tensor, or (no tensor types: registry specs) the file's quant. */
function typeOf(spec: ModelSpec, name: string): string | undefined {
  const types = spec.tensorTypes;
  if (types !== undefined) return Object.prototype.hasOwnProperty.call(types, name) ? types[name] : undefined;
  const q = (spec.weights?.quant ?? "F16").toUpperCase();
  return /^Q[2-6]_K(_[SML])?$/.test(q) ? q.slice(0, 4) : q;
}

/**
 * Every GPU byte `new WebGpuTransformer(ctx, header, data, plan, { window: config.windowTokens,
 * maxBatchTokens })` plus `createCache(config)` allocate, and the step's readback.
 */
export function webgpuMemory(spec: ModelSpec, config: CacheConfig, options: WebGpuPlanOptions = {}): WebGpuMemory {
  const B = options.maxBatchTokens ?? WEBGPU_DEFAULT_BATCH_TOKENS;
  const maxBinding = options.maxBindingBytes ?? WEBGPU_DEFAULT_BINDING_BYTES;
  const caches = options.caches ?? 1;
  if (!Number.isInteger(B) || B < 1) throw new InvalidSettingError(`maxBatchTokens ${B} is invalid: use a positive integer`, { setting: "maxBatchTokens", value: B });
  if (!Number.isInteger(maxBinding) || maxBinding < 1024) throw new InvalidSettingError(`maxBindingBytes ${maxBinding} is invalid: use the adapter's maxStorageBufferBindingSize`, { setting: "maxBindingBytes", value: maxBinding });
  const first = kvLayers(spec)[0]?.layer;
  if (spec.nVocab === null || spec.nFf === null || first === undefined) {
    throw new InvalidSettingError(`${spec.name}: the WebGPU plan needs n_vocab, n_ff and an attention layer`, { setting: "backend", value: "webgpu" });
  }
  if (kvLayers(spec).length !== spec.nLayer || spec.mla !== null || spec.experts !== null) {
    throw new InvalidSettingError(`${spec.name} (${spec.arch}): the WebGPU backend runs dense decoders whose every layer is attention with its own K/V`, { setting: "backend", value: "webgpu" });
  }
  if (config.pageSize < 16) throw new InvalidSettingError(`page size ${config.pageSize}: the WebGPU backend needs pages of 16 tokens or more`, { setting: "pageSize", value: config.pageSize });
  const nVocab = spec.nVocab, nFf = spec.nFf, nEmbd = spec.nEmbd, nHead = spec.nHead;
  const headDim = first.headDimK, nHeadKv = first.nHeadKv;
  const qDim = nHead * headDim, kvDim = nHeadKv * headDim;
  const window = config.windowTokens;
  const notes: string[] = [];

  // Weights, in forward.ts's order.
  const has = (name: string): boolean => spec.tensorTypes !== undefined && typeOf(spec, name) !== undefined;
  const matrices: WebGpuMatrixPlan[] = [];
  let weightsBytes = 0;
  const vec = (n = nEmbd): void => void (weightsBytes += storage(n * 4));
  const mat = (name: string, rows: number, cols: number, tensor = name): WebGpuMatrixPlan => {
    const type = typeOf(spec, tensor);
    if (type === undefined) throw new InvalidSettingError(`${spec.name}: tensor ${tensor} is missing`, { setting: "backend", value: "webgpu" });
    const m = matrixPlan(name, type, rows, cols, maxBinding);
    matrices.push(m);
    for (const c of m.chunks) weightsBytes += c;
    return m;
  };
  const fusedQkv = has("blk.0.attn_qkv.weight");
  const fusedGateUp = spec.tensorTypes !== undefined && !has("blk.0.ffn_gate.weight") && has("blk.0.ffn_up.weight");
  const gemma = spec.arch === "gemma2" || spec.arch === "gemma3";
  // Per layer: its matrices, and the extra ops it runs (QK norms, post-norms).
  let programBytes = 0;
  const chunksOf = (ms: readonly WebGpuMatrixPlan[]): number => ms.reduce((n, m) => n + m.chunks.length, 0);
  for (let l = 0; l < spec.nLayer; l++) {
    const p = `blk.${l}.`;
    vec(); // attn_norm
    vec(); // ffn_norm
    const qNorm = has(p + "attn_q_norm.weight"), kNorm = has(p + "attn_k_norm.weight");
    if (qNorm) vec(headDim);
    if (kNorm) vec(headDim);
    // qwen2's Q/K/V biases: a vector each and an add after its projection.
    const biases = [has(p + "attn_q.bias") ? qDim : 0, has(p + "attn_k.bias") ? kvDim : 0, has(p + "attn_v.bias") ? kvDim : 0].filter((n) => n > 0);
    for (const n of biases) vec(n);
    // gemma2/3 post-norms (archs/gemma.ts): after attention and after the FFN.
    const postNorms = gemma ? 2 : 0;
    for (let i = 0; i < postNorms; i++) vec();
    const qkv = fusedQkv ? p + "attn_qkv.weight" : undefined;
    const gu = fusedGateUp ? p + "ffn_up.weight" : undefined;
    const ms = [
      mat(p + "attn_q.weight", qDim, nEmbd, qkv),
      mat(p + "attn_k.weight", kvDim, nEmbd, qkv),
      mat(p + "attn_v.weight", kvDim, nEmbd, qkv),
      mat(p + "attn_output.weight", nEmbd, qDim),
      mat(p + "ffn_gate.weight", nFf, nEmbd, gu),
      mat(p + "ffn_up.weight", nFf, nEmbd, gu),
      mat(p + "ffn_down.weight", nEmbd, nFf),
    ];
    // attn norm, kv-write, two adds, ffn norm, glu; attention; a norm per QK norm and post-norm; a uniform per matrix chunk.
    programBytes += (6 + (qNorm ? 1 : 0) + (kNorm ? 1 : 0) + postNorms + biases.length) * OP_UNIFORM + ATTENTION_UNIFORM + chunksOf(ms) * OP_UNIFORM;
  }
  vec(); // output_norm
  const tied = typeOf(spec, "output.weight") === undefined;
  const output = mat(tied ? "token_embd.weight (tied output)" : "output.weight", nVocab, nEmbd, tied ? "token_embd.weight" : "output.weight");
  if (tied) notes.push("tied output: the token embedding is uploaded as the output matrix (its input rows are read on the CPU)");
  // gemma2's final logit softcap (archs/gemma.ts: 30 unless the file says otherwise) is one more op.
  const finalSoftcap = spec.arch === "gemma2";
  programBytes += OP_UNIFORM + output.chunks.length * OP_UNIFORM + (finalSoftcap ? OP_UNIFORM : 0);

  // Activations (forward.ts constructor): x xb xn, q att, k kRaw v, hb hb2, logits, scores, dummy.
  const activationBytes =
    3 * storage(B * nEmbd * 4) + 2 * storage(B * qDim * 4) + 3 * storage(B * kvDim * 4) + 2 * storage(B * nFf * 4) +
    storage(nVocab * 4) + storage(B * nHead * window * 4) + storage(4 * 4);
  // Per RoPE and sliding window (forward.ts ropeSlot): slots, a step uniform, k cos/sin, runs, q cos/sin.
  const swa = spec.nSwa > 0 && spec.swaType === "standard" ? spec.nSwa : 0;
  // SmolLM3 leaves RoPE out of every 4th layer (archs/llama.ts, as llama.cpp hard-codes it): a slot
  // of its own whose tables hold one (unused) cos/sin pair.
  const noRope = (l: number): boolean => spec.arch === "smollm3" && (l + 1) % 4 === 0;
  const slots = new Map<string, number>();
  kvLayers(spec).forEach(({ layer }, l) => {
    const key = `${layer.swa ? swa : 0}/` + (noRope(l) ? "none" : `${layer.headDimK}`);
    slots.set(key, noRope(l) ? 1 : layer.headDimK / 2); // a RoPE rotating the whole head otherwise
  });
  const maxRuns = maxRunsFor(window);
  let ropeTableBytes = 0;
  for (const half of slots.values()) {
    ropeTableBytes += storage(8 * B) + uniform(16) + storage(B * half * 8) + storage((4 * maxRuns + B * maxRuns) * 4) + storage(Math.max(1, B * maxRuns * half * 2) * 4);
  }

  // Pages: each cache group (the cache's own group and pool rules), per layer K and V plus a page of bounce each.
  const shape = cacheShapeFromSpec(spec);
  const groups = planCacheGroups(config, shape);
  let kBytes = 0, vBytes = 0, bounceBytes = 0, int4JobUniforms = 0, nPages = 0, statsBytes = 0, statsReadback = 0;
  for (const g of groups) {
    // forward.ts createCache / attentionStatsRows: one statistics row for unbounded H2O (a sum over
    // the step's queries), else the policy's last observedQueries queries up to the batch size.
    const policy = createPolicy(g.config.policy);
    if (policy.usesScores) {
      if (config.codec === "int4") throw new InvalidSettingError(`policy ${g.config.policy.kind} with int4 pages: the WebGPU backend compacts score-based caches, which int4 pages do not allow`, { setting: "codec", value: "int4" });
      const rows = policy.observedQueries === "sum" ? 1 : Math.min(policy.observedQueries, B);
      statsBytes += storage(rows * window * 4);
      statsReadback += rows * window * 4;
      programBytes += g.layers.length * uniform(16);
    }
    if (g.config.windowTokens > window) throw new InvalidSettingError(`${spec.name}: a cache group of ${g.config.windowTokens} tokens exceeds the ${window}-token window the model is built for`, { setting: "backend", value: "webgpu" });
    const layout = planPoolLayout(g.config, g.shape);
    if (g === groups[0]) nPages = layout.nPages;
    for (const layer of g.shape.layers) {
      for (const role of ["k", "v"] as const) {
        const b = webgpuStoreBuffers(config.codec, role, { nPages: layout.nPages, pageSize: g.config.pageSize, nHeadKv: layer.nHeadKv, headDim: role === "k" ? layer.headDimK : layer.headDimV }, config.maxSequences);
        if (role === "k") kBytes += b.store;
        else vBytes += b.store;
        bounceBytes += b.bounce + b.jobs;
        // kernels.ts int4Jobs: a pre-write and a post-write op per store, each with a 16-byte uniform.
        if (config.codec === "int4") int4JobUniforms += 2 * uniform(16);
      }
    }
  }
  kBytes *= caches;
  vBytes *= caches;
  bounceBytes *= caches;
  statsBytes *= caches;
  const uniformBytes = 2 * uniform(16) + caches * (programBytes + int4JobUniforms);
  const readbackBytes = Math.ceil((nVocab * 4) / 4) * 4 + statsReadback;
  const steadyBytes = weightsBytes + kBytes + vBytes + bounceBytes + activationBytes + ropeTableBytes + uniformBytes + statsBytes;
  notes.push(
    `WebGPU buffers: weights as stored in ${matrices.reduce((n, m) => n + m.chunks.length, 0)} buffers (row chunks under a ${maxBinding}-byte binding), ` +
      `activations for ${B}-token batches, scores over a ${window}-token window, ${nPages} pages of ${config.pageSize} tokens a layer${groups.length > 1 ? " (main group)" : ""}; ` +
      `peak includes the ${readbackBytes}-byte logits readback`,
  );
  return {
    weightsBytes, kBytes, vBytes, bounceBytes, activationBytes, ropeTableBytes, uniformBytes, statsBytes, readbackBytes,
    steadyBytes, peakBytes: steadyBytes + readbackBytes,
    nPages, window, maxBatchTokens: B, maxBindingBytes: maxBinding, matrices, notes,
  };
}

/** The backends `plan --engine kvbound --backend` takes. */
export const KVBOUND_BACKENDS = ["cpu", "webgpu"] as const;
export type KvboundBackend = (typeof KVBOUND_BACKENDS)[number];

export function parseBackend(value: string): KvboundBackend {
  const v = value.toLowerCase();
  for (const b of KVBOUND_BACKENDS) if (b === v) return b;
  throw new InvalidSettingError(`backend ${JSON.stringify(value)} is unknown; use one of ${KVBOUND_BACKENDS.join(", ")}`, { setting: "backend", value });
}
