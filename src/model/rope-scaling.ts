// RoPE scaling exactly as llama.cpp applies it: GGUF metadata -> the arguments llama.cpp hands to
// ggml_rope_ext (readRopeScaling) -> per-pair inverse frequencies and a magnitude for cache/rope.ts (ropeSpecFromScaling).

import type { RopeSpec } from "../cache/rope.js";
import { ModelConfigError, TensorShapeError, UnsupportedRopeScalingError } from "../errors.js";

/** llama.cpp's llama_rope_scaling_type names (LLAMA_ROPE_SCALING_TYPES in src/llama-model.cpp). */
export const ROPE_SCALING_TYPES = ["none", "linear", "yarn", "longrope"] as const;
export type RopeScalingType = (typeof ROPE_SCALING_TYPES)[number];

/**
 * What ggml_rope_ext receives from llama.cpp's graph (src/llama-graph.cpp llm_graph_context: freq_base,
 * freq_scale, ext_factor, attn_factor, beta_fast, beta_slow from cparams; n_ctx_orig = cparams.n_ctx_orig_yarn;
 * the rope factors tensor from llama_model::get_rope_factors). Values are float32 in llama.cpp.
 */
export interface RopeScaling {
  /** The effective scaling type (cparams.rope_scaling_type); informational, the numbers below carry the math. */
  readonly type: RopeScalingType;
  readonly freqBase: number;
  /** 1/factor; 1 for type "none" (llama.cpp never scales then). */
  readonly freqScale: number;
  /** n_ctx_orig_yarn: only the YaRN correction dims read it. */
  readonly nCtxOrig: number;
  /** YaRN extrapolation mix; 0 turns the ramp and the kernel's magnitude correction off. */
  readonly extFactor: number;
  /** Multiplies cos and sin (the kernel multiplies it by 1 + 0.1 ln(1/freqScale) again when extFactor != 0). */
  readonly attnFactor: number;
  readonly betaFast: number;
  readonly betaSlow: number;
  /** Per-pair divisors of theta (llama3 rope_freqs.weight, Phi-3 rope_factors_long/short.weight), length >= nRot/2. */
  readonly freqFactors: Float32Array | null;
}

/** The rope hyperparameters llama.cpp's loader keeps from the GGUF (llama_hparams, src/llama-hparams.h). */
export interface RopeHParams {
  readonly scalingTypeTrain: RopeScalingType;
  readonly freqBaseTrain: number;
  readonly freqScaleTrain: number;
  readonly nCtxTrain: number;
  /** rope.scaling.original_context_length, else n_ctx_train; the LongRoPE long/short switch compares against it. */
  readonly nCtxOrigYarn: number;
  /** rope.scaling.attn_factor (Phi-3 LongRoPE's magnitude); multiplied into the attention factor last. */
  readonly ropeAttnFactor: number;
  /** The yarn_* keys llama.cpp reads only for some architectures; llama_hparams defaults otherwise. */
  readonly yarnExtFactor: number;
  readonly yarnAttnFactor: number;
  readonly yarnBetaFast: number;
  readonly yarnBetaSlow: number;
}

export interface ReadRopeScalingOptions {
  /** The context the user runs with (llama_context_params.n_ctx; 0 means n_ctx_train). Picks LongRoPE long/short. */
  readonly nCtx: number;
  /** Sequences sharing the context (n_seq_max, default 1) and whether their KV is unified: they set n_ctx_seq. */
  readonly nSeqMax?: number;
  readonly kvUnified?: boolean;
  /**
   * The rope factor tensors the architecture's llama.cpp graph reads, as float32 (pass only those: qwen2/qwen3 read
   * none; llama reads rope_freqs.weight, or rope_factors_long/short.weight when its scaling type is longrope; phi3
   * reads long/short). rope_freqs wins over long/short, as in llama_model::get_rope_factors.
   */
  readonly freqFactors?: Float32Array | null;
  readonly ropeFactorsLong?: Float32Array | null;
  readonly ropeFactorsShort?: Float32Array | null;
  /** llama_context_params overrides with llama.cpp's "unset" values: undefined, 0 (base, scale, orig ctx) or < 0 (yarn). */
  readonly ropeScalingType?: RopeScalingType;
  readonly ropeFreqBase?: number;
  readonly ropeFreqScale?: number;
  readonly yarnOrigCtx?: number;
  readonly yarnExtFactor?: number;
  readonly yarnAttnFactor?: number;
  readonly yarnBetaFast?: number;
  readonly yarnBetaSlow?: number;
}

