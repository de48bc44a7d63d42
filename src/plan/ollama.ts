// Ollama's KV rule: what `ollama run` / `ollama serve` allocates for a GGUF model, which depends
// on which of Ollama's two runners loads it. Mirrors (without copying) ollama/ollama:
//   envconfig/config.go          OLLAMA_NUM_PARALLEL (default 1), OLLAMA_CONTEXT_LENGTH (default 0:
//                                "4k/32k/256k based on VRAM"), OLLAMA_KV_CACHE_TYPE, OLLAMA_FLASH_ATTENTION
//   server/routes.go             Serve: the VRAM-tier default num_ctx (>= 47 GiB -> 262144, >= 23 GiB ->
//                                32768, else 4096, total VRAM minus OLLAMA_GPU_OVERHEAD); "entering low
//                                vram mode" below 20 GiB; scheduleRunner: gpt-oss / qwen3vl families get
//                                num_ctx = max(num_ctx, 8192) unless in low-VRAM mode
//   api/types.go                 DefaultOptions: num_batch 512
//   llm/server.go                NewLlamaServer: runner choice (OllamaEngineRequired or OLLAMA_NEW_ENGINE),
//                                num_ctx capped at the model's context_length ("requested context size
//                                too large for model"), num_batch = min(num_batch, num_ctx),
//                                KvSize = num_ctx x OLLAMA_NUM_PARALLEL, flash attention and KV type choice
//   fs/ggml/ggml.go              OllamaEngineRequired (which architectures the Go engine must run),
//                                FlashAttention (architectures that default to it), SupportsFlashAttention,
//                                SupportsKVCacheType (f16, q8_0, q4_0)
//   runner/ollamarunner/cache.go NewInputCache: numCtx = KvSize / parallel, cache.Init(backend, dtype,
//                                parallel, numCtx, batchSize)
//   kvcache/causal.go            Causal.Init: parallel x numCtx cells, or for sliding-window caches
//                                parallel x swaMemorySize + batchSize when that memory fits in numCtx,
//                                rounded up to CachePadding; Put: one K and one V tensor per layer
//   ml/backend/ggml/ggml.go      Backend.CacheConfig: CachePadding 256 (flash attention on or off)
//   model/models/*/model.go      which cache each model builds: NewSWACache(window) (gemma3, olmo3),
//                                NewSWAMemCache(window, 4096) (gpt-oss, gemma4), NewChunkedAttentionCache
//                                (llama4: full size), NewCausalCache (the rest)
//   llama/llama.go               NewContextParams (llama.cpp runner): n_ctx = KvSize, n_seq_max = parallel,
//                                n_ubatch = num_batch, llama_context_default_params otherwise (kv_unified
//                                false, swa_full true)

import { InvalidSettingError, UnknownCacheTypeError, UnsupportedArchitectureError } from "../errors.js";
import { ggmlTypeByName, type GgmlType } from "../gguf/ggml-types.js";
import { kvLayers, type ModelSpec } from "../spec/model-spec.js";
import type { FitOption, KvOption } from "./fit.js";
import { llamaCppKv } from "./llama-cpp.js";
import { checkCount, MAX_CONTEXT_TOKENS } from "./parse.js";
import type { EngineKvResult, KvCachePlan, MemoryPlan, PlanSettings } from "./types.js";

const GIB = 1024 ** 3;

/** fs/ggml/ggml.go OllamaEngineRequired: architectures Ollama runs on its Go engine ("ollamarunner",
 *  `ollama runner --ollama-engine`); every other GGUF runs on the llama.cpp runner unless
 *  OLLAMA_NEW_ENGINE=1. Both spellings of gpt-oss are listed there. */
