// The llama.cpp engine rule: the exact K/V (and recurrent state) bytes a llama.cpp context
// allocates for a model, cache by cache, as its `llama_kv_cache: size = ...` lines report them.
// It mirrors (without copying) src/llama-context.cpp (n_ctx padding and per-sequence streams),
// src/llama-model.cpp `create_memory` (which cache class a model gets), src/llama-kv-cache.cpp
// (one K and one V tensor [row, kv_size, n_stream] per layer), src/llama-kv-cache-iswa.cpp (the
// SWA cache size), src/llama-memory-recurrent.cpp (R/S state) and src/llama-hparams.cpp
// (n_embd_v_gqa_max). Older builds' rules come from llama-cpp-builds.ts.

import { CacheTypeBlockSizeError, InvalidSettingError, QuantizedVRequiresFlashAttentionError, UnknownCacheTypeError } from "../errors.js";
import { ggmlTypeByName, type GgmlType } from "../gguf/ggml-types.js";
import type { LayerSpec, ModelSpec } from "../spec/model-spec.js";
import {
  llamaCppFlashAttnDefault,
  llamaCppFlashAttnFlag,
  llamaCppRules,
  LLAMA_CPP_FA_FLAG_BUILD,
  LLAMA_CPP_FA_VALUE_BUILD,
  LLAMA_CPP_RULE_HISTORY,
  type LlamaCppRules,
} from "./llama-cpp-builds.js";
import type { EngineKvResult, KvCachePlan, PlanSettings } from "./types.js";

/** The cache types llama.cpp's `--cache-type-k/-v` accept (common/arg.cpp kv_cache_types). */
export const LLAMA_CPP_CACHE_TYPES: readonly string[] = ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "iq4_nl"];

// Defaults of common/common.h `common_params` (what llama-cli and llama-server start from).
const DEFAULT_CTX = 4096;
const DEFAULT_UBATCH = 512;
/** `n_batch` default; the planner has no batch setting, see resolveBatch. */
const DEFAULT_BATCH = 2048;
const DEFAULT_TYPE = "f16";

// Named limits: n_ctx and n_ubatch are uint32 in llama.cpp, but anything past 2^31 cells is a typo
// (and would push byte totals past exact double arithmetic for large models).
const MAX_CTX = 2 ** 31;
const MAX_UBATCH = 2 ** 31;
/** LLAMA_MAX_SEQ (src/llama-cparams.h): llama_context refuses more sequences. */
const MAX_SEQS = 256;
/** Oldest release tag worth naming; b1 is the first bNNNN tag. */
const MIN_BUILD = 1;

/** llama.cpp's `GGML_PAD(x, n)`: round x up to a multiple of n. */
function pad(x: number, n: number): number {
  return Math.ceil(x / n) * n;
}

/** Quantized types (ggml_is_quantized): block size above 1. */
function isQuantized(type: GgmlType): boolean {
  return type.blockSize > 1;
}

function resolveType(setting: "typeK" | "typeV", value: string | undefined): GgmlType {
  const name = (value ?? DEFAULT_TYPE).toLowerCase();
  const type = LLAMA_CPP_CACHE_TYPES.includes(name) ? ggmlTypeByName(name) : undefined;
  if (type === undefined) {
    throw new UnknownCacheTypeError(
      `llama.cpp has no KV cache type "${value}" for ${setting}; use one of ${LLAMA_CPP_CACHE_TYPES.join(", ")}`,
      { setting, value: String(value), allowed: LLAMA_CPP_CACHE_TYPES },
    );
  }
  return type;
}

function integerSetting(setting: string, value: number | undefined, fallback: number, min: number, max: number): number {
  const v = value ?? fallback;
  if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) {
    throw new InvalidSettingError(`${setting} ${String(v)} is invalid for llama.cpp: use an integer from ${min} to ${max}`, {
      setting,
      value: v,
    });
  }
  return v;
}

function boolSetting(setting: string, value: boolean | undefined, fallback: boolean): boolean {
  const v = value ?? fallback;
  if (typeof v !== "boolean") {
    throw new InvalidSettingError(`${setting} must be true or false, got ${String(v)}`, { setting, value: v });
  }
  return v;
}

