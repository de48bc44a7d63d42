// Seeded synthetic K/V activations for codec tests and benchmarks. Keys get a few "outlier
// channels" with a large scale and offset in every token, the structure KIVI (arXiv:2402.02750,
// section 3) reports for real key caches and the reason it quantizes keys per channel; values
// are plain Gaussian, as KIVI finds them without channel structure.

/** mulberry32: a small, fast, seeded 32-bit generator returning floats in [0, 1). */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Standard normal samples (Box-Muller) from a uniform generator. */
export function gaussian(rand: () => number): () => number {
  return () => {
    const u = 1 - rand();
    const v = rand();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  };
}

export interface SyntheticKvOptions {
  readonly nTokens: number;
  readonly nHeadKv: number;
  readonly headDim: number;
  readonly seed: number;
  /** Outlier channels per head (keys); 0 for values. Default 0. */
  readonly outlierChannels?: number;
  /** Scale of an outlier channel relative to the others. Default 10. */
  readonly outlierScale?: number;
}

/** Tokens laid out [nTokens][nHeadKv][headDim]: N(0,1) per value, plus outlier channels whose
 *  values are outlierScale * (offset + N(0,1)) with a fixed per-channel offset in [-1, 1]. */
export function syntheticKv(o: SyntheticKvOptions): Float32Array {
  const rand = seededRandom(o.seed);
  const g = gaussian(rand);
  const nOut = o.outlierChannels ?? 0;
  const scale = o.outlierScale ?? 10;
  const isOutlier = new Uint8Array(o.nHeadKv * o.headDim);
  const offset = new Float64Array(o.nHeadKv * o.headDim);
  for (let h = 0; h < o.nHeadKv; h++) {
    for (let i = 0; i < nOut; i++) {
      const c = h * o.headDim + Math.floor(rand() * o.headDim);
      isOutlier[c] = 1;
      offset[c] = 2 * rand() - 1;
    }
  }
  const out = new Float32Array(o.nTokens * o.nHeadKv * o.headDim);
  const tokenStride = o.nHeadKv * o.headDim;
  for (let t = 0; t < o.nTokens; t++) {
    for (let c = 0; c < tokenStride; c++) {
      out[t * tokenStride + c] = isOutlier[c] ? scale * (offset[c]! + g()) : g();
    }
  }
  return out;
}
