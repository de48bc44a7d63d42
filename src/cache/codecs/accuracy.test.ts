// Measures each codec's error against f32 on attention over synthetic K/V with a realistic
// distribution (synthetic-kv.ts: Gaussian, 4 outlier key channels per head at 10x scale), and
// asserts the measured bounds with a margin. One query at a time, 256 cached tokens (16 full
// pages, so int4 pages are all sealed: its worst case), headDim 128, scores scaled by 1/sqrt(d).
//
// Measured (seeds below, Node 20; KVBOUND_PRINT_ERRORS=1 prints them), worst over 2 heads x 16 queries:
//
//   codec | score rel. err (L2) | output rel. err (L2) | asserted (scores / outputs)
//   f32   | 2.9e-8 (rounding)   | 1.9e-7 (rounding)    | 1e-6 / 1e-6
//   f16   | 2.6e-4              | 1.9e-3               | 4e-4 / 3e-3
//   int8  | 3.5e-2              | 6.6e-2               | 5e-2 / 1e-1
//   fp8   | 2.7e-2              | 1.1e-1               | 4e-2 / 1.6e-1
//   int4  | 7.3e-2              | 1.8e-1               | 1.1e-1 / 2.7e-1
//
// int8 and fp8 scale per (token, head), so a key's outlier channels set the step of all its
// channels; int4 scales keys per channel (KIVI) and is hurt less than its 4 bits suggest.
//
// "score rel. err" = ||s_codec - s_f32|| / ||s_f32|| over the 256 scores; "output rel. err" =
// ||o_codec - o_f32|| / ||o_f32|| for o = softmax(s) V, with K and V both in the codec.

import { describe, expect, it } from "vitest";
import { CODEC_KINDS, createPageStore, type CodecKind, type PageStore } from "./index.js";
import { gaussian, seededRandom, syntheticKv } from "./synthetic-kv.js";

const N_TOKENS = 256;
const PAGE = 16;
const N_HEAD_KV = 2;
const HEAD_DIM = 128;
const N_QUERIES = 16;

function softmaxInPlace(s: Float64Array): void {
  let m = -Infinity;
  for (let i = 0; i < s.length; i++) m = Math.max(m, s[i]!);
  let z = 0;
  for (let i = 0; i < s.length; i++) {
    s[i] = Math.exp(s[i]! - m);
    z += s[i]!;
  }
  for (let i = 0; i < s.length; i++) s[i] = s[i]! / z;
}

function measure(kind: CodecKind): { score: number; output: number } {
  const shape = { nPages: N_TOKENS / PAGE, pageSize: PAGE, nHeadKv: N_HEAD_KV, headDim: HEAD_DIM };
  const keys = syntheticKv({ nTokens: N_TOKENS, nHeadKv: N_HEAD_KV, headDim: HEAD_DIM, seed: 101, outlierChannels: 4 });
  const values = syntheticKv({ nTokens: N_TOKENS, nHeadKv: N_HEAD_KV, headDim: HEAD_DIM, seed: 202 });
  const k: PageStore = createPageStore(kind, "k", shape);
  const v: PageStore = createPageStore(kind, "v", shape);
  const ts = N_HEAD_KV * HEAD_DIM;
  for (let t = 0; t < N_TOKENS; t++) {
    k.writeToken(Math.floor(t / PAGE), t % PAGE, keys, t * ts);
    v.writeToken(Math.floor(t / PAGE), t % PAGE, values, t * ts);
  }
  const g = gaussian(seededRandom(303));
  const q = new Float32Array(HEAD_DIM);
  const scores = new Float32Array(N_TOKENS);
  const p = new Float32Array(N_TOKENS);
  const out = new Float32Array(HEAD_DIM);
  const sRef = new Float64Array(N_TOKENS);
  const oRef = new Float64Array(HEAD_DIM);
  const scale = 1 / Math.sqrt(HEAD_DIM);
  let worstScore = 0;
  let worstOut = 0;
  for (let h = 0; h < N_HEAD_KV; h++) {
    for (let qi = 0; qi < N_QUERIES; qi++) {
      for (let c = 0; c < HEAD_DIM; c++) q[c] = g() * scale;
      // f32 reference straight from the written data
      for (let t = 0; t < N_TOKENS; t++) {
        let acc = 0;
        for (let c = 0; c < HEAD_DIM; c++) acc += q[c]! * keys[t * ts + h * HEAD_DIM + c]!;
        sRef[t] = acc;
      }
      for (let page = 0; page < shape.nPages; page++) k.dotRun(page, 0, PAGE, h, q, 0, scores, page * PAGE);
      let num = 0, den = 0;
      for (let t = 0; t < N_TOKENS; t++) {
        num += (scores[t]! - sRef[t]!) ** 2;
        den += sRef[t]! ** 2;
      }
      worstScore = Math.max(worstScore, Math.sqrt(num / den));

      const pRef = Float64Array.from(sRef);
      softmaxInPlace(pRef);
      oRef.fill(0);
      for (let t = 0; t < N_TOKENS; t++) for (let c = 0; c < HEAD_DIM; c++) oRef[c] = oRef[c]! + pRef[t]! * values[t * ts + h * HEAD_DIM + c]!;
      const pc = Float64Array.from(scores);
      softmaxInPlace(pc);
      p.set(pc);
      out.fill(0);
      for (let page = 0; page < shape.nPages; page++) v.axpyRun(page, 0, PAGE, h, p, page * PAGE, out, 0);
      num = 0;
      den = 0;
      for (let c = 0; c < HEAD_DIM; c++) {
        num += (out[c]! - oRef[c]!) ** 2;
        den += oRef[c]! ** 2;
      }
      worstOut = Math.max(worstOut, Math.sqrt(num / den));
    }
  }
  return { score: worstScore, output: worstOut };
}

// Asserted bounds: the measured worst case (table above) times ~1.5, rounded up.
const BOUNDS: Record<CodecKind, { score: number; output: number }> = {
  f32: { score: 1e-6, output: 1e-6 },
  f16: { score: 4e-4, output: 3e-3 },
  int8: { score: 5e-2, output: 1e-1 },
  int4: { score: 1.1e-1, output: 2.7e-1 },
  fp8: { score: 4e-2, output: 1.6e-1 },
};

describe("codec error vs f32 on attention (measured, asserted with a margin)", () => {
  it.each(CODEC_KINDS.map((k) => [k]))("%s", (kind) => {
    const m = measure(kind);
    if (process.env.KVBOUND_PRINT_ERRORS) console.log(`MEASURED ${kind}: score ${m.score.toExponential(3)} output ${m.output.toExponential(3)}`);
    expect(m.score).toBeLessThanOrEqual(BOUNDS[kind].score);
    expect(m.output).toBeLessThanOrEqual(BOUNDS[kind].output);
  });
});
