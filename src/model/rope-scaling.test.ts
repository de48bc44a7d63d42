import { describe, expect, it } from "vitest";
import { Rope } from "../cache/rope.js";
import { ModelConfigError, TensorShapeError, UnsupportedRopeScalingError, errorFromJSON } from "../errors.js";
import {
  llamaCppNCtxSeq,
  readRopeHParams,
  readRopeScaling,
  ropeSpecFromScaling,
  selectRopeFactors,
  yarnCorrDims,
  type RopeScaling,
} from "./rope-scaling.js";

const f = Math.fround;
const U = 2 ** -24; // float32 unit roundoff

// ---------------------------------------------------------------------------------------------
// Reference: a line-by-line float32 transcription of ggml's CPU rope for one position (ggml/src/ggml-cpu/ops.cpp
// ggml_rope_cache_init + rope_yarn + rope_yarn_ramp, ggml/src/ggml.c ggml_rope_yarn_corr_dims), written
// independently of rope-scaling.ts: theta is carried from pos by repeated float32 multiplication.

function refCorrDim(nDims: number, nCtxOrig: number, nRotTurns: number, base: number): number {
  return f(f(nDims * f(Math.log(f(nCtxOrig / f(f(nRotTurns * 2) * f(Math.PI)))))) / f(2 * f(Math.log(base))));
}

function refCacheInit(pos: number, nDims: number, s: RopeScaling): { cos: Float64Array; sin: Float64Array; theta: Float64Array } {
  const base = f(s.freqBase);
  const freqScale = f(s.freqScale);
  const ext = f(s.extFactor);
  const thetaScale = f(Math.pow(base, f(-2 / nDims)));
  const low = Math.max(0, Math.floor(refCorrDim(nDims, s.nCtxOrig, f(s.betaFast), base)));
  const high = Math.min(nDims - 1, Math.ceil(refCorrDim(nDims, s.nCtxOrig, f(s.betaSlow), base)));
  const half = nDims / 2;
  const cos = new Float64Array(half);
  const sin = new Float64Array(half);
  const thetaOut = new Float64Array(half);
  let theta = f(pos);
  for (let i0 = 0; i0 < nDims; i0 += 2) {
    const ff = s.freqFactors ? s.freqFactors[i0 / 2]! : 1;
    const thetaExtrap = f(theta / ff);
    const thetaInterp = f(freqScale * thetaExtrap);
    let t = thetaInterp;
    let mscale = f(s.attnFactor);
    if (ext !== 0) {
      const y = f(f(Math.trunc(i0 / 2) - low) / f(Math.max(f(0.001), f(high - low))));
      const rampMix = f(f(1 - Math.min(1, Math.max(0, y))) * ext);
      t = f(f(thetaInterp * f(1 - rampMix)) + f(thetaExtrap * rampMix));
      mscale = f(mscale * f(1 + f(f(0.1) * f(Math.log(f(1 / freqScale))))));
    }
    cos[i0 / 2] = f(f(Math.cos(t)) * mscale);
    sin[i0 / 2] = f(f(Math.sin(t)) * mscale);
    thetaOut[i0 / 2] = t;
    theta = f(theta * thetaScale);
  }
  return { cos, sin, theta: thetaOut };
}

/** ggml rotate_pairs: NORMAL rotates (2i, 2i+1), NEOX (i, i + n/2); dims >= nDims pass through. */
function refRotate(x: Float32Array, nDims: number, neox: boolean, cos: Float64Array, sin: Float64Array): Float32Array {
  const out = Float32Array.from(x);
  for (let i = 0; i < nDims / 2; i++) {
    const a = neox ? i : 2 * i;
    const b = neox ? i + nDims / 2 : 2 * i + 1;
    const x0 = x[a]!;
    const x1 = x[b]!;
    out[a] = x0 * cos[i]! - x1 * sin[i]!;
    out[b] = x0 * sin[i]! + x1 * cos[i]!;
  }
  return out;
}

