import { describe, expect, it } from "vitest";
import { CODEC_KINDS, createPageStore, pageStoreBytes, type CodecKind, type KvRole, type PageShape, type PageStore } from "./index.js";
import { referenceAxpyRun, referenceDotRun } from "./reference.js";
import { gaussian, seededRandom, syntheticKv } from "./synthetic-kv.js";
import { CacheConfigError, SnapshotError } from "../../errors.js";

const ROLES: readonly KvRole[] = ["k", "v"];

/** Writes `nTokens` tokens (page-major: page p holds tokens p*pageSize ..) and returns them. */
function fill(store: PageStore, nTokens: number, seed: number): Float32Array {
  const { pageSize, nHeadKv, headDim } = store.shape;
  const data = syntheticKv({ nTokens, nHeadKv, headDim, seed, outlierChannels: store.role === "k" ? 2 : 0 });
  const ts = nHeadKv * headDim;
  for (let t = 0; t < nTokens; t++) store.writeToken(Math.floor(t / pageSize), t % pageSize, data, t * ts);
  return data;
}

function maxAbs(a: Float32Array, off: number, n: number): number {
  let m = 0;
  for (let i = 0; i < n; i++) m = Math.max(m, Math.abs(a[off + i]!));
  return m;
}

/**
 * Hand-derived bound on |decoded - written| for one value, from each format's definition:
 * f16 keeps 11 significant bits (half an ulp = 2^-11 relative); int8 rounds to a step of
 * amax/127; fp8 e4m3 keeps 4 significant bits (2^-4 relative) down to 2^-6 * scale and a step of
 * 2^-9 * scale below; int4 rounds to a step of range/15 of its group (plus f16 rounding of the
 * group's min, below 2^-11 of it). `x` is the value, `head` the token's head vector, `keyGroup`
 * the int4 key channel's values across the page's valid tokens.
 */
function codecBound(kind: CodecKind, role: KvRole, x: number, headAmax: number, headRange: number, chanRange: number, chanAmax: number, open: boolean): number {
  switch (kind) {
    case "f32":
      return 0;
    case "f16":
      // below 2^-14 the format is subnormal with a fixed step of 2^-24
      return Math.max(Math.abs(x) * 2 ** -11, 2 ** -25);
    case "int8":
      return (headAmax / 127) * 0.5 * (1 + 1e-6);
    case "fp8": {
      const s = headAmax / 448;
      return Math.max(Math.abs(x) * 2 ** -4, s * 2 ** -10) * (1 + 1e-6);
    }
    case "int4": {
      if (open) return 0;
      const range = role === "k" ? chanRange : headRange;
      const amax = role === "k" ? chanAmax : headAmax;
      // half a step, the step rounded up to f16 (2^-10), plus the min's f16 rounding (2^-11 of it)
      return (range / 15) * 0.5 * (1 + 2 ** -9) + amax * 2 ** -10 + 1e-7;
    }
    default:
      return kind satisfies never;
  }
}

function checkDecoded(store: PageStore, data: Float32Array, nTokens: number, expectOpen: (page: number) => boolean): void {
  const { pageSize, nHeadKv, headDim } = store.shape;
  const ts = nHeadKv * headDim;
  const tok = new Float32Array(ts);
  for (let t = 0; t < nTokens; t++) {
    const page = Math.floor(t / pageSize);
    const pageTokens = Math.min(pageSize, nTokens - page * pageSize);
    store.readToken(page, t % pageSize, tok, 0);
    for (let h = 0; h < nHeadKv; h++) {
      const headAmax = maxAbs(data, t * ts + h * headDim, headDim);
      let lo = Infinity, hi = -Infinity;
      for (let c = 0; c < headDim; c++) {
        lo = Math.min(lo, data[t * ts + h * headDim + c]!);
        hi = Math.max(hi, data[t * ts + h * headDim + c]!);
      }
      for (let c = 0; c < headDim; c++) {
        let clo = Infinity, chi = -Infinity, camax = 0;
        for (let u = page * pageSize; u < page * pageSize + pageTokens; u++) {
          const v = data[u * ts + h * headDim + c]!;
          clo = Math.min(clo, v);
          chi = Math.max(chi, v);
          camax = Math.max(camax, Math.abs(v));
        }
        const x = data[t * ts + h * headDim + c]!;
        const bound = codecBound(store.kind, store.role, x, headAmax, hi - lo, chi - clo, camax, expectOpen(page));
        const err = Math.abs(tok[h * headDim + c]! - x);
        if (!(err <= bound)) throw new Error(`${store.kind}/${store.role} token ${t} head ${h} ch ${c}: |${tok[h * headDim + c]} - ${x}| = ${err} > ${bound}`);
      }
    }
  }
}

