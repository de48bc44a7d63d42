// mlx-lm's KV rule: the bytes `mlx_lm.generate` (and stream_generate / generate_step) hold in the
// prompt cache after a sequence of `ctx` tokens. Mirrors (without copying) ml-explore/mlx-lm:
//   mlx_lm/models/cache.py  make_prompt_cache (the model's make_cache when it has one, else one
//                           RotatingKVCache(max_kv_size, keep=4) per layer with --max-kv-size, else
//                           KVCache); KVCache.update_and_fetch (grows in steps of 256 tokens:
//                           ceil(S / 256) * 256 more slots whenever a chunk of S does not fit, after
//                           trimming to the offset when it is not a multiple of 256);
//                           RotatingKVCache._update_concat / _update_in_place (concatenates whole
//                           prefill chunks, keeping max_size - 1 old tokens, then grows by
//                           min(256, max_size - offset) per decode step and trims to max_size);
//                           QuantizedKVCache (packed uint32 data of dim * bits / 32 words plus a scale
//                           and a bias per group of group_size values, both in the model's dtype;
//                           grows in steps of 256 like KVCache); KVCache.to_quantized;
//                           RotatingKVCache.to_quantized raises NotImplementedError
//   mlx_lm/generate.py      generate_step: prompt in chunks of prefill_step_size (2048) until one
//                           token is left, then one token per step; maybe_quantize_kv_cache converts
//                           a cache once its offset reaches quantized_kv_start; CLI flags --max-kv-size,
//                           --kv-bits, --kv-group-size (64), --quantized-kv-start (5000)
//   mlx_lm/models/gemma3_text.py, gpt_oss.py, ... make_cache: RotatingKVCache(max_size=sliding_window)
//                           for sliding-window layers, KVCache for the others (and --max-kv-size is
//                           then ignored); gemma2.py has no make_cache and no sliding window
//   mlx_lm/server.py        main(): --prompt-cache-size (10), --prompt-cache-bytes,
//                           --decode-concurrency, --prefill-step-size; no --max-kv-size or --kv-bits

import { InvalidSettingError, UnknownCacheTypeError, UnsupportedArchitectureError } from "../errors.js";
import { kvLayers, type ModelSpec } from "../spec/model-spec.js";
import type { FitOption, KvOption } from "./fit.js";
import { checkCount, formatBytes, MAX_CONTEXT_TOKENS } from "./parse.js";
import type { EngineKvResult, KvCachePlan, MemoryPlan, PlanSettings } from "./types.js";

/** KVCache.step, RotatingKVCache.step and QuantizedKVCache.step in cache.py. */
export const MLX_KV_STEP = 256;
/** generate_step's prefill_step_size (and mlx_lm.server --prefill-step-size) default. */
export const MLX_DEFAULT_PREFILL_STEP = 2048;
/** generate.py --kv-group-size default. */
export const MLX_DEFAULT_KV_GROUP_SIZE = 64;
/** generate.py DEFAULT_QUANTIZED_KV_START (--quantized-kv-start). */
export const MLX_DEFAULT_QUANTIZED_KV_START = 5000;
/** make_prompt_cache: RotatingKVCache(max_size=max_kv_size, keep=4). */
export const MLX_MAX_KV_KEEP = 4;
/** --kv-bits whose packing QuantizedKVCache sizes exactly (dim // (32 // bits) words). */
export const MLX_KV_BITS: readonly number[] = [2, 4, 8];
/** mx.quantize group sizes. */
export const MLX_KV_GROUP_SIZES: readonly number[] = [32, 64, 128];
/** Bytes per element of the K/V (and of the quantization scales and biases): the model's dtype. */
export const MLX_KV_DTYPE_BYTES: Readonly<Record<string, number>> = { float16: 2, f16: 2, bfloat16: 2, bf16: 2, float32: 4, f32: 4 };
/** Architectures with sliding-window layers whose mlx-lm model file has no make_cache and no
 *  window: every layer gets a KVCache (mlx_lm/models/gemma2.py). */
export const MLX_NO_WINDOW_ARCHS: readonly string[] = ["gemma2"];

function ceilTo(x: number, step: number): number {
  return Math.ceil(x / step) * step;
}

