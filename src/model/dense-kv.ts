// The naive reference KV backend: every token's K/V kept in plain arrays at absolute positions,
// RoPE applied to each key and the query directly. The paged cache is held to it.

import { Rope } from "../cache/rope.js";
import type { KvBackend, LlamaHParams } from "./llama.js";

export class DenseKv implements KvBackend {
  private readonly keys: Float32Array[][] = []; // [layer][token] -> [nHeadKv*headDim], rotated
  private readonly values: Float32Array[][] = [];
  private readonly positions: number[][] = [];
  private readonly rope: Rope;
  private nextPos = 0;

  constructor(private readonly hp: LlamaHParams) {
    this.rope = new Rope(hp.rope, hp.headDim);
    for (let l = 0; l < hp.nLayer; l++) {
      this.keys.push([]);
      this.values.push([]);
      this.positions.push([]);
    }
  }

  /** Position of the next token written (set before each forward). */
  setPosition(pos: number): void {
    this.nextPos = pos;
  }

  write(layer: number, k: Float32Array, v: Float32Array): void {
    const kr = Float32Array.from(k);
    this.rope.rotate(kr, 0, this.hp.nHeadKv, this.nextPos);
    this.keys[layer]!.push(kr);
    this.values[layer]!.push(Float32Array.from(v));
    this.positions[layer]!.push(this.nextPos);
  }

  attend(layer: number, q: Float32Array, pos: number, out: Float32Array): void {
    const { nHead, nHeadKv, headDim } = this.hp;
    const qr = Float32Array.from(q);
    this.rope.rotate(qr, 0, nHead, pos);
    const keys = this.keys[layer]!;
    const values = this.values[layer]!;
    const n = keys.length;
    const scores = new Float64Array(n);
    const group = nHead / nHeadKv;
    out.fill(0);
    for (let h = 0; h < nHead; h++) {
      const kh = Math.floor(h / group);
      let max = -Infinity;
      for (let t = 0; t < n; t++) {
        let s = 0;
        for (let d = 0; d < headDim; d++) s += qr[h * headDim + d]! * keys[t]![kh * headDim + d]!;
        s /= Math.sqrt(headDim);
        scores[t] = s;
        if (s > max) max = s;
      }
      let sum = 0;
      for (let t = 0; t < n; t++) { scores[t] = Math.exp(scores[t]! - max); sum += scores[t]!; }
      for (let t = 0; t < n; t++) {
        const w = scores[t]! / sum;
        for (let d = 0; d < headDim; d++) out[h * headDim + d] = out[h * headDim + d]! + w * values[t]![kh * headDim + d]!;
      }
    }
  }
}