type AttentionLayer = Extract<LayerSpec, { kind: "attention" }>;

/** Bytes of one K or V row; the block check has already run, so the division is exact. */
function rowBytes(type: GgmlType, values: number): number {
  return (type.typeSize * values) / type.blockSize;
}

/**
 * The cells per stream and the stream count of the main (non-SWA) cache, and the padded n_ctx,
 * following the context rules of the given build.
 */
function mainCells(
  rules: LlamaCppRules,
  ctx: number,
  seqs: number,
  unified: boolean,
  flashAttn: boolean,
  hybrid: boolean,
): { cellsPerStream: number; streams: number; nCtx: number; padding: number } {
  switch (rules.ctxPadding) {
    case "256": {
      // llama-context.cpp: n_ctx = PAD(n_ctx, 256); non-unified n_ctx_seq = PAD(n_ctx / n_seq, 256)
      // and n_ctx becomes n_ctx_seq * n_seq (the log says "rounding down"; it can also round up).
      const nCtx = pad(ctx, 256);
      if (unified) return { cellsPerStream: nCtx, streams: 1, nCtx, padding: 256 };
      const perStream = pad(Math.floor(nCtx / seqs), 256);
      return { cellsPerStream: perStream, streams: seqs, nCtx: perStream * seqs, padding: 256 };
    }
    case "none": {
      if (unified) return { cellsPerStream: ctx, streams: 1, nCtx: ctx, padding: 1 };
      const perStream = Math.floor(ctx / seqs);
      if (perStream === 0) {
        // llama-context.cpp throws "n_ctx_seq == 0" here.
        throw new InvalidSettingError(`ctx ${ctx} is smaller than seqs ${seqs}: llama.cpp fails with n_ctx_seq == 0; raise ctx`, {
          setting: "ctx",
          value: ctx,
        });
      }
      return { cellsPerStream: perStream, streams: seqs, nCtx: perStream * seqs, padding: 1 };
    }
    case "fa256-else-32": {
      const padding = flashAttn ? 256 : 32;
      // Before streams every sequence shared one cache; hybrid models kept that shape even after
      // streams existed (create_memory passed the padded n_ctx as each stream's size).
      if (!rules.streams || unified || hybrid) {
        const nCtx = pad(ctx, padding);
        return { cellsPerStream: nCtx, streams: rules.streams && !unified ? seqs : 1, nCtx, padding };
      }
      const perStream = pad(Math.ceil(ctx / seqs), padding);
      return { cellsPerStream: perStream, streams: seqs, nCtx: perStream * seqs, padding };
    }
  }
  return rules.ctxPadding satisfies never;
}

/** Cells of the SWA cache of an iSWA model (llama-kv-cache-iswa.cpp), or null without one. */
function swaCells(
  rules: LlamaCppRules,
  base: number,
  nSwa: number,
  seqs: number,
  unified: boolean,
  nBatch: number,
  nUbatch: number,
  padding: number,
  swaFull: boolean,
): number | null {
  if (rules.swaCells === "full-size") return null;
  if (swaFull) return base;
  switch (rules.swaCells) {
    case "n_swa*n_seq+n_batch":
      return Math.min(base, pad(nSwa * seqs + nBatch, padding));
    case "n_swa*n_seq+n_ubatch":
      return Math.min(base, pad(nSwa * seqs + nUbatch, padding));
    case "n_swa*streams+n_ubatch":
      return Math.min(base, pad(nSwa * (unified ? seqs : 1) + nUbatch, padding));
    case "pad256(min(base,n_swa*streams+n_ubatch))":
      return pad(Math.min(base, nSwa * (unified ? seqs : 1) + nUbatch), 256);
  }
  return rules.swaCells satisfies never;
}

