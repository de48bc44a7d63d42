// The flags `plan`, `fit` and `rank` share, declared once on a commander Command, and their
// conversion into PlanSettings. Commander only collects strings; every value is validated here
// (src/plan/parse.ts) so a bad value is a typed InvalidSettingError (exit 1), not a usage error.

import { CODEC_KINDS } from "../cache/codecs/types.js";
import type { Command } from "commander";

import { InvalidSettingError } from "../errors.js";
import { MAX_COUNT, parseBytes, parseCount, parseFraction } from "../plan/parse.js";
import { ENGINES, type EngineName, type PlanSettings } from "../plan/types.js";

/** What commander hands the action for the shared flags: strings and booleans, unvalidated. */
export interface RawPlanFlags {
  ctx?: string;
  maxModelLen?: string;
  seqs?: string;
  kvUnified?: boolean;
  ubatch?: string;
  flashAttn?: string;
  swaFull?: boolean;
  typeK?: string;
  typeV?: string;
  engine?: string;
  llamaCppBuild?: string;
  budget?: string;
  gpuMemoryUtilization?: string;
  tp?: string;
  kvCacheDtype?: string;
  blockSize?: string;
  contextWindow?: string;
  slidingWindow?: string;
  sinks?: string;
  prefillChunk?: string;
  pageSize?: string;
  codec?: string;
  backend?: string;
  maxBatchTokens?: string;
  maxBinding?: string;
  maxKvSize?: string;
  kvBits?: string;
  kvGroupSize?: string;
  quantizedKvStart?: string;
  promptTokens?: string;
  quant?: string;
  json?: boolean;
  gpu?: string;
  ram?: string;
  ngl?: string;
  tensorSplit?: string;
  /** Commander's `--no-kv-offload`: true unless the flag is given. */
  kvOffload?: boolean;
  fitTarget?: string;
}

/** Adds the engine-setting flags to `cmd`. `withCtx: false` leaves --ctx to the command (rank). */
export function addSettingOptions(cmd: Command, opts: { withCtx?: boolean } = {}): Command {
  if (opts.withCtx !== false) cmd.option("--ctx <tokens>", "context length: 32768, 32k, 128K");
  return cmd
    .option("--engine <name>", `engine whose allocation rules to apply: ${ENGINES.join(", ")}`, "llama.cpp")
    .option("--quant <name>", "registry models: quantization whose weight bytes to use (Q4_K_M, Q8_0, F16...)")
    .option("--seqs <n>", "llama.cpp: parallel sequences (-np); ollama: OLLAMA_NUM_PARALLEL")
    .option("--kv-unified", "llama.cpp: one KV stream shared by all sequences (-kvu)")
    .option("--ubatch <n>", "llama.cpp: physical batch size (-ub)")
    .option("--flash-attn <on|off>", "llama.cpp: flash attention (-fa)")
    .option("--swa-full", "llama.cpp: full-size cache for sliding-window layers (--swa-full)")
    .option("--type-k <type>", "K cache type: f16, bf16, f32, q8_0, q4_0, q4_1, q5_0, q5_1, iq4_nl")
    .option("--type-v <type>", "V cache type (quantized V needs --flash-attn on in llama.cpp)")
    .option("--llama-cpp-build <n>", "llama.cpp build number (bNNNN) whose padding/SWA rules to apply")
    .option("--max-model-len <tokens>", "vLLM: alias of --ctx")
    .option("--gpu-memory-utilization <x>", "vLLM: fraction of GPU memory to use (default 0.92)")
    .option("--tp <n>", "vLLM: tensor parallel size (KV heads are split across ranks)")
    .option("--kv-cache-dtype <type>", "vLLM: auto, fp8, fp8_e4m3, fp8_e5m2")
    .option("--block-size <n>", "vLLM: tokens per KV block (default 16)")
    .option("--context-window <n>", "WebLLM/kvbound: context_window_size (-1 = unset)")
    .option("--sliding-window <n>", "WebLLM/kvbound: sliding_window_size (-1 = unset)")
    .option("--sinks <n>", "WebLLM/kvbound: attention_sink_size")
    .option("--prefill-chunk <n>", "WebLLM/kvbound: prefill_chunk_size")
    .option("--page-size <n>", "kvbound: tokens per KV page")
    .option("--codec <name>", `kvbound: page codec (${CODEC_KINDS.join(", ")})`)
    .option("--backend <name>", "kvbound: cpu (default) or webgpu (plans every GPU buffer the WebGPU backend creates)")
    .option("--max-batch-tokens <n>", "kvbound --backend webgpu: tokens per forward step the activations hold (default 64)")
    .option("--max-binding <bytes>", "kvbound --backend webgpu: the adapter's maxStorageBufferBindingSize (default 128MiB; weights are split under it)")
    .option("--max-kv-size <tokens>", "mlx: --max-kv-size (RotatingKVCache keeping 4 + the most recent tokens)")
    .option("--kv-bits <bits>", "mlx: --kv-bits (2, 4, 8: QuantizedKVCache)")
    .option("--kv-group-size <n>", "mlx: --kv-group-size (32, 64, 128; default 64)")
    .option("--quantized-kv-start <tokens>", "mlx: --quantized-kv-start (default 5000)")
    .option("--prompt-tokens <tokens>", "mlx: how many of --ctx's tokens are the prompt (default: all)")
    .option("--gpu <sizes>", "llama.cpp: each GPU's free memory, in device order: 8GiB or 24GiB,12GiB (plans per device)")
    .option("--ram <bytes>", "llama.cpp with --gpu: host memory for the layers that stay on the CPU")
    .option("--ngl <n>", "llama.cpp -ngl: layers to offload, the output layer counted (all = every layer; default: what --fit picks)")
    .option("--tensor-split <list>", "llama.cpp --tensor-split: proportions per GPU, e.g. 3,1 (default: the GPUs' free memory)")
    .option("--no-kv-offload", "llama.cpp -nkvo: keep the KV cache in host memory")
    .option("--fit-target <MiB>", "llama.cpp --fit-target: memory --fit keeps free per GPU, in MiB or with a unit (default 1024)");
}

