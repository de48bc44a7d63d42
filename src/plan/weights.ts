// Weight bytes of a model, as the memory plan counts them: the spec's own figure when it has one
// (GGUF tensor sizes, registry facts, safetensors index), else parameters x bytes per parameter.

import type { ModelSpec } from "../spec/model-spec.js";

export interface WeightsEstimate {
  readonly bytes: number;
  readonly quant: string;
  readonly source: string;
}

/** Bytes per parameter of the dtypes a "params only" spec may be served in. */
const DTYPE_BYTES: Readonly<Record<string, number>> = {
  F32: 4,
  F16: 2,
  BF16: 2,
  FP8: 1,
  INT8: 1,
  Q8_0: 34 / 32, // ggml q8_0: 34 bytes per block of 32
  Q4_0: 18 / 32, // ggml q4_0: 18 bytes per block of 32
};

/**
 * The model's weight bytes. `dtype` only matters when the spec has no byte figure and must be
 * estimated from its parameter count (default BF16: what HF checkpoints ship and vLLM serves as
 * "auto"). Returns null when neither weights nor params are known.
 */
export function weightBytes(spec: ModelSpec, dtype = "BF16"): WeightsEstimate | null {
  if (spec.weights) return { bytes: spec.weights.bytes, quant: spec.weights.quant, source: spec.weights.source };
  if (spec.params === null) return null;
  const perParam = DTYPE_BYTES[dtype.toUpperCase()] ?? 2;
  // Every tensor in the same dtype: an estimate (real files keep norms in f32, some embeddings
  // at another type); the plan's `source: "params"` says so.
  return { bytes: Math.ceil(spec.params * perParam), quant: dtype.toUpperCase(), source: "params" };
}