/** HF transformers' llama3 rope_freqs (what convert_hf_to_gguf.py writes as rope_freqs.weight, stored as divisors). */
function llama3Factors(nDims: number, base: number, factor: number, lowFreqFactor: number, highFreqFactor: number, orig: number): Float32Array {
  const out = new Float32Array(nDims / 2);
  const lowWavelen = orig / lowFreqFactor;
  const highWavelen = orig / highFreqFactor;
  for (let i = 0; i < nDims / 2; i++) {
    const wavelen = (2 * Math.PI) / (1 / Math.pow(base, (2 * i) / nDims));
    if (wavelen < highWavelen) out[i] = 1;
    else if (wavelen > lowWavelen) out[i] = factor;
    else {
      const smooth = (orig / wavelen - lowFreqFactor) / (highFreqFactor - lowFreqFactor);
      out[i] = 1 / ((1 - smooth) / factor + smooth);
    }
  }
  return out;
}

const PLAIN: RopeScaling = {
  type: "none", freqBase: 10000, freqScale: 1, nCtxOrig: 4096, extFactor: 0, attnFactor: 1, betaFast: 32, betaSlow: 1, freqFactors: null,
};

const CASES: { name: string; nRot: number; s: RopeScaling }[] = [
  { name: "none (llama2, base 1e4)", nRot: 128, s: PLAIN },
  { name: "linear x4", nRot: 128, s: { ...PLAIN, type: "linear", freqScale: f(0.25) } },
  { name: "yarn x4 (qwen2.5, base 1e6, orig 32k)", nRot: 128, s: { ...PLAIN, type: "yarn", freqBase: 1e6, freqScale: f(0.25), nCtxOrig: 32768, extFactor: 1 } },
  { name: "yarn partial ext 0.5, attn 0.9", nRot: 64, s: { ...PLAIN, type: "yarn", freqScale: f(1 / 8), nCtxOrig: 2048, extFactor: 0.5, attnFactor: 0.9, betaFast: 16, betaSlow: 2 } },
  { name: "llama3 rope_freqs (3.1 8B)", nRot: 128, s: { ...PLAIN, type: "linear", freqBase: 500000, freqFactors: llama3Factors(128, 500000, 8, 1, 4, 8192) } },
  { name: "llama3 rope_freqs (3.2 1B, n_rot 64)", nRot: 64, s: { ...PLAIN, type: "linear", freqBase: 500000, freqFactors: llama3Factors(64, 500000, 32, 1, 4, 8192) } },
  {
    name: "phi3 LongRoPE long factors",
    nRot: 96,
    s: { ...PLAIN, type: "longrope", attnFactor: f(Math.sqrt(1 + Math.log(32) / Math.log(4096))), freqFactors: Float32Array.from({ length: 48 }, (_, i) => 1 + 0.9 * i) },
  },
];

const POSITIONS = [0, 1, 2, 7, 100, 511, 512, 4095, 8191, 32767, 65536, 100003, 131071];

