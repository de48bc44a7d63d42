// Rotary position embedding as the cache and the model apply it. One table of inverse
// frequencies per head-dim pair; `rotate` turns vectors by `pos` (any real position, so the cache
// can rotate a query by a page's position offset).

export interface RopeSpec {
  /** Dimensions rotated per head (n_rot); the rest pass through. */
  readonly nRot: number;
  readonly freqBase: number;
  /** NeoX layout rotates (i, i + nRot/2) pairs; the normal (GPT-J / llama) layout (2i, 2i+1). */
  readonly neox: boolean;
  /** Optional per-pair inverse frequencies (length nRot/2) that replace base^(-2i/nRot), for llama3 / YaRN scaling. */
  readonly invFreq?: readonly number[];
  /** Multiplies cos and sin (YaRN's attention factor); default 1. */
  readonly mscale?: number;
}

export class Rope {
  readonly spec: RopeSpec;
  readonly headDim: number;
  private readonly invFreq: Float64Array; // [nRot/2]

  constructor(spec: RopeSpec, headDim: number) {
    if (spec.nRot % 2 !== 0 || spec.nRot > headDim || spec.nRot <= 0) {
      throw new RangeError(`rope nRot ${spec.nRot} must be even and in 2..headDim (${headDim})`);
    }
    this.spec = spec;
    this.headDim = headDim;
    const half = spec.nRot / 2;
    this.invFreq = new Float64Array(half);
    for (let i = 0; i < half; i++) {
      this.invFreq[i] = spec.invFreq?.[i] ?? Math.pow(spec.freqBase, (-2 * i) / spec.nRot);
    }
  }

  /** Rotates `nHeads` consecutive heads of `headDim` values starting at `x[off]` by position `pos`. */
  rotate(x: Float32Array, off: number, nHeads: number, pos: number): void {
    const half = this.spec.nRot / 2;
    const m = this.spec.mscale ?? 1;
    const neox = this.spec.neox;
    for (let i = 0; i < half; i++) {
      const theta = pos * this.invFreq[i]!;
      const c = Math.cos(theta) * m;
      const s = Math.sin(theta) * m;
      for (let h = 0; h < nHeads; h++) {
        const base = off + h * this.headDim;
        const a = neox ? base + i : base + 2 * i;
        const b = neox ? base + i + half : base + 2 * i + 1;
        const x0 = x[a]!;
        const x1 = x[b]!;
        x[a] = x0 * c - x1 * s;
        x[b] = x0 * s + x1 * c;
      }
    }
  }
}