const f32 = Math.fround;
// The float32 constants ggml and llama.cpp write as 0.1f, 0.001f and (float)M_PI.
const F32_0_1 = f32(0.1);
const F32_0_001 = f32(0.001);
const F32_PI = f32(Math.PI);

// The common loader (src/llama-model.cpp load_hparams) never reads the optional yarn_ext_factor / yarn_attn_factor /
// yarn_beta_fast / yarn_beta_slow keys; only some architectures' own loaders do (grok, laguna, deepseek4 in
// src/models/*.cpp). For these architectures, whose loaders were checked (src/models/llama.cpp, qwen2.cpp,
// qwen3.cpp, phi3.cpp), the keys are ignored as llama.cpp ignores them; any other architecture gets them read.
const ARCHS_IGNORING_YARN_KEYS: ReadonlySet<string> = new Set(["llama", "qwen2", "qwen3", "phi3"]);

function metaNum(meta: Record<string, unknown>, key: string): number | undefined {
  const v = meta[key];
  if (v === undefined) return undefined;
  if (typeof v === "number") return v;
  if (typeof v === "bigint" && v <= BigInt(Number.MAX_SAFE_INTEGER) && v >= -BigInt(Number.MAX_SAFE_INTEGER)) return Number(v);
  throw new ModelConfigError(`GGUF metadata ${key} is not a number; re-convert the model with a current convert_hf_to_gguf.py`, { field: key });
}

/** GGML_PAD(x, 256): llama-context.cpp pads n_ctx and n_ctx_seq to multiples of 256 before anything reads them. */
function pad256(x: number): number {
  return Math.ceil(x / 256) * 256;
}

/**
 * Reads the rope hyperparameters as llama.cpp's loader does (src/llama-model.cpp load_hparams; key names from
 * src/llama-arch.cpp LLM_KV_NAMES; defaults from src/llama-hparams.h). Throws UnsupportedRopeScalingError for a
 * scaling type llama.cpp does not know (it aborts on GGML_ASSERT there) and ModelConfigError for mistyped values.
 */
