// WebLLM's KV cache rule. WebLLM creates one TVM paged KV cache per model at load time:
//   mlc-ai/web-llm src/llm_chat.ts: create_tir_paged_kv_cache(max_num_sequence = 1,
//     max_total_sequence_length = sliding_window_size != -1 ? sliding_window_size : context_window_size,
//     prefill_chunk_size, page_size = 16, support_sliding_window = sliding_window_size != -1)
//   apache/tvm src/runtime/relax_vm/paged_kv_cache.cc (the creator): num_total_pages =
//     ceil(max_total_sequence_length / page_size) + 1, plus 2 per reserved sequence when sliding
//     window is supported ("each sequence may use two more pages at most"); each layer holds
//     pages[num_total_pages][2][num_kv_heads][page_size][head_dim] in the model's KV dtype.
// The attention sinks live inside the sliding window (TVM pins the first `sink` slots of the
// window), so they do not add pages. Window validation follows web-llm src/config.ts.

import {
  AttentionSinkSizeError,
  InvalidSettingError,
  UnknownCacheTypeError,
  WindowSizeConfigurationError,
  WindowSizeSpecificationError,
} from "../errors.js";
import { kvLayers, type ModelSpec } from "../spec/model-spec.js";
import { MAX_CONTEXT_TOKENS } from "./parse.js";
import type { EngineKvResult, KvCachePlan, PlanSettings } from "./types.js";

/** TVM paged KV cache page size as WebLLM hard-codes it. */
export const WEBLLM_PAGE_SIZE = 16;
/** WebLLM creates the cache for one sequence (defaultMaxNumSequence in llm_chat.ts). */
export const WEBLLM_MAX_NUM_SEQUENCE = 1;

/** KV element bytes: q4f16/q0f16 models keep an f16 cache, q4f32/q0f32 an f32 one. */
export const WEBLLM_KV_DTYPE_BYTES: Readonly<Record<string, number>> = { f16: 2, f32: 4 };

export interface WebllmWindows {
  readonly contextWindowSize: number;
  readonly slidingWindowSize: number;
  readonly attentionSinkSize: number;
}

function checkWindowField(field: string, value: number): void {
  if (!Number.isInteger(value) || (value !== -1 && value <= 0) || value > MAX_CONTEXT_TOKENS) {
    throw new WindowSizeSpecificationError(field, value);
  }
}

/**
 * WebLLM's window rules: exactly one of contextWindowSize / slidingWindowSize positive, the other
 * -1; sliding mode needs 0 <= attentionSinkSize < slidingWindowSize. Unset windows take `ctx`,
 * else the model's training context, as context_window_size.
 */
export function resolveWebllmWindows(spec: ModelSpec, settings: PlanSettings): WebllmWindows {
  let cw = settings.contextWindowSize;
  let sw = settings.slidingWindowSize;
  if (cw === undefined && sw === undefined) {
    const ctx = settings.ctx ?? spec.nCtxTrain;
    if (ctx === null || ctx === undefined) {
      throw new InvalidSettingError("WebLLM needs context_window_size or sliding_window_size: the model has no training context; pass ctx", { setting: "ctx", value: null });
    }
    cw = ctx;
    sw = -1;
  }
  cw ??= -1;
  sw ??= -1;
  checkWindowField("context_window_size", cw);
  checkWindowField("sliding_window_size", sw);
  if ((cw > 0) === (sw > 0)) throw new WindowSizeConfigurationError(cw, sw);
  let sink = settings.attentionSinkSize ?? -1;
  if (sw > 0) {
    if (!Number.isInteger(sink) || sink < 0 || sink >= sw) throw new AttentionSinkSizeError(sink, sw);
  } else if (sink === -1) {
    sink = 0;
  }
  return { contextWindowSize: cw, slidingWindowSize: sw, attentionSinkSize: sink };
}

