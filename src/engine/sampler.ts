// Picks the next token from logits: greedy (argmax) at temperature 0, else temperature, top-k and
// top-p (nucleus) with a seeded PRNG, so the same seed gives the same ids. Scratch arrays are
// allocated once per vocabulary size; sampling a token allocates nothing.

import { InvalidSettingError } from "../errors.js";

export interface SamplerSettings {
  /** 0 = greedy. Default 0.8 (llama.cpp common/common.h `common_params_sampling.temp`). */
  readonly temperature?: number;
  /** Keep the k most likely tokens; 0 = off. Default 40 (llama.cpp `top_k`). */
  readonly topK?: number;
  /** Keep the smallest set whose probability reaches p; 1 = off. Default 0.95 (llama.cpp `top_p`). */
  readonly topP?: number;
  /** PRNG seed (uint32). Default: a random one. */
  readonly seed?: number;
}

export interface ResolvedSamplerSettings {
  readonly temperature: number;
  readonly topK: number;
  readonly topP: number;
  readonly seed: number;
}

export const DEFAULT_TEMPERATURE = 0.8;
export const DEFAULT_TOP_K = 40;
export const DEFAULT_TOP_P = 0.95;
/** Temperatures above this make every token equally likely to float precision; refuse them as typos. */
export const MAX_TEMPERATURE = 100;

/** Validates sampler settings once, at the boundary. */
export function resolveSamplerSettings(s: SamplerSettings = {}): ResolvedSamplerSettings {
  const temperature = s.temperature ?? DEFAULT_TEMPERATURE;
  if (!Number.isFinite(temperature) || temperature < 0 || temperature > MAX_TEMPERATURE) {
    throw new InvalidSettingError(`temperature ${temperature} is invalid: use a number in [0, ${MAX_TEMPERATURE}] (0 = greedy)`, {
      setting: "temperature",
      value: temperature,
    });
  }
  const topK = s.topK ?? DEFAULT_TOP_K;
  if (!Number.isSafeInteger(topK) || topK < 0) {
    throw new InvalidSettingError(`topK ${topK} is invalid: use a whole number >= 0 (0 = off)`, { setting: "topK", value: topK });
  }
  const topP = s.topP ?? DEFAULT_TOP_P;
  if (!Number.isFinite(topP) || topP <= 0 || topP > 1) {
    throw new InvalidSettingError(`topP ${topP} is invalid: use a number in (0, 1] (1 = off)`, { setting: "topP", value: topP });
  }
  let seed = s.seed;
  if (seed === undefined) seed = Math.floor(Math.random() * 2 ** 32);
  if (!Number.isSafeInteger(seed) || seed < 0) {
    throw new InvalidSettingError(`seed ${seed} is invalid: use a whole number >= 0`, { setting: "seed", value: seed });
  }
  return { temperature, topK, topP, seed: seed >>> 0 };
}

/**
 * mulberry32 (Tommy Ettinger, public domain): a 32-bit state PRNG, good enough for sampling and
 * tiny, so a run is reproducible from its seed on every JS engine.
 */
export class Mulberry32 {
  private state: number;
  constructor(seed: number) {
    this.state = seed >>> 0;
  }
  /** Uniform in [0, 1). */
  next(): number {
    let t = (this.state = (this.state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
}

/** Index of the largest logit; ties go to the lower id (as llama.cpp's greedy sampler). NaN never wins. */
export function argmax(logits: Float32Array, n: number = logits.length): number {
  let best = 0;
  let bestV = -Infinity;
  for (let i = 0; i < n; i++) {
    const v = logits[i]!;
    if (v > bestV) {
      bestV = v;
      best = i;
    }
  }
  return best;
}

export class Sampler {
  readonly settings: ResolvedSamplerSettings;
  private readonly rng: Mulberry32;
  private readonly idx: Int32Array; // [nVocab] candidate ids, most likely first
  private readonly prob: Float64Array; // [nVocab] unnormalised probabilities of idx
  private logitsRef: Float32Array = new Float32Array(0);
  // Bound once so sorting allocates no closure per token.
  private readonly byLogitDesc = (a: number, b: number): number => this.logitsRef[b]! - this.logitsRef[a]! || a - b;

  constructor(readonly nVocab: number, settings: SamplerSettings = {}) {
    this.settings = resolveSamplerSettings(settings);
    this.rng = new Mulberry32(this.settings.seed);
    this.idx = new Int32Array(nVocab);
    this.prob = new Float64Array(nVocab);
  }

  /** The next token id for `logits` ([nVocab]; read, never written). */
  sample(logits: Float32Array): number {
    const { temperature, topK, topP } = this.settings;
    const n = this.nVocab;
    if (temperature === 0 || topK === 1) return argmax(logits, n);
    const idx = this.idx;
    const prob = this.prob;
    let m: number; // candidates in idx[0..m), sorted by logit descending when sorted = true
    let sorted = false;
    if (topK > 0 && topK < n) {
      m = this.topKInto(logits, topK);
      sorted = true;
    } else {
      for (let i = 0; i < n; i++) idx[i] = i;
      m = n;
      if (topP < 1) {
        this.logitsRef = logits;
        idx.subarray(0, n).sort(this.byLogitDesc);
        sorted = true;
      }
    }
    // Softmax over the candidates at the temperature (max subtracted for range).
    let maxL = -Infinity;
    for (let j = 0; j < m; j++) {
      const v = logits[idx[j]!]!;
      if (v > maxL) maxL = v;
    }
    if (maxL === -Infinity || Number.isNaN(maxL)) return argmax(logits, n);
    let sum = 0;
    for (let j = 0; j < m; j++) {
      const p = Math.exp((logits[idx[j]!]! - maxL) / temperature);
      prob[j] = p;
      sum += p;
    }
    // Nucleus: the smallest most-likely-first prefix whose mass reaches topP (at least one token).
    if (topP < 1 && sorted) {
      const target = topP * sum;
      let acc = 0;
      let keep = 0;
      while (keep < m) {
        acc += prob[keep]!;
        keep++;
        if (acc >= target) break;
      }
      m = keep;
      sum = acc;
    }
    let u = this.rng.next() * sum;
    for (let j = 0; j < m; j++) {
      u -= prob[j]!;
      if (u < 0) return idx[j]!;
    }
    // Rounding left u a hair above 0: the last candidate.
    return idx[m - 1]!;
  }

  /** Writes the k largest logits' ids into idx[0..k), most likely first (insertion into a sorted run). */
  private topKInto(logits: Float32Array, k: number): number {
    const idx = this.idx;
    let m = 0;
    for (let i = 0; i < this.nVocab; i++) {
      const v = logits[i]!;
      if (!(v === v)) continue; // NaN is never a candidate
      if (m === k && v <= logits[idx[k - 1]!]!) continue;
      let j = m < k ? m++ : k - 1;
      // Strict > keeps the lower id first among ties.
      while (j > 0 && v > logits[idx[j - 1]!]!) {
        idx[j] = idx[j - 1]!;
        j--;
      }
      idx[j] = i;
    }
    return m;
  }
}