export const OLLAMA_ENGINE_ARCHS: readonly string[] = [
  "bert",
  "deepseek2",
  "deepseekocr",
  "gemma3",
  "gemma3n",
  "gemma4",
  "gptoss",
  "gpt-oss",
  "laguna",
  "llama4",
  "mistral3",
  "mllama",
  "nemotron_h",
  "nemotron_h_moe",
  "nemotron_h_omni",
  "nomic-bert",
  "olmo3",
  "qwen25vl",
  "qwen3",
  "qwen3moe",
  "qwen35",
  "qwen35moe",
  "qwen3next",
  "qwen3vl",
  "qwen3vlmoe",
  "glm4moelite",
  "glmocr",
  "lfm2",
  "lfm2moe",
];

/** fs/ggml/ggml.go FlashAttention: architectures whose flash attention is on unless
 *  OLLAMA_FLASH_ATTENTION says otherwise. */
export const OLLAMA_FLASH_ATTENTION_ARCHS: readonly string[] = [
  "bert",
  "gemma3",
  "gemma4",
  "glm4moelite",
  "glmocr",
  "gptoss",
  "gpt-oss",
  "lfm2",
  "lfm2moe",
  "mistral3",
  "nemotron_h",
  "nemotron_h_moe",
  "nemotron_h_omni",
  "olmo3",
  "qwen3",
  "qwen3moe",
  "qwen35",
  "qwen35moe",
  "qwen3next",
  "qwen3vl",
  "qwen3vlmoe",
];

/** fs/ggml/ggml.go SupportsFlashAttention: refused outright for these. */
const OLLAMA_NO_FLASH_ATTENTION_ARCHS: readonly string[] = ["gemma2", "grok"];

/** server/routes.go scheduleRunner: "This model is much more capable with a larger context". */
export const OLLAMA_MIN_8192_CTX_ARCHS: readonly string[] = ["gptoss", "gpt-oss", "qwen3vl", "qwen3vlmoe"];
export const OLLAMA_MIN_8192_CTX = 8192;

/** model/models/{gptoss,gemma4}: NewSWAMemCache(window, 4096): the sliding-window layers keep 4096
 *  tokens per sequence (for prefix reuse), not just the window. Other SWA models use NewSWACache,
 *  whose memory is the window itself. */
export const OLLAMA_SWA_MEMORY_TOKENS: Readonly<Record<string, number>> = { gptoss: 4096, "gpt-oss": 4096, gemma4: 4096 };

/** SWA caches whose model file was read (the rest are assumed to use NewSWACache, and say so). */
const OLLAMA_SWA_VERIFIED_ARCHS: readonly string[] = ["gemma3", "olmo3", "gptoss", "gpt-oss", "gemma4"];

/** ml/backend/ggml/ggml.go Backend.CacheConfig: CachePadding 256 with and without flash attention
 *  (older releases padded to 32 without it). */
export const OLLAMA_CACHE_PADDING = 256;
/** api/types.go DefaultOptions: NumBatch 512. */
export const OLLAMA_DEFAULT_NUM_BATCH = 512;
/** envconfig/config.go: NumParallel = Uint("OLLAMA_NUM_PARALLEL", 1). */
export const OLLAMA_DEFAULT_NUM_PARALLEL = 1;
/** server/routes.go: "entering low vram mode" below this much total VRAM. */
export const OLLAMA_LOW_VRAM_BYTES = 20 * GIB;

/** OLLAMA_KV_CACHE_TYPE values Ollama passes on (fs/ggml/ggml.go SupportsKVCacheType; "" = f16). */
export const OLLAMA_KV_CACHE_TYPES: readonly string[] = ["f16", "q8_0", "q4_0"];

/** The default num_ctx when neither OLLAMA_CONTEXT_LENGTH, a Modelfile `PARAMETER num_ctx` nor the
 *  request sets one (server/routes.go Serve; docs/context-length.mdx states the 24 / 48 GiB tiers,
 *  the code compares against 23 / 47 GiB "to account for small differences"). */
export function ollamaDefaultNumCtx(totalVramBytes: number): number {
  if (totalVramBytes >= 47 * GIB) return 262144;
  if (totalVramBytes >= 23 * GIB) return 32768;
  return 4096;
}