describe("ropeSpecFromScaling against a float32 transcription of ggml's CPU rope", () => {
  for (const { name, nRot, s } of CASES) {
    it(`${name}: cos/sin per pair at positions up to 128k`, () => {
      const spec = ropeSpecFromScaling(nRot, false, s);
      const rope = new Rope(spec, nRot);
      const x = new Float32Array(nRot);
      for (const pos of POSITIONS) {
        // rotating (1, 0) in every pair reads back (cos, sin) of that pair
        for (let i = 0; i < nRot; i += 2) { x[i] = 1; x[i + 1] = 0; }
        rope.rotate(x, 0, 1, pos);
        const ref = refCacheInit(pos, nRot, s);
        for (let i = 0; i < nRot / 2; i++) {
          const m = Math.abs(ref.cos[i]!) + Math.abs(ref.sin[i]!) + 1;
          // ggml's theta carries i + 4 float32 roundings (the multiplication chain, /ff, *freq_scale, the mix);
          // the linear table matches ggml's value up to those, plus the cos/sin and output roundings.
          const tol = (Math.abs(ref.theta[i]!) * (i + 6) * U + 8 * U) * m;
          expect(Math.abs(x[2 * i]! - ref.cos[i]!), `cos pos ${pos} pair ${i}`).toBeLessThanOrEqual(tol);
          expect(Math.abs(x[2 * i + 1]! - ref.sin[i]!), `sin pos ${pos} pair ${i}`).toBeLessThanOrEqual(tol);
        }
      }
    });
  }

  it("stays within 5e-5 of ggml's cos/sin over the first 512 positions (the perplexity-run range)", () => {
    for (const { nRot, s } of CASES) {
      const rope = new Rope(ropeSpecFromScaling(nRot, false, s), nRot);
      const x = new Float32Array(nRot);
      let maxErr = 0;
      for (let pos = 0; pos < 512; pos++) {
        for (let i = 0; i < nRot; i += 2) { x[i] = 1; x[i + 1] = 0; }
        rope.rotate(x, 0, 1, pos);
        const ref = refCacheInit(pos, nRot, s);
        for (let i = 0; i < nRot / 2; i++) {
          maxErr = Math.max(maxErr, Math.abs(x[2 * i]! - ref.cos[i]!), Math.abs(x[2 * i + 1]! - ref.sin[i]!));
        }
      }
      expect(maxErr).toBeLessThan(5e-5);
    }
  });

  it("rotates NORMAL and NEOX heads like ggml's rotate_pairs and leaves dims past n_rot alone", () => {
    const headDim = 80;
    const nRot = 64; // partial rotary: the last 16 dims pass through
    const s = CASES[3]!.s;
    let seed = 12345;
    const rand = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32) * 2 - 1;
    for (const neox of [false, true]) {
      const rope = new Rope(ropeSpecFromScaling(nRot, neox, s), headDim);
      for (const pos of [0, 3, 300, 5000]) {
        const x = new Float32Array(2 * headDim);
        for (let i = 0; i < x.length; i++) x[i] = rand();
        const want0 = refRotate(x.subarray(0, headDim), nRot, neox, refCacheInit(pos, nRot, s).cos, refCacheInit(pos, nRot, s).sin);
        const want1 = refRotate(x.subarray(headDim), nRot, neox, refCacheInit(pos, nRot, s).cos, refCacheInit(pos, nRot, s).sin);
        rope.rotate(x, 0, 2, pos);
        for (let i = 0; i < headDim; i++) {
          expect(Math.abs(x[i]! - want0[i]!)).toBeLessThan(2e-4);
          expect(Math.abs(x[headDim + i]! - want1[i]!)).toBeLessThan(2e-4);
        }
        for (let i = nRot; i < headDim; i++) expect(x[i]).toBe(want0[i]);
      }
    }
  });

  it("reduces to the unscaled table for type none, and applies YaRN's magnitude only when ext_factor != 0", () => {
    // Plain RoPE leaves the table to Rope's default (ggml's float32 theta_scale to the i-th power).
    const plain = ropeSpecFromScaling(128, false, PLAIN);
    expect(plain.invFreq).toBeUndefined();
    expect(plain.mscale ?? 1).toBe(1);
    const probe = new Rope(plain, 128);
    const x = new Float32Array(128);
    for (let i = 0; i < 64; i++) {
      x.fill(0);
      x[2 * i] = 1;
      probe.rotate(x, 0, 1, 1); // angle = invFreq_i at pos 1
      expect(Math.abs(Math.atan2(x[2 * i + 1]!, x[2 * i]!) / Math.pow(10000, (-2 * i) / 128) - 1)).toBeLessThan(64 * 6e-8 + 1e-6);
    }
    const yarn = ropeSpecFromScaling(128, true, CASES[2]!.s);
    expect(yarn.mscale).toBeCloseTo(1 + 0.1 * Math.log(4), 6);
    expect(yarn.neox).toBe(true);
    // pairs below the ramp extrapolate (freq unscaled), pairs above it interpolate (freq * 1/4)
    const [low, high] = yarnCorrDims(128, 32768, 1e6, 32, 1);
    const ts = f(Math.pow(f(1e6), f(-2 / 128)));
    expect(yarn.invFreq![low - 1]! / Math.pow(ts, low - 1)).toBeCloseTo(1, 12);
    expect(yarn.invFreq![high + 1]! / Math.pow(ts, high + 1)).toBeCloseTo(0.25, 12);
    const linear = ropeSpecFromScaling(128, false, { ...PLAIN, type: "linear", freqScale: 0.25, attnFactor: 0.5 });
    expect(linear.mscale).toBe(0.5);
  });

  it("computes ggml_rope_yarn_corr_dims", () => {
    // Qwen2.5: n_dims 128, n_ctx_orig 32768, base 1e6: dim(32) = 23.6 -> 23, dim(1) = 39.65 -> 40
    expect(yarnCorrDims(128, 32768, 1e6, 32, 1)).toEqual([23, 40]);
    // clamped to [0, n_dims - 1]
    expect(yarnCorrDims(64, 4096, 10000, 1e6, 1e-9)).toEqual([0, 63]);
  });

  it("refuses rope factors shorter than n_rot/2 and an odd n_rot", () => {
    expect(() => ropeSpecFromScaling(128, false, { ...PLAIN, freqFactors: new Float32Array(63) })).toThrow(TensorShapeError);
    expect(() => ropeSpecFromScaling(127, false, PLAIN)).toThrow(ModelConfigError);
  });
});