/**
 * The KV cache(s) llama.cpp allocates for `spec` under `settings`.
 *
 * Defaults (what llama-cli / llama-server start from, common/common.h): ctx 4096 (0 = the model's
 * training context), seqs 1, kvUnified false, ubatch 512, swaFull false, typeK/typeV f16, current
 * rules. flashAttn defaults to true from b6325 on: llama.cpp's default is then "auto", which turns
 * flash attention on wherever the backend supports it (CPU, CUDA, Metal, Vulkan); pass flashAttn
 * false to plan `-fa off`. Older builds default to off (LLAMA_CPP_FA_VALUE_BUILD), and builds
 * before b2771 have no flash attention at all. llama-server started without `-np` uses 4 slots and
 * a unified cache: plan that with `{ seqs: 4, kvUnified: true }`.
 */
export function llamaCppKv(spec: ModelSpec, settings: PlanSettings): EngineKvResult {
  const rules = llamaCppRules(
    settings.llamaCppBuild === undefined
      ? undefined
      : integerSetting("llamaCppBuild", settings.llamaCppBuild, 0, MIN_BUILD, 1_000_000),
  );
  const ctxSetting = integerSetting("ctx", settings.ctx, DEFAULT_CTX, 0, MAX_CTX);
  const seqs = integerSetting("seqs", settings.seqs, 1, 1, MAX_SEQS);
  const ubatchSetting = integerSetting("ubatch", settings.ubatch, DEFAULT_UBATCH, 1, MAX_UBATCH);
  const unified = boolSetting("kvUnified", settings.kvUnified, false);
  const buildSetting = settings.llamaCppBuild; // validated by llamaCppRules' integerSetting above
  const flashAttnGiven = settings.flashAttn !== undefined;
  const flashAttn = boolSetting("flashAttn", settings.flashAttn, llamaCppFlashAttnDefault(buildSetting));
  if (flashAttn && llamaCppFlashAttnFlag(buildSetting) === "none") {
    throw new InvalidSettingError(
      `llama.cpp b${buildSetting} has no flash attention (it arrived in b${LLAMA_CPP_FA_FLAG_BUILD}, ggml-org/llama.cpp#5021); plan with flashAttn false (--flash-attn off)`,
      { setting: "flashAttn", value: true, build: buildSetting },
    );
  }
  const swaFull = boolSetting("swaFull", settings.swaFull, false);
  const typeK = resolveType("typeK", settings.typeK);
  const typeV = resolveType("typeV", settings.typeV);

  let ctx = ctxSetting;
  if (ctx === 0) {
    if (spec.nCtxTrain === null || spec.nCtxTrain <= 0) {
      throw new InvalidSettingError(`ctx 0 means the model's training context, which ${spec.name} does not state; pass ctx explicitly`, {
        setting: "ctx",
        value: 0,
      });
    }
    ctx = integerSetting("ctx", spec.nCtxTrain, 0, 1, MAX_CTX);
  }

  const attention: Array<{ index: number; layer: AttentionLayer }> = [];
  let vRowMax = 0;
  let rElems = 0;
  let sElems = 0;
  let recurrentLayers = 0;
  for (let i = 0; i < spec.layers.length; i++) {
    const layer = spec.layers[i]!;
    if (layer.kind === "recurrent") {
      recurrentLayers++;
      rElems += layer.rElems;
      sElems += layer.sElems;
      continue;
    }
    // n_embd_v_gqa_max loops over every layer, shared-KV ones included.
    vRowMax = Math.max(vRowMax, layer.nHeadKv * layer.headDimV);
    if (layer.kvFrom !== undefined || layer.nHeadKv <= 0) continue;
    attention.push({ index: i, layer });
  }

  // llama_init_from_model refuses a quantized type whose block does not divide the head size
  // ("K cache type q4_0 with block size 32 does not divide n_embd_head_k=80"); it checks under
  // flash-attn "auto", and with -fa on the per-head views would not be block aligned either.
  for (let i = 0; i < attention.length; i++) {
    const layer = attention[i]!.layer;
    if (layer.headDimK % typeK.blockSize !== 0) throw new CacheTypeBlockSizeError("typeK", typeK.name.toLowerCase(), typeK.blockSize, layer.headDimK);
    if (layer.headDimV % typeV.blockSize !== 0) throw new CacheTypeBlockSizeError("typeV", typeV.name.toLowerCase(), typeV.blockSize, layer.headDimV);
  }
  // llama-context.cpp: "quantized V cache was requested, but this requires Flash Attention".
  if (!flashAttn && isQuantized(typeV)) throw new QuantizedVRequiresFlashAttentionError(typeV.name.toLowerCase());

  const notes: string[] = [];
  const hybrid = recurrentLayers > 0 && attention.length > 0;
  const { nBatch, nUbatch } = resolveBatch(ctx, ubatchSetting, notes);
  const main = mainCells(rules, ctx, seqs, unified, flashAttn, hybrid);
  const hasIswa = spec.nSwa > 0 && spec.swaType !== "none" && attention.some((a) => a.layer.swa);
  const swaSize = hasIswa
    ? swaCells(rules, main.cellsPerStream, spec.nSwa, seqs, unified, nBatch, nUbatch, main.padding, swaFull)
    : null;

  const mla = spec.mla !== null;
  const caches: KvCachePlan[] = [];
  // Each layer's own K+V (or R+S) bytes: llama.cpp allocates them on the device of that layer
  // (llama-kv-cache.cpp: `model.dev_layer(il)` when offload_kqv), so the offload rule needs them.
  const layerKvBytes: number[] = new Array<number>(spec.layers.length).fill(0);
  const buildCache = (kind: "full" | "swa" | "mla", cells: number, layers: Array<{ index: number; layer: AttentionLayer }>): void => {
    if (layers.length === 0) return;
    let kRowSum = 0;
    let vRowSum = 0;
    for (let i = 0; i < layers.length; i++) {
      const layer = layers[i]!.layer;
      const kRow = rowBytes(typeK, layer.nHeadKv * layer.headDimK);
      kRowSum += kRow;
      // Without flash attention V is stored transposed and every layer's V row is padded to the
      // widest layer's (llama-kv-cache.cpp [TAG_V_CACHE_VARIABLE], n_embd_v_gqa_max()).
      const vRow = mla && !rules.mlaAllocatesV ? 0 : rowBytes(typeV, flashAttn ? layer.nHeadKv * layer.headDimV : vRowMax);
      vRowSum += vRow;
      layerKvBytes[layers[i]!.index] = (kRow + vRow) * cells * main.streams;
    }
    const kBytes = kRowSum * cells * main.streams;
    const vBytes = vRowSum * cells * main.streams;
    caches.push({
      kind,
      cells,
      layers: layers.length,
      streams: main.streams,
      typeK: typeK.name.toLowerCase(),
      typeV: typeV.name.toLowerCase(),
      kBytes,
      vBytes,
      bytesPerCell: kRowSum + vRowSum,
    });
  };

  const fullKind = mla ? "mla" : "full";
  if (swaSize === null) {
    buildCache(fullKind, main.cellsPerStream, attention);
  } else {
    buildCache(fullKind, main.cellsPerStream, attention.filter((a) => !a.layer.swa));
    buildCache("swa", swaSize, attention.filter((a) => a.layer.swa));
  }

  if (recurrentLayers > 0) {
    // create_memory: mem_size = max(1, n_seq_max) state cells, R and S in f32; each layer holds
    // n_embd_r() * mem_size and n_embd_s() * mem_size values (llama-memory-recurrent.cpp).
    const cells = Math.max(1, seqs);
    for (let i = 0; i < spec.layers.length; i++) {
      const layer = spec.layers[i]!;
      if (layer.kind === "recurrent") layerKvBytes[i] = (layer.rElems + layer.sElems) * 4 * cells;
    }
    caches.push({
      kind: "recurrent",
      cells,
      layers: recurrentLayers,
      streams: 1,
      typeK: "f32",
      typeV: "f32",
      kBytes: 0,
      vBytes: 0,
      rBytes: rElems * 4 * cells,
      sBytes: sElems * 4 * cells,
      bytesPerCell: 0,
    });
  }

  let kTotal = 0;
  let vTotal = 0;
  let total = 0;
  for (let i = 0; i < caches.length; i++) {
    const c = caches[i]!;
    kTotal += c.kBytes;
    vTotal += c.vBytes;
    total += c.kBytes + c.vBytes + (c.rBytes ?? 0) + (c.sBytes ?? 0);
  }
  if (!Number.isSafeInteger(total)) {
    throw new InvalidSettingError(`ctx ${ctx} makes the KV cache larger than 2^53 bytes; use a smaller ctx`, { setting: "ctx", value: ctx });
  }

  describe(notes, rules, settings.llamaCppBuild, ctx, main, seqs, unified, flashAttn, flashAttnGiven, swaSize, spec.nSwa, nUbatch, swaFull, mla);

  return {
    settings: {
      ctx,
      seqs,
      kvUnified: unified,
      ubatch: nUbatch,
      flashAttn,
      swaFull,
      typeK: typeK.name.toLowerCase(),
      typeV: typeV.name.toLowerCase(),
      build: settings.llamaCppBuild ?? null,
    },
    kv: { totalBytes: total, kBytes: kTotal, vBytes: vTotal, caches },
    layerKvBytes,
    notes,
    extra: {
      nCtx: main.nCtx,
      nCtxSeq: main.cellsPerStream,
      rules: { pr: rules.pr, fromBuild: rules.fromBuild, pinned: rules.pinned, summary: rules.summary },
    },
  };
}