export function readRopeHParams(meta: Record<string, unknown>, arch: string): RopeHParams {
  const nCtxTrain = metaNum(meta, `${arch}.context_length`);
  if (nCtxTrain === undefined) {
    throw new ModelConfigError(`GGUF metadata ${arch}.context_length is missing; llama.cpp requires it`, { field: `${arch}.context_length` });
  }
  const origKey = `${arch}.rope.scaling.original_context_length`;
  const nCtxOrigYarn = metaNum(meta, origKey) ?? nCtxTrain;

  const freqBaseTrain = f32(metaNum(meta, `${arch}.rope.freq_base`) ?? 10000);

  // A missing type reads as "linear", which with no factor is the identity (load_hparams).
  const typeKey = `${arch}.rope.scaling.type`;
  const rawType = meta[typeKey] ?? "linear";
  if (typeof rawType !== "string") {
    throw new ModelConfigError(`GGUF metadata ${typeKey} is not a string; re-convert the model`, { field: typeKey });
  }
  if (!(ROPE_SCALING_TYPES as readonly string[]).includes(rawType)) {
    throw new UnsupportedRopeScalingError(typeKey, rawType, `llama.cpp knows ${ROPE_SCALING_TYPES.join(", ")}; re-convert the model with one of them`);
  }
  const scalingTypeTrain = rawType as RopeScalingType;

  // rope.scaling.factor, else the older rope.scale_linear; 0 or missing means no scaling. freq_scale is its inverse.
  const factor = f32(metaNum(meta, `${arch}.rope.scaling.factor`) ?? metaNum(meta, `${arch}.rope.scale_linear`) ?? 0);
  const freqScaleTrain = factor === 0 ? 1 : f32(1 / factor);

  const ropeAttnFactor = f32(metaNum(meta, `${arch}.rope.scaling.attn_factor`) ?? 1);

  let yarnExtFactor = -1;
  let yarnAttnFactor = 1;
  let yarnBetaFast = 32;
  let yarnBetaSlow = 1;
  if (!ARCHS_IGNORING_YARN_KEYS.has(arch)) {
    yarnExtFactor = f32(metaNum(meta, `${arch}.rope.scaling.yarn_ext_factor`) ?? yarnExtFactor);
    yarnAttnFactor = f32(metaNum(meta, `${arch}.rope.scaling.yarn_attn_factor`) ?? yarnAttnFactor);
    yarnBetaFast = f32(metaNum(meta, `${arch}.rope.scaling.yarn_beta_fast`) ?? yarnBetaFast);
    yarnBetaSlow = f32(metaNum(meta, `${arch}.rope.scaling.yarn_beta_slow`) ?? yarnBetaSlow);
  }
  // DeepSeek-V2-style loaders read rope.scaling.yarn_log_multiplier, and its meaning moved between llama.cpp
  // versions (raw, then divided by 0.1 with a DeepSeek-V2 special case in llama-context.cpp), so a non-zero value
  // is refused for every architecture rather than guessed.
  const logMulKey = `${arch}.rope.scaling.yarn_log_multiplier`;
  const logMul = metaNum(meta, logMulKey) ?? 0;
  if (logMul !== 0) {
    throw new UnsupportedRopeScalingError(logMulKey, logMul, "kvbound does not implement the YaRN log multiplier (DeepSeek-V2 style mscale); use llama.cpp for this model");
  }

  return {
    scalingTypeTrain, freqBaseTrain, freqScaleTrain, nCtxTrain, nCtxOrigYarn, ropeAttnFactor,
    yarnExtFactor, yarnAttnFactor, yarnBetaFast, yarnBetaSlow,
  };
}

/** n_ctx_seq as llama-context.cpp derives it: n_ctx (0 -> n_ctx_train) padded to 256, split across sequences, padded again. */
export function llamaCppNCtxSeq(nCtx: number, nCtxTrain: number, nSeqMax = 1, kvUnified = false): number {
  const nCtxPadded = pad256(nCtx === 0 ? nCtxTrain : nCtx);
  if (kvUnified) return nCtxPadded;
  return pad256(Math.floor(nCtxPadded / Math.max(1, nSeqMax)));
}

/**
 * The rope factors llama.cpp's graph uses (llama_model::get_rope_factors in src/llama-model.cpp): rope_freqs
 * when the model has it, else Phi-3 LongRoPE's long factors when n_ctx_seq > the GGUF's original context
 * (hparams.n_ctx_orig_yarn, not the user's yarn_orig_ctx), else the short ones.
 */
export function selectRopeFactors(
  tensors: { freqs?: Float32Array | null; long?: Float32Array | null; short?: Float32Array | null },
  nCtxSeq: number,
  nCtxOrigYarn: number,
): Float32Array | null {
  if (tensors.freqs) return tensors.freqs;
  return (nCtxSeq > nCtxOrigYarn ? tensors.long : tensors.short) ?? null;
}

/** get_mscale in llama-context.cpp: 1 for scale <= 1, else 0.1 * mscale * ln(scale) + 1, in float32. */
function getMscale(scale: number, mscale: number): number {
  return scale <= 1 ? 1 : f32(f32(f32(F32_0_1 * mscale) * f32(Math.log(scale))) + 1);
}

/**
 * The ggml_rope_ext arguments llama.cpp computes for this GGUF and context: readRopeHParams, then the cparams
 * derivation of src/llama-context.cpp (llama_context constructor): user overrides, freq_scale 1 for type none,
 * yarn_ext_factor -1 -> 1 for yarn else 0, and when ext_factor != 0 the attention factor
 * get_mscale(factor) / (1 + 0.1 ln factor) (the division cancels the kernel's own magnitude correction), times
 * rope.scaling.attn_factor.
 */
