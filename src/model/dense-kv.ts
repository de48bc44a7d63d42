// The naive reference KV backend: every token's K/V kept in plain arrays at absolute positions,
// RoPE applied to each key and the query directly, each layer's sliding-window mask, scale and
// soft-cap applied in float64. The paged cache is held to it.

import { Rope } from "../cache/rope.js";
import type { CausalLM, KvBackend, LayerAttention } from "./causal-lm.js";

export class DenseKv implements KvBackend {
  private readonly keys: Float32Array[][] = []; // [layer][token] -> [nHeadKv*headDimK], rotated
  private readonly values: Float32Array[][] = [];
  private readonly positions: number[][] = [];
  private readonly ropes: (Rope | null)[] = [];
  private readonly layers: readonly LayerAttention[];
  private readonly nHead: number;
  private nextPos = 0;

  constructor(model: Pick<CausalLM, "hp" | "attention">) {
    this.layers = model.attention;
    this.nHead = model.hp.nHead;
    for (const a of this.layers) {
      this.keys.push([]);
      this.values.push([]);
      this.positions.push([]);
      this.ropes.push(a.rope === null ? null : new Rope(a.rope, a.headDimK));
    }
  }

  /** Position of the next token written (set before each forward). */
  setPosition(pos: number): void {
    this.nextPos = pos;
  }

  write(layer: number, k: Float32Array, v: Float32Array): void {
    const kr = Float32Array.from(k);
    this.ropes[layer]?.rotate(kr, 0, this.layers[layer]!.nHeadKv, this.nextPos);
    this.keys[layer]!.push(kr);
    this.values[layer]!.push(Float32Array.from(v));
    this.positions[layer]!.push(this.nextPos);
  }

  attend(layer: number, q: Float32Array, pos: number, out: Float32Array): void {
    const { nHeadKv, headDimK: dk, headDimV: dv, slidingWindow, scale, softcap } = this.layers[layer]!;
    const nHead = this.nHead;
    const qr = Float32Array.from(q);
    this.ropes[layer]?.rotate(qr, 0, nHead, pos);
    const keys = this.keys[layer]!;
    const values = this.values[layer]!;
    const positions = this.positions[layer]!;
    const n = keys.length;
    const scores = new Float64Array(n);
    const group = nHead / nHeadKv;
    out.fill(0);
    for (let h = 0; h < nHead; h++) {
      const kh = Math.floor(h / group);
      let max = -Infinity;
      for (let t = 0; t < n; t++) {
        // llama.cpp's standard SWA mask: key position p0 is hidden from query p when p - p0 >= n_swa.
        if (slidingWindow > 0 && pos - positions[t]! >= slidingWindow) {
          scores[t] = -Infinity;
          continue;
        }
        let s = 0;
        for (let d = 0; d < dk; d++) s += qr[h * dk + d]! * keys[t]![kh * dk + d]!;
        s *= scale;
        if (softcap > 0) s = softcap * Math.tanh(s / softcap);
        scores[t] = s;
        if (s > max) max = s;
      }
      let sum = 0;
      for (let t = 0; t < n; t++) { scores[t] = Math.exp(scores[t]! - max); sum += scores[t]!; }
      for (let t = 0; t < n; t++) {
        const w = scores[t]! / sum;
        if (w === 0) continue;
        for (let d = 0; d < dv; d++) out[h * dv + d] = out[h * dv + d]! + w * values[t]![kh * dv + d]!;
      }
    }
  }
}
