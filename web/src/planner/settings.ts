// The planner form's values, validated at this boundary (src/plan/parse.ts) into one PlanRequest
// per engine. Each engine names its KV types differently: llama.cpp types K and V apart, vLLM and
// WebLLM have one kv_cache_dtype, kvbound one page codec; the form's K/V selects follow the engine.

import { CODEC_KINDS } from "../../../src/cache/codecs/types.js";
import { InvalidSettingError } from "../../../src/errors.js";
import { LLAMA_CPP_CACHE_TYPES } from "../../../src/plan/llama-cpp.js";
import { MLX_KV_DTYPE_BYTES } from "../../../src/plan/mlx.js";
import { OLLAMA_KV_CACHE_TYPES } from "../../../src/plan/ollama.js";
import { parseBytes, parseCount } from "../../../src/plan/parse.js";
import type { PlanRequest } from "../../../src/plan/plan.js";
import type { EngineName, PlanSettings } from "../../../src/plan/types.js";
import { VLLM_KV_DTYPE_BYTES } from "../../../src/plan/vllm.js";
import { WEBLLM_KV_DTYPE_BYTES } from "../../../src/plan/webllm.js";

/** What the form holds, as typed. */
export interface FormValues {
  readonly engine: EngineName;
  readonly ctx: string;
  readonly seqs: string;
  readonly typeK: string;
  readonly typeV: string;
  readonly flashAttn: boolean;
  /** Sliding window in tokens; "" or "0" = no window (full context). */
  readonly window: string;
  readonly sinks: string;
  readonly budget: string;
}

export interface ResolvedForm {
  readonly engine: EngineName;
  readonly ctx: number;
  readonly seqs: number;
  /** null: no sliding window. */
  readonly window: number | null;
  readonly sinks: number;
  readonly budgetBytes: number;
  readonly request: PlanRequest;
}

/** The KV types the K select offers per engine, and whether V is chosen apart from K. */
export interface KvTypeChoice {
  readonly types: readonly string[];
  readonly defaultType: string;
  readonly separateV: boolean;
  /** Whether the engine understands a sliding window with sinks. */
  readonly windows: boolean;
  readonly note: string;
}

export function kvTypeChoice(engine: EngineName): KvTypeChoice {
  switch (engine) {
    case "llama.cpp":
      return { types: LLAMA_CPP_CACHE_TYPES, defaultType: "f16", separateV: true, windows: false, note: "-ctk / -ctv; quantized V needs flash attention" };
    case "vllm":
      return { types: Object.keys(VLLM_KV_DTYPE_BYTES), defaultType: "auto", separateV: false, windows: false, note: "--kv-cache-dtype, one type for K and V" };
    case "webllm":
      return { types: Object.keys(WEBLLM_KV_DTYPE_BYTES), defaultType: "f16", separateV: false, windows: true, note: "set by the model's quantization (q4f16 / q4f32)" };
    case "kvbound":
      return { types: CODEC_KINDS, defaultType: "f16", separateV: false, windows: true, note: "page codec, one for K and V" };
    case "ollama":
      return { types: OLLAMA_KV_CACHE_TYPES, defaultType: "f16", separateV: false, windows: false, note: "OLLAMA_KV_CACHE_TYPE; quantized types need flash attention" };
    case "mlx":
      return { types: MLX_FORM_TYPES, defaultType: "float16", separateV: false, windows: false, note: "the model's dtype, or --kv-bits 8 / 4 (groups of 64)" };
    default:
      return engine satisfies never;
  }
}

function intIn(text: string, setting: string, min: number, max: number): number {
  const t = text.trim();
  const n = /^\d+$/.test(t) ? Number(t) : NaN;
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new InvalidSettingError(`${setting} ${JSON.stringify(text)} is invalid: must be an integer in [${min}, ${max}]`, { setting, value: text });
  }
  return n;
}

/** Most parallel sequences the form accepts (llama.cpp's LLAMA_MAX_SEQ is 256). */
const MAX_FORM_SEQS = 256;

/** The mlx-lm cache choices the form offers: the model's dtype or a quantized cache from the start. */
const MLX_FORM_TYPES: readonly string[] = ["float16", "kv-bits 8", "kv-bits 4"];

/** mlx-lm settings for one of MLX_FORM_TYPES (or a dtype name). */
function mlxTypeSettings(type: string): PlanSettings {
  if (type === "kv-bits 8") return { kvBits: 8, quantizedKvStart: 0 };
  if (type === "kv-bits 4") return { kvBits: 4, quantizedKvStart: 0 };
  return MLX_KV_DTYPE_BYTES[type] !== undefined ? { kvCacheDtype: type } : {};
}

/** The engine's settings for a KV type chosen in the form. */
export function typeSettings(engine: EngineName, typeK: string, typeV: string, flashAttn: boolean): PlanSettings {
  switch (engine) {
    case "llama.cpp":
      return { typeK, typeV, flashAttn };
    case "vllm":
    case "webllm":
      return { kvCacheDtype: typeK };
    case "kvbound":
      return { codec: typeK };
    case "ollama":
      return { typeK, typeV: typeK, flashAttn };
    case "mlx":
      return mlxTypeSettings(typeK);
    default:
      return engine satisfies never;
  }
}

/** Context / window settings: WebLLM and kvbound take a context window or a sliding window. */
export function windowSettings(engine: EngineName, ctx: number, window: number | null, sinks: number): PlanSettings {
  const windowed = engine === "webllm" || engine === "kvbound";
  if (!windowed) return { ctx };
  if (window === null) return { ctx, contextWindowSize: ctx, slidingWindowSize: -1 };
  return { ctx, contextWindowSize: -1, slidingWindowSize: window, attentionSinkSize: sinks };
}

export function resolveForm(v: FormValues): ResolvedForm {
  const ctx = parseCount(v.ctx, "ctx");
  const seqs = intIn(v.seqs, "sequences", 1, MAX_FORM_SEQS);
  const windowText = v.window.trim();
  const window = windowText === "" || windowText === "0" ? null : parseCount(windowText, "window");
  const sinks = v.sinks.trim() === "" ? 0 : intIn(v.sinks, "sinks", 0, 1 << 20);
  const budgetBytes = parseBytes(v.budget, "budget");
  const choice = kvTypeChoice(v.engine);
  const typeV = choice.separateV ? v.typeV : v.typeK;
  const request: PlanRequest = {
    engine: v.engine,
    seqs,
    ...windowSettings(v.engine, ctx, choice.windows ? window : null, sinks),
    ...typeSettings(v.engine, v.typeK, typeV, v.flashAttn),
  };
  return { engine: v.engine, ctx, seqs, window, sinks, budgetBytes, request };
}