/** Slots a KVCache (or QuantizedKVCache) holds after `tokens` tokens through generate_step: every
 *  growth happens at a multiple of 256, so the buffer is the token count rounded up to 256. */
export function mlxKvCacheSlots(tokens: number): number {
  return ceilTo(tokens, MLX_KV_STEP);
}

/** Prompt tokens generate_step hands to RotatingKVCache._update_concat: every prefill chunk but a
 *  1-token one, which update_and_fetch sends to _update_in_place like a decode step. */
function rotatingConcatenated(promptTokens: number, prefillStep: number): number {
  const prefill = promptTokens - 1;
  const last = prefill % prefillStep;
  return last === 1 || prefill === 1 ? prefill - 1 : prefill;
}

/**
 * Slots a RotatingKVCache(max_size) holds after `tokens` tokens of which `promptTokens` were the
 * prompt: generate_step concatenates the first promptTokens - 1 tokens (whole chunks), then feeds
 * one token per step, growing by min(256, max_size - offset) and trimming to max_size.
 */
export function mlxRotatingSlots(tokens: number, promptTokens: number, maxSize: number, prefillStep = MLX_DEFAULT_PREFILL_STEP): number {
  const concatenated = rotatingConcatenated(promptTokens, prefillStep);
  if (concatenated >= maxSize) return maxSize;
  return Math.min(maxSize, concatenated + ceilTo(tokens - concatenated, MLX_KV_STEP));
}

/** Largest RotatingKVCache buffer during prefill: the first chunk, then max_size - 1 kept tokens
 *  plus each next chunk (_update_concat), before the first decode step trims it to max_size. */
export function mlxRotatingPrefillPeak(promptTokens: number, maxSize: number, prefillStep: number): number {
  let remaining = promptTokens - 1;
  let shape = 0;
  let peak = 0;
  while (remaining > 0) {
    const chunk = Math.min(prefillStep, remaining);
    remaining -= chunk;
    if (chunk === 1) continue; // a 1-token chunk grows in place, within mlxRotatingSlots' figure
    shape = shape === 0 ? chunk : Math.min(shape, maxSize - 1) + chunk;
    if (shape > peak) peak = shape;
  }
  return peak;
}

interface MlxSettings {
  readonly ctx: number;
  readonly promptTokens: number;
  readonly seqs: number;
  readonly maxKvSize: number | null;
  readonly kvBits: number | null;
  readonly kvGroupSize: number;
  readonly quantizedKvStart: number;
  readonly dtype: string;
  readonly dtypeBytes: number;
  readonly prefillStep: number;
}

function resolveSettings(spec: ModelSpec, settings: PlanSettings): MlxSettings {
  const ctxIn = settings.ctx ?? spec.nCtxTrain;
  if (ctxIn === null || ctxIn === undefined) {
    throw new InvalidSettingError("mlx-lm's cache grows with the text: pass ctx, the tokens it must hold (prompt + generated)", { setting: "ctx", value: null });
  }
  const ctx = checkCount(ctxIn, "ctx", 0, 1, MAX_CONTEXT_TOKENS);
  const promptTokens = checkCount(settings.promptTokens, "promptTokens", ctx, 1, ctx);
  const seqs = checkCount(settings.seqs, "seqs", 1, 1, 1024);
  const maxKvSize = settings.maxKvSize === undefined ? null : checkCount(settings.maxKvSize, "maxKvSize", 0, 1, MAX_CONTEXT_TOKENS);
  let kvBits: number | null = null;
  if (settings.kvBits !== undefined) {
    if (!MLX_KV_BITS.includes(settings.kvBits)) {
      throw new InvalidSettingError(`--kv-bits ${settings.kvBits} is not one kvbound sizes; use ${MLX_KV_BITS.join(", ")} (QuantizedKVCache packs 32 // bits values per uint32)`, {
        setting: "kvBits",
        value: settings.kvBits,
      });
    }
    kvBits = settings.kvBits;
  }
  const kvGroupSize = settings.kvGroupSize ?? MLX_DEFAULT_KV_GROUP_SIZE;
  if (!MLX_KV_GROUP_SIZES.includes(kvGroupSize)) {
    throw new InvalidSettingError(`--kv-group-size ${kvGroupSize} is not one mx.quantize takes; use ${MLX_KV_GROUP_SIZES.join(", ")}`, { setting: "kvGroupSize", value: kvGroupSize });
  }
  const quantizedKvStart = checkCount(settings.quantizedKvStart, "quantizedKvStart", MLX_DEFAULT_QUANTIZED_KV_START, 0, MAX_CONTEXT_TOKENS);
  const dtype = (settings.kvCacheDtype ?? "float16").toLowerCase();
  const dtypeBytes = MLX_KV_DTYPE_BYTES[dtype];
  if (dtypeBytes === undefined) {
    throw new UnknownCacheTypeError(`mlx-lm keeps K/V in the model's dtype (float16, bfloat16 or float32), not ${dtype}; quantize with kvBits`, {
      setting: "kvCacheDtype",
      value: dtype,
      allowed: Object.keys(MLX_KV_DTYPE_BYTES),
    });
  }
  const prefillStep = checkCount(settings.prefillChunkSize, "prefillChunkSize", MLX_DEFAULT_PREFILL_STEP, 1, MAX_CONTEXT_TOKENS);
  return { ctx, promptTokens, seqs, maxKvSize, kvBits, kvGroupSize, quantizedKvStart, dtype, dtypeBytes, prefillStep };
}

