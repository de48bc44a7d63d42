// The naive reference for attendRuns: plain arrays, every key rotated at its own position, no
// pages, no runs, no rotation tricks. Slow on purpose; tests compare the two.

import { Rope, type RopeSpec } from "./rope.js";

export interface DenseAttentionInput {
  readonly nHead: number;
  readonly nHeadKv: number;
  readonly headDimK: number;
  readonly headDimV: number;
  /** Pre-RoPE queries [nQuery][nHead][headDimK] and their positions. */
  readonly q: Float32Array;
  readonly qPos: readonly number[];
  /** Pre-RoPE keys [nKeys][nHeadKv][headDimK], values [nKeys][nHeadKv][headDimV], key positions. */
  readonly k: Float32Array;
  readonly v: Float32Array;
  readonly kPos: readonly number[];
  readonly rope?: RopeSpec;
  /** Default 1/sqrt(headDimK). */
  readonly scale?: number;
}

/** Returns [nQuery][nHead][headDimV]; query i sees the keys whose position is <= qPos[i]. */
export function denseAttention(input: DenseAttentionInput): Float32Array {
  const { nHead, nHeadKv, headDimK: dk, headDimV: dv, qPos, kPos } = input;
  const nQuery = qPos.length;
  const nKeys = kPos.length;
  const scale = input.scale ?? 1 / Math.sqrt(dk);
  const rope = input.rope ? new Rope(input.rope, dk) : null;
  const k = Float32Array.from(input.k);
  const q = Float32Array.from(input.q);
  if (rope) {
    for (let j = 0; j < nKeys; j++) rope.rotate(k, j * nHeadKv * dk, nHeadKv, kPos[j]!);
    for (let i = 0; i < nQuery; i++) rope.rotate(q, i * nHead * dk, nHead, qPos[i]!);
  }
  const out = new Float32Array(nQuery * nHead * dv);
  const group = nHead / nHeadKv;
  for (let i = 0; i < nQuery; i++) {
    for (let h = 0; h < nHead; h++) {
      const kvh = Math.floor(h / group);
      const logits: number[] = [];
      const keys: number[] = [];
      for (let j = 0; j < nKeys; j++) {
        if (kPos[j]! > qPos[i]!) continue;
        let s = 0;
        for (let c = 0; c < dk; c++) s += q[(i * nHead + h) * dk + c]! * k[(j * nHeadKv + kvh) * dk + c]!;
        logits.push(s * scale);
        keys.push(j);
      }
      let max = -Infinity;
      for (const l of logits) max = Math.max(max, l);
      let sum = 0;
      for (const l of logits) sum += Math.exp(l - max);
      for (let t = 0; t < keys.length; t++) {
        const w = Math.exp(logits[t]! - max) / sum;
        const j = keys[t]!;
        for (let c = 0; c < dv; c++) {
          const o = (i * nHead + h) * dv + c;
          out[o] = out[o]! + w * input.v[(j * nHeadKv + kvh) * dv + c]!;
        }
      }
    }
  }
  return out;
}
