import { describe, expect, it } from "vitest";
import { Int4PageStore } from "./int4.js";
import { referenceAxpyRun, referenceDotRun } from "./reference.js";
import { syntheticKv } from "./synthetic-kv.js";

const shape = { nPages: 6, pageSize: 8, nHeadKv: 2, headDim: 16 };
const ts = shape.nHeadKv * shape.headDim;

function maxAbsDiff(a: Float32Array, b: Float32Array, bOff: number): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[bOff + i]!));
  return m;
}

describe("int4 residual pool", () => {
  it("keeps a filling page exact, seals it when full", () => {
    const s = new Int4PageStore("k", shape, { openPages: 2 });
    const data = syntheticKv({ nTokens: shape.pageSize, nHeadKv: 2, headDim: 16, seed: 1, outlierChannels: 1 });
    const tok = new Float32Array(ts);
    for (let t = 0; t < shape.pageSize - 1; t++) s.writeToken(0, t, data, t * ts);
    expect(s.isOpen(0)).toBe(true);
    s.readToken(0, 3, tok, 0);
    expect(maxAbsDiff(tok, data, 3 * ts)).toBe(0);
    s.writeToken(0, shape.pageSize - 1, data, (shape.pageSize - 1) * ts);
    expect(s.isOpen(0)).toBe(false);
    s.readToken(0, 3, tok, 0);
    expect(maxAbsDiff(tok, data, 3 * ts)).toBeGreaterThan(0);
  });

  it("seals the least recently written page early when the pool is exhausted, and reopens it on write", () => {
    const s = new Int4PageStore("v", shape, { openPages: 2 });
    const data = syntheticKv({ nTokens: 3 * shape.pageSize, nHeadKv: 2, headDim: 16, seed: 2 });
    // pages 0, 1, 2 each get 3 tokens, round-robin: page 0 is the oldest when page 2 opens
    for (let t = 0; t < 3; t++) for (let p = 0; p < 3; p++) {
      s.writeToken(p, t, data, (p * shape.pageSize + t) * ts);
      if (p === 2 && t === 0) {
        expect(s.isOpen(0)).toBe(false); // sealed early: least recently written
        expect(s.isOpen(1)).toBe(true);
      }
    }
    // Round-robin keeps evicting: every page is still readable within one int4 step of its group.
    const tok = new Float32Array(ts);
    for (let p = 0; p < 3; p++) {
      expect(s.pageFill(p)).toBe(3);
      for (let t = 0; t < 3; t++) {
        s.readToken(p, t, tok, 0);
        for (let h = 0; h < 2; h++) {
          let lo = Infinity, hi = -Infinity;
          for (let c = 0; c < 16; c++) {
            const x = data[(p * shape.pageSize + t) * ts + h * 16 + c]!;
            lo = Math.min(lo, x);
            hi = Math.max(hi, x);
          }
          // reopened pages are quantized up to twice: at most one full step (range/15) each time
          for (let c = 0; c < 16; c++) {
            const x = data[(p * shape.pageSize + t) * ts + h * 16 + c]!;
            expect(Math.abs(tok[h * 16 + c]! - x)).toBeLessThanOrEqual((2 * (hi - lo)) / 15 + 1e-3);
          }
        }
      }
    }
    // Kernels agree with the reference whichever state each page is in.
    const q = Float32Array.from({ length: 16 }, (_, i) => Math.sin(i));
    const w = Float32Array.from({ length: 3 }, (_, i) => 0.2 + i);
    for (let p = 0; p < 3; p++) {
      const a = new Float32Array(3);
      const b = new Float32Array(3);
      s.dotRun(p, 0, 3, 1, q, 0, a, 0);
      referenceDotRun(s, p, 0, 3, 1, q, 0, b, 0);
      expect(maxAbsDiff(a, b, 0)).toBeLessThan(1e-5);
      const oa = new Float32Array(16);
      const ob = new Float32Array(16);
      s.axpyRun(p, 0, 3, 0, w, 0, oa, 0);
      referenceAxpyRun(s, p, 0, 3, 0, w, 0, ob, 0);
      expect(maxAbsDiff(oa, ob, 0)).toBeLessThan(1e-5);
    }
  });

  it("truncatePage(page, 0) returns the residual buffer to the pool", () => {
    const s = new Int4PageStore("k", shape, { openPages: 2 });
    const data = syntheticKv({ nTokens: 1, nHeadKv: 2, headDim: 16, seed: 3 });
    s.writeToken(0, 0, data, 0);
    s.writeToken(1, 0, data, 0);
    s.truncatePage(0, 0);
    s.writeToken(2, 0, data, 0); // takes page 0's buffer: page 1 stays open
    expect(s.isOpen(1)).toBe(true);
    expect(s.isOpen(2)).toBe(true);
    expect(s.pageFill(0)).toBe(0);
  });

  it("copyPage of an open page never seals its source to make room", () => {
    const s = new Int4PageStore("k", shape, { openPages: 2 });
    const data = syntheticKv({ nTokens: 2, nHeadKv: 2, headDim: 16, seed: 4 });
    s.writeToken(0, 0, data, 0);
    s.writeToken(1, 0, data, ts);
    s.writeToken(0, 1, data, ts); // page 1 is now the least recently written
    s.copyPage(3, 1);
    expect(s.isOpen(1)).toBe(true);
    expect(s.isOpen(3)).toBe(true);
    expect(s.isOpen(0)).toBe(false);
    const a = new Float32Array(ts);
    s.readToken(3, 0, a, 0);
    expect(maxAbsDiff(a, data, ts)).toBe(0);
  });

  it("rejects a corrupt page snapshot header", () => {
    const s = new Int4PageStore("k", shape);
    const bytes = s.exportPage(0);
    new DataView(bytes.buffer).setInt32(0, 99, true);
    expect(() => s.importPage(0, bytes)).toThrow(/corrupt/);
  });
});