type CacheClass = "KVCache" | "QuantizedKVCache" | "RotatingKVCache";

/**
 * The prompt cache mlx-lm holds for `spec` after `ctx` tokens (settings.ctx: prompt + generated;
 * settings.promptTokens: how many of them were the prompt, default all of them). Options as
 * mlx_lm.generate names them: maxKvSize (--max-kv-size), kvBits (--kv-bits), kvGroupSize
 * (--kv-group-size), quantizedKvStart (--quantized-kv-start), kvCacheDtype (the model's dtype,
 * float16 by default), prefillChunkSize (prefill_step_size), seqs (sequences decoded together).
 */
export function mlxKv(spec: ModelSpec, settings: PlanSettings): EngineKvResult {
  const s = resolveSettings(spec, settings);
  const notes: string[] = [];
  if (spec.mla !== null) {
    throw new UnsupportedArchitectureError(`${spec.arch}: mlx-lm's multi-head latent attention caches differ by model file (latent or expanded heads); not modelled`, { arch: spec.arch });
  }
  if (spec.layers.some((l) => l.kind === "recurrent")) {
    throw new UnsupportedArchitectureError(`${spec.arch} keeps recurrent state in mlx-lm ArraysCache entries, which kvbound does not model`, { arch: spec.arch });
  }
  if (spec.swaType === "chunked") {
    throw new UnsupportedArchitectureError(`${spec.arch}: mlx-lm's ChunkedKVCache (trimmed at chunk boundaries by the model) is not modelled`, { arch: spec.arch });
  }

  const layers = kvLayers(spec);
  const windowed = spec.nSwa > 0 && spec.swaType === "standard" && layers.some((l) => l.layer.swa) && !MLX_NO_WINDOW_ARCHS.includes(spec.arch);
  if (spec.nSwa > 0 && MLX_NO_WINDOW_ARCHS.includes(spec.arch)) {
    notes.push(`${spec.arch}: mlx-lm's model file has no sliding window (no make_cache), so every layer keeps the whole context`);
  }
  // make_prompt_cache prefers the model's make_cache (which every windowed model defines), so
  // --max-kv-size only reaches models without one.
  const rotatingAll = s.maxKvSize !== null && !windowed;
  if (s.maxKvSize !== null && windowed) {
    notes.push(`--max-kv-size ${s.maxKvSize} has no effect: ${spec.arch} builds its own cache (make_cache) and make_prompt_cache returns it as is`);
  }
  const quantizeNow = s.kvBits !== null && s.ctx >= s.quantizedKvStart;
  if (s.kvBits !== null && (rotatingAll || windowed) && quantizeNow) {
    throw new InvalidSettingError(
      `--kv-bits with ${rotatingAll ? "--max-kv-size" : `${spec.arch}'s sliding-window layers`}: mlx-lm converts every cache once ${s.quantizedKvStart} tokens are reached and ` +
        `RotatingKVCache.to_quantized raises NotImplementedError ("RotatingKVCache Quantization NYI"); drop one of the two`,
      { setting: "kvBits", value: s.kvBits },
    );
  }
  if (s.kvBits !== null && !quantizeNow) {
    notes.push(`--kv-bits ${s.kvBits}: ${s.ctx} tokens stay below --quantized-kv-start ${s.quantizedKvStart}, so the cache is never quantized`);
  }

  const slotsKv = mlxKvCacheSlots(s.ctx);
  const rotatingSlots = (maxSize: number): number => mlxRotatingSlots(s.ctx, s.promptTokens, maxSize, s.prefillStep);
  type Group = { cls: CacheClass; kind: "full" | "swa"; cells: number; layers: number; kPerCell: number; vPerCell: number; maxSize: number | null };
  const groups = new Map<string, Group>();
  let prefillPeakBytes = 0;
  const quantBytes = (nHeadKv: number, dim: number, bits: number): number => {
    if (dim % s.kvGroupSize !== 0 || (dim * bits) % 32 !== 0) {
      throw new InvalidSettingError(`--kv-group-size ${s.kvGroupSize} must divide ${spec.name}'s head size ${dim} (mx.quantize quantizes the last dimension in groups)`, {
        setting: "kvGroupSize",
        value: s.kvGroupSize,
      });
    }
    // uint32 words of packed values + a scale and a bias per group in the model's dtype.
    return nHeadKv * ((dim * bits) / 8 + 2 * (dim / s.kvGroupSize) * s.dtypeBytes);
  };

  for (const { layer } of layers) {
    let cls: CacheClass;
    let maxSize: number | null = null;
    if (windowed && layer.swa) {
      cls = "RotatingKVCache";
      maxSize = spec.nSwa;
    } else if (rotatingAll) {
      cls = "RotatingKVCache";
      maxSize = s.maxKvSize;
    } else {
      cls = quantizeNow ? "QuantizedKVCache" : "KVCache";
    }
    const kPerCell = cls === "QuantizedKVCache" ? quantBytes(layer.nHeadKv, layer.headDimK, s.kvBits!) : layer.nHeadKv * layer.headDimK * s.dtypeBytes;
    const vPerCell = cls === "QuantizedKVCache" ? quantBytes(layer.nHeadKv, layer.headDimV, s.kvBits!) : layer.nHeadKv * layer.headDimV * s.dtypeBytes;
    const cells = maxSize === null ? slotsKv : rotatingSlots(maxSize);
    const key = `${cls}:${maxSize ?? ""}`;
    const g = groups.get(key) ?? { cls, kind: maxSize === null ? "full" : "swa", cells, layers: 0, kPerCell: 0, vPerCell: 0, maxSize };
    g.layers++;
    g.kPerCell += kPerCell;
    g.vPerCell += vPerCell;
    groups.set(key, g);
    const peakCells = maxSize === null ? cells : Math.max(cells, mlxRotatingPrefillPeak(s.promptTokens, maxSize, s.prefillStep));
    prefillPeakBytes += peakCells * (kPerCell + vPerCell) * s.seqs;
  }

  const caches: KvCachePlan[] = [];
  let kBytes = 0;
  let vBytes = 0;
  const typeLabel = (cls: CacheClass): string => (cls === "QuantizedKVCache" ? `q${s.kvBits}/g${s.kvGroupSize}` : s.dtype);
  for (const g of groups.values()) {
    const k = g.kPerCell * g.cells * s.seqs;
    const v = g.vPerCell * g.cells * s.seqs;
    kBytes += k;
    vBytes += v;
    caches.push({ kind: g.kind, cells: g.cells, layers: g.layers, streams: s.seqs, typeK: typeLabel(g.cls), typeV: typeLabel(g.cls), kBytes: k, vBytes: v, bytesPerCell: g.kPerCell + g.vPerCell });
    notes.push(
      g.maxSize === null
        ? `${g.layers} layer(s) in ${g.cls}: ${s.ctx} tokens held in ${g.cells} slots (grown in steps of ${MLX_KV_STEP})` +
            (g.cls === "QuantizedKVCache" ? `, ${s.kvBits}-bit packed with a ${s.dtype} scale and bias per ${s.kvGroupSize} values` : `, ${s.dtype}`)
        : `${g.layers} layer(s) in RotatingKVCache(max_size ${g.maxSize}${rotatingAll ? `, keep ${MLX_MAX_KV_KEEP}` : ""}): ${g.cells} slots after ${s.ctx} tokens, bounded at any length`,
    );
  }
  if (prefillPeakBytes > kBytes + vBytes) {
    notes.push(
      `during the prompt the rotating caches briefly hold max_size - 1 + ${s.prefillStep} tokens (RotatingKVCache._update_concat): ${formatBytes(prefillPeakBytes)} of KV at most`,
    );
  }
  if (s.seqs > 1) notes.push(`${s.seqs} sequences decoded together (mlx_lm.server batches them in a BatchKVCache, padded to the longest)`);
  notes.push("MLX frees a grown cache's old buffer into its allocator cache (mx.clear_cache runs after each prefill chunk and every 256 tokens): transient peaks are not counted");
  if (spec.weights?.source === "gguf-tensors" || spec.weights?.source === "registry") {
    notes.push(
      `weights: the ${spec.weights.source === "registry" ? "registry's GGUF" : "GGUF file's"} ${spec.weights.quant} bytes; mlx-lm loads its own safetensors (mlx_lm.convert -q: 4-bit groups of 64 with a ` +
        `float16 scale and bias each, 4.5 bits per weight): plan the MLX repo's config.json with its model.safetensors.index.json for those bytes`,
    );
  } else if (spec.weights?.source === "safetensors-index") {
    notes.push("weights: model.safetensors.index.json total_size, the bytes mlx-lm loads for this repository");
  }

  return {
    settings: {
      ctx: s.ctx,
      promptTokens: s.promptTokens,
      seqs: s.seqs,
      maxKvSize: s.maxKvSize,
      kvBits: s.kvBits,
      kvGroupSize: s.kvGroupSize,
      quantizedKvStart: s.quantizedKvStart,
      kvCacheDtype: s.dtype,
      prefillChunkSize: s.prefillStep,
    },
    kv: { totalBytes: kBytes + vBytes, kBytes, vBytes, caches },
    notes,
    extra: {
      stepTokens: MLX_KV_STEP,
      quantized: quantizeNow,
      rotating: rotatingAll || windowed,
      prefillPeakKvBytes: prefillPeakBytes,
      nCtxSeq: rotatingAll ? Math.min(s.ctx, s.maxKvSize!) : s.ctx,
    },
  };
}