const SHAPES: readonly PageShape[] = [
  { nPages: 5, pageSize: 8, nHeadKv: 3, headDim: 16 },
  { nPages: 3, pageSize: 16, nHeadKv: 2, headDim: 128 },
  // headDim 6: kernels' remainder loops (not a multiple of 4 channels / 2 bytes); pageSize > headDim
  { nPages: 3, pageSize: 32, nHeadKv: 1, headDim: 6 },
];

describe.each(CODEC_KINDS.flatMap((kind) => ROLES.map((role) => [kind, role] as const)))("%s store, role %s", (kind, role) => {
  it.each(SHAPES.map((s) => [s]))("decodes within the format's hand-derived error bound (%o)", (shape) => {
    const store = createPageStore(kind, role, shape);
    const nTokens = shape.nPages * shape.pageSize - 3; // last page left open (partial)
    const data = fill(store, nTokens, 11);
    checkDecoded(store, data, nTokens, (page) => page === shape.nPages - 1);
  });

  it.each(SHAPES.map((s) => [s]))("dotRun and axpyRun equal the decode-then-f64 reference (%o)", (shape) => {
    const store = createPageStore(kind, role, shape);
    const nTokens = shape.nPages * shape.pageSize - 3;
    const data = fill(store, nTokens, 5);
    const inputAmax = maxAbs(data, 0, data.length);
    const g = gaussian(seededRandom(99));
    const { pageSize, nHeadKv, headDim } = shape;
    const q = new Float32Array(headDim + 3);
    for (let i = 0; i < q.length; i++) q[i] = g();
    let qL1 = 0;
    for (let c = 0; c < headDim; c++) qL1 += Math.abs(q[2 + c]!);
    const fast = new Float32Array(pageSize + 4);
    const ref = new Float32Array(pageSize + 4);
    const outFast = new Float32Array(headDim + 5);
    const outRef = new Float32Array(headDim + 5);
    for (let page = 0; page < shape.nPages; page++) {
      const valid = Math.min(pageSize, nTokens - page * pageSize);
      for (const [slotStart, n] of [[0, valid], [1, valid - 2], [valid - 1, 1]] as const) {
        for (let h = 0; h < nHeadKv; h++) {
          fast.fill(-7);
          ref.fill(-7);
          store.dotRun(page, slotStart, n, h, q, 2, fast, 1);
          referenceDotRun(store, page, slotStart, n, h, q, 2, ref, 1);
          // Same dequantized values, summed in another order / with factored scales: float rounding only.
          // Each decoded value differs from readToken's f32 output by at most 2^-24 relative, so
          // 1e-6 * sum|q| * max|k| has a 16x margin yet sits far below one quantization step.
          const tolDot = 1e-6 * qL1 * (inputAmax + 1);
          for (let i = 0; i < fast.length; i++) expect(Math.abs(fast[i]! - ref[i]!)).toBeLessThanOrEqual(tolDot);
          expect(fast[0]).toBe(-7); // nothing written outside [outOff, outOff + n)
          expect(fast[1 + n]).toBe(-7);

          const w = new Float32Array(n + 1);
          let wL1 = 0;
          for (let t = 0; t < n + 1; t++) {
            w[t] = Math.abs(g());
            if (t >= 1) wL1 += w[t]!;
          }
          for (let i = 0; i < outFast.length; i++) outFast[i] = outRef[i] = i - 3; // += semantics
          store.axpyRun(page, slotStart, n, h, w, 1, outFast, 2);
          referenceAxpyRun(store, page, slotStart, n, h, w, 1, outRef, 2);
          const tolAxpy = 1e-6 * (wL1 * (inputAmax + 1) + headDim);
          for (let i = 0; i < outFast.length; i++) expect(Math.abs(outFast[i]! - outRef[i]!)).toBeLessThanOrEqual(tolAxpy);
          expect(outFast[0]).toBe(-3);
          expect(outFast[outFast.length - 1]).toBe(outFast.length - 4);
        }
      }
    }
  });

  it("exportPage / importPage round-trip exactly, into another store and page", () => {
    const shape = SHAPES[0]!;
    const a = createPageStore(kind, role, shape);
    const nTokens = shape.nPages * shape.pageSize - 5;
    fill(a, nTokens, 3);
    const b = createPageStore(kind, role, shape);
    const ts = shape.nHeadKv * shape.headDim;
    const ta = new Float32Array(ts);
    const tb = new Float32Array(ts);
    for (let p = 0; p < shape.nPages; p++) {
      const bytes = a.exportPage(p);
      const dst = shape.nPages - 1 - p;
      b.importPage(dst, bytes);
      expect(Array.from(b.exportPage(dst))).toEqual(Array.from(bytes));
      const valid = Math.min(shape.pageSize, nTokens - p * shape.pageSize);
      for (let s = 0; s < valid; s++) {
        a.readToken(p, s, ta, 0);
        b.readToken(dst, s, tb, 0);
        expect(Array.from(tb)).toEqual(Array.from(ta));
      }
    }
    const good = a.exportPage(0);
    expect(() => b.importPage(0, good.subarray(0, good.length - 1))).toThrow(SnapshotError);
  });

  it("copyPage copies contents; later writes to either side stay separate", () => {
    const shape = SHAPES[0]!;
    const s = createPageStore(kind, role, shape);
    const ps = shape.pageSize;
    const ts = shape.nHeadKv * shape.headDim;
    const data = syntheticKv({ nTokens: 2 * ps, nHeadKv: shape.nHeadKv, headDim: shape.headDim, seed: 8 });
    // A full page and a partial one (for int4: one sealed, one open).
    for (let t = 0; t < ps; t++) s.writeToken(0, t, data, t * ts);
    for (let t = 0; t < 5; t++) s.writeToken(1, t, data, (ps + t) * ts);
    s.copyPage(2, 0);
    s.copyPage(3, 1);
    const x = new Float32Array(ts);
    const y = new Float32Array(ts);
    for (let t = 0; t < ps; t++) {
      s.readToken(0, t, x, 0);
      s.readToken(2, t, y, 0);
      expect(Array.from(y)).toEqual(Array.from(x));
    }
    for (let t = 0; t < 5; t++) {
      s.readToken(1, t, x, 0);
      s.readToken(3, t, y, 0);
      expect(Array.from(y)).toEqual(Array.from(x));
    }
    // Diverge: page 3 continues with other data, page 1 with its own; both keep their prefix.
    const other = syntheticKv({ nTokens: ps, nHeadKv: shape.nHeadKv, headDim: shape.headDim, seed: 9 });
    for (let t = 5; t < ps; t++) {
      s.writeToken(3, t, other, t * ts);
      s.writeToken(1, t, data, (ps + t) * ts);
    }
    checkDecoded(s, data, 2 * ps, () => false);
    const expected3 = new Float32Array(ps * ts);
    expected3.set(data.subarray(ps * ts, (ps + 5) * ts), 0);
    expected3.set(other.subarray(5 * ts, ps * ts), 5 * ts);
    const view = createPageStore(kind, role, { ...shape, nPages: 1 });
    view.importPage(0, s.exportPage(3));
    checkDecoded(view, expected3, ps, () => false);
  });

  it("truncatePage then refill holds the old prefix and the new tokens", () => {
    const shape = SHAPES[0]!;
    const s = createPageStore(kind, role, shape);
    const ps = shape.pageSize;
    const ts = shape.nHeadKv * shape.headDim;
    const first = syntheticKv({ nTokens: ps, nHeadKv: shape.nHeadKv, headDim: shape.headDim, seed: 21 });
    const second = syntheticKv({ nTokens: ps, nHeadKv: shape.nHeadKv, headDim: shape.headDim, seed: 22 });
    // Page 0 truncated while partial (int4: open), page 1 after it filled (int4: sealed).
    for (let t = 0; t < 6; t++) s.writeToken(0, t, first, t * ts);
    for (let t = 0; t < ps; t++) s.writeToken(1, t, first, t * ts);
    s.truncatePage(0, 3);
    s.truncatePage(1, 3);
    for (let t = 3; t < ps; t++) {
      s.writeToken(0, t, second, t * ts);
      s.writeToken(1, t, second, t * ts);
    }
    const expected = new Float32Array(ps * ts);
    expected.set(first.subarray(0, 3 * ts), 0);
    expected.set(second.subarray(3 * ts), 3 * ts);
    const view = createPageStore(kind, role, { ...shape, nPages: 1 });
    view.importPage(0, s.exportPage(0));
    checkDecoded(view, expected, ps, () => false);
    if (kind !== "int4") {
      view.importPage(0, s.exportPage(1));
      checkDecoded(view, expected, ps, () => false);
    } else {
      // Page 1's first 3 tokens were quantized twice (sealed, reopened, sealed): allow two steps.
      const tok = new Float32Array(ts);
      const once = createPageStore(kind, role, { ...shape, nPages: 1 });
      for (let t = 0; t < ps; t++) once.writeToken(0, t, expected, t * ts);
      const ref = new Float32Array(ts);
      for (let t = 0; t < ps; t++) {
        s.readToken(1, t, tok, 0);
        once.readToken(0, t, ref, 0);
        for (let i = 0; i < ts; i++) {
          // one extra step of the group: at most range/15 of the wider of the two groups
          expect(Math.abs(tok[i]! - expected[t * ts + i]!)).toBeLessThanOrEqual(Math.abs(ref[i]! - expected[t * ts + i]!) + 2 * maxAbs(expected, 0, expected.length) / 15 + 1e-6);
        }
      }
    }
  });
});

