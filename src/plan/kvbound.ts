// kvbound's own runtime: the bytes its paged KV cache (src/cache) reserves for a model and config.
// Not a model of the runtime but the runtime's own sizing rule: planPoolLayout is the function
// PagedKvCache calls to size its pool, and pageStoreBytes the one each codec's store reserves by,
// so this prediction and the runtime cannot drift (kvbound.test.ts constructs caches to check).

import { CacheConfigError, InvalidSettingError } from "../errors.js";
import { resolveCacheConfig, type CacheConfig, type CacheConfigInput } from "../cache/config.js";
import type { CodecKind } from "../cache/codecs/types.js";
import { planPoolLayout } from "../cache/page-pool.js";
import { cacheScratchBytes, planCacheGroups } from "../cache/paged-kv-cache.js";
import { cacheShapeFromSpec } from "./cache-shape.js";
import { modelMemory, type ModelMemory } from "../wasm/model-layout.js";
import { kvLayers, type ModelSpec } from "../spec/model-spec.js";
import type { ComputeEstimate } from "./compute.js";
import type { EngineKvResult, PlanSettings } from "./types.js";
import { weightBytes, type WeightsEstimate } from "./weights.js";

/**
 * The general.architecture values kvbound's runtime runs: the table in src/model/architectures.ts,
 * repeated here because planning imports no model (test/kvbound-runtime.test.ts holds them equal).
 */
export const KVBOUND_ARCHS: readonly string[] = ["llama", "mistral", "smollm3", "qwen2", "qwen3", "phi3", "gemma2", "gemma3"];

/** Fallback window when neither a window, ctx, nor the model's training context is known. */
export const KVBOUND_DEFAULT_CONTEXT = 4096;

/**
 * The cache config the planner assumes for `settings`: WebLLM window names; unset windows take
 * `ctx`, else the model's training context, as context_window_size; `seqs` is maxSequences.
 * `settings.budgetBytes` is NOT the cache budget here: fit/rank pass the whole memory budget
 * (weights included) under that name, so the planned pool is the window-sized one.
 */
export function kvboundCacheInput(spec: ModelSpec, settings: PlanSettings): CacheConfigInput {
  let contextWindowSize = settings.contextWindowSize;
  const slidingWindowSize = settings.slidingWindowSize;
  if ((contextWindowSize === undefined || contextWindowSize === -1) && (slidingWindowSize === undefined || slidingWindowSize === -1)) {
    contextWindowSize = settings.ctx ?? spec.nCtxTrain ?? KVBOUND_DEFAULT_CONTEXT;
  }
  const input: Record<string, unknown> = { contextWindowSize: contextWindowSize ?? -1, slidingWindowSize: slidingWindowSize ?? -1 };
  if (settings.attentionSinkSize !== undefined) input.attentionSinkSize = settings.attentionSinkSize;
  if (settings.pageSize !== undefined) input.pageSize = settings.pageSize;
  if (settings.seqs !== undefined) input.maxSequences = settings.seqs;
  if (settings.prefillChunkSize !== undefined) input.prefillChunkSize = settings.prefillChunkSize;
  if (settings.codec !== undefined) input.codec = settings.codec as CodecKind;
  return input as CacheConfigInput;
}

/** The kvbound engine rule for `plan`: the window-sized pool for the settings (see kvboundCacheInput). */
export function kvboundKv(spec: ModelSpec, settings: PlanSettings): EngineKvResult {
  let config: CacheConfig;
  try {
    config = resolveCacheConfig(kvboundCacheInput(spec, settings));
  } catch (err) {
    if (err instanceof CacheConfigError && err.details.field === "codec") {
      throw new InvalidSettingError(err.message, { setting: "codec", value: err.details.value });
    }
    throw err;
  }
  return kvboundKvForConfig(spec, config);
}

/**
 * Exactly the bytes `new PagedKvCache(config, cacheShapeFromSpec(spec))` reserves, budget included:
 * each layer group (planCacheGroups, the function the cache itself calls) sized by planPoolLayout.
 */