function int(settings: Readonly<Record<string, unknown>>, key: string): number | undefined {
  const v = settings[key];
  return typeof v === "number" && Number.isInteger(v) ? v : undefined;
}

/**
 * The commands that realize an mlx plan: `mlx_lm.generate` with the cache flags, and
 * `mlx_lm.server` bounded to one cached conversation of the planned size. The server has no
 * --max-kv-size / --kv-bits (mlx_lm/server.py main()), so a plan that needs them gets a comment
 * instead of a server line.
 */
export function exportMlx(plan: MemoryPlan): string {
  const s = plan.settings;
  const ctx = int(s, "ctx");
  if (ctx === undefined) {
    throw new InvalidSettingError("the plan's settings lack ctx, which an mlx export needs; re-run planMemory with engine mlx", { setting: "ctx", value: null });
  }
  const prompt = int(s, "promptTokens") ?? ctx;
  // The cache holds prompt + generated tokens: --max-tokens is what the plan leaves after the prompt.
  const maxTokens = ctx > prompt ? `--max-tokens ${ctx - prompt}` : null;
  const flags = ["--model <mlx model>"];
  if (maxTokens !== null) flags.push(maxTokens);
  const maxKv = int(s, "maxKvSize");
  if (maxKv !== undefined) flags.push(`--max-kv-size ${maxKv}`);
  const bits = int(s, "kvBits");
  if (bits !== undefined) {
    flags.push(`--kv-bits ${bits}`, `--kv-group-size ${int(s, "kvGroupSize") ?? MLX_DEFAULT_KV_GROUP_SIZE}`, `--quantized-kv-start ${int(s, "quantizedKvStart") ?? MLX_DEFAULT_QUANTIZED_KV_START}`);
  }
  const step = int(s, "prefillChunkSize");
  const lines = [
    maxTokens !== null
      ? `# the cache holds prompt + generated tokens: a ${prompt}-token prompt + ${ctx - prompt} generated = ${ctx}`
      : `# the cache holds prompt + generated tokens: keep the prompt + --max-tokens within ${ctx}`,
    `mlx_lm.generate ${flags.join(" ")}${step !== undefined && step !== MLX_DEFAULT_PREFILL_STEP ? "  # prefill_step_size " + step + " via the Python API" : ""}`,
  ];
  const seqs = int(s, "seqs") ?? 1;
  if (maxKv !== undefined || bits !== undefined) {
    lines.push("# mlx_lm.server takes no --max-kv-size or --kv-bits (mlx_lm/server.py main()); serve this plan through the Python API (stream_generate)");
  } else {
    const server = [
      "mlx_lm.server --model <mlx model>",
      ...(maxTokens !== null ? [maxTokens] : []),
      `--decode-concurrency ${seqs}`,
      `--prompt-concurrency ${seqs}`,
      "--prompt-cache-size 1",
      `--prompt-cache-bytes ${plan.kv.totalBytes}`,
    ];
    if (step !== undefined && step !== MLX_DEFAULT_PREFILL_STEP) server.push(`--prefill-step-size ${step}`);
    lines.push("# server: one cached conversation of the planned size (the LRU keeps 10 by default)", server.join(" "));
  }
  return lines.join("\n");
}