export function readRopeScaling(meta: Record<string, unknown>, arch: string, opts: ReadRopeScalingOptions): RopeScaling {
  const hp = readRopeHParams(meta, arch);

  const type = opts.ropeScalingType ?? hp.scalingTypeTrain;
  const freqBase = opts.ropeFreqBase ? f32(opts.ropeFreqBase) : hp.freqBaseTrain;
  let freqScale = opts.ropeFreqScale ? f32(opts.ropeFreqScale) : hp.freqScaleTrain;
  const nCtxOrig = opts.yarnOrigCtx ? opts.yarnOrigCtx : hp.nCtxOrigYarn !== 0 ? hp.nCtxOrigYarn : hp.nCtxTrain;
  if (type === "none") freqScale = 1;

  const set = (v: number | undefined, model: number): number => (v !== undefined && v >= 0 ? f32(v) : model);
  let extFactor = set(opts.yarnExtFactor, hp.yarnExtFactor);
  let attnFactor = set(opts.yarnAttnFactor, hp.yarnAttnFactor);
  const betaFast = set(opts.yarnBetaFast, hp.yarnBetaFast);
  const betaSlow = set(opts.yarnBetaSlow, hp.yarnBetaSlow);
  if (extFactor < 0) extFactor = type === "yarn" ? 1 : 0;

  if (extFactor !== 0) {
    // llama.cpp overwrites any yarn_attn_factor here (the log-multiplier branch is refused in readRopeHParams).
    const factor = f32(1 / freqScale);
    attnFactor = getMscale(factor, 1);
    const cancel = f32(1 / f32(1 + f32(F32_0_1 * f32(Math.log(factor)))));
    attnFactor = f32(attnFactor * cancel);
  }
  attnFactor = f32(attnFactor * hp.ropeAttnFactor);

  const nCtxSeq = llamaCppNCtxSeq(opts.nCtx, hp.nCtxTrain, opts.nSeqMax, opts.kvUnified);
  const freqFactors = selectRopeFactors(
    { freqs: opts.freqFactors ?? null, long: opts.ropeFactorsLong ?? null, short: opts.ropeFactorsShort ?? null },
    nCtxSeq,
    hp.nCtxOrigYarn,
  );

  return { type, freqBase, freqScale, nCtxOrig, extFactor, attnFactor, betaFast, betaSlow, freqFactors };
}

/** ggml_rope_yarn_corr_dim (ggml/src/ggml.c): the dimension whose wavelength spans n_ctx_orig / beta turns, float32. */
function yarnCorrDim(nDims: number, nCtxOrig: number, beta: number, base: number): number {
  const denomTurns = f32(f32(beta * 2) * F32_PI);
  const num = f32(nDims * f32(Math.log(f32(nCtxOrig / denomTurns))));
  return f32(num / f32(2 * f32(Math.log(base))));
}

/**
 * ggml_rope_yarn_corr_dims (ggml/src/ggml.c): [max(0, floor(dim(beta_fast))), min(nDims - 1, ceil(dim(beta_slow)))].
 * Exported for tests; float32 so a dim that lands on an integer floors the way ggml does.
 */
export function yarnCorrDims(nDims: number, nCtxOrig: number, freqBase: number, betaFast: number, betaSlow: number): [number, number] {
  const base = f32(freqBase);
  const start = Math.floor(yarnCorrDim(nDims, nCtxOrig, f32(betaFast), base));
  const end = Math.ceil(yarnCorrDim(nDims, nCtxOrig, f32(betaSlow), base));
  return [Math.max(0, start), Math.min(nDims - 1, end)];
}