/** A comma-separated list (llama.cpp also splits --tensor-split on '/'). */
function listOf(value: string): string[] {
  return value.split(/[,/]/).map((x) => x.trim());
}

/** Settings parsed from the shared flags, plus the engine and the budget (if any). */
export interface ParsedSettings {
  readonly engine: EngineName;
  readonly settings: PlanSettings;
  readonly budgetBytes: number | undefined;
  readonly quant: string | undefined;
}

export function parseEngine(value: string | undefined): EngineName {
  const v = (value ?? "llama.cpp").toLowerCase();
  // "llamacpp" / "llama-cpp" are common spellings of the same engine.
  const name = v === "llamacpp" || v === "llama-cpp" ? "llama.cpp" : v;
  for (const e of ENGINES) if (e === name) return e;
  throw new InvalidSettingError(`engine ${JSON.stringify(value)} is unknown; use one of ${ENGINES.join(", ")}`, {
    setting: "engine",
    value,
    allowed: ENGINES,
  });
}

function parseOnOff(value: string, setting: string): boolean {
  const v = value.trim().toLowerCase();
  if (v === "on" || v === "true" || v === "1" || v === "yes") return true;
  if (v === "off" || v === "false" || v === "0" || v === "no") return false;
  // llama.cpp's -fa also takes "auto": it turns flash attention on where the backend supports it,
  // which a planner cannot know; make the user choose.
  throw new InvalidSettingError(`${setting} ${JSON.stringify(value)} is invalid: use on or off`, { setting, value });
}

/** A plain integer in [min, max], accepting -1 only where the WebLLM "unset" convention allows. */
function parseInteger(value: string, setting: string, min: number, max = MAX_COUNT): number {
  const t = value.trim();
  const n = /^-?\d+$/.test(t) ? Number(t) : NaN;
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new InvalidSettingError(`${setting} ${JSON.stringify(value)} is invalid: must be an integer in [${min}, ${max}]`, {
      setting,
      value,
    });
  }
  return n;
}

/** A window size: -1 (unset, WebLLM's convention) or a token count such as 4096 or 4k. */
function parseWindow(value: string, setting: string): number {
  return value.trim() === "-1" ? -1 : parseCount(value, setting);
}