/** The KV settings `fit` tries on mlx-lm, cheapest memory last. */
export function mlxKvOptions(): KvOption[] {
  return [
    { label: "model dtype (float16)", settings: {}, bounded: false },
    { label: "--kv-bits 8 --quantized-kv-start 0", settings: { kvBits: 8, quantizedKvStart: 0 }, bounded: false },
    { label: "--kv-bits 4 --quantized-kv-start 0", settings: { kvBits: 4, quantizedKvStart: 0 }, bounded: false },
  ];
}

/**
 * mlx-lm's bounded option: --max-kv-size N (a RotatingKVCache keeping the first 4 tokens and the
 * most recent ones), for models without their own make_cache. `probe` plans a setting and says
 * whether it fits and what it costs.
 */
export function mlxBoundedOption(
  spec: ModelSpec,
  step: number,
  cap: number,
  probe: (settings: PlanSettings) => { fits: boolean; bytes: number },
  largestFitting: (step: number, cap: number, fits: (n: number) => boolean) => number | null,
): FitOption {
  const label = `--max-kv-size (RotatingKVCache, keep ${MLX_MAX_KV_KEEP})`;
  const windowed = spec.nSwa > 0 && spec.swaType === "standard" && !MLX_NO_WINDOW_ARCHS.includes(spec.arch);
  if (windowed) {
    return {
      label,
      settings: {},
      bounded: true,
      maxCtx: null,
      bytesAtMax: null,
      limitedBy: "unavailable",
      note: `not offered: ${spec.arch} builds its own cache (make_cache), which --max-kv-size does not reach`,
    };
  }
  // The rotating cache's size does not depend on how long the text grows: plan it at the window.
  const settingsFor = (w: number): PlanSettings => ({ ctx: Math.max(w, cap), maxKvSize: w });
  const maxWindow = largestFitting(step, cap, (w) => w > MLX_MAX_KV_KEEP && probe(settingsFor(w)).fits);
  if (maxWindow === null) {
    return { label, settings: { maxKvSize: step }, bounded: true, maxCtx: null, bytesAtMax: null, limitedBy: "budget", note: "no --max-kv-size window fits" };
  }
  const at = probe(settingsFor(maxWindow));
  return {
    label,
    settings: { maxKvSize: maxWindow },
    bounded: true,
    maxCtx: maxWindow,
    bytesAtMax: at.bytes,
    limitedBy: maxWindow === cap && spec.nCtxTrain !== null ? "nCtxTrain" : "budget",
    note: `mlx_lm.generate --max-kv-size ${maxWindow} keeps the first ${MLX_MAX_KV_KEEP} tokens and the most recent ones at any length in ${formatBytes(at.bytes)}; older tokens are overwritten`,
  };
}
