// Picks the next token from logits in llama.cpp's default chain order (common/common.h
// `common_params_sampling.samplers`, src/llama-sampling.cpp): penalties -> top-k -> top-p -> min-p
// -> temperature -> dist. Top-p and min-p therefore see the UNtempered distribution (softmax at
// temperature 1) and the temperature only reshapes the survivors; greedy (temperature 0) is the
// argmax of the penalized logits. The sampler owns its state — the seeded PRNG and the window of
// the last penaltyLastN accepted tokens — which getState/setState move as plain JSON. Scratch
// arrays are allocated once per vocabulary size; sampling or accepting a token allocates nothing.

import { InvalidSettingError, SnapshotError } from "../errors.js";

export interface SamplerSettings {
  /** 0 = greedy. Default 0.8 (llama.cpp common/common.h `common_params_sampling.temp`). */
  readonly temperature?: number;
  /** Keep the k most likely tokens; 0 = off. Default 40 (llama.cpp `top_k`). */
  readonly topK?: number;
  /** Keep the smallest set whose probability reaches p; 1 = off. Default 0.95 (llama.cpp `top_p`). */
  readonly topP?: number;
  /** Keep tokens with probability >= minP * the top token's; 0 = off. Default 0.05 (llama.cpp `min_p`). */
  readonly minP?: number;
  /** Divide positive / multiply negative logits of recent tokens by this; 1 = off. Default 1 (llama.cpp `penalty_repeat`). */
  readonly repeatPenalty?: number;
  /** Subtract this from the logit of every token in the window; 0 = off. Default 0 (llama.cpp `penalty_present`). */
  readonly presencePenalty?: number;
  /** Subtract this times a token's count in the window; 0 = off. Default 0 (llama.cpp `penalty_freq`). */
  readonly frequencyPenalty?: number;
  /** Tokens the penalties look back over; 0 = off. Default 64 (llama.cpp `penalty_last_n`). */
  readonly penaltyLastN?: number;
  /** PRNG seed (uint32). Default: a random one. */
  readonly seed?: number;
}

export interface ResolvedSamplerSettings {
  readonly temperature: number;
  readonly topK: number;
  readonly topP: number;
  readonly minP: number;
  readonly repeatPenalty: number;
  readonly presencePenalty: number;
  readonly frequencyPenalty: number;
  readonly penaltyLastN: number;
  readonly seed: number;
}

/** What a sampler carries from one token to the next, as plain JSON-able data. */
export interface SamplerState {
  /** Mulberry32 state (uint32). */
  rng: number;
  /** The penalty window's token ids, oldest first (at most penaltyLastN). */
  recent: number[];
}

export const DEFAULT_TEMPERATURE = 0.8;
export const DEFAULT_TOP_K = 40;
export const DEFAULT_TOP_P = 0.95;
export const DEFAULT_MIN_P = 0.05;
export const DEFAULT_REPEAT_PENALTY = 1;
export const DEFAULT_PRESENCE_PENALTY = 0;
export const DEFAULT_FREQUENCY_PENALTY = 0;
export const DEFAULT_PENALTY_LAST_N = 64;
/** Temperatures above this make every token equally likely to float precision; refuse them as typos. */
export const MAX_TEMPERATURE = 100;
/** The OpenAI API's range for presence_penalty and frequency_penalty. */
export const MAX_ABS_PRESENCE_FREQUENCY_PENALTY = 2;
/** The window's ring is allocated up front (4 bytes a token); a window past any context window is a
 *  typo, and an unbounded one would be an unbounded allocation. */
export const MAX_PENALTY_LAST_N = 1 << 20;

function finiteIn(name: string, v: number, lo: number, hi: number, hint: string): number {
  if (!Number.isFinite(v) || v < lo || v > hi) {
    throw new InvalidSettingError(`${name} ${v} is invalid: use a number in [${lo}, ${hi}]${hint}`, { setting: name, value: v });
  }
  return v;
}

