// vLLM's KV cache rule (V1 engine): per-layer pages of `block_size` tokens, layers grouped into
// "KV cache groups" that share one block pool, and all memory left after weights and the
// activation peak turned into blocks. Mirrors, without copying:
//   vllm/v1/kv_cache_interface.py  (AttentionSpec / FullAttentionSpec / MLAAttentionSpec page sizes,
//                                   SlidingWindowSpec.max_memory_usage_bytes)
//   vllm/v1/core/kv_cache_utils.py (get_kv_cache_groups, _get_kv_cache_groups_uniform_page_size,
//                                   get_num_blocks, get_max_concurrency_for_kv_cache_config,
//                                   _report_kv_cache_config, _max_memory_usage_bytes_from_groups)
//   vllm/config/cache.py           (gpu_memory_utilization default 0.92, block_size 16)
//   vllm/config/model.py           (get_num_kv_heads: max(1, kv_heads // tp); MLA: 1;
//                                   verify_with_parallel_config: heads % tp == 0)
//   vllm/model_executor/layers/linear.py (QKVParallelLinear: KV heads split by tp, or replicated
//                                   tp / kv_heads times when tp >= kv_heads; `divide` asserts both)
//   vllm/engine/arg_utils.py       (max_num_batched_tokens default: 8192 for `vllm serve` on
//                                   GPUs with >= 70 GiB, else 2048)

import { InvalidSettingError, UnknownCacheTypeError } from "../errors.js";
import { kvLayers, type ModelSpec } from "../spec/model-spec.js";
import { computeEstimate, defaultComputeInputs } from "./compute.js";
import { checkCount, formatBytes, parseFraction, MAX_BUDGET_BYTES, MAX_CONTEXT_TOKENS } from "./parse.js";
import type { EngineKvResult, KvCachePlan, PlanSettings } from "./types.js";
import { weightBytes } from "./weights.js";

export const VLLM_DEFAULT_GPU_MEMORY_UTILIZATION = 0.92;
export const VLLM_DEFAULT_BLOCK_SIZE = 16;
/** Block sizes vLLM's CUDA attention backends accept (CacheConfig / --block-size choices). */
export const VLLM_BLOCK_SIZES: readonly number[] = [1, 8, 16, 32, 64, 128, 256];
const GIB = 1024 ** 3;

/** Bytes per KV element by --kv-cache-dtype; "auto" = the model dtype, taken as 2 (bf16/fp16:
 *  what checkpoints ship; fp8/int4 weight quantization does not change the KV dtype). */
export const VLLM_KV_DTYPE_BYTES: Readonly<Record<string, number>> = {
  auto: 2,
  bfloat16: 2,
  float16: 2,
  fp8: 1,
  fp8_e4m3: 1,
  fp8_e5m2: 1,
};

type GroupKind = "full" | "swa" | "mla";

interface KindInfo {
  readonly kind: GroupKind;
  readonly layers: number;
  /** Tokens per block for this kind (block_size, scaled up when vLLM unifies page sizes). */
  readonly blockTokens: number;
  readonly pageK: number;
  readonly pageV: number;
}

/** What vLLM needs per request at `maxModelLen` for one layer of `kind`, in blocks
 *  (FullAttentionSpec / SlidingWindowSpec.max_memory_usage_bytes divided by the page size). */
export function vllmBlocksPerRequest(kind: GroupKind, maxModelLen: number, blockTokens: number, slidingWindow: number, maxNumBatchedTokens: number): number {
  switch (kind) {
    case "full":
    case "mla":
      return Math.ceil(maxModelLen / blockTokens);
    case "swa": {
      // The last window-1 computed tokens plus one scheduled chunk, never more than max_model_len;
      // +1 block because the window rarely starts on a block boundary.
      const tokens = Math.min(slidingWindow - 1 + maxNumBatchedTokens, maxModelLen);
      return Math.ceil(tokens / blockTokens) + 1;
    }
    default:
      return kind satisfies never;
  }
}

