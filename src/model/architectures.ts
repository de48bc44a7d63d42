// The one table from general.architecture to the file that says how its layers compute, and the
// constructor of a runnable model from a GGUF. Nothing else switches on the architecture's name.

import type { GgufHeader } from "../gguf/header.js";
import type { RopeSpec } from "../cache/rope.js";
import { ModelConfigError, UnsupportedArchitectureError } from "../errors.js";
import { gemma2, gemma3 } from "./archs/gemma.js";
import { llama, smollm3 } from "./archs/llama.js";
import { phi3 } from "./archs/phi3.js";
import type { Architecture, ArchContext, TransformerPlan } from "./archs/plan.js";
import { qwen } from "./archs/qwen.js";
import { TransformerModel, type ModelOptions } from "./transformer.js";
import { WeightSet } from "./weights.js";

const ARCHITECTURES: readonly Architecture[] = [llama, smollm3, qwen, phi3, gemma2, gemma3];

const BY_NAME = new Map<string, Architecture>();
for (const a of ARCHITECTURES) for (const n of a.names) BY_NAME.set(n, a);

/** general.architecture values kvbound runs. */
export const SUPPORTED_ARCHS: readonly string[] = [...BY_NAME.keys()];

/** The header's architecture, or UnsupportedArchitectureError (checked before any weight is read). */
export function architectureOf(header: GgufHeader): Architecture {
  const arch = String(header.metadata["general.architecture"] ?? "");
  const a = BY_NAME.get(arch);
  if (a === undefined) {
    throw new UnsupportedArchitectureError(`architecture "${arch}" has no forward pass in kvbound yet; supported: ${SUPPORTED_ARCHS.join(", ")}`, { arch });
  }
  return a;
}

export interface CreateModelOptions extends ModelOptions {
  /**
   * The context the model will run with, in tokens (default: its training context, capped at
   * 4096 as sessions default). Only LongRoPE models read it: llama.cpp picks their long factors
   * when the context exceeds the original one, so a plan made for 4k differs from one for 128k.
   */
  readonly nCtx?: number;
}

/** The architecture's plan for this file (reads F32 rope tensors from `data`). */
export function transformerPlan(header: GgufHeader, data: Uint8Array, nCtx?: number, tensorOffsets?: ReadonlyMap<string, number>): TransformerPlan {
  const arch = architectureOf(header);
  const w = new WeightSet(header, data, tensorOffsets ?? null);
  const meta = header.metadata;
  const name = String(meta["general.architecture"]);
  const train = meta[`${name}.context_length`];
  const ctx: ArchContext = {
    header,
    meta,
    arch: name,
    nCtx: nCtx ?? Math.min(typeof train === "number" ? train : typeof train === "bigint" ? Number(train) : 4096, 4096),
    has: (t) => w.has(t),
    f32: (t, n) => w.vector(t, n),
  };
  return arch.plan(ctx);
}

/** The tensors a plan reads; a file tensor outside this set is one kvbound would silently ignore. */
function planTensors(plan: TransformerPlan): Set<string> {
  const used = new Set<string>(["token_embd.weight", "output_norm.weight", plan.output, "rope_freqs.weight", "rope_factors_long.weight", "rope_factors_short.weight"]);
  for (const L of plan.layers) {
    for (const t of [L.attnNorm, L.q.tensor, L.k.tensor, L.v.tensor, L.o, L.qBias, L.kBias, L.vBias, L.qNorm, L.kNorm, L.attnPostNorm, L.ffnNorm, L.gate.tensor, L.up.tensor, L.down, L.ffnPostNorm]) {
      if (t !== null) used.add(t);
    }
  }
  return used;
}

/**
 * A runnable model from a GGUF header and its tensor data (byte 0 = header.dataOffset). Throws
 * UnsupportedArchitectureError, UnsupportedRopeScalingError, ModelConfigError (a tensor the
 * architecture does not use: kvbound would otherwise compute without it), TensorShapeError,
 * UnsupportedTensorTypeError.
 */
export function createModel(header: GgufHeader, data: Uint8Array, options: CreateModelOptions = {}): TransformerModel {
  let plan = transformerPlan(header, data, options.nCtx, options.tensorOffsets);
  const over = options.rope;
  if (over !== undefined) {
    // Reference numerics (llama2.c's float32 angles): the override applies to every rotating layer.
    const patch = (r: RopeSpec | null) => (r === null ? null : { ...r, ...over });
    plan = { ...plan, hp: { ...plan.hp, rope: patch(plan.hp.rope) }, attention: plan.attention.map((a) => ({ ...a, rope: patch(a.rope) })) };
  }
  const used = planTensors(plan);
  const arch = plan.hp.arch;
  for (const t of header.tensors) {
    // rope_freqs / rope_factors are read only by architectures whose graph uses them; elsewhere llama.cpp refuses the file too.
    if (!used.has(t.name)) {
      throw new ModelConfigError(`tensor ${t.name} is not part of kvbound's ${arch} forward pass; computing without it would give wrong output`, { field: t.name });
    }
  }
  return new TransformerModel(header, data, plan, options);
}
