import { describe, expect, it } from "vitest";
import { InvalidSettingError } from "../errors.js";
import { Mulberry32, Sampler, resolveSamplerSettings } from "./sampler.js";

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
    const counts = draws(new Sampler(5, { temperature: T, topK: 0, topP: 1, seed: 1234 }), logits, n);
    // chi-square 0.999 quantile for 4 degrees of freedom is 18.467 (standard tables).
    expect(chiSquare(counts, p, n)).toBeLessThan(18.467);
  });

  it("top-k keeps the k most likely tokens, renormalised", () => {
    const p = [0.05, 0.4, 0.1, 0.25, 0.2];
    const logits = Float32Array.from(p, Math.log);
    const n = 30000;
    const counts = draws(new Sampler(5, { temperature: 1, topK: 3, topP: 1, seed: 9 }), logits, n);
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
    const counts = draws(new Sampler(4, { temperature: 1, topK: 0, topP: 0.75, seed: 5 }), logits, n);
    expect(counts[2]).toBe(0);
    expect(counts[3]).toBe(0);
    expect(chiSquare(counts, [0.625, 0.375, 0, 0], n)).toBeLessThan(10.828); // 1 dof, 0.999
    // p below the top token's probability: always the top token.
    const only = draws(new Sampler(4, { temperature: 1, topK: 0, topP: 0.3, seed: 5 }), logits, 1000);
    expect(only[0]).toBe(1000);
    // p = 1 keeps everything: every token appears.
    const all = draws(new Sampler(4, { temperature: 1, topK: 0, topP: 1, seed: 5 }), logits, 5000);
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
  });
});
