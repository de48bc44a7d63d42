// The data behind the chart: total memory against context for the engine's KV types and, for
// comparison, kvbound's sliding window with sinks (flat: it holds the same bytes at any length).
// Pure: every point is one planMemory call, so the chart shows what the table would.

import { planMemory } from "../../../src/plan/plan.js";
import type { EngineName } from "../../../src/plan/types.js";
import type { ModelSpec } from "../../../src/spec/model-spec.js";
import { typeSettings, windowSettings, type ResolvedForm } from "./settings.js";

/** Smallest context on the chart: llama.cpp's padding step. */
export const CHART_MIN_CTX = 256;
/** Largest context charted (2^20): the x axis is log2, so this keeps about a dozen points. */
export const CHART_MAX_CTX = 1 << 20;
/** Context charted when the model states no training context. */
const CHART_DEFAULT_MAX_CTX = 32768;
/** Window and sinks of the sliding series when the form sets none (StreamingLLM's 4 sinks). */
export const CHART_DEFAULT_WINDOW = 4096;
export const CHART_DEFAULT_SINKS = 4;

export interface Curve {
  readonly label: string;
  /** Total bytes per context point; null where the engine refuses the setting. */
  readonly bytes: ReadonlyArray<number | null>;
  readonly bounded: boolean;
}

export interface Curves {
  readonly contexts: readonly number[];
  readonly curves: readonly Curve[];
}

/** The KV types charted per engine (labels as the engine names them). */
export function chartTypes(engine: EngineName): readonly string[] {
  switch (engine) {
    case "llama.cpp":
      return ["f16", "q8_0", "q4_0"];
    case "vllm":
      return ["auto", "fp8"];
    case "webllm":
      return ["f16", "f32"];
    case "kvbound":
      return ["f16", "int8", "int4"];
    case "ollama":
      return ["f16", "q8_0", "q4_0"];
    case "mlx":
      return ["float16", "kv-bits 8", "kv-bits 4"];
    default:
      return engine satisfies never;
  }
}

/** Powers of two from CHART_MIN_CTX to the model's context (or the form's, if larger), plus the form's. */
export function chartContexts(spec: ModelSpec, ctx: number): number[] {
  const top = Math.min(CHART_MAX_CTX, Math.max(ctx, spec.nCtxTrain ?? CHART_DEFAULT_MAX_CTX));
  const out: number[] = [];
  for (let c = CHART_MIN_CTX; c <= top; c *= 2) out.push(c);
  if (ctx >= CHART_MIN_CTX && ctx <= CHART_MAX_CTX && !out.includes(ctx)) out.push(ctx);
  if (out.length === 0) out.push(ctx);
  out.sort((a, b) => a - b);
  return out;
}

function totalOrNull(spec: ModelSpec, request: Parameters<typeof planMemory>[1]): number | null {
  try {
    return planMemory(spec, request).totalBytes;
  } catch {
    return null;
  }
}

export function buildCurves(spec: ModelSpec, form: ResolvedForm): Curves {
  const contexts = chartContexts(spec, form.ctx);
  const curves: Curve[] = [];
  for (const type of chartTypes(form.engine)) {
    const bytes: Array<number | null> = [];
    for (let i = 0; i < contexts.length; i++) {
      const ctx = contexts[i]!;
      // Quantized V needs flash attention in llama.cpp: the chart turns it on for those.
      bytes.push(
        totalOrNull(spec, {
          engine: form.engine,
          seqs: form.seqs,
          ...windowSettings(form.engine, ctx, null, 0),
          ...typeSettings(form.engine, type, type, type === "f16" || type === "f32" || type === "bf16" ? form.request.flashAttn ?? true : true),
        }),
      );
    }
    curves.push({ label: `${form.engine} ${type}`, bytes, bounded: false });
  }
  const window = form.window ?? CHART_DEFAULT_WINDOW;
  const sinks = form.window === null ? CHART_DEFAULT_SINKS : form.sinks;
  const sliding = totalOrNull(spec, { engine: "kvbound", seqs: form.seqs, ...windowSettings("kvbound", window, window, sinks), codec: "f16" });
  const flat: Array<number | null> = [];
  for (let i = 0; i < contexts.length; i++) flat.push(sliding);
  curves.push({ label: `kvbound sliding window ${window} + ${sinks} sinks (f16)`, bytes: flat, bounded: true });
  return { contexts, curves };
}