/**
 * n_batch and n_ubatch as llama-context.cpp derives them: n_batch = min(n_ctx, n_batch) for causal
 * models (from the requested, unpadded n_ctx), n_ubatch = min(n_batch, n_ubatch). The planner
 * has no batch setting: it assumes the CLI default 2048, or ubatch itself when that is larger
 * (a user who passes -ub 4096 has to pass -b 4096 too, or llama.cpp caps the ubatch).
 */
function resolveBatch(ctx: number, ubatch: number, notes: string[]): { nBatch: number; nUbatch: number } {
  const nBatch = Math.min(ctx, Math.max(DEFAULT_BATCH, ubatch));
  const nUbatch = Math.min(nBatch, ubatch);
  if (nUbatch !== ubatch) notes.push(`ubatch ${ubatch} capped to ${nUbatch} (n_ubatch <= n_batch <= n_ctx)`);
  return { nBatch, nUbatch };
}

function describe(
  notes: string[],
  rules: LlamaCppRules,
  build: number | undefined,
  ctx: number,
  main: { cellsPerStream: number; streams: number; nCtx: number; padding: number },
  seqs: number,
  unified: boolean,
  flashAttn: boolean,
  flashAttnGiven: boolean,
  swaSize: number | null,
  nSwa: number,
  nUbatch: number,
  swaFull: boolean,
  mla: boolean,
): void {
  notes.push(
    build === undefined
      ? `current llama.cpp rules (n_ctx padded to 256, SWA cells n_swa + n_ubatch; newest change: ${rules.pr})`
      : `llama.cpp b${build} rules: ${rules.summary} (${rules.pr}, from b${rules.fromBuild}${rules.pinned ? "" : ", estimated"})`,
  );
  if (main.nCtx !== ctx) notes.push(`n_ctx ${ctx} padded to ${main.nCtx} (multiple of ${main.padding}${main.streams > 1 ? ` per stream` : ""})`);
  if (main.streams > 1) {
    notes.push(`${seqs} sequences, not unified: ${main.streams} streams of ${main.cellsPerStream} cells; each sequence can use at most ${main.cellsPerStream} tokens`);
  } else if (seqs > 1 && unified) {
    notes.push(`${seqs} sequences share one unified stream of ${main.cellsPerStream} cells`);
  }
  if (swaSize !== null) {
    notes.push(
      swaFull
        ? `swa_full: SWA layers keep ${swaSize} cells like the full layers`
        : `SWA layers keep ${swaSize} cells (window ${nSwa}${unified && seqs > 1 ? ` x ${seqs} sequences` : ""} + ubatch ${nUbatch}, padded)`,
    );
  }
  const defaultOff = build !== undefined && build < LLAMA_CPP_FA_VALUE_BUILD;
  notes.push(
    flashAttn
      ? flashAttnGiven
        ? "flash attention on"
        : "flash attention on (llama.cpp's default 'auto' enables it where the backend supports it)"
      : "flash attention off: V stored transposed, V rows padded to the widest layer's" +
          (!flashAttnGiven && defaultOff
            ? ` (b${build} predates -fa auto, b${LLAMA_CPP_FA_VALUE_BUILD}: flash attention is off unless -fa is passed)`
            : ""),
  );
  if (mla) {
    notes.push(rules.mlaAllocatesV ? "MLA: K holds latent + RoPE part, V holds the latent" : "MLA: only K is stored (latent + RoPE part); V is a view of it");
  }
}