/** Pages TVM reserves: ceil(capacity / 16) + 1, and 2 more per sequence with sliding window. */
export function webllmPages(windows: WebllmWindows): number {
  const sliding = windows.slidingWindowSize > 0;
  const capacity = sliding ? windows.slidingWindowSize : windows.contextWindowSize;
  return Math.ceil(capacity / WEBLLM_PAGE_SIZE) + 1 + (sliding ? 2 * WEBLLM_MAX_NUM_SEQUENCE : 0);
}

export function webllmKv(spec: ModelSpec, settings: PlanSettings): EngineKvResult {
  const notes: string[] = [];
  const windows = resolveWebllmWindows(spec, settings);
  const rawDtype = settings.kvCacheDtype ?? settings.typeK ?? "f16";
  const dtype = rawDtype.toLowerCase();
  const dtypeBytes = WEBLLM_KV_DTYPE_BYTES[dtype];
  if (dtypeBytes === undefined) {
    throw new UnknownCacheTypeError(`WebLLM's KV cache is f16 or f32 (set by the model's quantization, e.g. q4f16_1 / q4f32_1), not ${rawDtype}`, {
      setting: "kvCacheDtype",
      value: rawDtype,
      allowed: Object.keys(WEBLLM_KV_DTYPE_BYTES),
    });
  }
  if (settings.seqs !== undefined && settings.seqs !== 1) {
    notes.push(`WebLLM creates its KV cache for one sequence; seqs ${settings.seqs} is ignored`);
  }
  const prefillChunkSize = settings.prefillChunkSize ?? null;
  const pages = webllmPages(windows);
  const sliding = windows.slidingWindowSize > 0;
  const layers = kvLayers(spec);
  let kBytes = 0;
  let vBytes = 0;
  let bytesPerCell = 0;
  for (const { layer } of layers) {
    // The TVM cache stores K and V with one head_dim; MLA / unequal K-V dims are stored as given.
    kBytes += pages * WEBLLM_PAGE_SIZE * layer.nHeadKv * layer.headDimK * dtypeBytes;
    vBytes += pages * WEBLLM_PAGE_SIZE * layer.nHeadKv * layer.headDimV * dtypeBytes;
    bytesPerCell += layer.nHeadKv * (layer.headDimK + layer.headDimV) * dtypeBytes;
  }
  const caches: KvCachePlan[] =
    layers.length === 0
      ? []
      : [
          {
            kind: sliding ? "swa" : "full",
            cells: pages * WEBLLM_PAGE_SIZE,
            layers: layers.length,
            streams: WEBLLM_MAX_NUM_SEQUENCE,
            typeK: dtype,
            typeV: dtype,
            kBytes,
            vBytes,
            bytesPerCell,
          },
        ];
  if (sliding) {
    notes.push(
      `sliding_window_size ${windows.slidingWindowSize} (incl. ${windows.attentionSinkSize} attention sink tokens): ` +
        `ceil(${windows.slidingWindowSize}/16) + 1 + 2 = ${pages} pages of 16 tokens, bounded at any conversation length`,
    );
  } else {
    notes.push(`context_window_size ${windows.contextWindowSize}: ceil(${windows.contextWindowSize}/16) + 1 = ${pages} pages of 16 tokens`);
  }
  if (spec.layers.some((l) => l.kind === "recurrent")) notes.push("recurrent layers: WebLLM's RNN state is not modelled");
  if (spec.nSwa > 0 && !sliding) notes.push("the model has sliding-window layers; kvbound sizes every layer for the full context window (one WebLLM cache)");
  return {
    settings: { ...windows, prefillChunkSize, kvCacheDtype: dtype, pageSize: WEBLLM_PAGE_SIZE, maxNumSequence: WEBLLM_MAX_NUM_SEQUENCE },
    kv: { totalBytes: kBytes + vBytes, kBytes, vBytes, caches },
    notes,
    extra: { pages, tokenCapacity: pages * WEBLLM_PAGE_SIZE },
  };
}