/** Which runner loads the model (llm/server.go NewLlamaServer). */
export type OllamaRunner = "ollama-engine" | "llama.cpp";

export function ollamaRunnerFor(arch: string): OllamaRunner {
  return OLLAMA_ENGINE_ARCHS.includes(arch) ? "ollama-engine" : "llama.cpp";
}

function pad(x: number, n: number): number {
  return Math.ceil(x / n) * n;
}

function resolveKvCacheType(settings: PlanSettings): string {
  const k = settings.typeK?.toLowerCase();
  const v = settings.typeV?.toLowerCase();
  if (k !== undefined && v !== undefined && k !== v) {
    throw new InvalidSettingError(
      `Ollama has one OLLAMA_KV_CACHE_TYPE for K and V (llama/llama.go NewContextParams sets type_k and type_v from it); typeK ${k} and typeV ${v} differ`,
      { setting: "typeV", value: v },
    );
  }
  const t = k ?? v ?? settings.kvCacheDtype?.toLowerCase() ?? "f16";
  if (!OLLAMA_KV_CACHE_TYPES.includes(t)) {
    throw new UnknownCacheTypeError(`Ollama has no OLLAMA_KV_CACHE_TYPE ${t}; use one of ${OLLAMA_KV_CACHE_TYPES.join(", ")}`, {
      setting: "typeK",
      value: t,
      allowed: OLLAMA_KV_CACHE_TYPES,
    });
  }
  return t;
}

/**
 * The KV cache Ollama allocates for `spec`. Settings as Ollama names them:
 *   ctx      num_ctx (Modelfile `PARAMETER num_ctx`, OLLAMA_CONTEXT_LENGTH, or the request's options);
 *            unset: the VRAM-tier default, with `budgetBytes` taken as the machine's total VRAM
 *   seqs     OLLAMA_NUM_PARALLEL (default 1): every slot gets its own num_ctx
 *   ubatch   num_batch (default 512)
 *   typeK    OLLAMA_KV_CACHE_TYPE (f16, q8_0, q4_0; one type for K and V)
 *   flashAttn OLLAMA_FLASH_ATTENTION; unset = Ollama's per-architecture default
 * Quantized types need flash attention; without it Ollama logs a warning and keeps f16 (it does
 * not refuse), and so does this rule, with a note.
 */
