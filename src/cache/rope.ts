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
  /**
   * Round frequencies and angles to float32 as llama2.c's run.c (and the PyTorch code that trained
   * its models) does: `val = (float)pos * freq`. Default false: angles in float64, which keeps the
   * cache's per-run query rotation exact at any position. The two differ once pos * freq is large
   * (about 1e-3 in NLL past 1.5k positions on stories260K); set it to reproduce an f32 reference.
   */
  readonly angleF32?: boolean;
}

/** Positions whose cos/sin rows a Rope keeps (a power of 2, above a prefill batch's 64 tokens):
 *  128 KiB of tables at nRot 128. */
const TABLE_SLOTS = 128;

export class Rope {
  readonly spec: RopeSpec;
  readonly headDim: number;
  private readonly invFreq: Float64Array; // [nRot/2]
  // cos/sin of recently used positions, [TABLE_SLOTS][nRot/2], position p in slot p mod TABLE_SLOTS.
  // Every layer rotates a new token's key by the same position, decode attention rotates the query
  // by one or two positions (see runs.ts), and a prefill batch rotates its (up to 64) positions'
  // keys and queries in every layer: computing a row once per position instead of once per call
  // removes nearly all Math.cos/sin from the token path (measured in bench/cache.ts,
  // docs/RESULTS.md) and from prefill (bench/kernel-profile.ts: the rows of a batch were recomputed
  // twice per layer when two slots held them).
  private readonly cos: Float64Array;
  private readonly sin: Float64Array;
  private readonly cachedPos = new Float64Array(TABLE_SLOTS).fill(Number.NaN);

  constructor(spec: RopeSpec, headDim: number) {
    if (spec.nRot % 2 !== 0 || spec.nRot > headDim || spec.nRot <= 0) {
      throw new RangeError(`rope nRot ${spec.nRot} must be even and in 2..headDim (${headDim})`);
    }
    this.spec = spec;
    this.headDim = headDim;
    const half = spec.nRot / 2;
    this.invFreq = new Float64Array(half);
    const thetaScale = Math.fround(Math.pow(Math.fround(spec.freqBase), Math.fround(-2 / spec.nRot)));
    for (let i = 0; i < half; i++) {
      // Default: ggml's theta_scale = powf(base, -2/n_rot) to the i-th power (its float32 step, see
      // src/model/rope-scaling.ts); llama2.c's (float) base^(-2i/n) with angleF32.
      const f = spec.invFreq?.[i] ?? (spec.angleF32 ? Math.pow(spec.freqBase, (-2 * i) / spec.nRot) : Math.pow(thetaScale, i));
      this.invFreq[i] = spec.angleF32 ? Math.fround(f) : f;
    }
    this.cos = new Float64Array(TABLE_SLOTS * half);
    this.sin = new Float64Array(TABLE_SLOTS * half);
  }

  /** Offset of `pos`'s row in the cos/sin tables, computing the row on a miss (into pos's slot). */
  private table(pos: number): number {
    const half = this.spec.nRot / 2;
    const cp = this.cachedPos;
    const slot = (pos | 0) & (TABLE_SLOTS - 1); // any slot is right (the check below): this one spreads a batch
    const base = slot * half;
    if (cp[slot] === pos) return base;
    cp[slot] = pos;
    const m = this.spec.mscale ?? 1;
    for (let i = 0; i < half; i++) {
      if (this.spec.angleF32) {
        // cosf/sinf of a float angle, as run.c computes them
        const theta = Math.fround(pos * this.invFreq[i]!);
        this.cos[base + i] = Math.fround(Math.cos(theta)) * m;
        this.sin[base + i] = Math.fround(Math.sin(theta)) * m;
      } else {
        const theta = pos * this.invFreq[i]!;
        this.cos[base + i] = Math.cos(theta) * m;
        this.sin[base + i] = Math.sin(theta) * m;
      }
    }
    return base;
  }

  /**
   * The (cos, sin) pairs of `pos`, [nRot/2][2] from out[off], as rotate() applies them (mscale and
   * angleF32 included): what a GPU kernel that rotates by `pos` reads instead of computing angles.
   */
  cosSin(pos: number, out: Float32Array, off: number): void {
    const t = this.table(pos);
    const half = this.spec.nRot / 2;
    for (let i = 0; i < half; i++) {
      out[off + 2 * i] = this.cos[t + i]!;
      out[off + 2 * i + 1] = this.sin[t + i]!;
    }
  }

  /** `pos`'s nRot/2 cos, then as many sin, from out[off], as rotate() applies them (f64): what the
   *  wasm attention rotates queries by (attention.as attendRows), to the same bits as rotate(). */
  cosSin64(pos: number, out: Float64Array, off: number): void {
    const t = this.table(pos);
    const half = this.spec.nRot / 2;
    for (let i = 0; i < half; i++) {
      out[off + i] = this.cos[t + i]!;
      out[off + half + i] = this.sin[t + i]!;
    }
  }

  /** Rotates `nHeads` consecutive heads of `headDim` values starting at `x[off]` by position `pos`. */
  rotate(x: Float32Array, off: number, nHeads: number, pos: number): void {
    const half = this.spec.nRot / 2;
    const neox = this.spec.neox;
    const t = this.table(pos);
    const cos = this.cos;
    const sin = this.sin;
    for (let i = 0; i < half; i++) {
      const c = cos[t + i]!;
      const s = sin[t + i]!;
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