export function kvboundKvForConfig(spec: ModelSpec, config: CacheConfig): EngineKvResult {
  const shape = cacheShapeFromSpec(spec);
  const groups = planCacheGroups(config, shape);
  const mainGroup = groups[0]!;
  const layout = planPoolLayout(mainGroup.config, mainGroup.shape);
  const sliding = config.policy.kind !== "context";
  const notes: string[] = [
    `kvbound paged cache: ${layout.nPages} pages of ${config.pageSize} tokens shared by ${groups.length > 1 ? "the full-attention" : "every"} layer${groups.length > 1 ? "s" : ""}, ` +
      (mainGroup.config.budgetBytes === null
        ? `${config.maxSequences} sequence(s) x ${layout.pagesPerSequence} pages (the most one ${config.windowTokens}-token ${config.policy.kind} window can span)`
        : `as many as fit budgetBytes ${mainGroup.config.budgetBytes}`),
    `codec ${config.codec} for K and V (bytes from the codec's own pageStoreBytes, side buffers included)`,
  ];
  if (sliding) notes.push(`${config.policy.kind} window of ${config.windowTokens} tokens (sinks included): bytes stay flat however long the text grows`);
  if (shape.layers.length < spec.layers.length) {
    notes.push(`${spec.layers.length - shape.layers.length} layer(s) store no K/V of their own (recurrent or shared-KV layers are not in this cache)`);
  }
  if (spec.mla) notes.push("MLA: one latent head per layer stored as K (kvLoraRank + ropeDim) and V (kvLoraRank)");
  const caches: EngineKvResult["kv"]["caches"][number][] = [];
  let kBytes = 0;
  let vBytes = 0;
  for (const g of groups) {
    const gl = g === mainGroup ? layout : planPoolLayout(g.config, g.shape);
    kBytes += gl.kBytes;
    vBytes += gl.vBytes;
    caches.push({
      kind: g.kind === "swa" || sliding ? "swa" : "full",
      cells: gl.nPages * g.config.pageSize,
      layers: g.layers.length,
      streams: 1,
      typeK: config.codec,
      typeV: config.codec,
      kBytes: gl.kBytes,
      vBytes: gl.vBytes,
      bytesPerCell: gl.bytesPerPage / g.config.pageSize,
    });
    if (g.kind === "swa") {
      notes.push(
        `the model's own sliding-window layers (${g.layers.length}, window ${g.slidingWindow}) keep ${g.config.windowTokens} tokens ` +
          `(n_swa - 1 + prefill chunk ${config.prefillChunkSize}) in a group of their own: ${gl.nPages} pages, flat at any length`,
      );
    }
  }
  if (spec.nSwa > 0 && groups.length === 1) notes.push(`the model's own SWA layers (window ${spec.nSwa}, ${spec.swaType}) are stored like full layers`);
  return {
    settings: {
      contextWindowSize: config.contextWindowSize,
      slidingWindowSize: config.slidingWindowSize,
      attentionSinkSize: config.attentionSinkSize,
      pageSize: config.pageSize,
      codec: config.codec,
      maxSequences: config.maxSequences,
      prefillChunkSize: config.prefillChunkSize,
      budgetBytes: config.budgetBytes,
      policy: config.policy.kind,
    },
    kv: { totalBytes: kBytes + vBytes, kBytes, vBytes, caches },
    notes,
    extra: {
      nPages: layout.nPages,
      pagesPerSequence: layout.pagesPerSequence,
      bytesPerPage: layout.bytesPerPage,
      windowTokens: config.windowTokens,
      // The cache's attention scratch and bookkeeping besides its pages (counted under compute).
      cacheScratchBytes: cacheScratchBytes(config, shape),
    },
  };
}

/**
 * The matrix type kvbound assumes when the spec carries no per-tensor types (registry or JSON
 * specs): the file's quant name reduced to the ggml type most of its matrices use.
 */