describe("byte accounting", () => {
  // shape: 10 pages x 16 tokens x 4 heads x 64 dims = 40960 values, 640 (token, head) pairs.
  const shape: PageShape = { nPages: 10, pageSize: 16, nHeadKv: 4, headDim: 64 };
  const expected: Record<CodecKind, Record<KvRole, number>> = {
    // every store adds the dot kernel's f64 scratch of one page of slots: 16 * 8 = 128 bytes
    f32: { k: 40960 * 4 + 128, v: 40960 * 4 + 128 }, // 163968
    f16: { k: 40960 * 2 + 128, v: 40960 * 2 + 128 }, // 82048
    // 1 byte per value + one f32 scale per (token, head)
    int8: { k: 40960 + 640 * 4 + 128, v: 40960 + 640 * 4 + 128 }, // 43648
    fp8: { k: 40960 + 640 * 4 + 128, v: 40960 + 640 * 4 + 128 },
    int4: {
      // nibbles 40960/2 = 20480; key params: (page, head, channel) groups 10*4*64 = 2560 x 2 f16 = 10240;
      // residual: 4 open pages x 16*4*64 f32 = 65536; ticks 4*8 = 32; scratch (64 + 16)*8 = 640;
      // owner 4*4 = 16; fill + resOf 10*4*2 = 80
      k: 20480 + 10240 + 65536 + 32 + 640 + 16 + 80, // 97024
      // value params: (page, slot, head) groups 640 x 2 f16 = 2560
      v: 20480 + 2560 + 65536 + 32 + 640 + 16 + 80, // 89344
    },
  };
  it.each(CODEC_KINDS.flatMap((kind) => ROLES.map((role) => [kind, role] as const)))("%s/%s: reservedBytes == pageStoreBytes == formula", (kind, role) => {
    const store = createPageStore(kind, role, shape);
    expect(pageStoreBytes(kind, role, shape)).toBe(expected[kind][role]);
    expect(store.reservedBytes).toBe(expected[kind][role]);
  });

  it("int4 residual pool follows the openPages hint, clamped to [2, nPages]", () => {
    const residualPage = 16 * 4 * 64 * 4 + 8 + 4; // f32 page + tick + owner
    const base = pageStoreBytes("int4", "k", shape, { openPages: 2 });
    expect(pageStoreBytes("int4", "k", shape, { openPages: 7 }) - base).toBe(5 * residualPage);
    expect(pageStoreBytes("int4", "k", shape, { openPages: 1 })).toBe(base);
    expect(pageStoreBytes("int4", "k", shape, { openPages: 1000 })).toBe(base + 8 * residualPage);
    expect(createPageStore("int4", "v", shape, { openPages: 7 }).reservedBytes).toBe(pageStoreBytes("int4", "v", shape, { openPages: 7 }));
  });

  it("rejects bad shapes and oversize stores with typed errors", () => {
    expect(() => pageStoreBytes("f32", "k", { ...shape, headDim: 0 })).toThrow(CacheConfigError);
    expect(() => pageStoreBytes("f32", "k", { ...shape, nPages: 1.5 })).toThrow(CacheConfigError);
    expect(() => pageStoreBytes("int4", "k", { ...shape, headDim: 65 })).toThrow(CacheConfigError);
    expect(() => pageStoreBytes("int4", "k", shape, { openPages: 0 })).toThrow(CacheConfigError);
    expect(() => createPageStore("f32", "k", { ...shape, nPages: 2 ** 20 })).toThrow(CacheConfigError);
  });
});