export function ollamaKv(spec: ModelSpec, settings: PlanSettings): EngineKvResult {
  const notes: string[] = [];
  const runner = ollamaRunnerFor(spec.arch);
  const numParallel = checkCount(settings.seqs, "seqs", OLLAMA_DEFAULT_NUM_PARALLEL, 1, 256);
  const numBatchSetting = checkCount(settings.ubatch, "ubatch", OLLAMA_DEFAULT_NUM_BATCH, 1, MAX_CONTEXT_TOKENS);
  const vram = settings.budgetBytes;

  // ---- num_ctx: request / Modelfile / OLLAMA_CONTEXT_LENGTH, else the VRAM tier
  let numCtx: number;
  if (settings.ctx !== undefined) {
    numCtx = checkCount(settings.ctx, "ctx", 0, 1, MAX_CONTEXT_TOKENS);
  } else {
    numCtx = ollamaDefaultNumCtx(vram ?? 0);
    notes.push(
      vram === undefined
        ? `num_ctx unset: Ollama picks it from total VRAM (4096 below 23 GiB, 32768 below 47 GiB, else 262144); no budget given, so 4096 is assumed`
        : `num_ctx unset: Ollama's default for ${(vram / GIB).toFixed(1)} GiB of VRAM (the budget) is ${numCtx} (server/routes.go: 4096 / 32768 / 262144 at 23 / 47 GiB)`,
    );
  }
  const lowVram = vram === undefined || vram < OLLAMA_LOW_VRAM_BYTES;
  if (OLLAMA_MIN_8192_CTX_ARCHS.includes(spec.arch) && numCtx < OLLAMA_MIN_8192_CTX) {
    if (!lowVram) {
      notes.push(`${spec.arch}: Ollama raises num_ctx ${numCtx} to ${OLLAMA_MIN_8192_CTX} when not in low-VRAM mode (server/routes.go scheduleRunner)`);
      numCtx = OLLAMA_MIN_8192_CTX;
    } else {
      notes.push(
        `${spec.arch}: Ollama would raise num_ctx to ${OLLAMA_MIN_8192_CTX} with 20 GiB of VRAM or more; ` +
          (vram === undefined ? "no budget given, so low-VRAM mode is assumed" : "the budget is below 20 GiB (low-VRAM mode)"),
      );
    }
  }
  if (spec.nCtxTrain !== null && spec.nCtxTrain > 0 && numCtx > spec.nCtxTrain) {
    notes.push(`num_ctx ${numCtx} capped to the model's context_length ${spec.nCtxTrain} (llm/server.go: "requested context size too large for model")`);
    numCtx = spec.nCtxTrain;
  }
  const numBatch = Math.min(numBatchSetting, numCtx);
  const kvSize = numCtx * numParallel;
  if (!Number.isSafeInteger(kvSize) || kvSize > MAX_CONTEXT_TOKENS * 256) {
    throw new InvalidSettingError(`num_ctx ${numCtx} x OLLAMA_NUM_PARALLEL ${numParallel} is too large to plan`, { setting: "seqs", value: numParallel });
  }

  // ---- flash attention and the KV cache type (llm/server.go NewLlamaServer)
  const faUserSet = settings.flashAttn !== undefined;
  const modelWantsFa = OLLAMA_FLASH_ATTENTION_ARCHS.includes(spec.arch);
  let fa = settings.flashAttn ?? modelWantsFa;
  const faSupported = !OLLAMA_NO_FLASH_ATTENTION_ARCHS.includes(spec.arch) && kvLayers(spec).every((l) => l.layer.headDimK === l.layer.headDimV);
  if (fa && !faSupported) {
    notes.push(`flash attention requested but ${spec.name} does not support it in Ollama (SupportsFlashAttention): off`);
    fa = false;
  }
  const requestedType = resolveKvCacheType(settings);
  let kvType = requestedType;
  const quantized = requestedType !== "f16";

  let result: { caches: KvCachePlan[]; extra: Record<string, unknown> };
  if (runner === "llama.cpp") {
    // The llama.cpp runner: quantized types only when flash attention is explicitly on; otherwise
    // flash attention is "auto" (llama.cpp turns it on where the backend supports it).
    if (quantized && !(faUserSet && fa)) {
      notes.push(`OLLAMA_KV_CACHE_TYPE=${requestedType} ignored: the llama.cpp runner needs OLLAMA_FLASH_ATTENTION=1 for a quantized cache (Ollama warns and keeps f16)`);
      kvType = "f16";
    }
    const faForPlan = faUserSet ? fa : true;
    const llama = llamaCppKv(spec, {
      ctx: kvSize,
      seqs: numParallel,
      kvUnified: false,
      ubatch: numBatch,
      flashAttn: faForPlan,
      swaFull: true,
      typeK: kvType,
      typeV: kvType,
      ...(settings.llamaCppBuild !== undefined ? { llamaCppBuild: settings.llamaCppBuild } : {}),
    });
    notes.push(
      `llama.cpp runner (${spec.arch} is not in Ollama's engine list): n_ctx = num_ctx ${numCtx} x parallel ${numParallel} = ${kvSize}, n_seq_max ${numParallel}, ` +
        `kv_unified false, swa_full true (llama_context_default_params), n_ubatch ${numBatch}; llama.cpp's own rules below` +
        (settings.llamaCppBuild === undefined ? " (current llama.cpp; Ollama vendors a pinned llama.cpp commit)" : ""),
    );
    if (!faUserSet) notes.push("flash attention \"auto\" (OLLAMA_FLASH_ATTENTION unset): planned as on, as llama.cpp enables it where the backend supports it");
    for (const n of llama.notes) notes.push(`llama.cpp: ${n}`);
    result = { caches: [...llama.kv.caches], extra: { nCtx: llama.extra?.nCtx, nCtxSeq: llama.extra?.nCtxSeq } };
  } else {
    if (quantized && !fa) {
      notes.push(`OLLAMA_KV_CACHE_TYPE=${requestedType} ignored: flash attention is off for ${spec.arch} (Ollama warns "quantized kv cache requested but flash attention disabled" and keeps f16)`);
      kvType = "f16";
    }
    if (!faUserSet) notes.push(`flash attention ${fa ? "on" : "off"}: Ollama's default for ${spec.arch} (fs/ggml/ggml.go FlashAttention)`);
    result = ollamaEngineCaches(spec, numCtx, numParallel, numBatch, kvType, notes);
  }

  const caches = result.caches;
  let kBytes = 0;
  let vBytes = 0;
  for (const c of caches) {
    kBytes += c.kBytes;
    vBytes += c.vBytes;
  }
  let total = kBytes + vBytes;
  for (const c of caches) total += (c.rBytes ?? 0) + (c.sBytes ?? 0);
  notes.push(`${numParallel} parallel slot${numParallel > 1 ? "s" : ""} of ${numCtx} tokens (OLLAMA_NUM_PARALLEL multiplies the cache, not the weights)`);

  return {
    // Ollama's names: ctx = num_ctx, seqs = OLLAMA_NUM_PARALLEL, ubatch = num_batch.
    settings: {
      ctx: numCtx,
      seqs: numParallel,
      kvSize,
      ubatch: numBatch,
      flashAttn: runner === "llama.cpp" && !faUserSet ? true : fa,
      flashAttnSet: faUserSet,
      kvCacheType: kvType,
      runner,
    },
    kv: { totalBytes: total, kBytes, vBytes, caches },
    notes,
    extra: { runner, kvSize, nCtxSeq: numCtx, ...result.extra },
  };
}