/** Validates sampler settings once, at the boundary, into a frozen, fully defaulted object. */
export function resolveSamplerSettings(s: SamplerSettings = {}): ResolvedSamplerSettings {
  const temperature = finiteIn("temperature", s.temperature ?? DEFAULT_TEMPERATURE, 0, MAX_TEMPERATURE, " (0 = greedy)");
  const topK = s.topK ?? DEFAULT_TOP_K;
  if (!Number.isSafeInteger(topK) || topK < 0) {
    throw new InvalidSettingError(`topK ${topK} is invalid: use a whole number >= 0 (0 = off)`, { setting: "topK", value: topK });
  }
  const topP = s.topP ?? DEFAULT_TOP_P;
  if (!Number.isFinite(topP) || topP <= 0 || topP > 1) {
    throw new InvalidSettingError(`topP ${topP} is invalid: use a number in (0, 1] (1 = off)`, { setting: "topP", value: topP });
  }
  const minP = finiteIn("minP", s.minP ?? DEFAULT_MIN_P, 0, 1, " (0 = off)");
  const repeatPenalty = s.repeatPenalty ?? DEFAULT_REPEAT_PENALTY;
  if (!Number.isFinite(repeatPenalty) || repeatPenalty <= 0) {
    // 0 would divide by zero and a negative one would flip logits' signs.
    throw new InvalidSettingError(`repeatPenalty ${repeatPenalty} is invalid: use a number > 0 (1 = off, > 1 discourages repeats)`, {
      setting: "repeatPenalty",
      value: repeatPenalty,
    });
  }
  const m = MAX_ABS_PRESENCE_FREQUENCY_PENALTY;
  const presencePenalty = finiteIn("presencePenalty", s.presencePenalty ?? DEFAULT_PRESENCE_PENALTY, -m, m, " (0 = off)");
  const frequencyPenalty = finiteIn("frequencyPenalty", s.frequencyPenalty ?? DEFAULT_FREQUENCY_PENALTY, -m, m, " (0 = off)");
  const penaltyLastN = s.penaltyLastN ?? DEFAULT_PENALTY_LAST_N;
  if (!Number.isSafeInteger(penaltyLastN) || penaltyLastN < 0 || penaltyLastN > MAX_PENALTY_LAST_N) {
    // llama.cpp's -1 (= the context size) needs the context window, which the sampler does not know.
    throw new InvalidSettingError(
      `penaltyLastN ${penaltyLastN} is invalid: use a whole number in [0, ${MAX_PENALTY_LAST_N}] (0 = off; for llama.cpp's -1 pass the context window size)`,
      { setting: "penaltyLastN", value: penaltyLastN },
    );
  }
  let seed = s.seed;
  if (seed === undefined) seed = Math.floor(Math.random() * 2 ** 32);
  if (!Number.isSafeInteger(seed) || seed < 0) {
    throw new InvalidSettingError(`seed ${seed} is invalid: use a whole number >= 0`, { setting: "seed", value: seed });
  }
  return Object.freeze({
    temperature,
    topK,
    topP,
    minP,
    repeatPenalty,
    presencePenalty,
    frequencyPenalty,
    penaltyLastN,
    seed: seed >>> 0,
  });
}

/**
 * mulberry32 (Tommy Ettinger, public domain): a 32-bit state PRNG, good enough for sampling and
 * tiny, so a run is reproducible from its seed on every JS engine, and its whole state is one uint32.
 */