/**
 * Bytes as llama.cpp prints them in `llama_kv_cache: size = %7.2f MiB`: the byte count converted
 * to float (single precision), divided by 1024*1024, printed with two decimals; glibc's printf
 * rounds an exact tie to even, which JavaScript's toFixed does not, so the rounding is done here.
 */
export function formatMiB(bytes: number): string {
  // fround then an exact division by 2^20 (a power of two) reproduces the float value.
  const asFloat = Math.fround(bytes);
  const scaled = BigInt(Math.round(asFloat)) * 100n; // asFloat is an integer for any byte count >= 1
  const denom = 1n << 20n;
  let q = scaled / denom;
  const r = scaled % denom;
  if (r * 2n > denom || (r * 2n === denom && q % 2n === 1n)) q += 1n;
  const whole = q / 100n;
  const frac = (q % 100n).toString().padStart(2, "0");
  return `${whole}.${frac} MiB`;
}

/** All rule sets, oldest first (re-exported for `kvbound plan --explain`). */
export const LLAMA_CPP_RULES = LLAMA_CPP_RULE_HISTORY;

/** Architectures whose positions are multi-axis (M-RoPE / IM-RoPE: `n_pos_per_embd() > 1` in
 *  llama-hparams.cpp), which llama.cpp's K-shift cannot move. */