/** The Go engine's caches (kvcache/causal.go), one per kind: full-attention and sliding-window. */
function ollamaEngineCaches(
  spec: ModelSpec,
  numCtx: number,
  numParallel: number,
  numBatch: number,
  kvType: string,
  notes: string[],
): { caches: KvCachePlan[]; extra: Record<string, unknown> } {
  if (spec.mla !== null) {
    throw new UnsupportedArchitectureError(
      `${spec.arch} (multi-head latent attention) on Ollama's Go engine: its cache layout is not modelled; plan with --engine llama.cpp for an estimate`,
      { arch: spec.arch },
    );
  }
  if (spec.layers.some((l) => l.kind === "recurrent")) {
    throw new UnsupportedArchitectureError(
      `${spec.arch} keeps recurrent state, which Ollama's Go engine holds in kvcache/recurrent.go with its own checkpoints; not modelled: plan with --engine llama.cpp for an estimate`,
      { arch: spec.arch },
    );
  }
  const type = ggmlTypeByName(kvType);
  if (type === undefined) throw new UnknownCacheTypeError(`no ggml type ${kvType}`, { setting: "typeK", value: kvType, allowed: OLLAMA_KV_CACHE_TYPES });
  // ggml rows of a block type must hold whole blocks: each head is one row of the K/V views.
  const rowBytes = (t: GgmlType, nHeadKv: number, headDim: number): number => {
    if (headDim % t.blockSize !== 0) {
      throw new InvalidSettingError(
        `OLLAMA_KV_CACHE_TYPE ${kvType} stores blocks of ${t.blockSize} values; ${spec.name} has heads of ${headDim}: use f16`,
        { setting: "typeK", value: kvType },
      );
    }
    return (t.typeSize * nHeadKv * headDim) / t.blockSize;
  };

  // Causal.Init: capacity per slot = KvSize / parallel = num_ctx; a full cache holds parallel x
  // num_ctx cells; a sliding-window cache parallel x swaMemory + batch, unless its memory exceeds
  // num_ctx (then it is a full one). Both rounded up to CachePadding.
  const fullCells = pad(numParallel * numCtx, OLLAMA_CACHE_PADDING);
  const chunked = spec.swaType === "chunked";
  const swaWindow = spec.nSwa > 0 && spec.swaType === "standard" ? spec.nSwa : 0;
  const swaMemory = swaWindow > 0 ? (OLLAMA_SWA_MEMORY_TOKENS[spec.arch] ?? swaWindow) : 0;
  const swaIsFull = swaMemory > numCtx;
  const swaCells = swaWindow > 0 ? (swaIsFull ? fullCells : pad(numParallel * swaMemory + numBatch, OLLAMA_CACHE_PADDING)) : 0;

  const groups: Array<{ kind: "full" | "swa"; cells: number; layers: number; kRow: number; vRow: number }> = [
    { kind: "full", cells: fullCells, layers: 0, kRow: 0, vRow: 0 },
    { kind: "swa", cells: swaCells, layers: 0, kRow: 0, vRow: 0 },
  ];
  const layers = kvLayers(spec);
  for (const { layer } of layers) {
    const g = layer.swa && swaWindow > 0 ? groups[1]! : groups[0]!;
    g.layers++;
    g.kRow += rowBytes(type, layer.nHeadKv, layer.headDimK);
    g.vRow += rowBytes(type, layer.nHeadKv, layer.headDimV);
  }
  const caches: KvCachePlan[] = [];
  for (const g of groups) {
    if (g.layers === 0) continue;
    caches.push({
      kind: g.kind,
      cells: g.cells,
      layers: g.layers,
      streams: 1,
      typeK: kvType,
      typeV: kvType,
      kBytes: g.kRow * g.cells,
      vBytes: g.vRow * g.cells,
      bytesPerCell: g.kRow + g.vRow,
    });
  }

  notes.push(
    `Ollama Go engine (${spec.arch} is in OllamaEngineRequired): kvcache.Causal of ${numParallel} x ${numCtx} = ${numParallel * numCtx} cells` +
      (fullCells !== numParallel * numCtx ? `, padded to ${fullCells} (CachePadding ${OLLAMA_CACHE_PADDING})` : "") +
      ` for the full-attention layers, one K and one V tensor per layer`,
  );
  if (swaWindow > 0) {
    const how = OLLAMA_SWA_MEMORY_TOKENS[spec.arch] !== undefined ? `NewSWAMemCache(${swaWindow}, ${swaMemory})` : `NewSWACache(${swaWindow})`;
    notes.push(
      swaIsFull
        ? `sliding-window layers (${how}): memory ${swaMemory} > num_ctx ${numCtx}, so they get the full ${fullCells} cells`
        : `sliding-window layers (${how}): ${numParallel} x ${swaMemory} + batch ${numBatch} = ${numParallel * swaMemory + numBatch} cells, padded to ${swaCells}`,
    );
    if (!OLLAMA_SWA_VERIFIED_ARCHS.includes(spec.arch)) {
      notes.push(`estimate: ${spec.arch}'s model file was not read; its sliding-window layers are assumed to use NewSWACache(window) like gemma3 and olmo3`);
    }
  }
  if (chunked) notes.push("chunked-attention layers (NewChunkedAttentionCache) are sized like full ones: the chunk only masks");
  const shared = spec.layers.filter((l) => l.kind === "attention" && l.kvFrom !== undefined).length;
  if (shared > 0) notes.push(`${shared} layer(s) reuse another layer's K/V and allocate nothing (Causal.Put allocates per layer on first use)`);
  return {
    caches,
    extra: { cachePadding: OLLAMA_CACHE_PADDING, fullCells, swaCells: swaWindow > 0 ? swaCells : null, swaMemoryTokens: swaWindow > 0 ? swaMemory : null },
  };
}