function uniformMatrixType(quant: string): string {
  const q = quant.toUpperCase();
  if (/^Q[2-6]_K(_[SML])?$/.test(q)) return q.slice(0, 4);
  if (q === "BF16" || q === "F16" || q === "F32" || /^Q[458]_[01]$/.test(q)) return q;
  return "unknown";
}

/**
 * What kvbound's TransformerModel holds besides the file bytes, replayed by the model's own layout
 * function (modelMemory in src/wasm/model-layout.ts, which the constructor also uses) from the
 * spec's tensor types. Null when the spec lacks the sizes (n_vocab, n_ff, a KV layer).
 */
export function kvboundModelMemory(spec: ModelSpec): (ModelMemory & { readonly typesFrom: "tensors" | "quant" }) | null {
  const first = kvLayers(spec)[0]?.layer;
  if (spec.nVocab === null || spec.nFf === null || first === undefined) return null;
  const types = spec.tensorTypes;
  let typeOf: (name: string) => string | undefined;
  if (types !== undefined) typeOf = (name) => (Object.prototype.hasOwnProperty.call(types, name) ? types[name] : undefined);
  else {
    const t = uniformMatrixType(spec.weights?.quant ?? "unknown");
    // Without tensor names, assume untied embeddings (an output matrix of the same type).
    typeOf = () => t;
  }
  const dims = { nLayer: spec.nLayer, nEmbd: spec.nEmbd, nHead: spec.nHead, nHeadKv: first.nHeadKv, headDim: first.headDimK, nFf: spec.nFf, nVocab: spec.nVocab };
  return { ...modelMemory(dims, typeOf), typesFrom: types !== undefined ? "tensors" : "quant" };
}

/**
 * kvbound runtime weights, each tensor counted once as loadModel holds it from a file, URL or Blob:
 * the tensors kept JS-side (the file's tensor bytes less those whose only copy is in wasm memory)
 * and the wasm copies. The load stages file rows in the arena's activation region (compute), so
 * it has no buffer of its own. A model loaded from bytes in memory keeps the caller's buffer
 * instead (the caller's to count).
 */
export function kvboundWeights(spec: ModelSpec): WeightsEstimate | null {
  const file = weightBytes(spec);
  if (file === null) return null;
  const mem = kvboundModelMemory(spec);
  if (mem === null) return file;
  return { ...file, bytes: file.bytes - mem.wasmTensorFileBytes + mem.wasmWeightBytes };
}

/**
 * kvbound runtime compute: the model's activation buffers and q8 scratch (for its 64-token batch,
 * in wasm memory), the Session's f32 logits row, and `cacheScratchBytes`: the cache's attention
 * scratch (scores of queryBlock queries over the window, run table, kernel scratch; see
 * cacheScratchBytes in src/cache/paged-kv-cache.ts), which the plan's cache line does not hold.
 */
export function kvboundCompute(spec: ModelSpec, cacheScratch = 0): ComputeEstimate | null {
  const mem = kvboundModelMemory(spec);
  if (mem === null || spec.nVocab === null) return null;
  const logits = spec.nVocab * 4;
  return {
    bytes: mem.activationBytes + logits + cacheScratch,
    note:
      `kvbound runtime: ${mem.activationBytes} B of activations (${mem.kernels === "wasm" ? "wasm memory, 64-token batch, q8 scratch" : "JS arrays"}) + ` +
      `logits ${spec.nVocab} x 4 B` +
      (cacheScratch > 0 ? ` + ${cacheScratch} B of the cache's attention scratch` : "") +
      `; weights include ${mem.wasmWeightBytes} B of matrices held only in wasm memory (in place of their ${mem.wasmTensorFileBytes} file bytes) ` +
      (mem.typesFrom === "tensors" ? "(from the file's tensor types)" : `(assuming every matrix is ${uniformMatrixType(spec.weights?.quant ?? "unknown")})`),
  };
}