/** vLLM's get_num_blocks: `available // page // layers`, never negative. */
export function vllmNumBlocks(availableBytes: number, pageBytes: number, layersPerPool: number): number {
  if (availableBytes <= 0) return 0;
  return Math.floor(Math.floor(availableBytes / pageBytes) / layersPerPool);
}

function resolveDtype(settings: PlanSettings): string {
  const raw = settings.kvCacheDtype ?? "auto";
  const dtype = raw.toLowerCase();
  if (VLLM_KV_DTYPE_BYTES[dtype] === undefined) {
    throw new UnknownCacheTypeError(
      `vLLM has no --kv-cache-dtype ${raw} that kvbound can size; use one of ${Object.keys(VLLM_KV_DTYPE_BYTES).join(", ")}`,
      { setting: "kvCacheDtype", value: raw, allowed: Object.keys(VLLM_KV_DTYPE_BYTES) },
    );
  }
  return dtype;
}

/** Weights and activation figures the caller already computed (planMemory passes its own so the
 *  plan and the rule agree); when absent the rule estimates them itself. */
export interface VllmOverheads {
  readonly weightsBytes: number;
  readonly activationBytes: number;
  /** How the activation figure was derived (compute.ts), when it was estimated. */
  readonly activationNote?: string;
}

/** vLLM's max_num_batched_tokens default for `vllm serve` (vllm/engine/arg_utils.py): 8192 on
 *  GPUs with >= 70 GiB, else 2048; and max_num_seqs, the dummy sampler's rows (1024 / 256). */
export function vllmBatchDefaults(settings: PlanSettings): { maxNumBatchedTokens: number; maxNumSeqs: number } {
  const bigGpu = settings.budgetBytes !== undefined && settings.budgetBytes >= 70 * GIB;
  return { maxNumBatchedTokens: settings.ubatch ?? (bigGpu ? 8192 : 2048), maxNumSeqs: bigGpu ? 1024 : 256 };
}

/** Weights per GPU (1/tp of the model) and the estimated activation peak of the profile run. */
export function vllmOverheads(spec: ModelSpec, settings: PlanSettings): VllmOverheads {
  const tp = settings.tensorParallel ?? 1;
  const { maxNumBatchedTokens, maxNumSeqs } = vllmBatchDefaults(settings);
  const weightsBytes = Math.ceil((weightBytes(spec)?.bytes ?? 0) / tp);
  const compute = computeEstimate("vllm", spec, { ...defaultComputeInputs("vllm", spec, settings), chunkTokens: maxNumBatchedTokens, maxSeqs: maxNumSeqs });
  return compute === null ? { weightsBytes, activationBytes: 0 } : { weightsBytes, activationBytes: compute.bytes, activationNote: compute.note };
}

/** Tensor-parallel sizes vLLM accepts for `spec` (1..limit), for the error message. */
function validTensorParallel(spec: ModelSpec, limit: number): number[] {
  const out: number[] = [];
  for (let tp = 1; tp <= limit; tp++) if (tensorParallelRefusal(spec, tp) === null) out.push(tp);
  return out;
}

/** Why vLLM refuses `tp` for `spec`, or null when it accepts it:
 *  - ModelConfig.verify_with_parallel_config (vllm/config/model.py): "Total number of attention heads
 *    (32) must be divisible by tensor parallel size (3)";
 *  - QKVParallelLinear (vllm/model_executor/layers/linear.py): with tp >= kv_heads each rank holds one
 *    KV head replicated tp / kv_heads times, else kv_heads / tp heads; `divide` asserts each division
 *    is exact. MLA keeps one latent replicated on every rank: only the first rule applies. */
function tensorParallelRefusal(spec: ModelSpec, tp: number): string | null {
  if (tp === 1) return null;
  if (spec.nHead > 0 && spec.nHead % tp !== 0) {
    return `Total number of attention heads (${spec.nHead}) must be divisible by tensor parallel size (${tp}) (vLLM ModelConfig.verify_with_parallel_config)`;
  }
  if (spec.mla) return null;
  const kvHeads = new Set<number>();
  for (const { layer } of kvLayers(spec)) kvHeads.add(layer.nHeadKv);
  for (const kv of kvHeads) {
    if (tp >= kv ? tp % kv !== 0 : kv % tp !== 0) {
      return tp >= kv
        ? `tensor parallel size ${tp} is not a multiple of the ${kv} KV heads, which vLLM replicates tp / kv_heads times (QKVParallelLinear)`
        : `${kv} KV heads are not divisible by tensor parallel size ${tp} (QKVParallelLinear)`;
    }
  }
  return null;
}