export const LLAMA_CPP_MROPE_ARCHS: readonly string[] = ["qwen2vl", "qwen3vl", "qwen3vlmoe", "qwen35", "qwen35moe"];

/**
 * Whether llama.cpp can context-shift this model's memory (`llama_memory_can_shift`); llama-server
 * turns --context-shift off when it cannot ("ctx_shift is not supported by this context, it will be
 * disabled", tools/server/server.cpp load_model). Returns the reason when it cannot:
 * - interleaved SWA: llama_kv_cache_iswa::get_can_shift() requires the SWA cache to be as large as
 *   the base one (src/llama-kv-cache-iswa.cpp), i.e. --swa-full;
 * - recurrent or hybrid: a shift removes the tokens [n_keep, n_keep + n_discard) from the middle of
 *   the sequence, and llama_memory_recurrent::seq_rm refuses a range that cuts into the stored state
 *   ("models like Mamba or RWKV can't have a state partially erased", src/llama-memory-recurrent.cpp;
 *   llama_memory_hybrid::seq_rm needs both of its parts to succeed); the state cannot forget tokens;
 * - M-RoPE / IM-RoPE positions: llama_kv_cache::get_can_shift() returns false when
 *   n_pos_per_embd() > 1 (src/llama-kv-cache.cpp).
 */
export function llamaCppShiftRefusal(spec: ModelSpec, swaFull: boolean): string | null {
  if (spec.layers.some((l) => l.kind === "recurrent")) {
    return (
      `${spec.arch} keeps recurrent state, which llama.cpp cannot partially erase (llama_memory_recurrent::seq_rm, ` +
      `src/llama-memory-recurrent.cpp): llama-server disables --context-shift for it`
    );
  }
  if (LLAMA_CPP_MROPE_ARCHS.includes(spec.arch)) {
    return `${spec.arch} uses multi-axis RoPE positions, which llama.cpp cannot shift (llama_kv_cache::get_can_shift, n_pos_per_embd() > 1)`;
  }
  const iswa = spec.nSwa > 0 && spec.swaType !== "none" && spec.layers.some((l) => l.kind === "attention" && l.swa);
  if (iswa && !swaFull) {
    return (
      `${spec.arch} has interleaved sliding-window layers, whose cache llama.cpp shifts only when it is full size ` +
      `(llama_kv_cache_iswa::get_can_shift, src/llama-kv-cache-iswa.cpp): add --swa-full, which sizes the SWA layers like the full ones`
    );
  }
  return null;
}