/** An integer setting of a resolved plan, for the exports. */
function int(settings: Readonly<Record<string, unknown>>, key: string): number | undefined {
  const v = settings[key];
  return typeof v === "number" && Number.isInteger(v) ? v : undefined;
}

/**
 * What realizes an Ollama plan: the server environment (OLLAMA_NUM_PARALLEL, OLLAMA_KV_CACHE_TYPE,
 * OLLAMA_FLASH_ATTENTION, OLLAMA_CONTEXT_LENGTH) and a Modelfile with `PARAMETER num_ctx` (and
 * num_batch when it is not the default), for `ollama create <name> -f Modelfile`.
 */
export function exportOllama(plan: MemoryPlan): string {
  const s = plan.settings;
  const numCtx = int(s, "ctx");
  const parallel = int(s, "seqs") ?? 1;
  if (numCtx === undefined) {
    throw new InvalidSettingError("the plan's settings lack ctx (num_ctx), which an Ollama export needs; re-run planMemory with engine ollama", { setting: "ctx", value: null });
  }
  const kvType = typeof s.kvCacheType === "string" ? s.kvCacheType : "f16";
  const env = [`OLLAMA_NUM_PARALLEL=${parallel}`, `OLLAMA_CONTEXT_LENGTH=${numCtx}`];
  if (kvType !== "f16") env.push(`OLLAMA_KV_CACHE_TYPE=${kvType}`);
  // Quantized types need flash attention set explicitly on the llama.cpp runner; say what the plan used.
  if (s.flashAttnSet === true || kvType !== "f16") env.push(`OLLAMA_FLASH_ATTENTION=${s.flashAttn === false ? 0 : 1}`);
  const lines = [
    "# ollama serve environment (OLLAMA_CONTEXT_LENGTH and the Modelfile's num_ctx say the same; the Modelfile wins)",
    ...env,
    "",
    "# Modelfile (ollama create <name> -f Modelfile)",
    "FROM <model>",
    `PARAMETER num_ctx ${numCtx}`,
  ];
  const numBatch = int(s, "ubatch");
  if (numBatch !== undefined && numBatch !== OLLAMA_DEFAULT_NUM_BATCH && numBatch !== numCtx) lines.push(`PARAMETER num_batch ${numBatch}`);
  return lines.join("\n");
}