/** Validates the shared flags into PlanSettings. Engines validate combinations (and types) themselves. */
export function parseSettings(flags: RawPlanFlags): ParsedSettings {
  const s: PlanSettings = {};
  const engine = parseEngine(flags.engine);
  if (flags.ctx !== undefined && flags.maxModelLen !== undefined) {
    throw new InvalidSettingError("--ctx and --max-model-len are the same setting; pass one", {
      setting: "ctx",
      value: [flags.ctx, flags.maxModelLen],
    });
  }
  const ctx = flags.ctx ?? flags.maxModelLen;
  if (ctx !== undefined) s.ctx = parseCount(ctx, "ctx");
  if (flags.seqs !== undefined) s.seqs = parseCount(flags.seqs, "seqs", MAX_COUNT);
  if (flags.kvUnified) s.kvUnified = true;
  if (flags.ubatch !== undefined) s.ubatch = parseCount(flags.ubatch, "ubatch", MAX_COUNT);
  if (flags.flashAttn !== undefined) s.flashAttn = parseOnOff(flags.flashAttn, "flash-attn");
  if (flags.swaFull) s.swaFull = true;
  if (flags.typeK !== undefined) s.typeK = flags.typeK.toLowerCase();
  if (flags.typeV !== undefined) s.typeV = flags.typeV.toLowerCase();
  if (flags.llamaCppBuild !== undefined) s.llamaCppBuild = parseInteger(flags.llamaCppBuild.replace(/^b/i, ""), "llama-cpp-build", 1, 1e6);
  if (flags.gpuMemoryUtilization !== undefined) s.gpuMemoryUtilization = parseFraction(flags.gpuMemoryUtilization, "gpu-memory-utilization");
  if (flags.tp !== undefined) s.tensorParallel = parseInteger(flags.tp, "tp", 1, 1024);
  if (flags.kvCacheDtype !== undefined) s.kvCacheDtype = flags.kvCacheDtype.toLowerCase();
  if (flags.blockSize !== undefined) s.blockSize = parseInteger(flags.blockSize, "block-size", 1, 1 << 16);
  if (flags.contextWindow !== undefined) s.contextWindowSize = parseWindow(flags.contextWindow, "context-window");
  if (flags.slidingWindow !== undefined) s.slidingWindowSize = parseWindow(flags.slidingWindow, "sliding-window");
  if (flags.sinks !== undefined) s.attentionSinkSize = parseInteger(flags.sinks, "sinks", 0);
  if (flags.prefillChunk !== undefined) s.prefillChunkSize = parseCount(flags.prefillChunk, "prefill-chunk", MAX_COUNT);
  if (flags.pageSize !== undefined) s.pageSize = parseInteger(flags.pageSize, "page-size", 1, 1 << 16);
  if (flags.codec !== undefined) s.codec = flags.codec.toLowerCase();
  if (flags.backend !== undefined) s.backend = flags.backend.toLowerCase();
  if (flags.maxBatchTokens !== undefined) s.maxBatchTokens = parseCount(flags.maxBatchTokens, "max-batch-tokens", MAX_COUNT);
  if (flags.maxBinding !== undefined) s.maxBindingBytes = parseBytes(flags.maxBinding, "max-binding");
  if (flags.maxKvSize !== undefined) s.maxKvSize = parseCount(flags.maxKvSize, "max-kv-size");
  if (flags.kvBits !== undefined) s.kvBits = parseInteger(flags.kvBits, "kv-bits", 1, 32);
  if (flags.kvGroupSize !== undefined) s.kvGroupSize = parseInteger(flags.kvGroupSize, "kv-group-size", 1, 1 << 16);
  if (flags.quantizedKvStart !== undefined) s.quantizedKvStart = parseInteger(flags.quantizedKvStart, "quantized-kv-start", 0, MAX_COUNT);
  if (flags.promptTokens !== undefined) s.promptTokens = parseCount(flags.promptTokens, "prompt-tokens");
  if (flags.gpu !== undefined) s.gpus = listOf(flags.gpu).map((g) => parseBytes(g, "gpu"));
  if (flags.ram !== undefined) s.ramBytes = parseBytes(flags.ram, "ram");
  if (flags.ngl !== undefined) {
    const v = flags.ngl.trim().toLowerCase();
    // llama.cpp accepts -ngl all (and large numbers such as 999) for every layer.
    s.nGpuLayers = v === "all" ? MAX_COUNT : parseInteger(v, "ngl", 0);
  }
  if (flags.tensorSplit !== undefined) {
    s.tensorSplit = listOf(flags.tensorSplit).map((x) => {
      const n = /^\d+(\.\d+)?$/.test(x) ? Number(x) : NaN;
      if (!Number.isFinite(n)) throw new InvalidSettingError(`tensor-split ${JSON.stringify(flags.tensorSplit)} is invalid: use proportions such as 3,1`, { setting: "tensor-split", value: flags.tensorSplit });
      return n;
    });
  }
  if (flags.kvOffload === false) s.kvOffload = false;
  if (flags.fitTarget !== undefined) {
    // llama.cpp's --fit-target takes MiB; a unit is accepted too. 0 keeps nothing free.
    const t = flags.fitTarget.trim();
    s.fitTargetBytes = /^\d+$/.test(t) ? Number(t) * 1024 * 1024 : parseBytes(t, "fit-target");
  }
  if ((s.gpus === undefined) && (s.ramBytes !== undefined || s.nGpuLayers !== undefined || s.tensorSplit !== undefined || s.kvOffload === false || s.fitTargetBytes !== undefined)) {
    throw new InvalidSettingError("--ram, --ngl, --tensor-split, --no-kv-offload and --fit-target describe devices: give the GPUs with --gpu (e.g. --gpu 8GiB)", { setting: "gpu", value: null });
  }
  if (s.gpus !== undefined && engine !== "llama.cpp") {
    throw new InvalidSettingError(`--gpu plans llama.cpp's devices; it does not apply to --engine ${engine}`, { setting: "gpu", value: flags.gpu });
  }
  const budgetBytes = flags.budget !== undefined ? parseBytes(flags.budget, "budget") : undefined;
  if (budgetBytes !== undefined) s.budgetBytes = budgetBytes;
  return { engine, settings: s, budgetBytes, quant: flags.quant };
}