export class Mulberry32 {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0;
  }
  /** The whole generator state (uint32); setting it replays the sequence from that point. */
  get state(): number {
    return this.s;
  }
  set state(v: number) {
    this.s = v >>> 0;
  }
  /** Uniform in [0, 1). */
  next(): number {
    let t = (this.s = (this.s + 0x6d2b79f5) >>> 0);
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

/** The vocabulary-sized buffers a Sampler works in, allocated once per vocabulary size. */
export class SamplerScratch {
  readonly idx: Int32Array; // [nVocab]
  readonly prob: Float64Array; // [nVocab]
  readonly counts: Int32Array; // [nVocab]
  private penalized: Float32Array | null = null; // [nVocab], only once penalties are used

  constructor(readonly nVocab: number) {
    this.idx = new Int32Array(nVocab);
    this.prob = new Float64Array(nVocab);
    this.counts = new Int32Array(nVocab);
  }

  work(): Float32Array {
    this.penalized ??= new Float32Array(this.nVocab);
    return this.penalized;
  }
}

export class Sampler {
  readonly settings: ResolvedSamplerSettings;
  private readonly rng: Mulberry32;
  private readonly idx: Int32Array; // [nVocab] candidate ids, most likely first when sorted
  private readonly prob: Float64Array; // [nVocab] unnormalised probabilities of idx
  private readonly work: Float32Array; // [nVocab] penalized copy of the caller's logits (empty when penalties are off)
  private readonly ring: Int32Array; // [penaltyLastN] the penalty window, oldest at ringStart
  private readonly counts: Int32Array; // [nVocab] occurrences of each id in the ring (empty when penaltyLastN = 0)
  private ringStart = 0;
  private ringLen = 0;
  private readonly penaltiesOn: boolean;
  // The penalties in float32, so the arithmetic is llama.cpp's (llama_sampler_penalties_apply).
  private readonly repeatF32: number;
  private readonly freqF32: number;
  private readonly presentF32: number;
  private readonly logMinP: number; // float32 logf(minP), as llama_sampler_min_p_apply
  private logitsRef: Float32Array = new Float32Array(0);
  // Bound once so sorting allocates no closure per token.
  private readonly byLogitDesc = (a: number, b: number): number => this.logitsRef[b]! - this.logitsRef[a]! || a - b;

  /**
   * `scratch`: vocabulary-sized buffers to use instead of allocating them (a session samples every
   * turn with new settings; its sampler buffers are allocated once). One sampler at a time uses it.
   */
  constructor(readonly nVocab: number, settings: SamplerSettings = {}, scratch: SamplerScratch = new SamplerScratch(nVocab)) {
    if (scratch.nVocab !== nVocab) throw new RangeError(`sampler scratch is for ${scratch.nVocab} tokens, not ${nVocab}`);
    this.settings = resolveSamplerSettings(settings);
    const s = this.settings;
    this.rng = new Mulberry32(s.seed);
    this.idx = scratch.idx;
    this.prob = scratch.prob;
    this.ring = new Int32Array(s.penaltyLastN);
    this.counts = s.penaltyLastN > 0 ? scratch.counts.fill(0) : new Int32Array(0);
    this.penaltiesOn = s.penaltyLastN > 0 && (s.repeatPenalty !== 1 || s.frequencyPenalty !== 0 || s.presencePenalty !== 0);
    this.work = this.penaltiesOn ? scratch.work() : new Float32Array(0);
    this.repeatF32 = Math.fround(s.repeatPenalty);
    this.freqF32 = Math.fround(s.frequencyPenalty);
    this.presentF32 = Math.fround(s.presencePenalty);
    this.logMinP = s.minP > 0 ? Math.fround(Math.log(s.minP)) : -Infinity;
  }

  /**
   * Records a token in the penalty window (llama.cpp's sampler `accept`): every emitted token, and
   * the prompt's tokens too if they should count (llama.cpp's CLI accepts them). No-op when
   * penaltyLastN = 0. Throws RangeError for an id outside the vocabulary: a bug in the caller.
   */
  accept(id: number): void {
    if (!Number.isInteger(id) || id < 0 || id >= this.nVocab) {
      throw new RangeError(`token id ${id} is outside the vocabulary 0..${this.nVocab - 1}`);
    }
    const lastN = this.ring.length;
    if (lastN === 0) return;
    if (this.ringLen === lastN) {
      this.counts[this.ring[this.ringStart]!]!--;
      this.ring[this.ringStart] = id;
      this.ringStart = this.ringStart + 1 === lastN ? 0 : this.ringStart + 1;
    } else {
      const at = this.ringStart + this.ringLen;
      this.ring[at >= lastN ? at - lastN : at] = id;
      this.ringLen++;
    }
    this.counts[id]!++;
  }

  /** Forgets the penalty window (llama.cpp's penalties `reset`); the PRNG goes on where it was. */
  reset(): void {
    this.clearWindow();
  }

  /** The PRNG state and the penalty window, oldest first: plain data to save and restore. */
  getState(): SamplerState {
    const recent = new Array<number>(this.ringLen);
    for (let j = 0; j < this.ringLen; j++) recent[j] = this.ring[(this.ringStart + j) % this.ring.length]!;
    return { rng: this.rng.state, recent };
  }

  /**
   * Restores what getState returned (maybe read back from a file, so it is checked first and
   * nothing changes on a SnapshotError). A window longer than penaltyLastN keeps its newest tokens.
   */
  setState(s: SamplerState): void {
    const st = s as unknown;
    if (typeof st !== "object" || st === null) throw new SnapshotError("sampler state is not an object { rng, recent }", { field: "sampler" });
    const { rng, recent } = st as { rng?: unknown; recent?: unknown };
    if (typeof rng !== "number" || !Number.isInteger(rng) || rng < 0 || rng > 0xffffffff) {
      throw new SnapshotError(`sampler state rng ${String(rng)} is not a uint32`, { field: "sampler.rng" });
    }
    if (!Array.isArray(recent)) throw new SnapshotError("sampler state recent is not an array of token ids", { field: "sampler.recent" });
    const from = Math.max(0, recent.length - this.ring.length);
    for (let j = from; j < recent.length; j++) {
      const id: unknown = recent[j];
      if (typeof id !== "number" || !Number.isInteger(id) || id < 0 || id >= this.nVocab) {
        throw new SnapshotError(`sampler state recent[${j}] = ${String(id)} is outside the vocabulary 0..${this.nVocab - 1}`, {
          field: "sampler.recent",
        });
      }
    }
    this.rng.state = rng;
    this.clearWindow();
    for (let j = from; j < recent.length; j++) this.accept(recent[j] as number);
  }

  /**
   * `logits` after the repetition, frequency and presence penalties (llama.cpp
   * llama_sampler_penalties_apply): `logits` itself when no penalty applies, else the sampler's
   * scratch copy, valid until the next call. The caller's array is never written.
   */
  penalize(logits: Float32Array): Float32Array {
    if (!this.penaltiesOn || this.ringLen === 0) return logits;
    const work = this.work;
    if (logits.length === this.nVocab) work.set(logits);
    else for (let i = 0; i < this.nVocab; i++) work[i] = logits[i]!;
    const ring = this.ring;
    const lastN = ring.length;
    const repeat = this.repeatF32;
    const freq = this.freqF32;
    const present = this.presentF32;
    // A token seen c times is visited c times; each visit writes the same value from the
    // untouched logits, so no "done" marker is needed.
    for (let j = 0; j < this.ringLen; j++) {
      const at = this.ringStart + j;
      const t = ring[at >= lastN ? at - lastN : at]!;
      const c = this.counts[t]!;
      let v = logits[t]!;
      // Dividing a negative logit would make the token more likely; llama.cpp multiplies it instead.
      v = v <= 0 ? Math.fround(v * repeat) : Math.fround(v / repeat);
      work[t] = Math.fround(v - Math.fround(Math.fround(c * freq) + present));
    }
    return work;
  }

  /** The next token id for `logits` ([nVocab]; read, never written). Does not accept() it. */
  sample(logits: Float32Array): number {
    const { temperature, topK, topP, minP } = this.settings;
    const n = this.nVocab;
    const L = this.penalize(logits);
    if (temperature === 0 || topK === 1) return argmax(L, n);
    const idx = this.idx;
    const prob = this.prob;
    let m: number; // candidates in idx[0..m), sorted by logit descending when sorted = true
    let sorted = false;
    if (topK > 0 && topK < n) {
      m = this.topKInto(L, topK);
      sorted = true;
    } else {
      m = 0;
      for (let i = 0; i < n; i++) if (L[i] === L[i]) idx[m++] = i; // NaN is never a candidate
      if (topP < 1) {
        this.logitsRef = L;
        (m === n ? idx : idx.subarray(0, m)).sort(this.byLogitDesc);
        sorted = true;
      }
    }
    let maxL = -Infinity;
    for (let j = 0; j < m; j++) {
      const v = L[idx[j]!]!;
      if (v > maxL) maxL = v;
    }
    // All masked, or an infinite logit that would turn the softmax into NaN: the (first) largest.
    if (maxL === -Infinity || maxL === Infinity) return argmax(L, n);
    // Top-p on the softmax at temperature 1 (llama_sampler_top_p_apply): the smallest
    // most-likely-first prefix whose mass reaches topP (at least one token).
    if (topP < 1 && sorted) {
      let sum = 0;
      for (let j = 0; j < m; j++) {
        const p = Math.exp(L[idx[j]!]! - maxL);
        prob[j] = p;
        sum += p;
      }
      const target = topP * sum;
      let acc = 0;
      let keep = 0;
      while (keep < m) {
        acc += prob[keep]!;
        keep++;
        if (acc >= target) break;
      }
      m = keep;
    }
    // Min-p (llama_sampler_min_p_apply): p >= minP * pMax, i.e. logit >= maxLogit + log(minP).
    if (minP > 0) {
      const minLogit = Math.fround(maxL + this.logMinP);
      if (sorted) {
        let keep = 1; // the top token always stays
        while (keep < m && L[idx[keep]!]! >= minLogit) keep++;
        m = keep;
      } else {
        let keep = 0;
        for (let j = 0; j < m; j++) {
          const id = idx[j]!;
          if (L[id]! >= minLogit) idx[keep++] = id;
        }
        m = keep;
      }
    }
    // Temperature last, then the draw (llama_sampler_temp_apply, llama_sampler_dist_apply).
    let sum = 0;
    for (let j = 0; j < m; j++) {
      const p = Math.exp((L[idx[j]!]! - maxL) / temperature);
      prob[j] = p;
      sum += p;
    }
    let u = this.rng.next() * sum;
    for (let j = 0; j < m; j++) {
      u -= prob[j]!;
      if (u < 0) return idx[j]!;
    }
    // Rounding left u a hair above 0: the last candidate.
    return idx[m - 1]!;
  }

  private clearWindow(): void {
    const lastN = this.ring.length;
    for (let j = 0; j < this.ringLen; j++) this.counts[this.ring[(this.ringStart + j) % lastN]!] = 0;
    this.ringStart = 0;
    this.ringLen = 0;
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
