import { describe, expect, it } from "vitest";
import { InvalidSettingError, SnapshotError } from "../errors.js";
import { Mulberry32, Sampler, SamplerScratch, resolveSamplerSettings, type SamplerSettings } from "./sampler.js";

function randomLogits(n: number, seed: number): Float32Array {
  const rng = new Mulberry32(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (rng.next() - 0.5) * 20;
  return out;
}

/** The independent reference: first index of the maximum. */
function refArgmax(a: Float32Array): number {
  const max = Math.max(...a);
  return a.indexOf(max);
}

function draws(s: Sampler, logits: Float32Array, n: number): number[] {
  const counts = new Array<number>(logits.length).fill(0);
  for (let i = 0; i < n; i++) counts[s.sample(logits)]!++;
  return counts;
}

/** Pearson's chi-square statistic of observed counts against expected probabilities. */
function chiSquare(counts: number[], probs: number[], n: number): number {
  let x = 0;
  for (let i = 0; i < probs.length; i++) {
    const e = probs[i]! * n;
    if (e === 0) continue;
    x += (counts[i]! - e) ** 2 / e;
  }
  return x;
}

describe("Sampler", () => {
  it("temperature 0 is argmax, and so is top-k 1 at any temperature", () => {
    for (let seed = 1; seed <= 20; seed++) {
      const logits = randomLogits(1000, seed);
      expect(new Sampler(1000, { temperature: 0 }).sample(logits)).toBe(refArgmax(logits));
      expect(new Sampler(1000, { temperature: 1.5, topK: 1, topP: 1, seed }).sample(logits)).toBe(refArgmax(logits));
    }
    // Ties go to the lower id.
    expect(new Sampler(4, { temperature: 0 }).sample(Float32Array.of(1, 3, 3, 2))).toBe(1);
  });

  it("the same seed gives the same ids; another seed other ids", () => {
    const logits = randomLogits(500, 7).map((x) => x / 5);
    const run = (seed: number) => {
      const s = new Sampler(500, { temperature: 1, topK: 100, topP: 0.95, seed });
      const ids: number[] = [];
      for (let i = 0; i < 200; i++) ids.push(s.sample(logits));
      return ids;
    };
    expect(run(42)).toEqual(run(42));
    expect(run(42)).not.toEqual(run(43));
  });

  it("follows softmax(logits / T) without truncation (chi-square, 4 dof)", () => {
    // Probabilities chosen by hand; logits = ln p * T so softmax(logits / T) = p.
    const p = [0.4, 0.25, 0.2, 0.1, 0.05];
    const T = 0.7;
    const logits = Float32Array.from(p, (x) => Math.log(x) * T);
    const n = 40000;
    const counts = draws(new Sampler(5, { temperature: T, topK: 0, topP: 1, minP: 0, seed: 1234 }), logits, n);
    // chi-square 0.999 quantile for 4 degrees of freedom is 18.467 (standard tables).
    expect(chiSquare(counts, p, n)).toBeLessThan(18.467);
  });

  it("top-k keeps the k most likely tokens, renormalised", () => {
    const p = [0.05, 0.4, 0.1, 0.25, 0.2];
    const logits = Float32Array.from(p, Math.log);
    const n = 30000;
    const counts = draws(new Sampler(5, { temperature: 1, topK: 3, topP: 1, minP: 0, seed: 9 }), logits, n);
    expect(counts[0]).toBe(0);
    expect(counts[2]).toBe(0);
    // Kept: 0.4, 0.25, 0.2 -> /0.85. chi-square 0.999 quantile, 2 dof: 13.816.
    const expected = [0, 0.4 / 0.85, 0, 0.25 / 0.85, 0.2 / 0.85];
    expect(chiSquare(counts, expected, n)).toBeLessThan(13.816);
  });

  it("top-p keeps the smallest most-likely set reaching p", () => {
    const p = [0.5, 0.3, 0.15, 0.05];
    const logits = Float32Array.from(p, Math.log);
    const n = 20000;
    // 0.5 < 0.75 <= 0.5 + 0.3: two tokens, renormalised to 0.625 / 0.375.
    const counts = draws(new Sampler(4, { temperature: 1, topK: 0, topP: 0.75, minP: 0, seed: 5 }), logits, n);
    expect(counts[2]).toBe(0);
    expect(counts[3]).toBe(0);
    expect(chiSquare(counts, [0.625, 0.375, 0, 0], n)).toBeLessThan(10.828); // 1 dof, 0.999
    // p below the top token's probability: always the top token.
    const only = draws(new Sampler(4, { temperature: 1, topK: 0, topP: 0.3, seed: 5 }), logits, 1000);
    expect(only[0]).toBe(1000);
    // p = 1 keeps everything: every token appears.
    const all = draws(new Sampler(4, { temperature: 1, topK: 0, topP: 1, minP: 0, seed: 5 }), logits, 5000);
    for (const c of all) expect(c).toBeGreaterThan(0);
    // Combined with top-k the nucleus is taken inside the k candidates.
    const both = draws(new Sampler(4, { temperature: 1, topK: 3, topP: 0.75, seed: 5 }), logits, 5000);
    expect(both[2]! + both[3]!).toBe(0);
  });

  it("never picks -Infinity (masked) logits and survives all-masked input", () => {
    const logits = Float32Array.of(-Infinity, 0, -Infinity, 0);
    const counts = draws(new Sampler(4, { temperature: 1, topK: 0, topP: 1, seed: 3 }), logits, 2000);
    expect(counts[0]! + counts[2]!).toBe(0);
    const masked = new Float32Array(4).fill(-Infinity);
    expect(new Sampler(4, { temperature: 1, seed: 1 }).sample(masked)).toBeGreaterThanOrEqual(0);
  });

  it("refuses invalid settings with a typed error", () => {
    expect(() => resolveSamplerSettings({ temperature: -1 })).toThrow(InvalidSettingError);
    expect(() => resolveSamplerSettings({ topP: 0 })).toThrow(InvalidSettingError);
    expect(() => resolveSamplerSettings({ topK: 1.5 })).toThrow(InvalidSettingError);
    expect(() => resolveSamplerSettings({ seed: -3 })).toThrow(InvalidSettingError);
    const bad: SamplerSettings[] = [
      { minP: -0.1 },
      { minP: 1.1 },
      { minP: NaN },
      { repeatPenalty: 0 },
      { repeatPenalty: -1.1 },
      { repeatPenalty: Infinity },
      { presencePenalty: 2.5 },
      { presencePenalty: -3 },
      { frequencyPenalty: NaN },
      { frequencyPenalty: 2.01 },
      { penaltyLastN: -1 },
      { penaltyLastN: 1.5 },
      { penaltyLastN: 2 ** 20 + 1 },
    ];
    for (const s of bad) {
      const setting = Object.keys(s)[0]!;
      expect(() => resolveSamplerSettings(s), setting).toThrow(InvalidSettingError);
      try {
        resolveSamplerSettings(s);
      } catch (e) {
        expect((e as InvalidSettingError).details.setting).toBe(setting);
      }
    }
    // The ends of the OpenAI range are allowed, and so are penalties that encourage repeats.
    expect(() => resolveSamplerSettings({ presencePenalty: -2, frequencyPenalty: 2, repeatPenalty: 0.5, minP: 1, penaltyLastN: 0 })).not.toThrow();
  });

  it("defaults are llama.cpp's common_params_sampling, frozen", () => {
    const r = resolveSamplerSettings({ seed: 1 });
    expect(r).toEqual({
      temperature: 0.8,
      topK: 40,
      topP: 0.95,
      minP: 0.05,
      repeatPenalty: 1,
      presencePenalty: 0,
      frequencyPenalty: 0,
      penaltyLastN: 64,
      seed: 1,
    });
    expect(Object.isFrozen(r)).toBe(true);
  });
});

/** Naive penalties: counts of the last `lastN` of `history` in a Map, llama.cpp's formula in doubles. */
function refPenalize(logits: Float32Array, history: readonly number[], s: SamplerSettings): Float64Array {
  const out = Float64Array.from(logits);
  const lastN = s.penaltyLastN ?? 64;
  const counts = new Map<number, number>();
  for (const t of history.slice(Math.max(0, history.length - lastN))) counts.set(t, (counts.get(t) ?? 0) + 1);
  if (lastN === 0) return out;
  const r = s.repeatPenalty ?? 1;
  for (const [t, c] of counts) {
    let v = out[t]!;
    v = v > 0 ? v / r : v * r;
    out[t] = v - c * (s.frequencyPenalty ?? 0) - (c > 0 ? 1 : 0) * (s.presencePenalty ?? 0);
  }
  return out;
}

/** The naive chain: penalties, sort, top-k, top-p and min-p on softmax(l), then softmax(l / T). */
function refDistribution(logits: Float32Array, history: readonly number[], s: Required<Omit<SamplerSettings, "seed">>): number[] {
  const l = refPenalize(logits, history, s);
  let ids = [...l.keys()].filter((i) => !Number.isNaN(l[i]!)).sort((a, b) => l[b]! - l[a]! || a - b);
  if (s.topK > 0) ids = ids.slice(0, s.topK);
  const softmax = (xs: number[], T: number) => {
    const mx = Math.max(...xs);
    const e = xs.map((x) => Math.exp((x - mx) / T));
    const z = e.reduce((a, b) => a + b, 0);
    return e.map((x) => x / z);
  };
  let p1 = softmax(ids.map((i) => l[i]!), 1);
  if (s.topP < 1) {
    let acc = 0;
    let keep = 0;
    while (keep < ids.length && acc < s.topP) acc += p1[keep++]!;
    ids = ids.slice(0, keep);
    p1 = p1.slice(0, keep);
  }
  if (s.minP > 0) {
    const pMax = p1[0]!;
    ids = ids.filter((_, j) => p1[j]! >= s.minP * pMax);
  }
  const pt = softmax(ids.map((i) => l[i]!), s.temperature);
  const out = new Array<number>(logits.length).fill(0);
  ids.forEach((id, j) => (out[id] = pt[j]!));
  return out;
}

/** Chi-square over cells expecting >= 5 draws (the rest pooled) against its 0.9999 quantile (Wilson-Hilferty). */
function chiSquareOk(counts: number[], probs: number[], n: number): boolean {
  let x = 0;
  let cells = 0;
  let poolE = 0;
  let poolO = 0;
  for (let i = 0; i < probs.length; i++) {
    const e = probs[i]! * n;
    if (e >= 5) {
      x += (counts[i]! - e) ** 2 / e;
      cells++;
    } else {
      poolE += e;
      poolO += counts[i]!;
    }
  }
  if (poolE > 0) {
    x += (poolO - poolE) ** 2 / poolE;
    cells++;
  }
  const k = Math.max(1, cells - 1);
  const z = 3.719; // standard normal 0.9999 quantile
  return x < k * (1 - 2 / (9 * k) + z * Math.sqrt(2 / (9 * k))) ** 3;
}

describe("Sampler penalties (llama.cpp llama_sampler_penalties_apply)", () => {
  // Token 0 seen twice, 1 and 4 once; 2 and 3 never.
  const logits = Float32Array.of(2, -1, 0.5, 3, 1);
  const history = [0, 0, 1, 4];
  const penalized = (s: SamplerSettings, hist: readonly number[] = history) => {
    const sm = new Sampler(5, { temperature: 1, ...s });
    for (const t of hist) sm.accept(t);
    return Array.from(sm.penalize(logits));
  };

  it("repeat: positive logits divided, negative multiplied, once per token whatever its count", () => {
    expect(penalized({ repeatPenalty: 2 })).toEqual([1, -2, 0.5, 3, 0.5]);
    // A logit of exactly 0 stays 0 (0 * r).
    const zero = new Sampler(2, { repeatPenalty: 2 });
    zero.accept(0);
    expect(Array.from(zero.penalize(Float32Array.of(0, 1)))).toEqual([0, 1]);
  });

  it("frequency subtracts count x a, presence subtracts a once; negative values encourage", () => {
    expect(penalized({ frequencyPenalty: 0.5 })).toEqual([1, -1.5, 0.5, 3, 0.5]);
    expect(penalized({ presencePenalty: 0.25 })).toEqual([1.75, -1.25, 0.5, 3, 0.75]);
    expect(penalized({ presencePenalty: -0.5 })).toEqual([2.5, -0.5, 0.5, 3, 1.5]);
  });

  it("all three combine as repeat first, then - (c x freq + present)", () => {
    // 0: 2/2 - (2*0.5 + 0.25) = -0.25; 1: -1*2 - (0.5 + 0.25) = -2.75; 4: 1/2 - 0.75 = -0.25.
    expect(penalized({ repeatPenalty: 2, frequencyPenalty: 0.5, presencePenalty: 0.25 })).toEqual([-0.25, -2.75, 0.5, 3, -0.25]);
  });

  it("only the last penaltyLastN accepted tokens count; 0 turns penalties off", () => {
    // Window of 2 over [0, 0, 1, 4]: tokens 1 and 4.
    expect(penalized({ repeatPenalty: 2, penaltyLastN: 2 })).toEqual([2, -2, 0.5, 3, 0.5]);
    const off = new Sampler(5, { repeatPenalty: 2, presencePenalty: 1, penaltyLastN: 0 });
    for (const t of history) off.accept(t);
    expect(off.penalize(logits)).toBe(logits);
    expect(off.getState().recent).toEqual([]);
  });

  it("never writes the caller's logits, and hands them back untouched when nothing applies", () => {
    const before = Float32Array.from(logits);
    const s = new Sampler(5, { temperature: 1, repeatPenalty: 3, frequencyPenalty: 1, seed: 2 });
    expect(s.penalize(logits)).toBe(logits); // nothing accepted yet
    for (const t of history) s.accept(t);
    for (let i = 0; i < 50; i++) s.accept(s.sample(logits));
    expect(logits).toEqual(before);
    expect(new Sampler(5, { repeatPenalty: 1 }).penalize(logits)).toBe(logits);
  });

  it("matches the naive reference over random histories, windows and wrap-arounds", () => {
    const rng = new Mulberry32(77);
    for (let trial = 0; trial < 200; trial++) {
      const nVocab = 1 + Math.floor(rng.next() * 40);
      const s: SamplerSettings = {
        repeatPenalty: 0.5 + rng.next() * 2,
        frequencyPenalty: (rng.next() - 0.5) * 4,
        presencePenalty: (rng.next() - 0.5) * 4,
        penaltyLastN: Math.floor(rng.next() * 12),
      };
      const sm = new Sampler(nVocab, s);
      const hist: number[] = [];
      const n = Math.floor(rng.next() * 40);
      for (let i = 0; i < n; i++) {
        // Few distinct ids so repeats are common.
        const t = Math.floor(rng.next() * Math.min(nVocab, 6));
        sm.accept(t);
        hist.push(t);
      }
      const l = randomLogits(nVocab, 1000 + trial);
      const got = sm.penalize(l);
      const want = refPenalize(l, hist, s);
      for (let i = 0; i < nVocab; i++) expect(got[i]).toBeCloseTo(want[i]!, 4);
      expect(sm.getState().recent).toEqual(hist.slice(Math.max(0, hist.length - (s.penaltyLastN ?? 64))));
    }
  });

  it("greedy with a repeat penalty picks another token once the top one was accepted", () => {
    const l = Float32Array.of(5, 4.5, 1);
    const s = new Sampler(3, { temperature: 0, repeatPenalty: 1.5 });
    expect(s.sample(l)).toBe(0);
    s.accept(0); // 5 / 1.5 = 3.33 < 4.5
    expect(s.sample(l)).toBe(1);
    s.accept(1); // 4.5 / 1.5 = 3 < 3.33
    expect(s.sample(l)).toBe(0);
    // top-k 1 is greedy too, over the penalized logits.
    const k1 = new Sampler(3, { temperature: 1, topK: 1, repeatPenalty: 1.5 });
    k1.accept(0);
    expect(k1.sample(l)).toBe(1);
  });

  it("accept refuses an id outside the vocabulary", () => {
    const s = new Sampler(5);
    expect(() => s.accept(5)).toThrow(RangeError);
    expect(() => s.accept(-1)).toThrow(RangeError);
    expect(() => s.accept(1.5)).toThrow(RangeError);
  });
});

describe("Sampler min-p and chain order (llama.cpp: top-k -> top-p -> min-p -> temp -> dist)", () => {
  it("min-p keeps exactly the tokens with p >= minP x pMax", () => {
    const p = [0.4, 0.3, 0.15, 0.1, 0.05];
    const logits = Float32Array.from(p, Math.log);
    // 0.3 x 0.4 = 0.12: tokens 0, 1, 2 stay.
    const counts = draws(new Sampler(5, { temperature: 1, topK: 0, topP: 1, minP: 0.3, seed: 8 }), logits, 20000);
    expect(counts[3]! + counts[4]!).toBe(0);
    expect(chiSquare(counts, [0.4 / 0.85, 0.3 / 0.85, 0.15 / 0.85, 0, 0], 20000)).toBeLessThan(13.816); // 2 dof, 0.999
    // The bound is inclusive: minP 1 keeps every token tied with the top one.
    const ties = draws(new Sampler(4, { temperature: 1, topK: 0, topP: 1, minP: 1, seed: 8 }), Float32Array.of(1, 3, 3, 2), 2000);
    expect(ties[0]! + ties[3]!).toBe(0);
    expect(ties[1]).toBeGreaterThan(0);
    expect(ties[2]).toBeGreaterThan(0);
    // minP 0 is off; the unsorted path (top-k 0, top-p 1) and the sorted one agree.
    const all = draws(new Sampler(5, { temperature: 1, topK: 0, topP: 1, minP: 0, seed: 8 }), logits, 5000);
    for (const c of all) expect(c).toBeGreaterThan(0);
    const sorted = draws(new Sampler(5, { temperature: 1, topK: 5, topP: 0.999, minP: 0.3, seed: 8 }), logits, 5000);
    expect(sorted[3]! + sorted[4]!).toBe(0);
  });

  it("top-p and min-p see the untempered distribution; the temperature reshapes the survivors", () => {
    const p = [0.5, 0.3, 0.15, 0.05];
    const logits = Float32Array.from(p, Math.log);
    const T = 3;
    const n = 20000;
    // Untempered top-p 0.75 keeps {0, 1}. Tempering first (p^(1/3): .336 .283 .225 .156) would keep three.
    const topP = draws(new Sampler(4, { temperature: T, topK: 0, topP: 0.75, minP: 0, seed: 21 }), logits, n);
    expect(topP[2]! + topP[3]!).toBe(0);
    const a = 0.5 ** (1 / T);
    const b = 0.3 ** (1 / T);
    expect(chiSquare(topP, [a / (a + b), b / (a + b), 0, 0], n)).toBeLessThan(10.828); // 1 dof, 0.999
    // Untempered min-p 0.2 drops token 3 (0.05 < 0.1); tempered first it would stay (0.368 / 0.794 = 0.46).
    const minP = draws(new Sampler(4, { temperature: T, topK: 0, topP: 1, minP: 0.2, seed: 21 }), logits, n);
    expect(minP[3]).toBe(0);
    const c = 0.15 ** (1 / T);
    expect(chiSquare(minP, [a / (a + b + c), b / (a + b + c), c / (a + b + c), 0], n)).toBeLessThan(13.816); // 2 dof
  });

  it("follows the naive reference chain (penalties included) on random cases", () => {
    const rng = new Mulberry32(4242);
    for (let trial = 0; trial < 8; trial++) {
      const nVocab = 30;
      const s = {
        temperature: 0.3 + rng.next() * 1.5,
        topK: [0, 5, 12][trial % 3]!,
        topP: [1, 0.9, 0.6][Math.floor(trial / 3) % 3]!,
        minP: [0, 0.05, 0.2][trial % 3]!,
        repeatPenalty: 1 + rng.next(),
        frequencyPenalty: rng.next() - 0.5,
        presencePenalty: rng.next() - 0.5,
        penaltyLastN: 6,
      };
      const logits = randomLogits(nVocab, 500 + trial).map((x) => x / 3);
      const hist = [0, 1, 2, 3, 1, 1, 7, 9].map((x) => (x + trial) % nVocab);
      const sm = new Sampler(nVocab, { ...s, seed: trial });
      for (const t of hist) sm.accept(t);
      const want = refDistribution(logits, hist, s);
      const n = 20000;
      const counts = draws(sm, logits, n);
      for (let i = 0; i < nVocab; i++) if (want[i] === 0) expect(counts[i], `trial ${trial} id ${i}`).toBe(0);
      expect(chiSquareOk(counts, want, n), `trial ${trial}`).toBe(true);
    }
  });
});

describe("Sampler state (getState / setState / reset)", () => {
  const settings: SamplerSettings = {
    temperature: 1,
    topK: 0,
    topP: 0.9,
    minP: 0.02,
    repeatPenalty: 1.3,
    presencePenalty: 0.2,
    frequencyPenalty: 0.1,
    penaltyLastN: 8,
  };
  const logits = randomLogits(30, 31).map((x) => x / 3);
  const run = (s: Sampler, n: number) => {
    const ids: number[] = [];
    for (let i = 0; i < n; i++) {
      const id = s.sample(logits);
      s.accept(id);
      ids.push(id);
    }
    return ids;
  };

  it("a JSON round-trip of getState reproduces the same next samples", () => {
    const a = new Sampler(30, { ...settings, seed: 11 });
    for (let t = 1; t <= 10; t++) a.accept(t); // a prompt; the window keeps 3..10
    expect(a.getState().recent).toEqual([3, 4, 5, 6, 7, 8, 9, 10]);
    run(a, 20);
    const saved = JSON.parse(JSON.stringify(a.getState())) as unknown as ReturnType<Sampler["getState"]>;
    expect(saved.recent).toHaveLength(8);
    const next = run(a, 50);
    const b = new Sampler(30, { ...settings, seed: 999 });
    b.setState(saved);
    expect(run(b, 50)).toEqual(next);
    // The window is part of the state: the same PRNG without it samples otherwise.
    const c = new Sampler(30, { ...settings, seed: 999 });
    c.setState({ rng: saved.rng, recent: [] });
    expect(run(c, 50)).not.toEqual(next);
  });

  it("Mulberry32.state replays the sequence from where it was read", () => {
    const r = new Mulberry32(5);
    r.next();
    const at = r.state;
    const xs = [r.next(), r.next(), r.next()];
    r.state = at;
    expect([r.next(), r.next(), r.next()]).toEqual(xs);
  });

  it("reset forgets the window and keeps the PRNG going", () => {
    const s = new Sampler(30, { ...settings, seed: 3 });
    run(s, 10);
    const rng = s.getState().rng;
    s.reset();
    expect(s.getState()).toEqual({ rng, recent: [] });
    expect(s.penalize(logits)).toBe(logits);
    // After a reset the window refills from scratch (counts were cleared too).
    s.accept(4);
    s.accept(4);
    const fresh = new Sampler(30, { ...settings, seed: 3 });
    fresh.accept(4);
    fresh.accept(4);
    expect(Array.from(s.penalize(logits))).toEqual(Array.from(fresh.penalize(logits)));
  });

  it("setState keeps the newest penaltyLastN tokens and refuses a corrupt state atomically", () => {
    const s = new Sampler(30, { ...settings, seed: 1 });
    s.setState({ rng: 123, recent: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11] });
    expect(s.getState()).toEqual({ rng: 123, recent: [4, 5, 6, 7, 8, 9, 10, 11] });
    const before = s.getState();
    const bad: unknown[] = [
      null,
      "x",
      { rng: -1, recent: [] },
      { rng: 2 ** 32, recent: [] },
      { rng: 1.5, recent: [] },
      { rng: "7", recent: [] },
      { rng: 7 },
      { rng: 7, recent: [1, 30] },
      { rng: 7, recent: [-1] },
      { rng: 7, recent: [0.5] },
      { rng: 7, recent: ["3"] },
    ];
    for (const b of bad) {
      expect(() => s.setState(b as ReturnType<Sampler["getState"]>), JSON.stringify(b)).toThrow(SnapshotError);
      expect(s.getState()).toEqual(before);
    }
  });
});

describe("SamplerScratch", () => {
  it("a sampler on reused buffers draws what a sampler on fresh ones does (penalty counts start at zero)", () => {
    const n = 50;
    const logits = new Float32Array(n);
    for (let i = 0; i < n; i++) logits[i] = Math.sin(i * 1.7) * 3;
    const settings: SamplerSettings = { temperature: 0.9, topK: 0, topP: 1, minP: 0, repeatPenalty: 1.5, frequencyPenalty: 0.3, seed: 11 };
    const draws = (s: Sampler): number[] => {
      const out: number[] = [];
      for (let t = 0; t < 40; t++) {
        const id = s.sample(logits);
        s.accept(id);
        out.push(id);
      }
      return out;
    };
    const scratch = new SamplerScratch(n);
    const first = draws(new Sampler(n, settings, scratch));
    // The second sampler inherits buffers whose counts the first one filled.
    expect(draws(new Sampler(n, settings, scratch))).toEqual(first);
    expect(draws(new Sampler(n, settings))).toEqual(first);
    expect(() => new Sampler(n + 1, settings, scratch)).toThrow(RangeError);
  });
});