describe("readRopeHParams / readRopeScaling read GGUF metadata as llama.cpp does", () => {
  it("defaults: base 10000, type linear with no factor, orig ctx = n_ctx_train, yarn params from llama_hparams", () => {
    const hp = readRopeHParams({ "llama.context_length": 2048 }, "llama");
    expect(hp).toEqual({
      scalingTypeTrain: "linear", freqBaseTrain: 10000, freqScaleTrain: 1, nCtxTrain: 2048, nCtxOrigYarn: 2048,
      ropeAttnFactor: 1, yarnExtFactor: -1, yarnAttnFactor: 1, yarnBetaFast: 32, yarnBetaSlow: 1,
    });
    const s = readRopeScaling({ "llama.context_length": 2048 }, "llama", { nCtx: 512 });
    expect(s).toEqual({ type: "linear", freqBase: 10000, freqScale: 1, nCtxOrig: 2048, extFactor: 0, attnFactor: 1, betaFast: 32, betaSlow: 1, freqFactors: null });
    const spec = ropeSpecFromScaling(64, false, s);
    expect(spec.mscale ?? 1).toBe(1);
  });

  it("accepts bigint and number values; rope.scaling.factor wins over the older rope.scale_linear", () => {
    const meta = {
      "llama.context_length": 131072n,
      "llama.rope.freq_base": 500000,
      "llama.rope.scaling.factor": 8,
      "llama.rope.scale_linear": 2,
      "llama.rope.scaling.original_context_length": 8192n,
    };
    const s = readRopeScaling(meta, "llama", { nCtx: 4096 });
    expect(s.freqBase).toBe(500000);
    expect(s.freqScale).toBe(f(1 / 8));
    expect(s.nCtxOrig).toBe(8192);
    const old = readRopeScaling({ "llama.context_length": 4096, "llama.rope.scale_linear": 4 }, "llama", { nCtx: 4096 });
    expect(old.freqScale).toBe(0.25);
    expect(old.type).toBe("linear");
  });

  it("type none never scales; the user's overrides replace the model's values", () => {
    const meta = { "llama.context_length": 4096, "llama.rope.scaling.type": "none", "llama.rope.scaling.factor": 4 };
    expect(readRopeScaling(meta, "llama", { nCtx: 4096 }).freqScale).toBe(1);
    const o = readRopeScaling(meta, "llama", { nCtx: 4096, ropeScalingType: "linear", ropeFreqBase: 20000, ropeFreqScale: 0.5, yarnOrigCtx: 1024 });
    expect(o).toMatchObject({ type: "linear", freqBase: 20000, freqScale: 0.5, nCtxOrig: 1024, extFactor: 0 });
  });

  it("yarn: ext_factor 1, attention factor get_mscale / (1 + 0.1 ln s) * rope.scaling.attn_factor", () => {
    const meta = {
      "qwen2.context_length": 32768,
      "qwen2.rope.freq_base": 1000000,
      "qwen2.rope.scaling.type": "yarn",
      "qwen2.rope.scaling.factor": 4,
      "qwen2.rope.scaling.original_context_length": 32768,
    };
    const s = readRopeScaling(meta, "qwen2", { nCtx: 131072 });
    expect(s).toMatchObject({ type: "yarn", freqScale: 0.25, nCtxOrig: 32768, extFactor: 1, betaFast: 32, betaSlow: 1, freqFactors: null });
    expect(Math.abs(s.attnFactor - 1)).toBeLessThan(2e-7); // get_mscale(4) cancels the kernel's own 1 + 0.1 ln 4
    expect(ropeSpecFromScaling(128, true, s).mscale).toBeCloseTo(1 + 0.1 * Math.log(4), 6);

    const withAttn = readRopeScaling({ ...meta, "qwen2.rope.scaling.attn_factor": 0.5 }, "qwen2", { nCtx: 4096 });
    expect(withAttn.attnFactor).toBeCloseTo(0.5, 6);
    // the user's --yarn-ext-factor 0 turns YaRN's ramp and magnitude off; -1 means unset
    expect(readRopeScaling(meta, "qwen2", { nCtx: 4096, yarnExtFactor: 0 })).toMatchObject({ extFactor: 0, attnFactor: 1 });
    expect(readRopeScaling(meta, "qwen2", { nCtx: 4096, yarnExtFactor: -1 }).extFactor).toBe(1);
    // llama.cpp overwrites a user yarn_attn_factor when ext_factor != 0
    expect(Math.abs(readRopeScaling(meta, "qwen2", { nCtx: 4096, yarnAttnFactor: 3 }).attnFactor - 1)).toBeLessThan(2e-7);
  });

  it("yarn_* keys: ignored where llama.cpp's loader ignores them (llama, qwen2, qwen3, phi3), read elsewhere", () => {
    const keys = (a: string) => ({
      [`${a}.context_length`]: 8192,
      [`${a}.rope.scaling.yarn_beta_fast`]: 8,
      [`${a}.rope.scaling.yarn_beta_slow`]: 2,
      [`${a}.rope.scaling.yarn_ext_factor`]: 0.5,
    });
    expect(readRopeScaling(keys("llama"), "llama", { nCtx: 8192 })).toMatchObject({ betaFast: 32, betaSlow: 1, extFactor: 0 });
    expect(readRopeScaling(keys("grok"), "grok", { nCtx: 8192 })).toMatchObject({ betaFast: 8, betaSlow: 2, extFactor: 0.5 });
  });

  it("Phi-3 LongRoPE: long factors when n_ctx_seq > original context, short otherwise; rope_freqs wins", () => {
    const long = new Float32Array(48).fill(2);
    const short = new Float32Array(48).fill(1.5);
    const freqs = new Float32Array(48).fill(3);
    const meta = { "phi3.context_length": 131072, "phi3.rope.scaling.original_context_length": 4096, "phi3.rope.scaling.attn_factor": 1.19 };
    const at = (nCtx: number, extra: object = {}) => readRopeScaling(meta, "phi3", { nCtx, ropeFactorsLong: long, ropeFactorsShort: short, ...extra });
    expect(at(4096).freqFactors).toBe(short);
    expect(at(3000).freqFactors).toBe(short);
    expect(at(4097).freqFactors).toBe(long); // padded to 4352 > 4096
    expect(at(0).freqFactors).toBe(long); // 0 = n_ctx_train 131072
    expect(at(8192, { nSeqMax: 2 }).freqFactors).toBe(short); // 4096 per sequence
    expect(at(8192, { nSeqMax: 2, kvUnified: true }).freqFactors).toBe(long);
    expect(at(4096, { freqFactors: freqs }).freqFactors).toBe(freqs);
    expect(at(4096).attnFactor).toBe(f(1.19));
    expect(at(4096).extFactor).toBe(0);
    expect(selectRopeFactors({}, 10, 5)).toBeNull();
  });

  it("n_ctx_seq pads to 256 like llama-context.cpp", () => {
    expect(llamaCppNCtxSeq(4000, 2048)).toBe(4096);
    expect(llamaCppNCtxSeq(0, 2048)).toBe(2048);
    expect(llamaCppNCtxSeq(8192, 2048, 3)).toBe(2816); // 8192/3 = 2730 -> 2816
    expect(llamaCppNCtxSeq(8192, 2048, 3, true)).toBe(8192);
  });

  it("llama3: rope_freqs.weight divides theta, through readRopeScaling and the Rope", () => {
    const ff = llama3Factors(64, 500000, 32, 1, 4, 8192);
    const meta = { "llama.context_length": 131072, "llama.rope.freq_base": 500000 };
    const s = readRopeScaling(meta, "llama", { nCtx: 131072, freqFactors: ff });
    expect(s.freqFactors).toBe(ff);
    const rope = new Rope(ropeSpecFromScaling(64, false, s), 64);
    const x = new Float32Array(64);
    for (let i = 0; i < 64; i += 2) x[i] = 1;
    rope.rotate(x, 0, 1, 100);
    const ref = refCacheInit(100, 64, s);
    for (let i = 0; i < 32; i++) expect(Math.abs(x[2 * i]! - ref.cos[i]!)).toBeLessThan(1e-5);
  });

  it("throws typed errors that name the key", () => {
    const ctx = { "llama.context_length": 4096 };
    const unknown = () => readRopeScaling({ ...ctx, "llama.rope.scaling.type": "dynamic" }, "llama", { nCtx: 4096 });
    expect(unknown).toThrow(UnsupportedRopeScalingError);
    try {
      unknown();
    } catch (e) {
      const err = e as UnsupportedRopeScalingError;
      expect(err.code).toBe("UNSUPPORTED_ROPE_SCALING");
      expect(err.details).toEqual({ field: "llama.rope.scaling.type", value: "dynamic" });
      expect(err.message).toContain("llama.rope.scaling.type");
      expect(err.message).toContain("none, linear, yarn, longrope");
      expect(errorFromJSON(JSON.parse(JSON.stringify(err)))).toBeInstanceOf(UnsupportedRopeScalingError);
    }
    const logMul = () => readRopeScaling({ "deepseek2.context_length": 4096, "deepseek2.rope.scaling.yarn_log_multiplier": 0.0707 }, "deepseek2", { nCtx: 4096 });
    expect(logMul).toThrow(UnsupportedRopeScalingError);
    expect(logMul).toThrow(/yarn_log_multiplier/);
    expect(readRopeScaling({ ...ctx, "llama.rope.scaling.yarn_log_multiplier": 0 }, "llama", { nCtx: 4096 }).type).toBe("linear");

    expect(() => readRopeScaling({ ...ctx, "llama.rope.scaling.type": 3 }, "llama", { nCtx: 4096 })).toThrow(ModelConfigError);
    expect(() => readRopeScaling({ ...ctx, "llama.rope.scaling.factor": "4" }, "llama", { nCtx: 4096 })).toThrow(/llama.rope.scaling.factor/);
    expect(() => readRopeScaling({}, "llama", { nCtx: 4096 })).toThrow(/llama.context_length/);
  });
});