/** Throws InvalidSettingError when vLLM would refuse to shard `spec` over `tp` GPUs. */
export function checkTensorParallel(spec: ModelSpec, tp: number): void {
  const why = tensorParallelRefusal(spec, tp);
  if (why === null) return;
  const valid = validTensorParallel(spec, Math.max(8, tp));
  throw new InvalidSettingError(`vLLM refuses --tensor-parallel-size ${tp} for ${spec.name}: ${why}; use ${valid.join(", ")}`, {
    setting: "tensorParallel",
    value: tp,
    nHead: spec.nHead,
    valid,
  });
}

/**
 * vLLM's KV allocation. With `budgetBytes` (the memory of ONE GPU): the block pool vLLM would
 * build, its token capacity and max concurrency at max_model_len (in `extra`). Without it: the
 * KV bytes `seqs` requests of `ctx` tokens need (vLLM itself always needs the GPU's size).
 */
export function vllmKv(spec: ModelSpec, settings: PlanSettings, overheads?: VllmOverheads): EngineKvResult {
  const notes: string[] = [];
  const maxModelLen = settings.ctx ?? spec.nCtxTrain;
  if (maxModelLen === null || maxModelLen === undefined) {
    throw new InvalidSettingError("vLLM needs max_model_len: the model has no training context; pass ctx", { setting: "ctx", value: null });
  }
  checkCount(maxModelLen, "ctx", 0, 1, MAX_CONTEXT_TOKENS);
  const seqs = checkCount(settings.seqs, "seqs", 1);
  const tp = checkCount(settings.tensorParallel, "tensorParallel", 1, 1, 1024);
  checkTensorParallel(spec, tp);
  const blockSize = checkCount(settings.blockSize, "blockSize", VLLM_DEFAULT_BLOCK_SIZE);
  if (!VLLM_BLOCK_SIZES.includes(blockSize)) {
    throw new InvalidSettingError(`vLLM block_size ${blockSize} is not one of ${VLLM_BLOCK_SIZES.join(", ")}`, { setting: "blockSize", value: blockSize });
  }
  const util = parseFraction(settings.gpuMemoryUtilization ?? VLLM_DEFAULT_GPU_MEMORY_UTILIZATION, "gpuMemoryUtilization");
  const budget = settings.budgetBytes;
  if (budget !== undefined) checkCount(budget, "budgetBytes", 0, 1, MAX_BUDGET_BYTES);
  const maxNumBatchedTokens = checkCount(settings.ubatch, "ubatch", vllmBatchDefaults(settings).maxNumBatchedTokens);
  const kvCacheDtype = resolveDtype(settings);
  const dtypeBytes = VLLM_KV_DTYPE_BYTES[kvCacheDtype]!;
  if (settings.typeK !== undefined || settings.typeV !== undefined) {
    notes.push("typeK/typeV are llama.cpp settings; vLLM uses one kvCacheDtype for K and V");
  }

  // --- per-kind page sizes --------------------------------------------------------------------
  const counts = new Map<GroupKind, { layers: number; pageK: number; pageV: number }>();
  const layers = kvLayers(spec);
  const kvHeadsPerRank = (nHeadKv: number): number => Math.max(1, Math.floor(nHeadKv / tp));
  let pagesDiffer = false;
  for (const { layer } of layers) {
    let kind: GroupKind;
    let pageK: number;
    let pageV: number;
    if (spec.mla) {
      // MLAAttentionSpec: one latent (kv_lora_rank + qk_rope_head_dim) per token, one "head",
      // replicated on every rank, no separate V.
      kind = "mla";
      pageK = blockSize * (spec.mla.kvLoraRank + spec.mla.ropeDim) * dtypeBytes;
      pageV = 0;
    } else {
      kind = layer.swa && spec.nSwa > 0 ? "swa" : "full";
      const h = kvHeadsPerRank(layer.nHeadKv);
      pageK = blockSize * h * layer.headDimK * dtypeBytes;
      pageV = blockSize * h * layer.headDimV * dtypeBytes;
    }
    const prev = counts.get(kind);
    if (prev === undefined) counts.set(kind, { layers: 1, pageK, pageV });
    else {
      if (prev.pageK !== pageK || prev.pageV !== pageV) pagesDiffer = true;
      counts.set(kind, { layers: prev.layers + 1, pageK: Math.max(prev.pageK, pageK), pageV: Math.max(prev.pageV, pageV) });
    }
  }
  if (layers.some((l) => l.layer.nHeadKv < tp) && !spec.mla) {
    notes.push(`tensor parallel ${tp} > KV heads: vLLM replicates KV heads so each rank holds max(1, nHeadKv // tp) = 1`);
  }
  const nRecurrent = spec.layers.filter((l) => l.kind === "recurrent").length;
  if (nRecurrent > 0) {
    notes.push(`${nRecurrent} recurrent layers: vLLM's Mamba state pages (MambaSpec, padded to the attention page) are not modelled`);
  }
  if (pagesDiffer) notes.push("layers of one kind have different page sizes; sized with the largest (vLLM keeps per-layer sizes)");
  if (layers.length === 0) {
    return {
      settings: { maxModelLen, kvCacheDtype, blockSize, tensorParallel: tp, gpuMemoryUtilization: util, maxNumBatchedTokens, seqs },
      kv: { totalBytes: 0, kBytes: 0, vBytes: 0, caches: [] },
      notes: [...notes, "no attention layers: vLLM allocates no KV cache"],
    };
  }

  // --- KV cache groups (kv_cache_utils.get_kv_cache_groups) ------------------------------------
  const kinds: KindInfo[] = [];
  for (const [kind, c] of counts) kinds.push({ kind, layers: c.layers, blockTokens: blockSize, pageK: c.pageK, pageV: c.pageV });
  const uniform = kinds.length === 1;
  let groupSize: number;
  let groupsPerKind: number[];
  let poolPage: number; // bytes of one block in one layer of the pool
  if (uniform) {
    groupSize = kinds[0]!.layers;
    groupsPerKind = [1];
    poolPage = kinds[0]!.pageK + kinds[0]!.pageV;
  } else {
    // Page sizes are unified by growing the block size of kinds with smaller pages
    // (unify_kv_cache_spec_page_size); they must divide the largest.
    const maxPage = Math.max(...kinds.map((k) => k.pageK + k.pageV));
    for (let i = 0; i < kinds.length; i++) {
      const k = kinds[i]!;
      const page = k.pageK + k.pageV;
      if (maxPage % page !== 0) {
        throw new InvalidSettingError(`vLLM cannot unify page sizes ${page} and ${maxPage} bytes for this model (NotImplementedError in vLLM)`, { setting: "model", value: spec.name });
      }
      const ratio = maxPage / page;
      kinds[i] = { ...k, blockTokens: k.blockTokens * ratio, pageK: k.pageK * ratio, pageV: k.pageV * ratio };
      if (ratio > 1) notes.push(`${k.kind} layers use ${blockSize * ratio}-token blocks so their pages match the ${maxPage}-byte page`);
    }
    // Group size: the smallest kind's layer count, or the largest when they are close (< 1.5x),
    // each kind split into ceil(layers / groupSize) groups, short groups padded.
    const minL = Math.min(...kinds.map((k) => k.layers));
    const maxL = Math.max(...kinds.map((k) => k.layers));
    groupSize = maxL < minL * 1.5 ? maxL : minL;
    groupsPerKind = kinds.map((k) => Math.ceil(k.layers / groupSize));
    poolPage = maxPage;
    const padded = kinds.reduce((s, k, i) => s + groupsPerKind[i]! * groupSize - k.layers, 0);
    if (padded > 0) notes.push(`vLLM pads the KV cache groups with ${padded} empty layer slots (hybrid allocator)`);
  }
  const nGroups = groupsPerKind.reduce((s, g) => s + g, 0);
  const perRequestBlocksByKind = kinds.map((k) => vllmBlocksPerRequest(k.kind, maxModelLen, k.blockTokens, spec.nSwa, maxNumBatchedTokens));
  // Blocks one max_model_len request needs across all groups, and the bytes that is.
  const blocksPerRequest = kinds.reduce((s, _k, i) => s + groupsPerKind[i]! * perRequestBlocksByKind[i]!, 0);
  const bytesPerRequest = uniform
    ? perRequestBlocksByKind[0]! * poolPage * groupSize
    : groupSize * poolPage * blocksPerRequest;

  const settingsOut: Record<string, unknown> = {
    maxModelLen,
    kvCacheDtype,
    blockSize,
    tensorParallel: tp,
    gpuMemoryUtilization: util,
    maxNumBatchedTokens,
    seqs,
  };
  const groupsOut = kinds.map((k, i) => ({ kind: k.kind, layers: k.layers, groups: groupsPerKind[i]!, blockTokens: k.blockTokens }));

  if (budget === undefined) {
    // No GPU size: what `seqs` requests at max_model_len occupy.
    const caches: KvCachePlan[] = kinds.map((k, i) => {
      const blocks = perRequestBlocksByKind[i]! * seqs;
      const slots = groupsPerKind[i]! * (uniform ? k.layers : groupSize);
      return {
        kind: k.kind,
        cells: perRequestBlocksByKind[i]! * k.blockTokens,
        layers: slots,
        streams: seqs,
        typeK: kvCacheDtype,
        typeV: spec.mla ? "none" : kvCacheDtype,
        kBytes: blocks * slots * k.pageK,
        vBytes: blocks * slots * k.pageV,
        bytesPerCell: (slots * (k.pageK + k.pageV)) / k.blockTokens,
      };
    });
    const kBytes = caches.reduce((s, c) => s + c.kBytes, 0);
    const vBytes = caches.reduce((s, c) => s + c.vBytes, 0);
    notes.push(
      `no budgetBytes: showing the KV ${seqs} request(s) of max_model_len ${maxModelLen} need ` +
        `(${formatBytes(bytesPerRequest)} each); vLLM itself fills gpu_memory_utilization of the GPU with blocks, pass budgetBytes (one GPU's memory) to see them`,
    );
    return {
      settings: settingsOut,
      kv: { totalBytes: kBytes + vBytes, kBytes, vBytes, caches },
      notes,
      extra: { pageBytesPerLayer: poolPage, groups: groupsOut, groupSize, bytesPerRequest, blocksPerRequest },
    };
  }

  // --- the pool vLLM builds from the GPU's memory -----------------------------------------------
  const est = overheads ?? vllmOverheads(spec, settings);
  const weightsPerGpu = est.weightsBytes;
  const activation = est.activationBytes;
  if (overheads === undefined && weightBytes(spec) === null) notes.push("weights unknown: counted as 0 bytes");
  const requested = Math.floor(budget * util);
  const available = requested - weightsPerGpu - activation;
  const numBlocks = uniform
    ? available > 0
      ? Math.floor(available / (poolPage * groupSize))
      : 0
    : vllmNumBlocks(available, poolPage, groupSize);
  // _report_kv_cache_config (as read): num_blocks // groups x the smallest block size. Some vLLM
  // versions log max_concurrency x max_model_len instead; both agree for single-group models.
  const minBlockTokens = Math.min(...kinds.map((k) => k.blockTokens));
  const kvTokenCapacity = Math.floor(numBlocks / nGroups) * minBlockTokens;
  const maxConcurrency = blocksPerRequest > 0 ? numBlocks / blocksPerRequest : 0;
  const fitsOneRequest = available > 0 && bytesPerRequest <= available;
  const allocated = numBlocks * poolPage * groupSize;

  // Split the shared pool by group count (hybrid groups draw from one pool; this is the even share).
  const caches: KvCachePlan[] = [];
  let blocksLeft = numBlocks;
  for (let i = 0; i < kinds.length; i++) {
    const k = kinds[i]!;
    const share = i === kinds.length - 1 ? blocksLeft : Math.floor((numBlocks * groupsPerKind[i]!) / nGroups);
    blocksLeft -= share;
    const slots = uniform ? k.layers : groupSize;
    caches.push({
      kind: k.kind,
      cells: Math.floor(share / groupsPerKind[i]!) * k.blockTokens,
      layers: uniform ? k.layers : groupsPerKind[i]! * groupSize,
      streams: 1,
      typeK: kvCacheDtype,
      typeV: spec.mla ? "none" : kvCacheDtype,
      kBytes: share * slots * k.pageK,
      vBytes: share * slots * k.pageV,
      bytesPerCell: (groupsPerKind[i]! * slots * (k.pageK + k.pageV)) / k.blockTokens,
    });
  }
  const kBytes = caches.reduce((s, c) => s + c.kBytes, 0);
  const vBytes = caches.reduce((s, c) => s + c.vBytes, 0);

  notes.push(
    `vLLM: ${formatBytes(budget)} x gpu_memory_utilization ${util} = ${formatBytes(requested)}, minus weights ${formatBytes(weightsPerGpu)}` +
      `${tp > 1 ? ` (1/${tp} per GPU)` : ""} and activation peak ${formatBytes(activation)} (estimate) = ${formatBytes(Math.max(0, available))} for KV`,
  );
  notes.push(`# GPU blocks: ${numBlocks}; GPU KV cache size: ${kvTokenCapacity} tokens; max concurrency for ${maxModelLen} tokens per request: ${maxConcurrency.toFixed(2)}x`);
  let estimatedMaxModelLen: number | undefined;
  if (available <= 0) {
    notes.push(`weights and activations exceed ${formatBytes(requested)}: vLLM fails with "No available memory for the cache blocks"; raise gpuMemoryUtilization, use tensor parallel, or a smaller quantization`);
  } else if (!fitsOneRequest) {
    estimatedMaxModelLen = vllmMaxModelLen(kinds, groupsPerKind, groupSize, poolPage, uniform, spec.nSwa, maxNumBatchedTokens, available, maxModelLen);
    notes.push(
      `one request at max_model_len ${maxModelLen} needs ${formatBytes(bytesPerRequest)} of KV, more than the ${formatBytes(available)} available: ` +
        `vLLM refuses to start; the estimated maximum model length is ${estimatedMaxModelLen}`,
    );
  }
  return {
    settings: settingsOut,
    kv: { totalBytes: kBytes + vBytes, kBytes, vBytes, caches },
    notes,
    extra: {
      pageBytesPerLayer: poolPage,
      groups: groupsOut,
      groupSize,
      requestedBytes: requested,
      weightsBytesPerGpu: weightsPerGpu,
      activationBytes: activation,
      availableKvBytes: Math.max(0, available),
      numBlocks,
      allocatedKvBytes: allocated,
      kvTokenCapacity,
      maxConcurrency,
      bytesPerRequest,
      blocksPerRequest,
      fitsOneRequest,
      ...(estimatedMaxModelLen !== undefined ? { estimatedMaxModelLen } : {}),
    },
  };
}

/** Binary search for the longest max_model_len whose one-request KV fits `available`, as
 *  _estimate_max_model_len_from_groups does; 0 when one token does not fit. */
function vllmMaxModelLen(
  kinds: readonly KindInfo[],
  groupsPerKind: readonly number[],
  groupSize: number,
  poolPage: number,
  uniform: boolean,
  nSwa: number,
  maxNumBatchedTokens: number,
  available: number,
  upper: number,
): number {
  const need = (len: number): number => {
    let blocks = 0;
    for (let i = 0; i < kinds.length; i++) {
      blocks += groupsPerKind[i]! * vllmBlocksPerRequest(kinds[i]!.kind, len, kinds[i]!.blockTokens, nSwa, maxNumBatchedTokens);
    }
    return uniform ? blocks * poolPage * groupSize : groupSize * poolPage * blocks;
  };
  if (need(1) > available) return 0;
  let lo = 1;
  let hi = upper;
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (need(mid) <= available) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}