/**
 * A RopeSpec whose rotation equals ggml's CPU rope (ggml/src/ggml-cpu/ops.cpp: ggml_rope_cache_init, rope_yarn,
 * rope_yarn_ramp) for these arguments. Every case ggml computes is linear in the position per pair:
 *   theta_i(pos) = pos * theta_scale^i / ff_i * (freq_scale * (1 - r_i) + r_i),  r_i = ramp_i * ext_factor
 * with theta_scale = powf(base, -2/n_dims), and cos/sin scaled by attn_factor * (1 + 0.1 ln(1/freq_scale)) when
 * ext_factor != 0 (attn_factor alone otherwise). So invFreq_i is the bracket above and mscale the constant.
 *
 * Float32: ggml rounds theta_scale to float32 and builds theta_i by repeated float32 multiplication from pos. The
 * rounded theta_scale is systematic (theta_scale_f32^i drifts from base^(-2i/n) by up to i * 3e-8 relative), so
 * invFreq uses theta_scale_f32^i (in float64) and every per-pair constant (ramp, mix, mscale) is rounded as ggml
 * rounds it. The remaining per-position roundings (the float32 multiplication chain, theta/ff, the float32 angle)
 * are noise around ggml's value that a table linear in pos cannot follow. Measured against the float32
 * transcription of ggml in rope-scaling.test.ts (n_rot 64-128; none, linear, yarn, llama3 rope_freqs, LongRoPE),
 * max |cos/sin difference| with the mirrored theta_scale: 3.4e-5 over positions < 512, 6e-4 to 8k, 1.1e-2 to 128k
 * (ggml's own angle there is only good to ~1e-2: one float32 ulp of a 1.3e5-radian angle is 0.016); with
 * base^(-2i/n) unrounded: 6.8e-5, 1.2e-3 and 2.0e-2. A 3e-5 rad angle difference moves attention logits by
 * ~1e-4 relative, far inside |dp| <= 1e-3; matching ggml bit for bit would need cache/rope.ts to rebuild theta by
 * ggml's float32 chain per position.
 */
export function ropeSpecFromScaling(nRot: number, neox: boolean, s: RopeScaling): RopeSpec {
  if (!Number.isInteger(nRot) || nRot <= 0 || nRot % 2 !== 0) {
    throw new ModelConfigError(`rope dimension count ${nRot} must be a positive even integer`, { field: "rope.dimension_count" });
  }
  const half = nRot / 2;
  const ff = s.freqFactors;
  if (ff && ff.length < half) {
    // ggml_rope_ext asserts freq_factors->ne[0] >= n_dims/2; llama.cpp's loader wants exactly n_rot/2.
    throw new TensorShapeError(`rope factors have ${ff.length} values but n_rot ${nRot} needs ${half}`, { tensor: "rope_freqs.weight" });
  }

  const base = f32(s.freqBase);
  const freqScale = f32(s.freqScale);
  const extFactor = f32(s.extFactor);
  const thetaScale = f32(Math.pow(base, f32(-2 / nRot)));
  const [low, high] = extFactor !== 0 ? yarnCorrDims(nRot, s.nCtxOrig, base, s.betaFast, s.betaSlow) : [0, 0];
  const rampDenom = f32(Math.max(F32_0_001, f32(high - low)));

  const invFreq = new Array<number>(half);
  let pow = 1; // thetaScale^i in float64: the product of float32 values, exact to ~1e-16 per step
  for (let i = 0; i < half; i++) {
    const extrap = ff ? pow / ff[i]! : pow;
    let mix = freqScale;
    if (extFactor !== 0) {
      const y = f32(f32(i - low) / rampDenom);
      const ramp = f32(1 - Math.min(1, Math.max(0, y)));
      const r = f32(ramp * extFactor);
      mix = freqScale * f32(1 - r) + r;
    }
    invFreq[i] = extrap * mix;
    pow *= thetaScale;
  }

  let mscale = f32(s.attnFactor);
  if (extFactor !== 0) mscale = f32(mscale * f32(1 + f32(F32_0_1 * f32(Math.log(f32(1 / freqScale))))));

  // Plain RoPE (no factors, no scaling) is Rope's own default table, which llama2.c-style references can override.
  if (!ff && freqScale === 1 && extFactor === 0 && mscale === 1) return { nRot, freqBase: base, neox };
  return { nRot, freqBase: base, neox, invFreq, mscale };
}