/** The KV settings `fit` tries on Ollama, cheapest memory last. */
export function ollamaKvOptions(): KvOption[] {
  return [
    { label: "f16", settings: { typeK: "f16", typeV: "f16" }, bounded: false },
    { label: "q8_0 (OLLAMA_KV_CACHE_TYPE, flash attention on)", settings: { typeK: "q8_0", typeV: "q8_0", flashAttn: true }, bounded: false },
    { label: "q4_0 (OLLAMA_KV_CACHE_TYPE, flash attention on)", settings: { typeK: "q4_0", typeV: "q4_0", flashAttn: true }, bounded: false },
  ];
}

/** Ollama's bounded mode: when a slot's num_ctx fills, the runner drops the older half after
 *  num_keep and shifts the rest (runner/{llamarunner,ollamarunner}/cache.go ShiftCacheSlot), so memory stays that of num_ctx. */
export function ollamaBoundedOption(found: readonly FitOption[]): FitOption {
  const best = [...found].reverse().find((o) => o.maxCtx !== null);
  return {
    label: "context shift (automatic when num_ctx fills)",
    settings: best === undefined || best.maxCtx === null ? {} : { ...best.settings, ctx: best.maxCtx },
    bounded: true,
    maxCtx: best?.maxCtx ?? null,
    bytesAtMax: best?.bytesAtMax ?? null,
    limitedBy: best === undefined ? "budget" : best.limitedBy,
    note:
      best === undefined
        ? "no num_ctx fits, so context shifting cannot help"
        : `num_ctx ${best.maxCtx} (${best.label}) keeps memory fixed at any length: when a slot fills, Ollama discards the older half after num_keep ` +
          `(ShiftCacheSlot) and continues; models whose cache cannot shift reprocess the kept tokens instead`,
  };
}
